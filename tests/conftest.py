"""Shared fixtures: an isolated state folder per test, and tiny learnable image folders."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnops.processes import free_port, stop_process_group  # noqa: F401 - the tests import them from here

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
    from cnnops.config import build_config
    from cnnops.evaluate import evaluate_model
    from cnnops.ingest import ingest_source
    from cnnops.split import SPLITS, split_dataset
    from cnnops.train import train_model

    config = build_config(
        overrides={"data.source": str(source), "train.batch_size": 16, "train.patience": 20, **overrides}
    )
    ingest_source(config, work / "dataset")
    split_dataset(work / "dataset", {name: work / name for name in SPLITS}, config)
    record = train_model(work / "train", work / "val", work / "model", config)
    metrics = evaluate_model(work / "model", work / "test", work / "evaluation")
    return {
        "config": config,
        "model": work / "model",
        "test": work / "test",
        "evaluation": work / "evaluation",
        "metrics": metrics.model_dump(mode="json", by_alias=True),
        **record.model_dump(),
    }


@contextmanager
def own_store(work: Path) -> Iterator[None]:
    """A state folder (and so an MLflow store) of its own under `work`, for a module's fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNOPS_HOME", str(work / "state"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@contextmanager
def first_champion(work: Path, **overrides) -> Iterator[dict]:
    """In its own state folder under `work`: tiny images, a model trained on them for 12 epochs,
    gated and registered as the first champion."""
    from cnnops.gate import decide_promotion
    from cnnops.registration import register_model

    with own_store(work):
        source = write_images(work / "images", per_class=30, seed=1)
        trained = train_candidate(work / "strong", source, **{"train.epochs": 12, **overrides})
        decision = decide_promotion(trained["model"], trained["test"], trained["evaluation"], trained["config"])
        result = register_model(trained["model"], trained["evaluation"], decision)
        yield {"work": work, "source": source, "strong": trained, "first": result, "decision": decision}


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """A tiny real model, registered as champion in its own store and exported for serving."""
    from cnnops.export import export_registered

    work = tmp_path_factory.mktemp("served")
    with first_champion(work, **{"gate.floor": 0.0}) as champion:
        trained, decision, source = champion["strong"], champion["decision"], champion["source"]
        model = export_registered(decision.registered_model)
        yield {
            "home": work / "state",
            "model": model,
            "source": source,
            "test": trained["test"],
            "name": decision.registered_model,
        }


@pytest.fixture(scope="session")
def server(served, tmp_path_factory):
    """`cnnops serve` for real (BentoML on a free loopback port), stopped by PID afterwards."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, "CNNOPS_HOME": str(served["home"])}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "cnnops"), "serve", "--port", str(port), "--model-name", served["name"]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cnnops serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"cnnops serve not ready in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "pid": proc.pid, "log": log, **served}
    finally:
        stop_process_group(proc)
