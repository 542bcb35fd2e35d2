"""Training features: the two-phase transfer schedule, per-epoch checkpoints and resume,
precision and XLA flags, and the one-line refusals that come before any training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import keras
import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.training import prepare_splits, train_candidate


@pytest.mark.slow
def test_a_backbone_trains_head_then_fine_tune_in_one_run_with_the_right_layers_frozen(
    make_images, state_home, tmp_path
):
    from cnnops.modeling.builders import find_backbone

    trained = train_candidate(
        tmp_path / "ft",
        make_images(per_class=12),
        **{
            "train.architecture": "mobilenet_v2",
            "train.working_size": "32",
            "train.epochs": "2",
            "train.fine_tune_epochs": "2",
            "train.fine_tune_layers": "10",
            "train.learning_rate": "0.01",
        },
    )
    run = MlflowClient().get_run(trained["run_id"])
    phases = json.loads(run.data.tags["cnnops.phases"])
    assert [(p["name"], p["first_epoch"], p["last_epoch"]) for p in phases] == [("head", 1, 2), ("fine_tune", 3, 4)]
    assert phases[1]["learning_rate"] == pytest.approx(0.001)

    model = keras.saving.load_model(trained["model"] / "model.keras", compile=False)
    backbone = find_backbone(model)
    head_weights = 2  # the classifier's kernel and bias
    last_ten = sum(len(layer.trainable_weights) for layer in backbone.layers[-10:])
    assert phases[0]["trainable_weights"] == head_weights
    assert phases[1]["trainable_weights"] == head_weights + last_ten
    assert [layer.name for layer in backbone.layers[:-10] if layer.trainable and layer.weights] == []

    # The model kept is the best of both phases: fine-tuning had to beat the head's best val loss.
    history = json.loads((trained["model"] / "history.json").read_text())
    best = json.loads((trained["model"] / "run.json").read_text())["best_epoch"]
    assert history["val_loss"][best - 1] <= min(history["val_loss"]) + 1e-3

    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "head.loss")] == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fine_tune.loss")] == [2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_without_repeating_epochs(state_home, tmp_path):
    splits, _ = prepare_splits(tmp_path, write_images(tmp_path / "images", per_class=80))
    epochs = 15
    command = [
        str(Path(sys.executable).parent / "cnnops"),
        "train",
        "--splits",
        str(splits),
        "--out",
        str(tmp_path / "model"),
        "--set",
        "train.batch_size=16",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        f"train.patience={epochs}",
    ]
    env = {**os.environ, "CNNOPS_HOME": str(state_home)}
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    checkpoints = state_home / "checkpoints"
    deadline = time.monotonic() + 240
    progress: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(checkpoints.glob("*/progress.json")) if checkpoints.is_dir() else []
        if found:
            try:
                progress = json.loads(found[0].read_text())
            except json.JSONDecodeError:  # replaced while being read: read it again
                continue
            if progress["epoch"] >= 3:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()  # killed mid-run, not finished
    run_id = progress["run_id"]
    stopped_at = json.loads((checkpoints / run_id / "progress.json").read_text())["epoch"]
    assert 3 <= stopped_at < epochs
    assert not (tmp_path / "model" / "model.keras").exists()

    resumed = subprocess.run(
        [*command, "--resume", run_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout
    assert f"resuming run {run_id} after epoch {stopped_at}" in resumed.stdout
    first_epoch_line = next(line for line in resumed.stdout.splitlines() if "train: epoch " in line)
    assert f"epoch {stopped_at + 1}/{epochs}" in first_epoch_line  # finished epochs are not trained again

    from cnnops.tracking.stores import use_tracking_store

    use_tracking_store()
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(epochs))
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert len(history["loss"]) == epochs
    assert not (checkpoints / run_id).exists()  # a finished run leaves no checkpoint behind


@pytest.mark.slow
def test_bfloat16_with_xla_trains_and_records_both_flags(make_images, state_home, tmp_path):
    trained = train_candidate(
        tmp_path / "bf16",
        make_images(per_class=10),
        **{"train.epochs": "1", "train.precision": "mixed_bfloat16", "train.jit_compile": "true"},
    )
    run = MlflowClient().get_run(trained["run_id"])
    assert (run.data.params["train.precision"], run.data.params["train.jit_compile"]) == ("mixed_bfloat16", "True")
    assert run.data.tags["cnnops.xla"] == "true"  # Keras did compile it, rather than fall back
    model = keras.saving.load_model(trained["model"] / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)} == {
        "mixed_bfloat16"
    }
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_fresh_after_a_kill_starts_a_new_run_and_retires_the_killed_one(state_home, tmp_path, capsys):
    from cnnops.settings.config import build_config
    from cnnops.training.train import train_model

    splits, _ = prepare_splits(tmp_path, write_images(tmp_path / "images", per_class=20))
    settings = {"train.batch_size": "16", "train.epochs": "6", "train.patience": "8", "train.min_steps": "0"}
    command = [
        str(Path(sys.executable).parent / "cnnops"),
        "train",
        "--splits",
        str(splits),
        "--out",
        str(tmp_path / "m"),
    ]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    proc = subprocess.Popen(
        command,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints, progress = state_home / "checkpoints", None
    deadline = time.monotonic() + 240
    try:
        while progress is None and time.monotonic() < deadline and proc.poll() is None:
            for path in checkpoints.glob("*/progress.json") if checkpoints.is_dir() else []:
                with suppress(json.JSONDecodeError, OSError):  # replaced while being read
                    progress = json.loads(path.read_text())
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert progress is not None and proc.returncode == -signal.SIGKILL
    killed = progress["run_id"]
    stopped_at = json.loads((checkpoints / killed / "progress.json").read_text())["epoch"]
    capsys.readouterr()

    record = train_model(
        splits / "train", splits / "val", tmp_path / "fresh", build_config(overrides=settings), fresh=True
    )
    said = capsys.readouterr().err
    assert (
        f"train: starting over: run {killed}, interrupted after epoch {stopped_at}, is ended as KILLED "
        "and its checkpoint deleted"
    ) in said
    assert "resuming" not in said and record.run_id != killed
    assert not (checkpoints / killed).exists()
    client = MlflowClient()
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(record.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(record.run_id, "loss")] == list(range(6))  # from epoch 1
