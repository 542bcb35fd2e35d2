"""Batchnorm statistics recomputed from the training images (precise BN), so that what validation,
evaluation and serving read is the statistics of the current weights, not a moving average that a
short epoch has barely moved from its start."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

# Images the statistics are averaged over: enough for a stable mean and variance per channel.
RECALIBRATION_IMAGES = 2048


def own_batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The model's own batchnorm layers, not those of a nested pretrained backbone, whose
    statistics stay the pretrained ones."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@contextmanager
def nested_models_frozen(model: keras.Model) -> Iterator[None]:
    """Freeze every nested model for the duration: Keras runs a frozen batchnorm layer in
    inference mode even in a training-mode call, so a backbone's statistics cannot move. Each
    layer's own flag is put back afterwards (a partly thawed backbone stays partly thawed)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    flags = [(layer, layer.trainable) for model_ in nested for layer in [model_, *sublayers(model_)]]
    for model_ in nested:
        model_.trainable = False
    try:
        yield
    finally:
        for layer, trainable in flags:
            layer.trainable = trainable


def sublayers(model: keras.Model) -> Iterator[keras.Layer]:
    """Every layer inside `model`, at any depth."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from sublayers(layer)


def recalibrate_batchnorm(model: keras.Model, batches: Iterable[Any], step: Callable[[Any], Any] | None = None) -> int:
    """Replace every own batchnorm layer's moving mean and variance by their average over
    `batches` of images, computed in training mode; returns the batches used (0: no such layers).

    Each batch runs with momentum 0, which leaves that batch's statistics in the moving
    variables; they are summed here and the averages written back at the end. `step` is a
    `training_call(model)` to reuse across calls; it must be first called (and so traced) here,
    since a trace made at another momentum keeps that momentum. On an error the statistics are put
    back as they were.
    """
    norms = own_batchnorm_layers(model)
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    before = [
        (keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance))
        for layer in norms
    ]
    sums = [(np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)) for layer in norms]
    used = 0
    try:
        for layer in norms:
            layer.momentum = 0.0
        with nested_models_frozen(model):
            used = run_batches(step or training_call(model), batches, norms, sums)
        if used:
            for layer, (mean, variance) in zip(norms, sums, strict=True):
                layer.moving_mean.assign((mean / used).astype("float32"))
                layer.moving_variance.assign((variance / used).astype("float32"))
    except BaseException:
        for layer, (mean, variance) in zip(norms, before, strict=True):  # as they were, not one batch's
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return used


def training_call(model: keras.Model) -> Callable[[Any], Any]:
    """The model called in training mode, compiled as a graph on TensorFlow: faster than eager, and
    Keras' augmentation layers only accept the uint8 images a cnnops model takes inside a graph."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda images: model(images, training=True))
    return lambda images: model(images, training=True)


def run_batches(
    step: Callable[[Any], Any],
    batches: Iterable[Any],
    norms: list[keras.layers.BatchNormalization],
    sums: list[tuple[np.ndarray, np.ndarray]],
) -> int:
    """Call `step` on each batch and add each layer's batch statistics to `sums`; returns the count."""
    used = 0
    for images in batches:
        step(images)
        used += 1
        for layer, (mean, variance) in zip(norms, sums, strict=True):
            mean += keras.ops.convert_to_numpy(layer.moving_mean)
            variance += keras.ops.convert_to_numpy(layer.moving_variance)
    return used


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Before each validation pass inside `fit`, recompute the batchnorm statistics, so that early
    stopping judges, and checkpoints keep, the weights with the statistics they will be served with."""

    def __init__(self, batches: Any) -> None:
        super().__init__()
        self.batches = batches
        self.step: Callable[[Any], Any] | None = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.step = self.step or training_call(self.model)
        recalibrate_batchnorm(self.model, self.batches, self.step)
