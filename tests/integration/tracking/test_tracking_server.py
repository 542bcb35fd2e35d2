"""The one-line refusals of the Docker runner when a daemon, an image or a tracking server is
missing. (A whole run against a real tracking server, with proxied artifacts, is
tests/e2e/test_shared_store.py; `cnnops ui` itself is tests/integration/tracking/test_make_ui.py and
test_mlflow_server.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.commands import cli, docker_run_error, one_error_line

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_docker_runner_without_a_daemon_says_how_to_start_one(tmp_path, make_images):
    line = docker_run_error(tmp_path, make_images, DOCKER_HOST="unix:///nonexistent.sock")
    assert "no Docker daemon answers" in line and "make docker-start" in line


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
