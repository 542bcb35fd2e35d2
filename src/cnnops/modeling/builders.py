"""Model builders: a closed set of architecture names, each mapped to a builder function.

Every model takes decoded uint8 images of its input shape and does all further preprocessing
(resize to its working resolution, rescale) in its first layers. Only backend-agnostic Keras here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cnnops.contracts.model import ModelSpec
from cnnops.core.errors import CnnopsError

# Working resolution of the ImageNet backbones unless the config sets one.
BACKBONE_SIDE = 224
# Augmentation presets: each layer's strength (flip: 1 = horizontal flips on).
AUGMENTATION_PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "light": {"flip": 1, "rotation": 0.05, "zoom": 0.1, "translation": 0.05, "contrast": 0.1, "brightness": 0.1},
    "strong": {"flip": 1, "rotation": 0.15, "zoom": 0.25, "translation": 0.15, "contrast": 0.3, "brightness": 0.3},
}
# Per-channel ImageNet means (RGB) for the backbones trained on caffe-style inputs.
CAFFE_MEAN = (123.68, 116.779, 103.939)


@dataclass(frozen=True)
class ModelOptions:
    """How to build a model beyond its input spec: pretrained weights and what stays trainable."""

    weights: str = "none"  # "none", "imagenet" (downloads), or a local weights file
    trainable_layers: int | None = None  # backbones: None freezes all of it, N leaves its last N trainable
    working_size: int | None = None  # side the model resizes to (None: its own default)
    augment: tuple[tuple[str, float], ...] = ()  # layer name -> strength, from `augmentation_strengths`


def build_model(spec: ModelSpec, options: ModelOptions = ModelOptions()) -> keras.Model:  # noqa: B008
    """Build the architecture `spec.architecture` names, for `spec`'s input shape and classes."""
    builder = ARCHITECTURES.get(spec.architecture)
    if builder is None:
        raise CnnopsError(
            f"unknown architecture '{spec.architecture}'; choose one of: {', '.join(sorted(ARCHITECTURES))}."
        )
    return builder(spec, options)


def build_simple_cnn(spec: ModelSpec, options: ModelOptions = ModelOptions()) -> keras.Model:  # noqa: B008
    """A compact conv-batchnorm-relu stack with global pooling: fast on a CPU for small images."""
    check_scratch_options(spec, options)
    inputs = keras.Input(shape=(spec.height, spec.width, spec.channels), dtype="uint8", name="image")
    x = preprocess(inputs, working_size(spec, options), options.augment)
    for filters in (32, 64, 128):
        x = conv_bn_relu(x, filters)
        x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(len(spec.class_names), activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def preprocess(
    inputs: keras.KerasTensor, size: tuple[int, int], strengths: tuple[tuple[str, float], ...] = ()
) -> keras.KerasTensor:
    """uint8 pixels in, floats in [0, 1] at the working resolution out (augmented in training):
    the model owns this step."""
    x = layers.Resizing(size[0], size[1], name="resize")(inputs)
    x = augment(x, strengths)
    return layers.Rescaling(1.0 / 255.0, name="rescale")(x)


def conv_bn_relu(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def build_deep_cnn(spec: ModelSpec, options: ModelOptions = ModelOptions()) -> keras.Model:  # noqa: B008
    """A deeper scratch network in the shaved/unshaved tutorial's spirit: four conv blocks, now with
    batchnorm, dropout and global pooling instead of a flatten into a wide dense layer."""
    check_scratch_options(spec, options)
    inputs = keras.Input(shape=(spec.height, spec.width, spec.channels), dtype="uint8", name="image")
    x = preprocess(inputs, working_size(spec, options), options.augment)
    for filters in (32, 64, 128, 256):
        x = conv_bn_relu(x, filters)
        x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.1)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(len(spec.class_names), activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="deep_cnn")


def augmentation_strengths(preset: str, overrides: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """The preset's layer strengths with the per-layer overrides on top; zero-strength layers dropped."""
    merged = {**AUGMENTATION_PRESETS[preset], **overrides}
    return tuple(sorted((name, float(value)) for name, value in merged.items() if value))


def augment(x: keras.KerasTensor, strengths: tuple[tuple[str, float], ...]) -> keras.KerasTensor:
    """Random image transforms on 0-255 floats. Keras applies them in training only: at inference
    (evaluation, the gate, serving) each is the identity."""
    for name, value in strengths:
        if name == "flip":
            x = layers.RandomFlip("horizontal", name="augment_flip")(x)
        elif name == "rotation":
            x = layers.RandomRotation(value, fill_mode="nearest", name="augment_rotation")(x)
        elif name == "zoom":
            x = layers.RandomZoom(value, fill_mode="nearest", name="augment_zoom")(x)
        elif name == "translation":
            x = layers.RandomTranslation(value, value, fill_mode="nearest", name="augment_translation")(x)
        elif name == "contrast":
            x = layers.RandomContrast(value, value_range=(0, 255), name="augment_contrast")(x)
        elif name == "brightness":
            x = layers.RandomBrightness(value, value_range=(0, 255), name="augment_brightness")(x)
    return x


def check_scratch_options(spec: ModelSpec, options: ModelOptions) -> None:
    check_weights_fit(spec.architecture, options.weights)


def check_weights_fit(architecture: str, weights: str) -> None:
    """Pretrained weights only for backbones: a scratch net has none to load."""
    if weights != "none" and not is_backbone(architecture):
        raise CnnopsError(
            f"{architecture} is trained from scratch and has no pretrained weights; leave "
            "train.weights at none, or choose a backbone (mobilenet_v2, vgg16, resnet50, "
            "efficientnet_b0)."
        )


def compiles_with_xla(strengths: tuple[tuple[str, float], ...]) -> bool:
    """Keras' random rotation, zoom and translation layers do not compile with XLA; with any of
    them in the model, Keras trains without XLA."""
    return not {name for name, _ in strengths} & {"rotation", "zoom", "translation"}


def working_size(spec: ModelSpec, options: ModelOptions, default: int | None = None) -> tuple[int, int]:
    if options.working_size is not None:
        return options.working_size, options.working_size
    return (default, default) if default is not None else spec.size


def backbone_builder(application: Callable[..., keras.Model], mode: str, name: str) -> Callable[..., keras.Model]:
    """A builder for one keras.applications backbone under a new classification head."""

    def build(spec: ModelSpec, options: ModelOptions = ModelOptions()) -> keras.Model:  # noqa: B008
        side = working_size(spec, options, BACKBONE_SIDE)
        if min(side) < 32:
            raise CnnopsError(f"{name} needs a working size of at least 32 pixels; set train.working_size.")
        inputs = keras.Input(shape=(spec.height, spec.width, spec.channels), dtype="uint8", name="image")
        x = layers.Resizing(side[0], side[1], name="resize")(inputs)
        if spec.channels == 1:  # grey images feed the three-channel backbones as equal R, G and B
            x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
        x = augment(x, options.augment)
        x = backbone_input(x, mode)
        backbone = load_backbone(application, name, (side[0], side[1], 3), options.weights)
        freeze(backbone, options.trainable_layers)
        x = backbone(x, training=False)  # batchnorm statistics stay the pretrained ones
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.3)(x)
        outputs = layers.Dense(len(spec.class_names), activation="softmax", dtype="float32", name="probabilities")(x)
        return keras.Model(inputs, outputs, name=name)

    return build


def backbone_input(x: keras.KerasTensor, mode: str) -> keras.KerasTensor:
    """0-255 floats to what the backbone was trained on, with built-in layers only (so the saved
    model loads anywhere, with no custom code)."""
    if mode == "tf":  # MobileNetV2: [-1, 1]
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_1")(x)
    if mode == "caffe":  # VGG16, ResNet50: BGR, ImageNet mean subtracted, not scaled
        x = layers.Normalization(mean=list(CAFFE_MEAN), variance=[1.0, 1.0, 1.0], name="minus_imagenet_mean")(x)
        flip = layers.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb_to_bgr")
        x = flip(x)
        flip.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)])
        return x
    return x  # EfficientNet rescales and normalises inside itself


