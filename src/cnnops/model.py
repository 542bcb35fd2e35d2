"""Model builders: a closed set of architecture names, each mapped to a builder function.

Every model takes decoded uint8 images of its input shape and does all further preprocessing
(resize to its working resolution, rescale) in its first layers. Only backend-agnostic Keras here.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from cnnops.artifacts import ModelSpec
from cnnops.errors import CnnopsError


def build_model(spec: ModelSpec) -> keras.Model:
    """Build the architecture `spec.architecture` names, for `spec`'s input shape and classes."""
    builder = ARCHITECTURES.get(spec.architecture)
    if builder is None:
        raise CnnopsError(
            f"unknown architecture '{spec.architecture}'; choose one of: {', '.join(sorted(ARCHITECTURES))}."
        )
    return builder(spec)


def build_simple_cnn(spec: ModelSpec) -> keras.Model:
    """A compact conv-batchnorm-relu stack with global pooling: fast on a CPU for small images."""
    inputs = keras.Input(shape=(spec.height, spec.width, spec.channels), dtype="uint8", name="image")
    x = preprocess(inputs, spec.size)
    for filters in (32, 64, 128):
        x = conv_bn_relu(x, filters)
        x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(len(spec.class_names), activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def preprocess(inputs: keras.KerasTensor, size: tuple[int, int]) -> keras.KerasTensor:
    """uint8 pixels in, floats in [0, 1] at the working resolution out: the model owns this step."""
    x = layers.Resizing(size[0], size[1], name="resize")(inputs)
    return layers.Rescaling(1.0 / 255.0, name="rescale")(x)


def conv_bn_relu(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


ARCHITECTURES: dict[str, Callable[[ModelSpec], keras.Model]] = {"simple-cnn": build_simple_cnn}
