"""The commands the tests run as a user does, and the one error line a refusal must be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# The venv's own `cnnops` command, for tests that run it as a user does.
CNNOPS = Path(sys.executable).parent / "cnnops"


def cli(home: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """`cnnops ARGS` in the state folder `home`, with `env` set and no other store or tool cache."""
    environment = {**os.environ, "CNNOPS_HOME": str(home), **env}
    for variable in ("BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        environment.pop(variable, None)
    if "MLFLOW_TRACKING_URI" not in env:
        environment.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(CNNOPS), *args], capture_output=True, text=True, timeout=timeout, env=environment)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """A user's mistake: exit 2, no traceback, and its one `cnnops: error:` line."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cnnops: error:")]
    return line


def docker_run_error(tmp_path: Path, make_images: Any, **env: str) -> str:
    """`cnnops run --runner docker` on tiny images with `env` set; its one error line."""
    source = make_images(per_class=10)
    return one_error_line(
        cli(tmp_path / "state", "run", "--runner", "docker", "--data", str(source), timeout=120, **env)
    )
