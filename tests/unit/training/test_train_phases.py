"""Training features: the two-phase transfer schedule, per-epoch checkpoints and resume,
precision and XLA flags, and the one-line refusals that come before any training."""

from __future__ import annotations

import time
from contextlib import ExitStack

import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.training import prepare_splits


def no_runs() -> bool:
    """True when this test's own store holds no run at all."""
    from cnnops.tracking.stores import use_tracking_store

    use_tracking_store()
    return mlflow.search_runs(search_all_experiments=True).empty


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
