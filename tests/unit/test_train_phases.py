"""Training features: the two-phase transfer schedule, per-epoch checkpoints and resume,
precision and XLA flags, and the one-line refusals that come before any training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path

import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.training import train_candidate


def prepare_splits(work: Path, source: Path, **overrides) -> tuple[Path, object]:
    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.settings.config import build_config

    config = build_config(overrides={"data.source": str(source), "train.batch_size": 16, **overrides})
    ingest_source(config, work / "dataset")
    split_dataset(work / "dataset", {name: work / "splits" / name for name in SPLITS}, config)
    return work / "splits", config


def no_runs() -> bool:
    """True when this test's own store holds no run at all."""
    from cnnops.tracking.stores import use_tracking_store

    use_tracking_store()
    return mlflow.search_runs(search_all_experiments=True).empty


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


def test_resuming_with_a_different_config_is_refused_before_training(state_home, tmp_path):
    from cnnops.contracts.dataset import read_dataset_info
    from cnnops.contracts.model import TrainingState
    from cnnops.core.errors import CnnopsError
    from cnnops.training.checkpoints import checkpoint_dir, write_checkpoint
    from cnnops.training.train import train_model

    splits, config = prepare_splits(tmp_path, write_images(tmp_path / "images", per_class=10))
    folder = checkpoint_dir("abc123")

    progress = TrainingState(
        run_id="abc123",
        config=config.model_dump(mode="json"),
        epoch=2,
        phase=0,
        phase_start=0,
        fingerprint=read_dataset_info(splits / "train").fingerprint,
        history={},
        phases=[],
        early_stopping=None,
        plateau=None,
    )
    write_checkpoint(folder, keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), progress, None)
    changed = config.model_copy(update={"train": config.train.model_copy(update={"learning_rate": 0.1})})
    with pytest.raises(
        CnnopsError,
        match=r"^cannot resume run abc123: its config differs "
        r"\(train.learning_rate 0.002 -> 0.1\)",
    ):
        train_model(splits / "train", splits / "val", tmp_path / "m", changed, resume="abc123")
    with pytest.raises(CnnopsError, match=r"^no checkpoint of run nope"):
        train_model(splits / "train", splits / "val", tmp_path / "m", config, resume="nope")
    assert no_runs()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.batch_size": "64"}, r"^the train split has 24 images, fewer than one batch of train.batch_size 64"),
        ({"train.fine_tune_epochs": "2"}, r"^simple-cnn is trained whole from the start, so it has no backbone"),
        (
            {"train.architecture": "mobilenet_v2", "train.working_size": "32", "train.weights": "/nowhere.weights.h5"},
            r"^train.weights is /nowhere.weights.h5: not 'none', 'imagenet' or an existing weights file",
        ),
    ],
)
def test_bad_training_requests_are_one_line_errors_before_any_run(
    make_images, state_home, tmp_path, overrides, message
):
    from cnnops.core.errors import CnnopsError
    from cnnops.settings.config import build_config
    from cnnops.training.train import train_model

    splits, config = prepare_splits(tmp_path, make_images(per_class=10))
    bad = build_config(overrides={"data.source": config.data.source, "train.batch_size": 16, **overrides})
    with pytest.raises(CnnopsError, match=message):
        train_model(splits / "train", splits / "val", tmp_path / "m", bad)
    assert no_runs()


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


def test_a_rerun_claims_the_newest_open_run_of_the_same_training_and_no_other(state_home, tmp_path):
    from mlflow.tracking import MlflowClient

    from cnnops.contracts.model import TrainingState
    from cnnops.settings.config import build_config
    from cnnops.tracking.stores import use_tracking_store
    from cnnops.training.checkpoints import CheckpointBusy, checkpoint_dir, locked_checkpoint, write_checkpoint
    from cnnops.training.train import claim_interrupted

    use_tracking_store()
    client = MlflowClient()
    experiment = client.create_experiment("claims")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    config = build_config(overrides={"sweep.parent_run": "parent-of-the-killed-pipeline"})

    def checkpoint(status: str, **overrides) -> str:
        run_id = client.create_run(experiment).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        raw = build_config(overrides={"sweep.parent_run": "parent-of-the-killed-pipeline", **overrides})
        state = TrainingState(run_id=run_id, config=raw.model_dump(mode="json"), fingerprint="same", epoch=2)
        write_checkpoint(checkpoint_dir(run_id), model, state, None)
        time.sleep(0.05)  # distinct write times: the newest is the last written
        return run_id

    other_candidate = checkpoint("RUNNING", **{"train.learning_rate": "0.01"})
    older = checkpoint("FAILED")
    newer = checkpoint("RUNNING")
    finished = checkpoint("FINISHED")  # killed after its run ended, before its checkpoint went
    rerun = config.model_copy(update={"sweep": config.sweep.model_copy(update={"parent_run": "a-new-parent"})})
    raw = rerun.model_dump(mode="json")

    with ExitStack() as held:
        assert claim_interrupted(raw, "other splits", held) is None
        claimed = claim_interrupted(raw, "same", held)
        assert claimed is not None and claimed.run_id == newer  # the parent run's id is no difference
        assert not checkpoint_dir(finished).exists()
        busy = pytest.raises(CheckpointBusy, match=rf"^run {newer} is being trained by another process")
        with busy, locked_checkpoint(newer):
            pass
        # While this process trains `newer`, a second rerun takes the older one, never `newer`.
        with ExitStack() as other:
            second = claim_interrupted(raw, "same", other)
            assert second is not None and second.run_id == older
    assert checkpoint_dir(other_candidate).exists() and checkpoint_dir(older).exists()


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


def test_backfill_logs_each_checkpointed_epoch_once(state_home):
    """A kill between an epoch's checkpoint and its metrics leaves epochs unlogged: the resumed
    run logs them, under the run-wide name and the phase's prefix, and skips those already logged."""
    from cnnops.contracts.model import PhaseSummary, TrainingState
    from cnnops.tracking.stores import use_tracking_store
    from cnnops.training.train import Phase, backfill_metrics

    use_tracking_store()
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("backfill")).info.run_id
    epoch_0 = {"loss": 0.9, "val_accuracy": 0.5}
    for key, value in epoch_0.items():  # epoch 0 reached MLflow before the kill, as training logs it
        client.log_metric(run_id, key, value, step=0)
        client.log_metric(run_id, f"head.{key}", value, step=0)
    progress = TrainingState(
        run_id=run_id,
        config={},
        fingerprint="f",
        phase=1,
        epoch=4,
        phase_start=2,
        history={"loss": [0.9, 0.8, 0.7, 0.6], "val_accuracy": [0.5, 0.6, 0.7, 0.8]},
        phases=[
            PhaseSummary(name="head", first_epoch=1, last_epoch=2, best_epoch=2, learning_rate=0.1, trainable_weights=2)
        ],
    )
    phases = [Phase("head", 2, 0.1), Phase("fine_tune", 3, 0.01)]
    backfill_metrics(run_id, progress, phases)

    def steps(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    assert steps("loss") == [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6)]
    assert steps("val_accuracy") == [(0, 0.5), (1, 0.6), (2, 0.7), (3, 0.8)]
    assert steps("head.loss") == [(0, 0.9), (1, 0.8)]
    assert steps("fine_tune.loss") == [(2, 0.7), (3, 0.6)]
    backfill_metrics(run_id, progress, phases)  # a second resume logs nothing again
    assert len(steps("loss")) == 4
