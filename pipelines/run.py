"""Run the pipeline on this machine with kfp.local, in the current virtual environment."""

import os
from typing import Any

from kfp import local

from cnnops.paths import STATE_ENV, pipeline_root, state_home
from pipelines.pipeline import build_pipeline


def run_locally(config: dict[str, Any]) -> None:
    """Run every task as a subprocess of this venv; raises RuntimeError if a task fails."""
    # Tasks are separate processes: pin the state folder so they all agree on it.
    os.environ[STATE_ENV] = str(state_home())
    root = pipeline_root()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    build_pipeline()(config=config)
