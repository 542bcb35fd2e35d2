"""Exports of the served function, each run by its own runtime and held to the Keras model: the
trap of Keras's own ONNX export caught, every format matching, bad models refused in one line,
and `cnnops export` on a served folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnops.contracts.export import EXPORT_FORMATS, ExportReport
from cnnops.contracts.model import ModelSpec, write_model_spec
from cnnops.core.errors import CnnopsError
from cnnops.modeling.builders import build_model
from cnnops.modeling.convert import WRITERS, export_folder, export_model
from cnnops.settings.config import ExportConfig

SPEC = ModelSpec(["a", "b", "c"], 28, 28, "L", "simple-cnn")


@pytest.fixture(scope="module")
def trained():
    """A simple-cnn trained a few steps: its batchnorm statistics have moved away from the batch's,
    which is what a model traced in training mode gets wrong."""
    import keras

    model = build_model(SPEC)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(96, 28, 28, 1), dtype=np.uint8)
    model.fit(images, rng.integers(0, 3, size=96), epochs=2, batch_size=32, verbose=0)
    return model, rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)


def keras_own_onnx(model, spec: ModelSpec, path: Path) -> None:
    """Keras 3's `model.export(format="onnx")` of the served outputs: it runs without an error."""
    import keras

    joined = keras.Model(model.inputs, keras.layers.Concatenate()(model.outputs))
    joined(np.zeros((1, spec.height, spec.width, spec.channels), np.uint8))
    joined.export(str(path), format="onnx", verbose=False)


def test_keras_own_onnx_export_is_refused_and_ours_matches(trained, tmp_path, monkeypatch):
    model, pixels = trained
    ours = export_model(model, SPEC, pixels, "onnx", tmp_path / "ours.onnx", ExportConfig())
    assert ours.passed, ours.verdict()
    assert ours.max_abs_diff is not None and ours.max_abs_diff <= 1e-5 and ours.top1_agreement == 1.0
    assert (tmp_path / "ours.onnx").is_file()

    monkeypatch.setitem(WRITERS, "onnx", keras_own_onnx)
    trap = export_model(model, SPEC, pixels, "onnx", tmp_path / "ours.onnx", ExportConfig())
    assert not trap.passed
    assert trap.max_abs_diff is not None and trap.max_abs_diff > 0.01  # the batchnorm layers in training mode
    assert not (tmp_path / "ours.onnx").exists()  # refused: not written, and the earlier export removed
    said = trap.verdict()
    assert "onnx export does not match" in said and "max |Δp|" in said and "top-1 agreement" in said
    assert "\n" not in said


@pytest.mark.slow
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_exports_the_served_function_with_its_embedding(trained, fmt, tmp_path):
    model, pixels = trained
    report = export_model(model, SPEC, pixels, fmt, tmp_path / f"model.{fmt}", ExportConfig())
    assert report.passed, report.verdict()
    assert report.images == 64 and report.probabilities == 3
    assert report.embedding_width == 128  # the dense head's input: the drift monitor's embedding
    (given,) = report.inputs
    assert given.shape == [None, 28, 28, 1] and "uint8" in given.dtype
    (answer,) = report.outputs
    assert answer.shape == [None, 3 + 128]


