"""The whole pipeline against a shared MLflow server on PostgreSQL 15 (`MLFLOW_TRACKING_URI`, the
subprocess runner). A `cnnops run` SIGKILLed during training: the next `cnnops run` with the same
config and data resumes that training run from its last checkpoint, under the same MLflow run, and
rides out PostgreSQL restarted while it trains (transient store errors are retried); it registers
and packages a champion through the server, nothing kept locally, and the version and its decision
are rows in PostgreSQL. A lasting outage is one line naming the store."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.commands import CNNOPS
from support.images import write_images
from support.training import wait_for_checkpoint

from cnnops.core.processes import stop_process_group
from cnnops.core.retries import STORE_RETRIES

TRAINING_STARTS_WITHIN = 600  # seconds, on 2 shared cores: ingest, validate and split come first
RUN_ENDS_WITHIN = 900
# Enough for the 30 tiny images a class to make a champion of at least 0.8 test accuracy.
EPOCHS = 12


def cli_env(home: Path, uri: str) -> dict[str, str]:
    env = {**os.environ, "CNNOPS_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    for variable in ("BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        env.pop(variable, None)
    return env


def is_locked(lock: Path) -> bool:
    """Whether some process still holds the checkpoint's lock (is still training that run)."""
    handle = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False


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
def test_a_killed_run_resumes_through_a_postgres_restart_and_registers_over_http(shared_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from cnnops.settings.config import build_config
    from cnnops.settings.naming import model_name_for
    from cnnops.training.train import candidate_label

    source = write_images(tmp_path / "images", per_class=30, seed=1)
    home, uri, postgres = tmp_path / "state", shared_server["uri"], shared_server["postgres"]
    command = [
        str(CNNOPS),
        "run",
        "--data",
        str(source),
        "--epochs",
        str(EPOCHS),
        "--set",
        "train.batch_size=16",
        "--set",
        "train.patience=20",
        "--set",
        "train.min_steps=0",
    ]
    env = cli_env(home, uri)
    checkpoints = home / "checkpoints"

    # (1) `cnnops run` SIGKILLed, with kfp and its train task (the whole group), once an epoch is
    # checkpointed.
    killed = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        progress = wait_for_checkpoint(checkpoints, killed, seconds=TRAINING_STARTS_WITHIN)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL, killed.stdout.read() if killed.stdout else ""
    run_id = progress["run_id"]
    folder = checkpoints / run_id
    deadline = time.monotonic() + 15  # the killed train task's exit, which drops its lock
    while is_locked(folder / "lock") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_locked(folder / "lock")  # no train task outlived the kill
    stopped_at = json.loads((folder / "progress.json").read_text())["epoch"]
    assert 1 <= stopped_at < EPOCHS

    # (2) The same `cnnops run` again: it resumes that training run, and PostgreSQL restarts under
    # the server once the resumed run has trained an epoch.
    rerun = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for_checkpoint(checkpoints, rerun, after_epoch=stopped_at, seconds=TRAINING_STARTS_WITHIN)
        postgres.restart(down_seconds=2)
        restarted_mid_run = rerun.poll() is None
        out, err = rerun.communicate(timeout=RUN_ENDS_WITHIN)
    finally:
        stop_process_group(rerun)
    assert restarted_mid_run, "the run had finished before PostgreSQL came back"
    assert rerun.returncode == 0, out[-3000:] + err[-3000:]
    # The server met the restart (its pooled connections died with it) and answered the retry.
    assert "OperationalError" in shared_server["log"].read_text()

    # Resumed, not started over: the epochs the killed run finished are not trained again.
    (log_line,) = [line for line in out.splitlines() if line.startswith("  log         ")]
    logged = Path(log_line.split()[-1]).read_text()
    assert (
        f"cnnops: train: resuming run {run_id} after epoch {stopped_at} (an earlier run was interrupted); "
        "pass --fresh to start over"
    ) in err
    trained = re.findall(r"train: epoch (\d+)/(\d+) ", logged)
    assert trained == [(str(epoch), str(EPOCHS)) for epoch in range(stopped_at + 1, EPOCHS + 1)]  # none again
    assert not folder.exists()  # a finished run leaves no checkpoint behind

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["cnnops.resumed_after_epoch"] == str(stopped_at)
    for metric in ("loss", "val_accuracy", "train.loss"):  # every epoch once: backfilled, never twice
        assert [m.step for m in client.get_metric_history(run_id, metric)] == list(range(EPOCHS)), metric
    config = build_config(overrides={"data.source": str(source)})
    name = model_name_for(config)
    training_runs = [
        found.info.run_id
        for found in client.search_runs([run.info.experiment_id])
        if found.info.run_name == candidate_label(config)
    ]
    assert training_runs == [run_id]  # the rerun opened no second training run
    (registered,) = client.search_model_versions(f"name='{name}'")
    assert registered.run_id == run_id
    assert client.get_model_version(name, registered.version).aliases in (["champion"], ["challenger"])

    # The registry as `cnnops status` reads it over HTTP, and as PostgreSQL itself holds it.
    status = subprocess.run([str(CNNOPS), "status", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    (model,) = json.loads(status.stdout)["models"]
    (version,) = model["versions"]
    assert version["version"] == 1 and version["registration"] == "complete"
    assert version["decision"] in {"champion", "challenger"} and version["aliases"] == [version["decision"]]
    assert model["champion"]["version"] == 1 and model["champion"]["test_accuracy"] >= 0.8
    assert model["champion"]["evidence"] is None or isinstance(model["champion"]["evidence"], dict)
    rows = registry_rows(postgres.uri, model["name"])
    assert rows == {"versions": {1: version["decision"]}, "aliases": {version["decision"]: 1}}
    # Registered through the server: nothing in the client's state folder, every artifact in the
    # server's proxied folder.
    assert not (home / "mlflow").exists()
    artifacts = shared_server["artifacts"]
    assert list(artifacts.rglob("MLmodel")) and list(artifacts.rglob("gate/decision-v1.json"))
    # The champion branch packaged it, reading the model back over HTTP, and so does `cnnops bento`.
    assert list((home / "pipeline-root").rglob("package/bento/cnnops.bento"))
    bento = subprocess.run(
        [str(CNNOPS), "bento", "--model-name", model["name"]], env=env, capture_output=True, text=True, timeout=900
    )
    assert bento.returncode == 0, bento.stderr[-2000:]
    assert f"({model['name']} v1)" in bento.stdout


@pytest.mark.server
def test_a_lasting_postgres_outage_is_one_line_naming_the_store(shared_server, tmp_path):
    """PostgreSQL stopped for good under a server that has served the registry: the server answers
    500s, the client's bounded retries (cnnops.core.retries) run out, and `cnnops status` says which
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
