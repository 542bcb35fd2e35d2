"""Which runtime serves a version (`serve.runtime`): ONNX Runtime when its export passed parity,
Keras otherwise, and the reason either way, which /info and the registry carry."""

from __future__ import annotations

from pathlib import Path

from cnnops.contracts.export import ONNX_FILE, ExportReport, read_export_report
from cnnops.contracts.served import ServedModel, ServedRuntime
from cnnops.core.errors import CnnopsError


def choose_runtime(setting: str, served: ServedModel) -> ServedRuntime:
    """The runtime for a served folder; one line when `serve.runtime` cannot be honoured."""
    return runtime_for(setting, served.export, served.folder)


def runtime_for(setting: str, report: ExportReport | None, folder: Path) -> ServedRuntime:
    """`keras` and `onnx` are what they say; `auto` is ONNX when the export in `folder` passed,
    else Keras. `onnx` without a passed export is a CnnopsError saying why."""
    if setting == "keras":
        return ServedRuntime(name="keras", reason="serve.runtime is keras")
    problem = onnx_problem(report, folder)
    if problem is None:
        assert report is not None
        return ServedRuntime(name="onnx", reason=report.verdict())
    if setting == "onnx":
        raise CnnopsError(f"serve.runtime is onnx, but {problem}")
    return ServedRuntime(name="keras", reason=f"ONNX cannot serve it: {problem}")


def planned_runtime(setting: str, evaluation_dir: Path) -> ServedRuntime | str:
    """What would serve the model an evaluation folder exported, or the one line why nothing
    can under `setting`: for a version registered without being served."""
    try:
        return runtime_for(setting, read_export_report(evaluation_dir), evaluation_dir)
    except CnnopsError as err:
        return str(err)


def onnx_problem(report: ExportReport | None, folder: Path) -> str | None:
    """Why ONNX Runtime cannot serve the export in `folder`, or None when it can."""
    if report is None:
        return "the version has no ONNX export (evaluate it with this cnnops to make one)"
    if not report.passed:
        return report.verdict()
    if not (folder / ONNX_FILE).is_file():
        return f"{folder / ONNX_FILE} is missing though its export passed; export it again"
    return None
