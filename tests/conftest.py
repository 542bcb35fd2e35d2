"""Shared fixtures: an isolated state folder per test, and tiny learnable image folders."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnops.core.processes import free_port, stop_process_group  # noqa: F401 - the tests import them from here

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_CLASSES = ("disc", "cross", "stripes")
# The venv's own `cnnops` command, for tests that run it as a user does.
CNNOPS = Path(sys.executable).parent / "cnnops"


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CNNOPS_HOME (and so a fresh MLflow sqlite store) for one test."""
    home = tmp_path / "state"
    monkeypatch.setenv("CNNOPS_HOME", str(home))
    for variable in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        monkeypatch.delenv(variable, raising=False)
    return home


def draw(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """One noisy RGB image of a shape class; the classes are easy for a CNN, hard for chance."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
    if kind == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 4) ** 2
    elif kind == "cross":
        mask = (np.abs(yy - cy) <= 1) | (np.abs(xx - cx) <= 1)
    else:
        mask = (xx + rng.integers(0, 4)) % 4 < 2
    pixels = rng.integers(0, 60, size=(size, size, 3))
    pixels[mask] = rng.integers(190, 256, size=(int(mask.sum()), 3))
    return pixels.astype(np.uint8)


def write_images(root: Path, per_class: int = 20, classes: tuple[str, ...] = TINY_CLASSES, seed: int = 0) -> Path:
    """Write a class-folder dataset of `draw` images under `root`."""
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(draw(label, rng)).save(root / label / f"{label}_{index:03d}.png")
    return root


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


@pytest.fixture
def make_images(tmp_path: Path) -> Callable[..., Path]:
    """`make_images(per_class=20, classes=TINY_CLASSES, seed=0, name="images")` under the test's tmp_path."""

    def make(per_class: int = 20, classes: tuple[str, ...] = TINY_CLASSES, seed: int = 0, name: str = "images") -> Path:
        return write_images(tmp_path / name, per_class, classes, seed)

    return make


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """Every file's size and mtime under a folder: proof that a step left the source untouched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(root.rglob("*"))}


def train_candidate(work: Path, source: Path, **overrides) -> dict:
    """ingest -> split -> train -> evaluate through the library, as the components call it."""
    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.evaluation.evaluate import evaluate_model
    from cnnops.settings.config import build_config
    from cnnops.training.train import train_model

    config = build_config(
        overrides={"data.source": str(source), "train.batch_size": 16, "train.patience": 20, **overrides}
    )
    ingest_source(config, work / "dataset")
    split_dataset(work / "dataset", {name: work / name for name in SPLITS}, config)
    record = train_model(work / "train", work / "val", work / "model", config)
    metrics = evaluate_model(work / "model", work / "test", work / "evaluation", work / "val")
    return {
        "config": config,
        "model": work / "model",
        "test": work / "test",
        "evaluation": work / "evaluation",
        "metrics": metrics.model_dump(mode="json", by_alias=True),
        **record.model_dump(),
    }


def component_config(source: Path, **overrides) -> dict:
    """A component's `config` parameter: the resolved config as the pipeline passes it."""
    from cnnops.settings.config import build_config, to_pipeline_parameter

    return to_pipeline_parameter(build_config(overrides={"data.source": str(source), **overrides}))


def component_splits(config: dict, work: Path) -> dict:
    """ingest -> split through the components' `python_func` under `work`: the train, val and test
    Dataset artifacts, as the next components receive them."""
    from kfp.dsl import Dataset

    from cnnops.components.ingest import ingest
    from cnnops.components.split import split

    dataset = Dataset(uri=str(work / "dataset"))
    ingest.python_func(config=config, dataset=dataset)
    splits = {name: Dataset(uri=str(work / name)) for name in ("train", "val", "test")}
    split.python_func(
        config=config, dataset=dataset, train_data=splits["train"], val_data=splits["val"], test_data=splits["test"]
    )
    return splits


def gate_the_champion_against_itself(copy: dict, work: Path, config: dict) -> tuple[str, Any]:
    """baselines -> gate through the components' `python_func`, the copied champion as the
    candidate on its own splits: the alias it earns, and the decision artifact."""
    from kfp.dsl import Artifact, Dataset, Metrics, Model

    from cnnops.components.baselines import baselines
    from cnnops.components.gate import gate

    strong = copy["strong"]
    scores = Artifact(uri=str(work / "baselines"))
    baselines.python_func(
        config={},
        train_data=Dataset(uri=str(copy["work"] / "strong" / "train")),
        test_data=Dataset(uri=str(strong["test"])),
        scores=scores,
        metrics=Metrics(uri=str(work / "baseline-metrics")),
    )
    decision = Artifact(uri=str(work / "decision.json"))
    alias = gate.python_func(
        config=config,
        model=Model(uri=str(strong["model"])),
        test_data=Dataset(uri=str(strong["test"])),
        evaluation=Artifact(uri=str(strong["evaluation"])),
        baselines=scores,
        decision=decision,
    )
    return alias, decision


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


# Variables cnnops sets for the processes it starts (the state folder and the tool caches kept
# inside it): code that sets them in the test process must put them back.
OWN_VARIABLES = ("KERAS_HOME", "MPLCONFIGDIR", "BENTOML_HOME")


@pytest.fixture(autouse=True)
def environment_is_restored() -> Iterator[None]:
    """Every test starts from the same environment. Whatever a test leaves changed is put back
    (MLflow itself exports MLFLOW_TRACKING_URI whenever its store changes); a cnnops variable
    left changed also fails the test, naming it."""
    before = dict(os.environ)
    yield
    leaked = [name for name in restore_environ(before) if name in OWN_VARIABLES or name.startswith("CNNOPS_")]
    if leaked:
        pytest.fail(f"the test left {', '.join(leaked)} changed in os.environ (restored now); the code must restore it")


@contextmanager
def own_store(work: Path) -> Iterator[None]:
    """A state folder (and so an MLflow store) of its own under `work`, for a module's fixture;
    the environment is restored when the block ends."""
    with restored_environ():
        os.environ["CNNOPS_HOME"] = str(work / "state")
        for variable in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
            os.environ.pop(variable, None)
        yield


def train_first_champion(work: Path) -> dict:
    """In its own state folder under `work`: tiny images, a model trained on them for 12 epochs,
    gated, infra-validated in a real server and registered as the first champion."""
    from cnnops.contracts.infra import write_infra_validation
    from cnnops.promotion.gate import decide_promotion
    from cnnops.promotion.registration import register_model
    from cnnops.serving.infra import validate_candidate

    with own_store(work):
        source = write_images(work / "images", per_class=30, seed=1)
        trained = train_candidate(work / "strong", source, **{"train.epochs": 12})
        decision = decide_promotion(trained["model"], trained["test"], trained["evaluation"], trained["config"])
        validation = validate_candidate(trained["model"], trained["evaluation"], trained["config"])
        write_infra_validation(work / "validation", validation)
        inputs = (trained["model"], trained["test"], trained["evaluation"], trained["config"])
        result = register_model(*inputs, decision, None, validation)
    return {
        "work": work,
        "source": source,
        "strong": trained,
        "first": result,
        "decision": decision,
        "validation": validation,
        "validation_dir": work / "validation",
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared champion trains for 12 epochs: a test that uses it is marked slow (or server or
    browser), so that `make test-fast` never pays for it. Tests that need the Docker daemon share
    one xdist group: under `--dist loadgroup` they run one after another on one worker, so two
    image builds never compete for the daemon and its cache."""
    unmarked = [
        item.nodeid
        for item in items
        if "champion" in getattr(item, "fixturenames", ())
        and not any(item.get_closest_marker(name) for name in ("slow", "server", "browser"))
    ]
    if unmarked:
        raise pytest.UsageError("mark these slow, they use the shared champion: " + ", ".join(unmarked))
    for item in items:
        if item.get_closest_marker("containers"):
            item.add_marker(pytest.mark.xdist_group("docker"))


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], dict]) -> dict:
    """`build(folder)` run once for the whole session, whatever the number of xdist workers: the
    first worker builds it under a file lock in the session's shared temporary folder, the others
    read what it pickled. Its folders are shared, so they are read, never changed."""
    import pickle

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    done = shared / f"{name}.pickle"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            built = build(shared / name)
            done.write_bytes(pickle.dumps(built))
        return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def champion(tmp_path_factory) -> dict:
    """The first champion, trained once per session and shared by every test (and xdist worker)
    that needs one. Its store is read, never changed: a test that registers versions, moves
    aliases or logs runs takes `champion_copy` instead."""
    return built_once(tmp_path_factory, "champion", train_first_champion)


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


@pytest.fixture(scope="session")
def served(champion, tmp_path_factory) -> dict:
    """The shared champion exported for serving, once per session."""
    from cnnops.inference.export import export_registered

    def export(_: Path) -> dict:
        name = champion["strong"]["registered_model"]
        with own_store(champion["work"]):
            model = export_registered(name)
        return {
            "home": champion["work"] / "state",
            "model": model,
            "source": champion["source"],
            "test": champion["strong"]["test"],
            "test_accuracy": champion["strong"]["metrics"]["accuracy"],
            "name": name,
        }

    return built_once(tmp_path_factory, "served", export)


@pytest.fixture(scope="session")
def server(served, tmp_path_factory):
    """`cnnops serve` for real (BentoML on a free loopback port), stopped by PID afterwards."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with cnnops_serving(served["home"], served["name"], log) as (url, pid):
        yield {"url": url, "pid": pid, "log": log, **served}


@contextmanager
def cnnops_serving(home: Path, model_name: str, log: Path, seconds: float = 120) -> Iterator[tuple[str, int]]:
    """`cnnops serve` of the model's champion from the state folder `home`, on a free loopback
    port: its URL and PID once it is ready, stopped by PID (its children with it) afterwards."""
    import subprocess

    from cnnops.inference.service_client import wait_until_ready

    # The drift window is kept beside the log, not in `home`: servers of other tests (and xdist
    # workers) may serve the same state folder, and must not read each other's traffic back.
    env = {**os.environ, "CNNOPS_HOME": str(home), "CNNOPS_WINDOW_FILE": str(log.parent / "drift-window.npz")}
    env.pop("MLFLOW_TRACKING_URI", None)
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(CNNOPS), "serve", "--port", str(port), "--model-name", model_name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        failed = wait_until_ready(url, proc, seconds)
        if failed:
            raise RuntimeError(f"cnnops serve: {failed}:\n{log.read_text()[-3000:]}")
        yield url, proc.pid
    finally:
        stop_process_group(proc)


@pytest.fixture
def postgres() -> Iterator[Any]:
    """A fresh PostgreSQL 15 cluster on loopback with an `mlflow` database, stopped by PID after.

    Its folder is outside tmp_path: as root the cluster runs as `postgres`, who cannot enter
    pytest's root-only temporary folders.
    """
    import tempfile

    import postgres as pg

    if not pg.available():
        pytest.fail("the shared-store tests need Debian's postgresql-15 (make test installs it)")
    folder = Path(tempfile.mkdtemp(prefix="cnnops-pg-"))
    server = pg.start_postgres(folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared_server(postgres: Any, tmp_path: Path) -> Iterator[dict]:
    """An MLflow tracking server on the PostgreSQL store with proxied artifacts, as a team runs it:
    `uri` (what clients set as MLFLOW_TRACKING_URI), `postgres`, `artifacts` and `log`."""
    from cnnops.tracking.server import running_server

    artifacts, log = tmp_path / "shared-artifacts", tmp_path / "shared-server.log"
    with running_server(free_port(), log, store=postgres.uri, artifacts=artifacts) as uri:
        yield {"uri": uri, "postgres": postgres, "artifacts": artifacts, "log": log}
