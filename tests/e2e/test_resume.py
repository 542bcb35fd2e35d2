"""A `cnnops run` SIGKILLed during training: the next `cnnops run` with the same config and data
resumes that training run from its last checkpoint, under the same MLflow run, and the pipeline
goes on to register a version."""

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

EPOCHS = 8


def wait_for_checkpoint(checkpoints: Path, proc: subprocess.Popen, seconds: float = 300) -> dict:
    """The first progress.json that names a finished epoch, polled for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        for path in checkpoints.glob("*/progress.json") if checkpoints.is_dir() else []:
            try:
                progress = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):  # replaced while being read: read it again
                continue
            if progress["epoch"] >= 1:
                return progress
        time.sleep(0.05)
    raise AssertionError(f"no epoch checkpointed within {seconds} s (cnnops run exit status {proc.poll()})")


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


@pytest.mark.pipeline
def test_a_killed_run_resumes_its_training_run_and_registers(make_images, state_home):
    from mlflow.tracking import MlflowClient

    from cnnops.settings.config import build_config
    from cnnops.settings.naming import model_name_for
    from cnnops.tracking.stores import use_tracking_store
    from cnnops.training.train import candidate_label

    source = make_images(per_class=20)
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
        f"train.patience={EPOCHS + 2}",
        "--set",
        "train.min_steps=0",
    ]
    env = {**os.environ, "CNNOPS_HOME": str(state_home)}
    killed = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    checkpoints = state_home / "checkpoints"
    try:
        progress = wait_for_checkpoint(checkpoints, killed)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # the CLI, kfp and the train task: the whole group
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

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (log_line,) = [line for line in resumed.stdout.splitlines() if line.startswith("  log         ")]
    logged = Path(log_line.split()[-1]).read_text()
    assert (
        f"cnnops: train: resuming run {run_id} after epoch {stopped_at} (an earlier run was interrupted); "
        "pass --fresh to start over"
    ) in resumed.stderr
    trained = re.findall(r"train: epoch (\d+)/(\d+) ", logged)
    assert trained == [(str(epoch), str(EPOCHS)) for epoch in range(stopped_at + 1, EPOCHS + 1)]  # none again
    assert not folder.exists()  # a finished run leaves no checkpoint behind

    use_tracking_store()
    client = MlflowClient()
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
    (version,) = client.search_model_versions(f"name='{name}'")
    assert version.run_id == run_id
    aliases = client.get_model_version(name, version.version).aliases
    assert aliases in (["champion"], ["challenger"])  # registered with its decision
