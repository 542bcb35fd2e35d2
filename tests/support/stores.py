"""A state folder (and so an MLflow store) of a test's own, the environment put back after, the
shared champion's store copied for a test that changes it, and a registered version whose run
logged its data the way `cnnops train` does."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def restored_environ() -> Iterator[None]:
    """os.environ as it was before the block, whatever the block set or removed. (MonkeyPatch's
    `delenv(raising=False)` of an absent variable records nothing, so a variable the code sets
    afterwards would outlive it.)"""
    before = dict(os.environ)
    try:
        yield
    finally:
        restore_environ(before)


def restore_environ(before: dict[str, str]) -> list[str]:
    """Put os.environ back to `before`; returns the names that had changed."""
    changed = sorted(name for name in {*before, *os.environ} if os.environ.get(name) != before.get(name))
    for name in changed:
        if name in before:
            os.environ[name] = before[name]
        else:
            del os.environ[name]
    return changed


@contextmanager
def own_store(work: Path) -> Iterator[None]:
    """A state folder (and so an MLflow store) of its own under `work`, for a module's fixture;
    the environment is restored when the block ends."""
    with restored_environ():
        os.environ["CNNOPS_HOME"] = str(work / "state")
        for variable in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
            os.environ.pop(variable, None)
        yield


@contextmanager
def champion_copy(champion: dict, work: Path) -> Iterator[dict]:
    """The shared champion's store and training outputs copied under `work`, with MLflow pointed at
    the copy for the block. The images stay shared and read-only: the registered model's name
    comes from their path."""
    from cnnops.tracking.stores import use_tracking_store

    origin = champion["work"]
    for folder in ("state", "strong"):
        shutil.copytree(origin / folder, work / folder)
    rebase_store(work / "state", origin / "state")
    strong = {key: rebased(value, origin, work) for key, value in champion["strong"].items()}
    with own_store(work):
        use_tracking_store()
        yield {**champion, "work": work, "strong": strong}


def rebase_store(state: Path, origin: Path) -> None:
    """MLflow records absolute artifact locations; point the copied store's at its own copies."""
    import sqlite3
    from contextlib import closing

    old, new = str(origin), str(state)
    with closing(sqlite3.connect(state / "mlflow" / "mlflow.db")) as db, db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in db.execute(f"PRAGMA table_info('{table}')")]:
                quoted = f'"{column}"'
                db.execute(
                    f"UPDATE '{table}' SET {quoted} = replace({quoted}, ?, ?) "
                    f"WHERE typeof({quoted}) = 'text' AND instr({quoted}, ?) > 0",
                    (old, new, old),
                )
    for path in (state / "mlflow" / "artifacts").rglob("MLmodel"):
        path.write_text(path.read_text().replace(old, new))


def rebased(value: object, origin: Path, work: Path) -> object:
    """A path under `origin` moved under `work`; anything else as it is."""
    if isinstance(value, Path) and value.is_relative_to(origin):
        return work / value.relative_to(origin)
    return value


def register_trained_on(config: Any, work: Path, alias: str | None, labels: bool = True, digest: bool = True) -> int:
    """A version of the config's registered model whose run logged the source, as ingested now, the
    way `cnnops train` logs its data (the dataset input, the per-class record); no model is
    trained: a retrain's decision reads only what the run logged."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from cnnops.contracts.dataset import SOURCE_LABELS_FILE, read_dataset_info, read_manifest, write_source_labels
    from cnnops.data.ingest import ingest_source
    from cnnops.settings.naming import model_name_for
    from cnnops.tracking.stores import ensure_experiment, log_dataset, use_tracking_store

    folder = work / f"ingested-{time.monotonic_ns()}"
    ingest_source(config, folder)
    manifest, info = read_manifest(folder), read_dataset_info(folder)
    name = model_name_for(config, info.source)
    use_tracking_store()
    client = MlflowClient()
    with mlflow.start_run(experiment_id=ensure_experiment(name)) as run:
        if digest:
            log_dataset(manifest, info, folder, context="training")
        if labels:
            write_source_labels(folder, manifest)
            mlflow.log_artifact(str(folder / SOURCE_LABELS_FILE), "data")
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, source=str(folder), run_id=run.info.run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


# What the store-fault tests make a store say: a fault of the system, never read as an absence.
FAULT = "this is a fault of the store, not a missing model"


def assert_store_fault(raised: Any, store: str) -> None:
    """The error names the store and the fault in one line, and does not read as a missing model."""
    message = str(raised.value)
    assert store in message and FAULT in message, message
    assert "\n" not in message
    assert "no registered model" not in message and "registered for model" not in message
