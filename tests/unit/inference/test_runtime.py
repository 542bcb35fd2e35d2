"""`serve.runtime`'s choice on a served folder's export report, without a model or TensorFlow."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnops.contracts.export import ONNX_FILE, ExportReport, TensorSignature
from cnnops.core.errors import CnnopsError
from cnnops.inference.runtime import runtime_for


def report(passed: bool = True, difference: float | None = 2e-7) -> ExportReport:
    return ExportReport(
        format="onnx",
        file=ONNX_FILE,
        passed=passed,
        images=64,
        max_abs_diff=difference,
        top1_agreement=None if difference is None else (1.0 if passed else 0.75),
        allowed_abs_diff=1e-4,
        required_top1_agreement=1.0,
        probabilities=3,
        embedding_width=128,
        inputs=[TensorSignature(name="image", shape=[None, 28, 28, 1], dtype="tensor(uint8)")],
        outputs=[TensorSignature(name="outputs", shape=[None, 131], dtype="tensor(float)")],
        problem=None if difference is not None else "RuntimeError: unsupported op",
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / ONNX_FILE).write_bytes(b"an export")
    return tmp_path


def test_auto_takes_onnx_for_a_passed_export_and_says_why(folder):
    chosen = runtime_for("auto", report(), folder)
    assert chosen.name == "onnx"
    assert chosen.reason == (
        "the onnx export matches the Keras model on 64 test images: max |Δp| 2e-07 (allowed 0.0001), "
        "top-1 agreement 100.0% (required 100.0%)"
    )
    assert runtime_for("keras", report(), folder).name == "keras"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (None, "the version has no ONNX export"),
        (report(passed=False, difference=0.6), "does not match the Keras model on 64 test images: max |Δp| 0.6"),
        (report(passed=False, difference=None), "failed before it could be compared: RuntimeError: unsupported op"),
    ],
)
def test_without_a_passed_export_auto_serves_keras_and_onnx_is_one_line(folder, given, said):
    chosen = runtime_for("auto", given, folder)
    assert chosen.name == "keras" and said in chosen.reason
    with pytest.raises(CnnopsError, match="^serve.runtime is onnx, but ") as refused:
        runtime_for("onnx", given, folder)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_a_passed_export_whose_file_is_gone_is_not_served_by_onnx(folder):
    (folder / ONNX_FILE).unlink()
    assert "is missing though its export passed" in runtime_for("auto", report(), folder).reason
