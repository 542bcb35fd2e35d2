import ast
from pathlib import Path

import numpy as np
import pytest

from cnnops.contracts.model import ModelSpec
from cnnops.core.errors import CnnopsError
from cnnops.modeling.builders import ARCHITECTURES, ModelOptions, build_model

SRC = Path(__file__).resolve().parents[3] / "src" / "cnnops"


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_model_takes_uint8_images_and_returns_probabilities(mode):
    spec = ModelSpec(["a", "b", "c"], 20, 24, mode, "simple-cnn")
    model = build_model(spec)
    assert tuple(model.input.shape) == (None, 20, 24, spec.channels)
    assert model.input.dtype == "uint8"
    images = np.random.default_rng(0).integers(0, 256, size=(2, 20, 24, spec.channels), dtype=np.uint8)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_first_layers_resize_and_rescale():
    model = build_model(ModelSpec(["a", "b"], 8, 8, "L", "simple-cnn"))
    names = [layer.name for layer in model.layers[1:3]]
    assert names == ["resize", "rescale"]


def test_unknown_architecture():
    with pytest.raises(CnnopsError, match="unknown architecture 'vit'; choose one of: deep-cnn, efficientnet_b0"):
        build_model(ModelSpec(["a", "b"], 8, 8, "L", "vit"))


def test_model_code_is_backend_agnostic():
    tree = ast.parse((SRC / "modeling" / "builders.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert "tensorflow" not in imported and "keras" in imported
    assert set(ARCHITECTURES) == {"simple-cnn", "deep-cnn", "mobilenet_v2", "vgg16", "resnet50", "efficientnet_b0"}


SMALL = ModelOptions(working_size=32)


def test_backbone_is_frozen_or_thawed_from_the_top():
    spec = ModelSpec(["a", "b"], 32, 32, "RGB", "mobilenet_v2")
    frozen = build_model(spec, SMALL)
    backbone = next(layer for layer in frozen.layers if isinstance(layer, type(frozen)) and layer is not frozen)
    assert not backbone.trainable and not backbone.trainable_weights
    thawed = build_model(spec, ModelOptions(working_size=32, trainable_layers=5))
    backbone = next(layer for layer in thawed.layers if isinstance(layer, type(thawed)) and layer is not thawed)
    assert [layer.trainable for layer in backbone.layers[-5:]] == [True] * 5
    assert not any(layer.trainable for layer in backbone.layers[:-5])


def test_caffe_inputs_are_bgr_minus_the_imagenet_mean():
    spec = ModelSpec(["a", "b"], 32, 32, "RGB", "vgg16")
    model = build_model(spec, SMALL)
    import keras

    probe = keras.Model(model.input, model.get_layer("rgb_to_bgr").output)
    pixel = np.zeros((1, 32, 32, 3), np.uint8)
    pixel[..., 0], pixel[..., 2] = 200, 10
    out = np.asarray(probe(pixel))[0, 0, 0]
    np.testing.assert_allclose(out, [10 - 103.939, 0 - 116.779, 200 - 123.68], atol=1e-3)


def test_imagenet_weights_offline_is_a_clear_error():
    from urllib.error import URLError

    from cnnops.modeling.builders import load_backbone

    def offline(**kwargs):  # what keras.applications raises when the weights cannot be fetched
        raise URLError("no route to host")

    with pytest.raises(CnnopsError, match="could not fetch the imagenet weights for vgg16 .URLError.; this needs"):
        load_backbone(offline, "vgg16", (32, 32, 3), "imagenet")


def test_scratch_networks_refuse_pretrained_weights():
    with pytest.raises(CnnopsError, match="deep-cnn is trained from scratch"):
        build_model(ModelSpec(["a", "b"], 8, 8, "L", "deep-cnn"), ModelOptions(weights="imagenet"))


def test_augmentation_presets_and_per_layer_overrides():
    from cnnops.modeling.builders import augmentation_strengths

    light = dict(augmentation_strengths("light", {}))
    assert set(light) == {"flip", "rotation", "zoom", "translation", "contrast", "brightness"}
    tuned = dict(augmentation_strengths("strong", {"rotation": 0.02, "flip": 0}))
    assert tuned["rotation"] == 0.02 and "flip" not in tuned
    assert augmentation_strengths("none", {}) == ()


@pytest.mark.parametrize("architecture", ["simple-cnn", "mobilenet_v2"])
def test_augmentation_acts_in_training_only_and_survives_saving(architecture, tmp_path):
    import keras

    from cnnops.modeling.builders import augmentation_strengths

    spec = ModelSpec(["a", "b"], 32, 32, "RGB", architecture)
    model = build_model(spec, ModelOptions(working_size=32, augment=augmentation_strengths("strong", {})))
    assert any(layer.name.startswith("augment_") for layer in model.layers)
    images = np.random.default_rng(2).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    inference = np.asarray(model(images, training=False))
    np.testing.assert_array_equal(inference, np.asarray(model(images, training=False)))
    # The augmentation layers themselves: in training they change every image, in inference none.
    augment = [layer for layer in model.layers if layer.name.startswith("augment_")]

    def through_augmentation(pixels: np.ndarray, training: bool) -> np.ndarray:
        for layer in augment:
            pixels = layer(pixels, training=training)
        return np.asarray(pixels)

    plain = images.astype("float32")
    np.testing.assert_array_equal(through_augmentation(plain, training=False), plain)
    augmented = through_augmentation(plain, training=True)
    assert all(np.abs(after - before).max() > 1 for after, before in zip(augmented, plain, strict=True))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(again(images, training=False)), inference, atol=1e-5)
