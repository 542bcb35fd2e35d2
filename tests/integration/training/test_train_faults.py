"""Training against a tracking server that is killed mid-run: the task stops with one line naming
the store, nothing is registered, and once the server is back on the same store a rerun resumes
the interrupted run from its checkpoint and finishes it."""

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


def wait_for_epoch(checkpoints: Path, proc: subprocess.Popen, seconds: float = 240) -> dict:
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
    raise AssertionError(f"no epoch checkpointed within {seconds} s (train exit status {proc.poll()})")


@pytest.mark.server
def test_a_server_killed_mid_training_is_one_line_and_a_rerun_resumes(state_home, tmp_path):
    from mlflow.tracking import MlflowClient

    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.settings.config import build_config

    config = build_config(overrides={"data.source": str(write_images(tmp_path / "images", per_class=20))})
    ingest_source(config, tmp_path / "dataset")
    split_dataset(tmp_path / "dataset", {name: tmp_path / "splits" / name for name in SPLITS}, config)
    port, log = free_port(), tmp_path / "server.log"
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(CNNOPS),
        "train",
        "--splits",
        str(tmp_path / "splits"),
        "--out",
        str(tmp_path / "model"),
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

    server = start_server(port, log)
    try:
        train = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            progress = wait_for_epoch(state_home / "checkpoints", train)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            killed_at = time.monotonic()
            out, err = train.communicate(timeout=150)  # the bounded retries: about 30 s
        finally:
            stop_process_group(train)
        print(f"train stopped {time.monotonic() - killed_at:.0f} s after the server was killed")
        assert train.returncode == 2, err[-3000:]
        assert "Traceback" not in err + out
        lines = err.splitlines()
        # Progress lines while it trained, then one line: the store, as a fault.
        assert lines[-1].startswith(f"cnnops: error: the MLflow store {uri} failed (")
        assert "this is a fault of the store, not a missing model" in lines[-1]
        # Nothing between the last epoch's progress and that line: no retry notices, no second error.
        assert lines[-2].startswith("cnnops: train: epoch 1/"), err
        assert [line for line in lines if line.startswith("cnnops: ") and " train: " not in line] == [lines[-1]]
        assert "Retrying" not in err
        assert not (tmp_path / "model" / "model.keras").exists()
        run_id = progress["run_id"]
        stopped_at = json.loads((state_home / "checkpoints" / run_id / "progress.json").read_text())["epoch"]

        server = start_server(port, log)  # back, on the same store
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"cnnops: train: resuming run {run_id} after epoch {stopped_at} (an earlier run" in rerun.stderr
        client = MlflowClient(tracking_uri=uri)
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(EPOCHS))
        assert client.search_registered_models() == []  # training registers nothing, failed or not
        assert (tmp_path / "model" / "model.keras").is_file()
    finally:
        stop_process_group(server)
