"""MLflow wiring: which store, which experiment, the provenance tags every run carries, and the
one rule that tells a thing the store does not hold from a store that is failing.

Only MLflow's "not found" is an absence. Anything else a store raises (unreachable, locked, not
a database) is a fault: one line that names the store and says it is not a missing model.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import mlflow
import mlflow.data.pandas_dataset
import pandas as pd
from mlflow.exceptions import MlflowException

from cnnops.contracts.dataset import DatasetInfo
from cnnops.core.errors import CnnopsError, StoreFault
from cnnops.core.paths import artifact_root, default_tracking_uri, tracking_uri
from cnnops.settings.config import Config
from cnnops.settings.naming import model_name_for

# MLflow's error code for a model, version or run that does not exist.
NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST"})
# A lookup by alias: MLflow answers a missing alias with INVALID_PARAMETER_VALUE.
ALIAS_NOT_FOUND = NOT_FOUND | {"INVALID_PARAMETER_VALUE"}
# MLflow logs a failing database query with its traceback before raising; the raised error says it all.
STORE_LOGGERS = ("mlflow.store.db.utils",)
T = TypeVar("T")
# Two runs logging the same dataset at once race in the store (`is_dataset_race`); a retry settles it.
DATASET_LOG_TRIES = 3


def use_tracking_store() -> str:
    """Point MLflow at the configured store (creating the embedded sqlite folder if that is it)."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def open_model_experiment(config: Config, source: str) -> tuple[str, str]:
    """Point MLflow at the store and open the registered model's experiment, where every run of a
    step on this data lands; returns the registered-model name and the experiment id."""
    use_tracking_store()
    name = model_name_for(config, source)
    return name, ensure_experiment(name)


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
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException as err:  # another run created it since the lookup
        if err.error_code != "RESOURCE_ALREADY_EXISTS" or (made := mlflow.get_experiment_by_name(name)) is None:
            raise
        return made.experiment_id


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
        dataset = mlflow.data.pandas_dataset.from_pandas(
            manifest[["path", "label", "sha256"]],
            source=str(location),
            name=info.source,
            digest=info.fingerprint[:32],
        )
    for attempt in range(DATASET_LOG_TRIES):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as err:
            if attempt == DATASET_LOG_TRIES - 1 or not is_dataset_race(err):
                raise
            time.sleep(0.2 * (attempt + 1))


def is_dataset_race(err: MlflowException) -> bool:
    """The store's answer when two runs log the same dataset (experiment, name, digest) at once: it
    looks the row up, finds none, and one of the two inserts fails on the key. Logging again finds
    the row the other run made and links to it."""
    text = str(err)
    return "dataset_pk" in text or "UNIQUE constraint failed: datasets." in text


def lookup(read: Callable[[], T], absent: frozenset[str] = NOT_FOUND) -> T | None:
    """What `read` finds in the registry, or None when MLflow says it does not exist (`absent`:
    the error codes that mean so). A failing store raises a one-line CnnopsError naming it."""
    with store_faults():
        try:
            return read()
        except Exception as err:
            if is_absence(err, absent):
                return None
            raise


def is_absence(err: Exception, absent: frozenset[str] = NOT_FOUND) -> bool:
    """MLflow's "not found": its error codes, a 404 from a tracking server's artifact proxy, or a
    missing file in a local artifact store."""
    import requests

    if isinstance(err, MlflowException):
        return err.error_code in absent
    if isinstance(err, requests.HTTPError):
        return err.response is not None and err.response.status_code == 404
    return isinstance(err, FileNotFoundError)


@contextmanager
def store_faults() -> Iterator[None]:
    """Registry reads inside this block that fail for the store's sake (unreachable, locked, not a
    database) become one line naming the store. Errors cnnops raises itself pass through."""
    quieted = [logging.getLogger(name) for name in STORE_LOGGERS]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    except CnnopsError:
        raise
    except Exception as err:
        if not is_store_fault(err):
            raise
        raise store_fault(mlflow.get_tracking_uri(), err) from None
    finally:
        for logger, level in zip(quieted, levels, strict=True):
            logger.setLevel(level)


def is_store_fault(err: Exception) -> bool:
    """An error of the store itself: any MlflowException (a "not found" reaching here was not
    expected by the caller, so it is not an absence either), a database error, a failed request."""
    import requests
    import sqlalchemy.exc

    return isinstance(err, MlflowException | sqlalchemy.exc.SQLAlchemyError | requests.RequestException)


def store_fault(uri: str, err: Exception) -> StoreFault:
    """The one line for a store that failed: which store, its first line of error, and what to check."""
    lines = str(err).strip().splitlines()
    reason = lines[0] if lines else type(err).__name__
    if len(reason) > 240:
        reason = reason[:237] + "..."
    return StoreFault(
        f"the MLflow store {shown_uri(uri)} failed ({reason}); this is a fault of the store, not a "
        "missing model: check that it is reachable and not locked by another process, then try again."
    )


def shown_uri(uri: str) -> str:
    """A store URI fit for a message: any user name and password in it are left out."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
