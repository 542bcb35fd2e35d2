"""`cnnops serve` for real, through the library's one process helper."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnops.core.processes import free_port
from support.commands import CNNOPS


@contextmanager
def cnnops_serving(home: Path, model_name: str, log: Path, seconds: float = 120) -> Iterator[tuple[str, int]]:
    """`cnnops serve` of the model's champion from the state folder `home`, on a free loopback
    port: its URL and PID once it is ready, stopped by PID (its children with it) afterwards."""
    from cnnops.core.processes import running_process
    from cnnops.inference.service_client import is_ready

    # The drift window is kept beside the log, not in `home`: servers of other tests (and xdist
    # workers) may serve the same state folder, and must not read each other's traffic back.
    env = {**os.environ, "CNNOPS_HOME": str(home), "CNNOPS_WINDOW_FILE": str(log.parent / "drift-window.npz")}
    env.pop("MLFLOW_TRACKING_URI", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(CNNOPS), "serve", "--port", str(port), "--model-name", model_name]
    with running_process(command, log, lambda: is_ready(url), seconds, env) as started:
        if started.problem:
            raise RuntimeError(f"cnnops serve: {started.problem}:\n{log.read_text()[-3000:]}")
        yield url, started.proc.pid
