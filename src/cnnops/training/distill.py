"""Distillation: a student learns from the labels and from a teacher's softened probabilities, so a
small, fast network keeps much of a big one's accuracy.

The teacher's probabilities on the training images are computed once, before training, and packed
beside each label as the target row `[label, p_1 .. p_k]`. The loss mixes cross-entropy on the
label (weight alpha) with cross-entropy against the teacher's distribution, both softened by the
temperature (weight 1 - alpha, scaled by T^2 so its gradients keep their size as T changes).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from keras import ops

from cnnops.contracts.model import ModelSpec, read_model_spec
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.modeling.inputs import make_dataset, predict_manifest
from cnnops.settings.config import DistillConfig

EPSILON = 1e-7
# CPU throughput: at most this many images per batch, timed for about this long (and a bounded count).
SPEED_BATCH, SPEED_SECONDS, SPEED_MAX_CALLS = 64, 2.0, 200


def resolve_teacher(reference: str) -> Path:
    """A teacher folder from a model folder path (the sweep's best, any `cnnops train` output) or a
    registered version: `NAME@ALIAS` or `NAME:VERSION`, exported the way serving exports it."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    name, sep, ref = reference.partition("@") if "@" in reference else reference.partition(":")
    if not sep or not name or not ref:
        raise CnnopsError(
            f"--distill-from {reference}: not a model folder, and not NAME@ALIAS or NAME:VERSION of a registered model."
        )
    from cnnops.inference.export import export_registered

    return export_registered(name, ref).folder


def load_teacher(folder: Path, spec: ModelSpec) -> keras.Model:
    """The teacher's model, refused unless it reads the same images into the same classes."""
    if not (folder / "model.keras").is_file():
        raise CnnopsError(f"{folder} holds no model.keras; distil from a model folder or a registered version.")
    teacher = read_model_spec(folder)
    if teacher.class_names != spec.class_names:
        raise CnnopsError(
            f"the teacher in {folder} predicts {', '.join(teacher.class_names)}; the data has "
            f"{', '.join(spec.class_names)}. Distil from a model of the same classes."
        )
    if (teacher.size, teacher.mode) != (spec.size, spec.mode):
        raise CnnopsError(
            f"the teacher in {folder} takes {teacher.height}x{teacher.width} {teacher.mode} "
            f"images; the data is {spec.height}x{spec.width} {spec.mode}. Distil on the same data."
        )
    say(f"train: distilling from the {teacher.architecture} in {folder}")
    return keras.saving.load_model(folder / "model.keras", compile=False)


def teacher_targets(teacher: keras.Model, spec: ModelSpec, manifest: pd.DataFrame) -> np.ndarray:
    """One row per image: its label index, then the teacher's probabilities."""
    index = spec.class_index
    labels = np.array([index[label] for label in manifest["label"]], dtype=np.float32)
    return np.column_stack([labels, predict_manifest(teacher, spec, manifest)]).astype(np.float32)


@keras.saving.register_keras_serializable(package="cnnops")
class DistillationLoss(keras.losses.Loss):
    """alpha * CE(label) + (1 - alpha) * T^2 * CE(teacher^(1/T), student^(1/T)), on packed targets."""

    def __init__(self, alpha: float = 0.3, temperature: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha, self.temperature = alpha, temperature

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = ops.cast(y_true[:, 0], "int32")
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred)
        # The models end in a softmax: log-probabilities are logits up to a constant, so dividing
        # them by T and re-normalising softens each distribution.
        soft_teacher = ops.softmax(ops.log(y_true[:, 1:] + EPSILON) / self.temperature)
        log_soft_student = ops.log_softmax(ops.log(ops.cast(y_pred, "float32") + EPSILON) / self.temperature)
        soft = -ops.sum(soft_teacher * log_soft_student, axis=-1) * self.temperature**2
        return self.alpha * hard + (1.0 - self.alpha) * soft

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="cnnops")
def packed_accuracy(y_true: Any, y_pred: Any) -> Any:
    """Accuracy against the label column of a packed target."""
    return keras.metrics.sparse_categorical_accuracy(y_true[:, :1], y_pred)


def distillation_objective(config: DistillConfig) -> tuple[keras.losses.Loss, list[keras.metrics.Metric]]:
    """Loss and metrics for packed targets; the metric keeps the name `accuracy` so curves, early
    stopping and the sweep read a distilled run like any other."""
    return (
        DistillationLoss(config.alpha, config.temperature),
        [keras.metrics.MeanMetricWrapper(packed_accuracy, name="accuracy")],
    )


def log_distillation(
    teacher: keras.Model, student: keras.Model, spec: ModelSpec, val: pd.DataFrame, config: Any
) -> dict[str, dict[str, float]]:
    """Student and teacher side by side on the val split: accuracy, size and CPU speed."""
    pixels = np.concatenate([batch.numpy() for batch, _ in make_dataset(val.head(SPEED_BATCH), spec, SPEED_BATCH)])
    index = spec.class_index
    truth = np.array([index[label] for label in val["label"]])
    table = {}
    for role, model in (("teacher", teacher), ("student", student)):
        predicted = predict_manifest(model, spec, val).argmax(axis=1)
        table[role] = {
            "val_accuracy": float((predicted == truth).mean()),
            "n_params": float(model.count_params()),
            "cpu_images_per_second": cpu_images_per_second(model, pixels),
        }
    mlflow.log_metrics({f"distill.{role}.{key}": value for role, row in table.items() for key, value in row.items()})
    mlflow.log_dict(
        {"alpha": config.distill.alpha, "temperature": config.distill.temperature, **table},
        "distillation/comparison.json",
    )
    mlflow.log_text(format_comparison(table), "distillation/comparison.md")
    for line in format_comparison(table).splitlines():
        say(f"train: {line}")
    return table


def cpu_images_per_second(model: keras.Model, pixels: np.ndarray) -> float:
    """Steady-state inference speed on the CPU: one warm-up call, then a bounded timed loop."""
    with cpu_device():
        model.predict_on_batch(pixels)
        calls, started = 0, time.perf_counter()
        while calls < SPEED_MAX_CALLS and (calls < 3 or time.perf_counter() - started < SPEED_SECONDS):
            model.predict_on_batch(pixels)
            calls += 1
        return calls * len(pixels) / (time.perf_counter() - started)


def cpu_device() -> contextlib.AbstractContextManager[Any]:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.device("/CPU:0")
    return contextlib.nullcontext()


def format_comparison(table: dict[str, dict[str, float]]) -> str:
    rows = ["| model | val accuracy | parameters | CPU images/s |", "|---|---:|---:|---:|"]
    rows += [
        f"| {role} | {row['val_accuracy']:.4f} | {int(row['n_params']):,} | {row['cpu_images_per_second']:,.0f} |"
        for role, row in table.items()
    ]
    return "\n".join(rows) + "\n"
