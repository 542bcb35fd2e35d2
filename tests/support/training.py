"""A candidate trained and evaluated through the library, the components' own calls on a copy of
the champion, the session's first champion, and the wait for a training's next checkpoint."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from support.images import write_images
from support.stores import own_store


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


def prepare_splits(work: Path, source: Path, **overrides: Any) -> tuple[Path, Any]:
    """ingest -> split of `source` under `work`: the splits folder and the config."""
    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.settings.config import build_config

    config = build_config(overrides={"data.source": str(source), "train.batch_size": 16, **overrides})
    ingest_source(config, work / "dataset")
    split_dataset(work / "dataset", {name: work / "splits" / name for name in SPLITS}, config)
    return work / "splits", config


def wait_for_checkpoint(
    checkpoints: Path, proc: Any, *, after_epoch: int = 0, skip: Collection[str] = (), seconds: float = 300
) -> dict:
    """The first progress.json under `checkpoints` (a state folder's checkpoints) of a run not in
    `skip` that names an epoch past `after_epoch`, polled every 50 ms while `proc` (the training's
    Popen) runs, for at most `seconds`."""
    import json
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        for path in checkpoints.glob("*/progress.json") if checkpoints.is_dir() else []:
            try:
                progress = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):  # replaced while being read: read it again
                continue
            if progress["run_id"] not in skip and progress["epoch"] > after_epoch:
                return progress
        time.sleep(0.05)
    raise AssertionError(
        f"no epoch past {after_epoch} checkpointed within {seconds:g} s (exit status of the training: {proc.poll()})"
    )
