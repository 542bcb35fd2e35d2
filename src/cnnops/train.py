"""Train: build the configured CNN, fit it on the train split with early stopping on the val split,
and record everything in one MLflow run (params, resolved config, per-epoch metrics, the model with
its signature and input spec, provenance tags). Writes a model folder for the next steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature

from cnnops.artifacts import TRAIN_HASHES_ARTIFACT, ModelSpec, read_dataset_info, read_manifest, write_json
from cnnops.config import Config, flatten_config
from cnnops.console import say
from cnnops.inputs import input_errors_as_user_errors, make_dataset, make_deterministic
from cnnops.model import ModelOptions, augmentation_strengths, build_model
from cnnops.registry import model_name_for
from cnnops.tracking import ensure_experiment, git_commit, log_dataset, use_tracking_store

# A val-loss gain smaller than this is noise: it neither resets early stopping nor delays an LR cut.
MIN_DELTA = 1e-3


def train_model(
    train_dir: Path, val_dir: Path, out_dir: Path, config: Config, pipeline_run: str = "manual"
) -> dict[str, Any]:
    """Fit a model and write the model folder; returns the run record (run id, model URI)."""
    info = read_dataset_info(train_dir)
    spec = ModelSpec(class_names=list(info["classes"]), height=info["height"], width=info["width"],
                     mode=info["mode"], architecture=config.train.architecture)
    make_deterministic(config.seed)
    with precision_policy("mixed_float16" if config.train.mixed_precision else None):
        return fit_and_log(spec, info, train_dir, val_dir, out_dir, config, pipeline_run)


def fit_and_log(spec: ModelSpec, info: dict[str, Any], train_dir: Path, val_dir: Path, out_dir: Path,
                config: Config, pipeline_run: str) -> dict[str, Any]:
    """Build, fit and save inside one MLflow run, tagged with where the data and code came from."""
    options = ModelOptions(weights=config.train.weights, trainable_layers=config.train.trainable_layers,
                           working_size=config.train.working_size,
                           augment=augmentation_strengths(config.train.augmentation, config.train.augment))
    model = build_model(spec, options)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(config, info["n_images"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_manifest = read_manifest(train_dir)
    train_ds = make_dataset(train_manifest, spec, config.train.batch_size, shuffle=True, seed=config.seed)
    val_ds = make_dataset(read_manifest(val_dir), spec, config.train.batch_size)

    use_tracking_store()
    name = model_name_for(config, info["source"])
    experiment_id = ensure_experiment(name)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({
            "cnnops.dataset_fingerprint": info["fingerprint"],
            "cnnops.data_source": info["source"],
            "cnnops.git_commit": git_commit(),
            "mlflow.source.git.commit": git_commit(),
            "cnnops.pipeline_run": pipeline_run,
            "cnnops.registered_model": name,
            "cnnops.devices": ",".join(d.device_type for d in _devices()),
        })
        mlflow.log_params({**flatten_config(config), "n_train": info["n_images"],
                           "n_val": read_dataset_info(val_dir)["n_images"],
                           "n_params": model.count_params()})
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        mlflow.log_text("\n".join(sorted(train_manifest["sha256"])) + "\n", TRAIN_HASHES_ARTIFACT)
        log_dataset(train_manifest, info, train_dir, context="training")
        say(f"train: {spec.architecture} on {info['n_images']} images of {spec.height}x{spec.width} "
            f"{spec.mode}, {len(spec.class_names)} classes, up to {config.train.epochs} epochs")
        started = time.monotonic()
        with input_errors_as_user_errors():
            history = model.fit(
                train_ds, validation_data=val_ds, epochs=config.train.epochs, verbose=0, shuffle=False,
                callbacks=[
                    keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.train.patience,
                                                  min_delta=MIN_DELTA, restore_best_weights=True),
                    *lr_callbacks(config),
                    mlflow.keras.MlflowCallback(run),
                    EpochLine(config.train.epochs),
                ],
            )
        seconds = time.monotonic() - started
        epochs_run = len(history.history["loss"])
        best_epoch = int(np.argmin(history.history["val_loss"])) + 1
        mlflow.log_metrics({"train_seconds": seconds, "epochs_run": epochs_run, "best_epoch": best_epoch,
                            "train_images_per_second": info["n_images"] * epochs_run / seconds})
        record = save_model_folder(out_dir, model, spec, config, history.history, run.info.run_id,
                                   experiment_id, name)
    say(f"train: {epochs_run} epochs in {seconds:.0f}s, best epoch {best_epoch}, run {record['run_id']}")
    return record


def learning_rate(config: Config, n_train: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The configured rate, or a cosine decay from it to zero over every step of every epoch."""
    train = config.train
    if train.lr_schedule == "cosine":
        steps = train.epochs * max(1, -(-n_train // train.batch_size))
        return keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=steps)
    return train.learning_rate


def lr_callbacks(config: Config) -> list[keras.callbacks.Callback]:
    """Halving on a plateau, unless a schedule already drives the rate."""
    if config.train.lr_schedule != "plateau":
        return []
    return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, min_delta=MIN_DELTA,
                                              patience=max(1, config.train.patience // 2))]


@contextmanager
def precision_policy(name: str | None) -> Iterator[None]:
    """Keras' dtype policy is process-global: set it for one training, then put the old one back."""
    previous = keras.mixed_precision.global_policy()
    if name is not None:
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def save_model_folder(
    out_dir: Path, model: keras.Model, spec: ModelSpec, config: Config, history: dict[str, list[float]],
    run_id: str, experiment_id: str, registered_model: str,
) -> dict[str, Any]:
    """Write the model folder and log the model to the active MLflow run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    write_json(out_dir / "model_spec.json", spec.to_dict())
    write_json(out_dir / "config.json", config.model_dump(mode="json"))
    write_json(out_dir / "history.json", {k: [float(v) for v in vals] for k, vals in history.items()})
    example = np.zeros((1, spec.height, spec.width, spec.channels), dtype=np.uint8)
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    info = mlflow.keras.log_model(model, name="model", signature=signature,
                                  metadata={"cnnops": spec.to_dict()}, pip_requirements=model_requirements())
    mlflow.log_artifact(str(out_dir / "model_spec.json"))
    mlflow.log_artifact(str(out_dir / "history.json"))
    record = {"run_id": run_id, "experiment_id": experiment_id, "model_uri": info.model_uri,
              "model_id": info.model_id, "registered_model": registered_model}
    write_json(out_dir / "run.json", record)
    return record


def model_requirements() -> list[str]:
    """Pin what loading the model needs; spares MLflow its slow import-capture inference."""
    from importlib.metadata import version

    backend = keras.backend.backend()
    return [f"keras=={version('keras')}", f"{backend}=={version(backend)}"]


class EpochLine(keras.callbacks.Callback):
    """One progress line per epoch, readable in a terminal and in kfp logs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._start = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        say(f"train: epoch {epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.4f} "
            f"acc {logs.get('accuracy', float('nan')):.4f} val_loss {logs.get('val_loss', float('nan')):.4f} "
            f"val_acc {logs.get('val_accuracy', float('nan')):.4f} ({time.monotonic() - self._start:.1f}s)")


def _devices() -> list[Any]:
    import tensorflow as tf

    return tf.config.list_logical_devices()
