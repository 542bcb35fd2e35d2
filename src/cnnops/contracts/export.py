"""An exported model's records: the parity report every export writes (`export.json`), and the
decoded test images evaluation keeps for it (`parity_images.npz`), so that an export anywhere (the
pipeline's package step, `cnnops export` on a registered version) is checked on the version's own
test images without reading the test split again."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from cnnops.contracts.records import EVALUATE_STEP, Frozen, Record, read_record, write_record
from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError

ExportFormat = Literal["onnx", "litert", "savedmodel"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("onnx", "litert", "savedmodel")
# Where each format's export lives in a served-model folder.
EXPORT_FILES: dict[ExportFormat, str] = {"onnx": "model.onnx", "litert": "model.tflite", "savedmodel": "savedmodel"}
ONNX_FILE = EXPORT_FILES["onnx"]
EXPORT_REPORT_FILE = "export.json"
PARITY_IMAGES_FILE = "parity_images.npz"
EXPORT_STEP = "`cnnops export`"


class TensorSignature(Frozen):
    """One input or output of an exported runtime, as the runtime itself reports it."""

    name: str
    shape: list[int | None]
    dtype: str


class ExportReport(Record):
    """How closely an export answers as the Keras model does, on the version's own test images.

    The exported function takes uint8 images and gives `[probabilities | embedding]` side by side
    (`probabilities` columns, then `embedding_width`), the served function the drift monitor reads.
    """

    format: ExportFormat
    file: str
    passed: bool
    images: int
    # None when the converter or the runtime failed before any image was compared: `problem` says why.
    max_abs_diff: float | None
    top1_agreement: float | None
    allowed_abs_diff: float
    required_top1_agreement: float
    probabilities: int
    embedding_width: int
    inputs: list[TensorSignature]
    outputs: list[TensorSignature]
    problem: str | None = None

    def verdict(self) -> str:
        """One line: the format, both figures and the tolerances they were held to."""
        if self.max_abs_diff is None or self.top1_agreement is None:
            return f"the {self.format} export failed before it could be compared: {self.problem}"
        held = "matches" if self.passed else "does not match"
        return (
            f"the {self.format} export {held} the Keras model on {self.images} test images: "
            f"max |Δp| {self.max_abs_diff:.2g} (allowed {self.allowed_abs_diff:.2g}), "
            f"top-1 agreement {self.top1_agreement:.1%} (required {self.required_top1_agreement:.1%})"
        )


def write_export_report(folder: Path, report: ExportReport) -> None:
    write_record(folder / EXPORT_REPORT_FILE, report)


def read_export_report(folder: Path) -> ExportReport | None:
    """The folder's parity report, or None when nothing was exported into it."""
    if not (folder / EXPORT_REPORT_FILE).is_file():
        return None
    return read_record(folder / EXPORT_REPORT_FILE, ExportReport, EXPORT_STEP)


def write_parity_images(folder: Path, pixels: np.ndarray) -> None:
    """The decoded uint8 test images an export is checked on, written aside and moved in whole."""
    replace_atomically(folder / PARITY_IMAGES_FILE, lambda path: np.savez_compressed(path, pixels=pixels))


def read_parity_images(folder: Path) -> np.ndarray | None:
    """The folder's parity images (N×H×W×C uint8), or None when it keeps none."""
    path = folder / PARITY_IMAGES_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            pixels = saved["pixels"]
    except (OSError, ValueError, KeyError) as err:
        raise CnnopsError(f"{path} is not a parity image file ({err}); run {EVALUATE_STEP} again.") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or len(pixels) == 0:
        raise CnnopsError(f"{path} holds no N×H×W×C uint8 images; run {EVALUATE_STEP} again.")
    return pixels