def load_backbone(
    application: Callable[..., keras.Model], name: str, shape: tuple[int, int, int], weights: str
) -> keras.Model:
    """The backbone without its ImageNet head, with the weights asked for and no others."""
    if weights == "none":
        return application(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        try:
            return application(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as err:  # noqa: BLE001 - keras raises several types for a failed download
            raise CnnopsError(
                f"could not fetch the imagenet weights for {name} ({type(err).__name__}); this "
                "needs internet. Pass a local weights file as train.weights, or use none."
            ) from None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CnnopsError(f"train.weights is {weights}: not 'none', 'imagenet' or an existing weights file.")
    backbone = application(include_top=False, weights=None, input_shape=shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backbone.load_weights(path)
            problem = next((str(w.message) for w in caught if "Skipping" in str(w.message)), None)
        except Exception as err:  # noqa: BLE001 - mismatches surface as ValueError, KeyError or OSError
            problem = str(err)
    if problem is not None:  # Keras only warns when it skips part of a file: that is a mismatch too
        raise CnnopsError(
            f"{path} does not hold weights for {name} without its top ({problem.splitlines()[0]}); "
            "pass the weights file of the same architecture."
        )
    return backbone


def freeze(backbone: keras.Model, trainable_layers: int | None) -> None:
    """Freeze the whole backbone, or all but its last `trainable_layers` layers."""
    backbone.trainable = trainable_layers is not None and trainable_layers > 0
    if trainable_layers is not None and backbone.trainable:
        for layer in backbone.layers[: max(len(backbone.layers) - trainable_layers, 0)]:
            layer.trainable = False


@contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras' dtype policy is process-global: set it for the models built inside, then put the old
    one back."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def find_backbone(model: keras.Model) -> keras.Model:
    """The pretrained network nested inside a backbone architecture's model."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise CnnopsError(f"{model.name} has no single backbone to freeze or unfreeze.")
    return nested[0]


def is_backbone(architecture: str) -> bool:
    return architecture in BACKBONES


# Each backbone's keras.applications network and the input scaling it was trained on.
BACKBONE_APPLICATIONS: dict[str, tuple[Callable[..., keras.Model], str]] = {
    "mobilenet_v2": (keras.applications.MobileNetV2, "tf"),
    "vgg16": (keras.applications.VGG16, "caffe"),
    "resnet50": (keras.applications.ResNet50, "caffe"),
    "efficientnet_b0": (keras.applications.EfficientNetB0, "raw"),
}
BACKBONES = frozenset(BACKBONE_APPLICATIONS)
ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "simple-cnn": build_simple_cnn,
    "deep-cnn": build_deep_cnn,
    **{name: backbone_builder(application, mode, name) for name, (application, mode) in BACKBONE_APPLICATIONS.items()},
}
