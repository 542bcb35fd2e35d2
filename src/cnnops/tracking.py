"""MLflow wiring: which store, which experiment, and the provenance tags every run carries."""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd

from cnnops.artifacts import DatasetInfo
from cnnops.paths import artifact_root, default_tracking_uri, tracking_uri


def use_tracking_store() -> str:
    """Point MLflow at the configured store (creating the embedded sqlite folder if that is it)."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment for a registered model, created on first use; returns its id."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # With the embedded store, artifacts live in the state folder too (MLflow's default is ./mlruns).
    # A user's own store decides its own artifact location. Compare URIs, not the environment:
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI itself.
    location = None
    if mlflow.get_tracking_uri() == default_tracking_uri():
        location = (artifact_root() / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    """The project's commit: `$CNNOPS_GIT_COMMIT` (baked into images), else git, else "unknown"."""
    if os.environ.get("CNNOPS_GIT_COMMIT"):
        return os.environ["CNNOPS_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def log_dataset(manifest: pd.DataFrame, info: DatasetInfo, location: Path, context: str) -> None:
    """Log the manifest as the active run's MLflow dataset input, named by source and digested by
    the dataset fingerprint, so a run can be traced to the exact images (and a change noticed)."""
    with warnings.catch_warnings():
        # MLflow registers its local-file source type twice and then warns that a path is ambiguous.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_pandas(
            manifest[["path", "label", "sha256"]],
            source=str(location),
            name=info.source,
            digest=info.fingerprint[:32],
        )
    mlflow.log_input(dataset, context=context)
