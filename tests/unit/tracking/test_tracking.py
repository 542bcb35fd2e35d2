"""Faults are not absences: a store that is unreachable, locked or not a database is one line that
names it and says it is a fault of the store, never "no such model"; only MLflow's "not found"
reads as absent. Real stores throughout: a port nothing listens on, a sqlite file another process
holds locked, a file that is not a database."""

from __future__ import annotations

import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient
from support.commands import CNNOPS
from support.stores import FAULT, assert_store_fault

from cnnops.core.errors import CnnopsError
from cnnops.core.processes import free_port
from cnnops.inference.export import export_registered
from cnnops.promotion.status import describe_registry
from cnnops.tracking.registry import find_alias
from cnnops.tracking.stores import shown_uri, use_tracking_store


@pytest.fixture
def quick_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP client tries once and gives up soon, so an unreachable server fails fast."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_an_unreachable_server_is_a_fault_not_a_missing_model(state_home, quick_requests, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for read in (lambda: describe_registry("cnnops-animals"), describe_registry, lambda: export_registered("x")):
        with pytest.raises(CnnopsError) as raised:
            read()
        assert_store_fault(raised, uri)
    use_tracking_store()
    with pytest.raises(CnnopsError) as raised:
        find_alias(MlflowClient(), "cnnops-animals", "champion")
    assert_store_fault(raised, uri)


def test_cnnops_status_names_an_unreachable_store_in_one_line(state_home, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CNNOPS_HOME": str(state_home),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    done = subprocess.run(
        [str(CNNOPS), "status", "--model-name", "cnnops-animals"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2
    (line,) = [text for text in done.stderr.splitlines() if text.strip()]
    assert line.startswith(f"cnnops: error: the MLflow store {uri} failed") and FAULT in line


def test_a_file_that_is_not_a_database_is_a_fault(state_home, tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"these bytes are not a sqlite database " * 200)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    with pytest.raises(CnnopsError) as raised:
        describe_registry("cnnops-animals")
    assert_store_fault(raised, str(store))
    assert "file is not a database" in str(raised.value)


def test_credentials_in_a_store_uri_are_not_shown():
    assert shown_uri("https://alice:s3cret@mlflow.example:5000/x") == "https://***@mlflow.example:5000/x"
    assert shown_uri("sqlite:////tmp/state/mlflow.db") == "sqlite:////tmp/state/mlflow.db"
