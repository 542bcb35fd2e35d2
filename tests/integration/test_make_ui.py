"""`make ui` starts a real MLflow server on loopback; the test stops it by its process group."""

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[2]


def start_ui(home: Path) -> tuple[subprocess.Popen, int]:
    """`make ui` on a free loopback port, waited for until /health answers."""
    port = free_port()
    env = {**os.environ, "CNNOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        ["make", "--no-print-directory", "ui", f"MLFLOW_PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert body == "OK", server.stderr.read().decode()[-2000:] if server.poll() is not None else body
    except BaseException:
        stop_process_group(server)
        raise
    return server, port


@pytest.mark.server
def test_make_ui_serves_the_store_on_loopback(tmp_path):
    server, _ = start_ui(tmp_path / "state")
    try:
        assert (tmp_path / "state" / "mlflow" / "mlflow.db").is_file()
    finally:
        stop_process_group(server)


@pytest.mark.slow
@pytest.mark.server
def test_the_ui_shows_a_runs_error_analysis(served, monkeypatch):
    """What the MLflow UI's artifact view requests: the analysis folder's listing, and its images."""
    import json

    from mlflow.tracking import MlflowClient

    from cnnops.tracking.stores import use_tracking_store

    monkeypatch.setenv("CNNOPS_HOME", str(served["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_tracking_store()
    run_id = MlflowClient().get_model_version_by_alias(served["name"], "champion").run_id
    server, port = start_ui(served["home"])
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(
            f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}&path=evaluation/analysis", timeout=30
        ) as response:
            listed = {Path(item["path"]).name for item in json.load(response)["files"]}
        assert {
            "top_losses.png",
            "top_losses.csv",
            "misclassified.png",
            "activation_maps.png",
            "model.png",
            "model_summary.txt",
            "analysis.html",
        } <= listed
        with urllib.request.urlopen(
            f"{base}/get-artifact?path=evaluation/analysis/top_losses.png&run_uuid={run_id}", timeout=30
        ) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        stop_process_group(server)
