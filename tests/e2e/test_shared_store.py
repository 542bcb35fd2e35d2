"""The whole pipeline against a shared MLflow server on PostgreSQL 15, with PostgreSQL restarted
while the model trains: transient store errors are retried, the run finishes, and the version and
its decision are rows in PostgreSQL. A lasting outage is one line naming the store."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from support.commands import CNNOPS
from support.images import write_images

from cnnops.core.retries import STORE_RETRIES

TRAINING_STARTS_WITHIN = 600  # seconds, on 2 shared cores: ingest, validate and split come first
RUN_ENDS_WITHIN = 900


def cli_env(home: Path, uri: str) -> dict[str, str]:
    env = {**os.environ, "CNNOPS_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    for variable in ("BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        env.pop(variable, None)
    return env


def training_has_logged_an_epoch(uri: str) -> bool:
    """Whether the store holds a running training run with its first epoch's loss."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [experiment.experiment_id for experiment in client.search_experiments()]
    return bool(ids) and bool(
        client.search_runs(ids, "attributes.status = 'RUNNING' and metrics.loss >= 0", max_results=1)
    )


def wait_for_training(uri: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TRAINING_STARTS_WITHIN
    while not training_has_logged_an_epoch(uri):
        assert proc.poll() is None, "the run ended before training logged an epoch"
        assert time.monotonic() < deadline, f"training logged no epoch within {TRAINING_STARTS_WITHIN} s"
        time.sleep(0.5)


def registry_rows(store: str, name: str) -> dict:
    """What PostgreSQL itself holds for the registered model: versions, aliases, and the decision
    tag on each version's run."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(store)
    try:
        with engine.connect() as db:
            versions = db.execute(
                sqlalchemy.text("SELECT version, run_id FROM model_versions WHERE name = :name"), {"name": name}
            ).all()
            aliases = dict(
                db.execute(
                    sqlalchemy.text("SELECT alias, version FROM registered_model_aliases WHERE name = :name"),
                    {"name": name},
                ).all()
            )
            decisions = dict(
                db.execute(sqlalchemy.text("SELECT run_uuid, value FROM tags WHERE key = 'cnnops.gate_decision'")).all()
            )
    finally:
        engine.dispose()
    return {"versions": {version: decisions.get(run_id) for version, run_id in versions}, "aliases": aliases}


@pytest.mark.pipeline
@pytest.mark.server
def test_the_pipeline_survives_a_postgres_restart_during_training(shared_server, tmp_path):
    source = write_images(tmp_path / "images", per_class=24, seed=3)
    home, uri, postgres = tmp_path / "state", shared_server["uri"], shared_server["postgres"]
    args = ["run", "--data", str(source), "--epochs", "6", "--set", "train.batch_size=16"]
    proc = subprocess.Popen(
        [str(CNNOPS), *args, "--set", "train.patience=20"],
        env=cli_env(home, uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_training(uri, proc)
        postgres.restart(down_seconds=2)
        restarted_mid_run = proc.poll() is None
        out, err = proc.communicate(timeout=RUN_ENDS_WITHIN)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert restarted_mid_run, "the run had finished before PostgreSQL came back"
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    # The server met the restart (its pooled connections died with it) and answered the retry.
    assert "OperationalError" in shared_server["log"].read_text()
    status = subprocess.run(
        [str(CNNOPS), "status", "--json"], env=cli_env(home, uri), capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr[-2000:]
    (model,) = json.loads(status.stdout)["models"]
    (version,) = model["versions"]
    assert version["version"] == 1 and version["registration"] == "complete"
    assert version["decision"] in {"champion", "challenger"} and version["aliases"] == [version["decision"]]
    rows = registry_rows(postgres.uri, model["name"])
    assert rows == {"versions": {1: version["decision"]}, "aliases": {version["decision"]: 1}}
    # Every artifact went through the server's proxy: nothing in the client's state folder.
    assert not (home / "mlflow").exists()
    assert list(shared_server["artifacts"].rglob("MLmodel"))


@pytest.mark.server
def test_a_lasting_postgres_outage_is_one_line_naming_the_store(shared_server, tmp_path):
    """PostgreSQL stopped for good under a server that has served the registry: the server answers
    500s, the client's bounded retries (cnnops.retries) run out, and `cnnops status` says which
    store failed."""
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=shared_server["uri"]).search_registered_models() == []
    shared_server["postgres"].stop()
    done = subprocess.run(
        [str(CNNOPS), "status"],
        env=cli_env(tmp_path / "state", shared_server["uri"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("cnnops: error:")]
    assert f"the MLflow store {shared_server['uri']} failed" in line and "fault of the store" in line
    # One request and cnnops's five retries (MLflow's own default is seven, about four minutes).
    answers = [line for line in shared_server["log"].read_text().splitlines() if "/registered-models/search" in line]
    assert [line.rsplit('"', 1)[1].strip() for line in answers[1:]] == ["503 Service Unavailable"] * (
        1 + int(STORE_RETRIES["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    )
