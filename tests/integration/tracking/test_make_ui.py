"""`make ui` starts a real MLflow server on loopback; the test stops it by its process group."""

import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cnnops.core.processes import free_port

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def make_ui(home: Path) -> Iterator[int]:
    """`make ui` on a free loopback port, ready once /health answers; stopped by PID after."""
    from cnnops.core.processes import running_process
    from cnnops.tracking.server import answers

    port = free_port()
    env = {**os.environ, "CNNOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = home.parent / "make-ui.log"
    command = ["make", "--no-print-directory", "ui", f"MLFLOW_PORT={port}"]
    ready = lambda: answers(f"http://127.0.0.1:{port}")  # noqa: E731
    with running_process(command, log, ready, 90, env, ROOT, "make ui") as started:
        assert started.problem is None, f"{started.problem}:\n{log.read_text()[-2000:]}"
        yield port


@pytest.mark.server
def test_make_ui_serves_the_store_on_loopback(tmp_path):
    with make_ui(tmp_path / "state"):
        assert (tmp_path / "state" / "mlflow" / "mlflow.db").is_file()


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
    with make_ui(served["home"]) as port:
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
