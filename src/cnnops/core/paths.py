"""Where cnnops keeps its state: one folder, nothing written outside it unless the user says so.

Nothing here touches the disk at import time; callers create folders when they write.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STATE_ENV = "CNNOPS_HOME"
# Set for pipeline tasks in containers: the host's cache, mounted read-only at the same path.
DATA_CACHE_ENV = "CNNOPS_DATA_CACHE"
DEFAULT_STATE_DIR = ".cnnops"


def state_home() -> Path:
    """The state folder: `$CNNOPS_HOME`, else `./.cnnops` under the working directory."""
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR).expanduser().resolve()


def tracking_uri() -> str:
    """MLflow store: `$MLFLOW_TRACKING_URI` when set, else a sqlite file in the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def default_tracking_uri() -> str:
    """The embedded store: a sqlite file in the state folder."""
    return f"sqlite:///{state_home() / 'mlflow' / 'mlflow.db'}"


def artifact_root() -> Path:
    """Artifact folder for experiments created against the embedded sqlite store."""
    return state_home() / "mlflow" / "artifacts"


def pipeline_root() -> Path:
    """kfp.local pipeline root: every task's outputs land under it."""
    return state_home() / "pipeline-root"


def logs_folder() -> Path:
    """Logs of the runs and servers cnnops starts."""
    return state_home() / "logs"


def new_run_log() -> Path:
    """A fresh name for one `cnnops run`'s full log, sortable by start time; nothing is created."""
    return logs_folder() / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.log"


def data_cache() -> Path:
    """Where demo datasets, archives and arrays are written out as image files, once:
    `$CNNOPS_DATA_CACHE`, else `data/` in the state folder."""
    cache = os.environ.get(DATA_CACHE_ENV)
    return Path(cache) if cache else state_home() / "data"


def keep_tool_state_inside() -> None:
    """Point the caches Keras and matplotlib create under $HOME, and BentoML's store, into the state
    folder instead, and turn off the telemetry of ONNX Runtime and MLflow, which otherwise keep an
    ID under $HOME (`.cache/Microsoft`, `.config/mlflow`) and try to report usage over the network.

    Called by the CLI before anything imports keras (pipeline tasks and the servers it starts
    inherit the environment); a variable the user has set already wins.
    """
    os.environ.setdefault("KERAS_HOME", str(state_home() / "keras"))
    os.environ.setdefault("MPLCONFIGDIR", str(state_home() / "matplotlib"))
    os.environ.setdefault("BENTOML_HOME", str(state_home() / "bentoml"))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@contextmanager
def environment_restored() -> Iterator[None]:
    """Undo every change the block makes to os.environ, on return, on error and on interrupt, so a
    run's settings for its tasks never outlive it."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
