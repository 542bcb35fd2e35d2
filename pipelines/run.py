"""Run the pipeline on this machine with kfp.local, in the current virtual environment."""

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from kfp import local

from cnnops.errors import ERROR_FILE_ENV, CnnopsError
from cnnops.paths import STATE_ENV, keep_tool_state_inside, pipeline_root, state_home
from pipelines.pipeline import build_pipeline


def run_locally(config: dict[str, Any]) -> None:
    """Run every task as a subprocess of this venv.

    A task that stops on a user error raises CnnopsError with that task's one-line reason; any
    other task failure is kfp's RuntimeError.
    """
    # Tasks are separate processes: pin the state folder so they all agree on it.
    os.environ[STATE_ENV] = str(state_home())
    keep_tool_state_inside()
    root = pipeline_root()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    with tempfile.TemporaryDirectory(prefix="cnnops-run-") as scratch:
        report = Path(scratch) / "errors.txt"
        os.environ[ERROR_FILE_ENV] = str(report)
        try:
            with warnings.catch_warnings():
                # The subprocess runner ignores the image and the resource settings by design; both
                # are for clusters.
                warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
                build_pipeline()(config=config)
        except RuntimeError:
            reasons = report.read_text().splitlines() if report.is_file() else []
            if reasons:
                raise CnnopsError(f"{reasons[0]} (nothing was registered)") from None
            raise
        finally:
            os.environ.pop(ERROR_FILE_ENV, None)
