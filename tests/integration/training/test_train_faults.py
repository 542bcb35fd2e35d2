"""One training interrupted every way, through `cnnops train` against the project's tracking
server: killed outright, its run is retired by `--fresh`, which starts a new run from epoch 1; the
server killed under that run stops it with one line naming the store and nothing registered; once
the server is back on the same store, `--resume` finishes the run from its checkpoint without
training an epoch again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.commands import CNNOPS
from support.images import write_images
from support.training import prepare_splits, wait_for_checkpoint

from cnnops.core.processes import free_port, stop_process_group

EPOCHS = 8


def start_server(port: int, log: Path) -> subprocess.Popen:
    """The project's tracking server on this test's embedded store, in its own process group."""
    from cnnops.core.processes import start_process, wait_until
    from cnnops.tracking.server import answers, server_command, server_environment

    proc = start_process(server_command(port), log, server_environment())
    problem = wait_until(lambda: answers(f"http://127.0.0.1:{port}"), proc, 120, "the MLflow server")
    assert problem is None, f"{problem}:\n{log.read_text()[-3000:]}"
    return proc


def checkpointed_epoch(checkpoints: Path, run_id: str) -> int:
    return json.loads((checkpoints / run_id / "progress.json").read_text())["epoch"]


@pytest.mark.slow
@pytest.mark.server
def test_a_training_killed_started_fresh_cut_off_from_its_store_and_resumed(state_home, tmp_path):
    from mlflow.tracking import MlflowClient

    splits, _ = prepare_splits(tmp_path, write_images(tmp_path / "images", per_class=20))
    port, log = free_port(), tmp_path / "server.log"
    uri = f"http://127.0.0.1:{port}"
    model = tmp_path / "model"
    command = [
        str(CNNOPS),
        "train",
        "--splits",
        str(splits),
        "--out",
        str(model),
        "--epochs",
        str(EPOCHS),
        "--set",
        "train.batch_size=16",
        "--set",
        f"train.patience={EPOCHS + 2}",
        "--set",
        "train.min_steps=0",
    ]
    env = {**os.environ, "CNNOPS_HOME": str(state_home), "MLFLOW_TRACKING_URI": uri}
    checkpoints = state_home / "checkpoints"

    server = start_server(port, log)
    try:
        # (1) A training SIGKILLed, with its whole process group, once an epoch is checkpointed.
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            progress = wait_for_checkpoint(checkpoints, first, seconds=240)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL, first.stdout.read()  # killed mid-run, not finished
        killed = progress["run_id"]
        killed_at = checkpointed_epoch(checkpoints, killed)
        assert 1 <= killed_at < EPOCHS
        assert not (model / "model.keras").exists()

        # (2) --fresh retires the killed run and trains a new one from epoch 1; the server is
        # killed under it once its third epoch is checkpointed.
        fresh = subprocess.Popen(
            [*command, "--fresh"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            progress = wait_for_checkpoint(checkpoints, fresh, after_epoch=2, skip={killed}, seconds=240)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            server_killed = time.monotonic()
            out, err = fresh.communicate(timeout=150)  # the bounded retries: about 30 s
        finally:
            stop_process_group(fresh)
        print(f"train stopped {time.monotonic() - server_killed:.0f} s after the server was killed")
        run_id = progress["run_id"]
        assert run_id != killed
        assert (
            f"cnnops: train: starting over: run {killed}, interrupted after epoch {killed_at}, is ended as KILLED "
            "and its checkpoint deleted"
        ) in err
        assert "resuming" not in err
        assert not (checkpoints / killed).exists()
        first_epoch_line = next(line for line in err.splitlines() if "train: epoch " in line)
        assert f"epoch 1/{EPOCHS}" in first_epoch_line  # a new run, not the killed one's weights

        # The server's loss: one line naming the store, as a fault, and exit status 2.
        assert fresh.returncode == 2, err[-3000:]
        assert "Traceback" not in err + out
        lines = err.splitlines()
        assert lines[-1].startswith(f"cnnops: error: the MLflow store {uri} failed (")
        assert "this is a fault of the store, not a missing model" in lines[-1]
        # Nothing between the last logged epoch's progress line and that line: no retry notices, no
        # second error. The epoch whose metrics failed was checkpointed first (its line never came).
        stopped_at = checkpointed_epoch(checkpoints, run_id)
        assert 3 <= stopped_at < EPOCHS
        assert lines[-2].startswith(f"cnnops: train: epoch {stopped_at - 1}/{EPOCHS} loss "), err
        assert [line for line in lines if line.startswith("cnnops: ") and " train: " not in line] == [lines[-1]]
        assert "Retrying" not in err
        assert not (model / "model.keras").exists()

        # (3) The server back on the same store: --resume finishes the run from its checkpoint.
        server = start_server(port, log)
        resumed = subprocess.run([*command, "--resume", run_id], env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"cnnops: train: resuming run {run_id} after epoch {stopped_at}" in resumed.stderr
        first_epoch_line = next(line for line in resumed.stderr.splitlines() if "train: epoch " in line)
        assert f"epoch {stopped_at + 1}/{EPOCHS}" in first_epoch_line  # finished epochs are not trained again

        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert client.get_run(killed).info.status == "KILLED"
        # Every epoch once, from epoch 1 (the one whose metrics the store missed is backfilled).
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(EPOCHS))
        # The killed run and the fresh one; resuming opened no third.
        assert {found.info.run_id for found in client.search_runs([run.info.experiment_id])} == {killed, run_id}
        assert client.search_registered_models() == []  # training registers nothing, failed or not
        assert (model / "model.keras").is_file()
        assert len(json.loads((model / "history.json").read_text())["loss"]) == EPOCHS
        assert not (checkpoints / run_id).exists()  # a finished run leaves no checkpoint behind
    finally:
        stop_process_group(server)
