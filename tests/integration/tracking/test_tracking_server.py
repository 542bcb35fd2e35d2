"""The one-line refusals of the Docker runner when a daemon, an image or a tracking server is
missing. (A whole run against a real tracking server, with proxied artifacts, is
tests/e2e/test_shared_store.py; `cnnops ui` itself is tests/integration/tracking/test_make_ui.py and
test_mlflow_server.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.commands import CNNOPS

from cnnops.core.processes import free_port

ROOT = Path(__file__).resolve().parents[3]


def cli(home: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CNNOPS_HOME": str(home), **env}
    for variable in ("BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        environment.pop(variable, None)
    if "MLFLOW_TRACKING_URI" not in env:
        environment.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(CNNOPS), *args], capture_output=True, text=True, timeout=timeout, env=environment)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cnnops: error:")]
    return line


def docker_run_error(tmp_path: Path, make_images, **env: str) -> str:
    """`cnnops run --runner docker` on tiny images with `env` set; its one error line."""
    source = make_images(per_class=10)
    return one_error_line(
        cli(tmp_path / "state", "run", "--runner", "docker", "--data", str(source), timeout=120, **env)
    )


@pytest.mark.slow
def test_docker_runner_without_a_daemon_says_how_to_start_one(tmp_path, make_images):
    line = docker_run_error(tmp_path, make_images, DOCKER_HOST="unix:///nonexistent.sock")
    assert "no Docker daemon answers" in line and "make docker-start" in line


@pytest.mark.containers
def test_docker_runner_without_a_tracking_server_names_the_fix(tmp_path, make_images):
    line = docker_run_error(tmp_path, make_images, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert "no MLflow tracking server answers at http://127.0.0.1:" in line and "unset" in line


@pytest.mark.containers
def test_docker_runner_with_a_file_store_names_the_fix(tmp_path, make_images):
    line = docker_run_error(tmp_path, make_images, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    assert "containers cannot reach" in line and "unset it" in line


@pytest.mark.slow
def test_docker_runner_on_a_missing_data_path(tmp_path):
    line = one_error_line(
        cli(tmp_path / "state", "run", "--runner", "docker", "--data", str(tmp_path / "nope"), timeout=120)
    )
    assert "does not exist" in line


def test_a_folder_the_task_user_cannot_enter_is_named_with_the_fix(tmp_path):
    from cnnops.core.errors import CnnopsError
    from cnnops.pipelines.docker import check_readable

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(CnnopsError, match=r"run as uid 10001 and cannot read .*private \(mode 700\).*chmod -R o\+rX"):
        check_readable([private], 10001)
    private.chmod(0o755)
    check_readable([private], 10001)


def test_no_docker_daemon_is_one_line(monkeypatch):
    from cnnops.core.containers import open_docker
    from cnnops.core.errors import CnnopsError

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(CnnopsError, match="no Docker daemon answers.*make docker-start"):
        open_docker()


@pytest.mark.containers
def test_a_missing_image_names_make_image():
    from cnnops.core.containers import find_image, open_docker
    from cnnops.core.errors import CnnopsError

    client = open_docker()
    try:
        with pytest.raises(CnnopsError, match=r"cnnops:no-such-version is not in the local Docker store.*make image"):
            find_image(client, "cnnops:no-such-version")
    finally:
        client.close()


@pytest.mark.containers
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
