"""The images for real: the project image built from a clean clone, the whole pipeline run by
kfp.local's DockerRunner with every task in it, the service image under `docker run`, and the
rendered Kubernetes base played by podman. Needs a Docker daemon (`make test` starts one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from support.commands import CNNOPS, docker_run_error
from support.images import write_images

from cnnops.components import BASE_IMAGE
from cnnops.core.processes import free_port
from cnnops.inference.service_client import post_image as upload_image

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
LOCAL_BASE = "cnnops-base:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UID = "10001"


def sh(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check, **kwargs)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CNNOPS_HOME": str(home), **extra}
    for variable in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        if variable not in extra:
            env.pop(variable, None)
    return env


@pytest.fixture(scope="module")
def project_image(tmp_path_factory) -> dict:
    """`cnnops:<version>` built from a clean clone of this commit, on the local debootstrap base."""
    sh(DOCKER, "info", timeout=30)
    clone = tmp_path_factory.mktemp("clone") / "cnnops"
    sh("git", "clone", "--quiet", str(ROOT), str(clone))
    if sh(DOCKER, "image", "inspect", LOCAL_BASE, check=False).returncode != 0:
        sh(str(clone / "infra/docker/base.sh"), LOCAL_BASE, timeout=900)
    build = sh(
        str(clone / "infra/docker/build.sh"),
        DOCKER,
        BASE_IMAGE,
        LOCAL_BASE,
        CA_BUNDLE if Path(CA_BUNDLE).exists() else "",
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    commit = sh("git", "-C", str(clone), "rev-parse", "HEAD").stdout.strip()
    return {"tag": BASE_IMAGE, "commit": commit, "clone": clone}


@pytest.fixture(scope="module")
def serve_image(project_image) -> str:
    """The ONNX serving image (`make serve-image`), built from the same clean clone."""
    from cnnops.serving.bento import SERVE_IMAGE

    build = sh(
        str(project_image["clone"] / "infra/docker/build.sh"),
        DOCKER,
        SERVE_IMAGE,
        LOCAL_BASE,
        CA_BUNDLE if Path(CA_BUNDLE).exists() else "",
        "",
        "infra/docker/serve.Dockerfile",
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return SERVE_IMAGE


def run_in(image: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(DOCKER, "run", "--rm", "--network", "none", image, *command, timeout=300, check=check)


def test_the_image_runs_cnnops_as_its_fixed_non_root_user(project_image):
    assert "Train, gate and register" in run_in(project_image["tag"], "cnnops", "--help").stdout
    assert run_in(project_image["tag"], "id", "-u").stdout.strip() == UID
    labels = json.loads(
        sh(DOCKER, "image", "inspect", "--format", "{{json .Config.Labels}}", project_image["tag"]).stdout
    )
    assert labels["org.opencontainers.image.version"] == BASE_IMAGE.rsplit(":", 1)[1]
    assert labels["org.opencontainers.image.revision"] == project_image["commit"]
    assert labels["org.opencontainers.image.source"]


def test_the_image_holds_the_stack_and_no_dev_dependency(project_image):
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    dev_names = sorted({entry.split("=")[0].split(">")[0].split("[")[0].strip().lower() for entry in dev})
    probe = (
        "import json, importlib.metadata as m, cnnops, kfp, mlflow, tensorflow\n"
        "print(json.dumps(sorted(d.metadata['Name'].lower().replace('_', '-') for d in m.distributions())))"
    )
    installed = set(json.loads(run_in(project_image["tag"], "python3", "-c", probe).stdout.splitlines()[-1]))
    assert {"cnnops", "kfp", "mlflow", "tensorflow", "bentoml"} <= installed
    assert not installed & set(dev_names), installed & set(dev_names)
    # No build tools in the final stage: uv's installer venv and the sources stay in the build stage.
    assert (
        run_in(
            project_image["tag"], "sh", "-c", "test ! -e /opt/uv && test ! -e /src && ! command -v gcc", check=False
        ).returncode
        == 0
    )


def test_the_build_ca_bundle_stays_out_of_the_image(project_image):
    """The bundle is a build secret: nothing is left at the secret's path, and no file in the image
    holds a certificate that only the host's bundle has (a proxy's CA)."""
    assert run_in(project_image["tag"], "test", "-e", "/run/secrets/ca", check=False).returncode != 0
    if not Path(CA_BUNDLE).exists():
        return
    image_bundle = run_in(project_image["tag"], "cat", CA_BUNDLE).stdout
    host_only = [
        cert
        for cert in Path(CA_BUNDLE).read_text().split("-----END CERTIFICATE-----")
        if cert.strip() and cert.strip() not in image_bundle
    ]
    for cert in host_only:
        body = [line for line in cert.splitlines() if line and not line.startswith("-----")]
        found = run_in(
            project_image["tag"],
            "sh",
            "-c",
            'grep -rlF -- "$0" /etc /app /home /usr /opt /root /tmp 2>/dev/null || true',
            body[len(body) // 2],
        ).stdout
        assert found == "", found


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> Iterator[dict]:
    """A team's shared MLflow server for the module: PostgreSQL 15 (tests/postgres.py) behind
    `mlflow server` with proxied artifacts, as the function-scoped `shared_server` fixture makes."""
    from support import postgres as pg

    from cnnops.tracking.server import running_server

    folder = Path(tempfile.mkdtemp(prefix="cnnops-pg-"))  # outside tmp_path: see the postgres fixture
    database = pg.start_postgres(folder)
    work = tmp_path_factory.mktemp("shared-store")
    try:
        with running_server(free_port(), work / "server.log", database.uri, work / "artifacts") as uri:
            yield {"uri": uri, "artifacts": work / "artifacts", "postgres": database}
    finally:
        database.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_run(project_image, shared_store, tmp_path_factory) -> dict:
    """The whole pipeline through DockerRunner on tiny images, logging to the PostgreSQL-backed
    shared server (MLFLOW_TRACKING_URI). The server cnnops starts itself is tried by the failing
    run below."""
    work = tmp_path_factory.mktemp("docker-run")
    source = write_images(work / "images", per_class=30, seed=1)
    home = work / "state"
    started = time.monotonic()
    result = sh(
        str(CNNOPS),
        "run",
        "--runner",
        "docker",
        "--data",
        str(source),
        "--epochs",
        "12",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.patience=20",
        env=cli_env(home, MLFLOW_TRACKING_URI=shared_store["uri"]),
        timeout=1500,
        check=False,
    )
    return {
        "work": work,
        "source": source,
        "home": home,
        "uri": shared_store["uri"],
        "artifacts": shared_store["artifacts"],
        "result": result,
        "seconds": time.monotonic() - started,
    }


@pytest.mark.server
def test_every_task_in_the_image_crowns_a_champion_over_http(docker_run):
    result, home = docker_run["result"], docker_run["home"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (log,) = (home / "logs").glob("run-*.log")  # the run's full log, with kfp's lines
    assert log.read_text().count("Found image 'cnnops:") >= 10  # every task ran in the project image
    status = sh(str(CNNOPS), "status", "--json", env=cli_env(home, MLFLOW_TRACKING_URI=docker_run["uri"]), timeout=120)
    (model,) = json.loads(status.stdout)["models"]
    assert model["champion"]["version"] == 1
    assert model["champion"]["test_accuracy"] >= 0.8
    assert model["champion"]["best_baseline"] in {"logistic-regression", "random-forest"}
    assert model["champion"]["test_accuracy"] >= model["champion"]["best_baseline_score"]
    # The tasks wrote as the image's user, and logged artifacts through the server's proxy.
    (report,) = (home / "pipeline-root").rglob("validate/report")
    assert "Dataset report" in report.read_text() and str(report.stat().st_uid) == UID
    assert list((home / "pipeline-root").rglob("release/bento/cnnops.bento"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=docker_run["uri"])
    experiment = client.get_experiment_by_name(model["name"])
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert list(docker_run["artifacts"].rglob("MLmodel"))
    # The shared server held everything: no local store, and cnnops started no server of its own.
    assert not (home / "mlflow").exists() and not (home / "logs" / "mlflow-server.log").exists()


def test_a_task_that_fails_in_its_container_stops_the_run_with_its_reason(project_image, tmp_path):
    """Most files undecodable: validate fails inside its container. kfp may report that task as
    SUCCESS (kubeflow/pipelines#13332); the run still stops with the task's one line."""
    source = write_images(tmp_path / "images", per_class=10, seed=2)
    for label in ("disc", "cross", "stripes"):
        for index in range(20):
            (source / label / f"junk-{index}.png").write_bytes(b"not an image at all")
    result = sh(
        str(CNNOPS),
        "run",
        "--runner",
        "docker",
        "--data",
        str(source),
        "--epochs",
        "1",
        env=cli_env(tmp_path / "state"),
        timeout=900,
        check=False,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cnnops: error:")]
    assert "failed validation" in line and line.endswith("(nothing was registered)")
    assert "Traceback" not in result.stderr
    # Without MLFLOW_TRACKING_URI, cnnops started the project's own server for the run.
    assert (tmp_path / "state" / "logs" / "mlflow-server.log").is_file()
    status = json.loads(sh(str(CNNOPS), "status", "--json", env=cli_env(tmp_path / "state")).stdout)
    assert status["models"] == []


def containerize(docker_run: dict, *flags: str) -> tuple[str, str]:
    """`cnnops bento --containerize FLAGS` of the champion the Docker run crowned: the service
    image's tag and the image it was built on."""
    assert docker_run["result"].returncode == 0
    env = cli_env(docker_run["home"], MLFLOW_TRACKING_URI=docker_run["uri"])
    status = sh(str(CNNOPS), "status", "--json", env=env, timeout=120)
    (model,) = json.loads(status.stdout)["models"]
    built = sh(
        str(CNNOPS), "bento", "--containerize", "--model-name", model["name"], *flags, env=env, timeout=600, check=False
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (line,) = [line for line in built.stdout.splitlines() if "built service image" in line]
    named = line.split("built service image ")[1]
    return named.split(" and ")[0], named.split(" on ")[1].split(";")[0]


@pytest.fixture(scope="module")
def service_image(docker_run, serve_image) -> str:
    """The champion's service image: its export passed parity, so it builds on the ONNX serving image."""
    tag, base = containerize(docker_run)
    assert base == serve_image
    return tag


def photo(folder: Path) -> Path:
    """A real photo (scikit-image's cat) as JPEG bytes on disk."""
    from PIL import Image
    from skimage import data

    path = folder / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=90)
    return path


def post_image(url: str, path: Path, content_type: str = "image/jpeg") -> tuple[int, bytes]:
    """Upload a file to /classify as the web page does, through the library's service client."""
    answer = upload_image(url, path.read_bytes(), path.name, content_type)
    return answer.status, answer.body


def wait_ready(url: str, seconds: float, alive) -> float:
    """Poll /readyz (bounded); returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        assert alive(), "the server exited before it was ready"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url}/readyz not ready in {seconds} s")


@contextmanager
def running_service(image: str, *options: str) -> Iterator[tuple[str, str, float]]:
    """`docker run` of a service image as the Deployment runs it (read-only root, /tmp writable,
    published on loopback only): its URL, container name and seconds to ready; removed after."""
    port = free_port()
    name = f"cnnops-service-test-{port}"
    run = ("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp:rw,exec")
    sh(DOCKER, *run, "--publish", f"127.0.0.1:{port}:3000", *options, image, timeout=60)
    try:

        def alive() -> bool:
            return sh(DOCKER, "inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"

        url = f"http://127.0.0.1:{port}"
        yield url, name, wait_ready(url, 180, alive)
    finally:
        sh(DOCKER, "rm", "--force", name, check=False)


def runtime_of(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/info", timeout=10) as response:
        return json.loads(response.read())["runtime"]


@pytest.mark.server
def test_the_service_image_serves_onnx_without_tensorflow_a_photo_and_refuses_garbage(service_image, tmp_path):
    with running_service(service_image) as (url, name, ready):
        assert runtime_of(url)["name"] == "onnx"
        status, body = post_image(url, photo(tmp_path))
        assert status == 200, body
        predictions = json.loads(body)["predictions"]
        assert {p["label"] for p in predictions} == {"disc", "cross", "stripes"}
        garbage = tmp_path / "garbage.png"
        garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        status, body = post_image(url, garbage, "image/png")
        assert 400 <= status < 500, (status, body)
        assert sh(DOCKER, "exec", name, "id", "-u").stdout.strip() == UID
        # Not installed at all, let alone imported: the image holds no TensorFlow, Keras or MLflow.
        for package in ("tensorflow", "keras", "mlflow", "kfp"):
            missing = sh(DOCKER, "exec", name, "python", "-c", f"import {package}", check=False)
            assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, package
    size = int(sh(DOCKER, "image", "inspect", "--format", "{{.Size}}", service_image).stdout)
    print(f"ONNX service image: {size / 1e6:.0f} MB, ready {ready:.1f} s after docker run")


@pytest.mark.server
def test_the_keras_service_image_stays_buildable_on_the_project_image(docker_run, project_image, tmp_path):
    tag, base = containerize(docker_run, "--runtime", "keras")
    assert base == project_image["tag"]
    keras_only = ("--env", 'CNNOPS_SERVE_CONFIG={"runtime": "keras"}')
    with running_service(tag, *keras_only) as (url, _, ready):
        assert runtime_of(url) == {"name": "keras", "reason": "serve.runtime is keras"}
        status, body = post_image(url, photo(tmp_path))
        assert status == 200, body
    print(f"Keras service image: ready {ready:.1f} s after docker run")


PODMAN = ("podman", "--cgroup-manager=cgroupfs", "--events-backend=file")


def playable_base(image: str, port: int, path: Path) -> Path:
    """infra/k8s/base rendered by kustomize, as podman 4.3 can play it: one replica (two would
    collide on the host port), the service image, and its port published on loopback only."""
    rendered = sh(str(Path(sys.executable).parent / "kubectl"), "kustomize", str(ROOT / "infra/k8s/base")).stdout
    documents = list(yaml.safe_load_all(rendered))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    container["ports"][0].update({"hostPort": port, "hostIP": "127.0.0.1"})
    path.write_text(yaml.safe_dump_all(documents))
    return path


@pytest.mark.server
def test_podman_plays_the_rendered_base_and_the_pod_serves_a_photo(service_image, tmp_path):
    # podman keeps its own image store: copy the service image from the Docker daemon.
    sh(*PODMAN, "pull", "--quiet", f"docker-daemon:{service_image}", timeout=900)
    # Root here cannot raise its file and process limits, and podman would: pin them below the cap.
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    port = free_port()
    manifest = playable_base(f"docker.io/library/{service_image}", port, tmp_path / "play.yaml")
    played = sh(*PODMAN, "kube", "play", str(manifest), env=env, timeout=300, check=False)
    try:
        assert played.returncode == 0, played.stderr[-3000:]
        (pod,) = [
            line
            for line in sh(*PODMAN, "ps", "--format", "{{.Names}}").stdout.split()
            if "classifier" in line and not line.endswith("-infra")
        ]

        def alive() -> bool:
            return sh(*PODMAN, "inspect", "--format", "{{.State.Running}}", pod).stdout.strip() == "true"

        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 180, alive)  # the readiness probe, checked from the host
        with urllib.request.urlopen(f"{url}/livez", timeout=5) as response:  # the liveness probe
            assert response.status == 200
        status, body = post_image(url, photo(tmp_path))
        assert status == 200, body
        assert json.loads(body)["predictions"]
        # As the Deployment says: non-root, read-only root filesystem, the emptyDir writable.
        assert sh(*PODMAN, "exec", pod, "id", "-u").stdout.strip() == UID
        assert sh(*PODMAN, "exec", pod, "touch", "/probe", check=False).returncode != 0
        assert sh(*PODMAN, "exec", pod, "touch", "/scratch/probe", check=False).returncode == 0
    finally:
        sh(*PODMAN, "kube", "down", str(manifest), env=env, check=False, timeout=120)
    assert not [
        line for line in sh(*PODMAN, "ps", "-a", "--format", "{{.Names}}").stdout.split() if "classifier" in line
    ]


# The Docker runner's refusals before any task starts: one line each, naming the fix.


def test_docker_runner_without_a_tracking_server_names_the_fix(project_image, tmp_path, make_images):
    """With the image present (so the run gets past it), the store is what is refused."""
    line = docker_run_error(tmp_path, make_images, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert "no MLflow tracking server answers at http://127.0.0.1:" in line and "unset" in line


def test_docker_runner_with_a_file_store_names_the_fix(project_image, tmp_path, make_images):
    line = docker_run_error(tmp_path, make_images, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    assert "containers cannot reach" in line and "unset it" in line


def test_a_missing_image_names_make_image():
    from cnnops.core.containers import find_image, open_docker
    from cnnops.core.errors import CnnopsError

    client = open_docker()
    try:
        with pytest.raises(CnnopsError, match=r"cnnops:no-such-version is not in the local Docker store.*make image"):
            find_image(client, "cnnops:no-such-version")
    finally:
        client.close()


def test_a_missing_base_image_names_make_base_image():
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    result = subprocess.run(
        [str(ROOT / "infra/docker/build.sh"), docker, "cnnops:test-no-base", "no-such-base:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "build.sh: base image no-such-base:1 is not in the local Docker store: run `make base-image` (Debian via "
        "debootstrap), or `docker pull no-such-base:1` where a registry is reachable"
    ]