def test_a_model_without_uint8_input_probabilities_or_an_embedding_is_refused_in_one_line(tmp_path):
    import keras

    inputs = keras.Input((28, 28, 1), dtype="float32")
    floats = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs)))
    with pytest.raises(CnnopsError, match=r"cannot export: the model takes float32 .* not uint8 images") as refused:
        export_model(floats, SPEC, np.zeros((2, 28, 28, 1), np.uint8), "onnx", tmp_path / "m.onnx", ExportConfig())
    assert "\n" not in str(refused.value)

    images = keras.Input((28, 28, 1), dtype="uint8")
    scaled = keras.layers.Flatten()(keras.layers.Rescaling(1.0)(images))
    two = keras.Model(images, keras.layers.Dense(2)(scaled))
    with pytest.raises(CnnopsError, match="not one row of 3 class probabilities"):
        export_model(two, SPEC, np.zeros((2, 28, 28, 1), np.uint8), "onnx", tmp_path / "m.onnx", ExportConfig())
    # Probabilities from a convolution, no dense head: nothing to give the drift monitor beside them.
    conv = keras.layers.Conv2D(3, 28, activation="softmax")(keras.layers.Rescaling(1.0)(images))
    headless = keras.Model(images, keras.layers.Reshape((3,))(conv))
    with pytest.raises(CnnopsError, match="output cannot carry its embedding") as no_embedding:
        export_model(headless, SPEC, np.zeros((2, 28, 28, 1), np.uint8), "onnx", tmp_path / "m.onnx", ExportConfig())
    assert "\n" not in str(no_embedding.value)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_cnnops_export_writes_a_checked_model_and_its_report(trained, tmp_path):
    from support.commands import cli, one_error_line

    from cnnops.contracts.export import write_parity_images

    model, pixels = trained
    folder = tmp_path / "model"
    folder.mkdir()
    model.save(folder / "model.keras")
    write_model_spec(folder, SPEC)
    home, out = tmp_path / "state", str(tmp_path / "m.onnx")
    assert "keeps no test images" in one_error_line(cli(home, "export", "--model-dir", str(folder), "--out", out))

    write_parity_images(folder, pixels)
    done = cli(home, "export", "--model-dir", str(folder), "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the onnx export matches the Keras model on 64 test images" in done.stdout
    report = ExportReport.model_validate(json.loads((tmp_path / "m.onnx.parity.json").read_text()))
    assert report.passed and (tmp_path / "m.onnx").is_file()

    wrong = cli(home, "export", "--format", "tflite", "--model-dir", str(folder), "--out", out)
    assert "'tflite' is not one of onnx, litert, savedmodel" in one_error_line(wrong)


def test_a_failed_export_is_refused_in_one_line_naming_both_figures(trained, tmp_path, monkeypatch):
    from cnnops.contracts.export import write_parity_images

    model, pixels = trained
    folder = tmp_path / "model"
    folder.mkdir()
    model.save(folder / "model.keras")
    write_model_spec(folder, SPEC)
    write_parity_images(folder, pixels)
    monkeypatch.setitem(WRITERS, "onnx", keras_own_onnx)
    with pytest.raises(CnnopsError) as refused:
        export_folder(folder, "onnx", tmp_path / "m.onnx", ExportConfig())
    said = str(refused.value)
    assert said.startswith("export refused: the onnx export does not match") and "\n" not in said
    assert "max |Δp|" in said and "top-1 agreement" in said
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.onnx.parity.json").is_file()


@pytest.mark.slow
def test_an_imported_keras2_h5_exports_to_onnx_with_parity(tmp_path):
    """The face-mask MobileNetV2 Keras 2 saved, imported as cnnops imports it (uint8 in, its
    [-1, 1] scaling inside), exports and answers as Keras does on a real face and noise."""
    from PIL import Image
    from skimage.data import astronaut
    from support.models import FACE_MASK_H5

    from cnnops.modeling.legacy import load_legacy_h5
    from cnnops.promotion.importer import wrap_for_cnnops

    model, spec = wrap_for_cnnops(load_legacy_h5(FACE_MASK_H5), ["mask", "no_mask"], "minus1_1", FACE_MASK_H5)
    face = np.asarray(Image.fromarray(astronaut()[55:175, 165:290]).resize((224, 224)), dtype=np.uint8)
    noise = np.random.default_rng(3).integers(0, 256, size=(7, 224, 224, 3), dtype=np.uint8)
    report = export_model(model, spec, np.concatenate([face[None], noise]), "onnx", tmp_path / "m.onnx", ExportConfig())
    assert report.passed, report.verdict()
