"""Distillation: on a fixed, seeded task whose training labels are partly wrong, a student that
learns from a teacher's softened probabilities beats the same student trained on the labels alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.training import train_candidate

from cnnops.data.ingest import ingest_source
from cnnops.data.split import SPLITS, split_dataset
from cnnops.evaluation.evaluate import evaluate_model
from cnnops.settings.config import build_config
from cnnops.training.train import train_model


def flip_labels(root: Path, share: float, seed: int) -> None:
    """Move `share` of each class's files into the next class's folder: wrong labels, right images."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in root.iterdir())
    moves = []
    for index, label in enumerate(classes):
        files = sorted((root / label).iterdir())
        for file in rng.choice(files, size=int(share * len(files)), replace=False):
            moves.append((file, root / classes[(index + 1) % len(classes)] / f"flipped_{file.name}"))
    for source, target in moves:
        shutil.move(source, target)


@pytest.mark.slow
def test_a_distilled_student_beats_the_same_student_without_its_teacher(state_home, tmp_path):
    teacher = train_candidate(
        tmp_path / "teacher",
        write_images(tmp_path / "clean", per_class=60, seed=1),
        **{"train.architecture": "deep-cnn", "train.epochs": 10},
    )
    assert teacher["metrics"]["accuracy"] >= 0.9

    noisy = write_images(tmp_path / "noisy", per_class=30, seed=2)
    flip_labels(noisy, share=0.4, seed=0)
    config = build_config(
        overrides={
            "data.source": str(noisy),
            "train.batch_size": 16,
            "train.epochs": 10,
            "train.patience": 20,
            "distill.alpha": 0.1,
            "distill.temperature": 2,
        }
    )
    ingest_source(config, tmp_path / "noisy-ds")
    split_dataset(tmp_path / "noisy-ds", {name: tmp_path / "noisy-splits" / name for name in SPLITS}, config)
    clean_test = tmp_path / "clean-test"
    ingest_source(
        config.model_copy(
            update={
                "data": config.data.model_copy(
                    update={"source": str(write_images(tmp_path / "fresh", per_class=30, seed=3))}
                )
            }
        ),
        clean_test,
    )

    scores = {}
    for role, teacher_dir in (("alone", ""), ("distilled", str(teacher["model"]))):
        splits = tmp_path / "noisy-splits"
        taught = config.model_copy(update={"distill": config.distill.model_copy(update={"teacher": teacher_dir})})
        train_model(splits / "train", splits / "val", tmp_path / role, taught)
        scores[role] = evaluate_model(tmp_path / role, clean_test, tmp_path / f"{role}-eval").accuracy
    assert scores["distilled"] > scores["alone"] + 0.02, scores  # 1.00 against 0.93 on this machine

    record = json.loads((tmp_path / "distilled" / "run.json").read_text())
    run = MlflowClient().get_run(record["run_id"])
    assert run.data.tags["cnnops.distilled"] == "true"
    comparison = mlflow.artifacts.load_dict(f"runs:/{record['run_id']}/distillation/comparison.json")
    assert comparison["teacher"]["n_params"] > comparison["student"]["n_params"]
    assert comparison["student"]["cpu_images_per_second"] > 0
    assert run.data.metrics["distill.teacher.val_accuracy"] == comparison["teacher"]["val_accuracy"]


@pytest.mark.slow
def test_a_registered_teacher_is_exported_like_serving_and_must_match_the_data(served, monkeypatch):
    import pytest

    from cnnops.contracts.model import ModelSpec
    from cnnops.core.errors import CnnopsError
    from cnnops.training.distill import load_teacher, resolve_teacher

    monkeypatch.setenv("CNNOPS_HOME", str(served["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = resolve_teacher(f"{served['name']}@champion")
    spec = served["model"].spec
    assert load_teacher(folder, spec).count_params() > 0
    assert resolve_teacher(f"{served['name']}:1") == folder  # the same pinned version
    other = ModelSpec(["cat", "dog"], spec.height, spec.width, spec.mode, "simple-cnn")
    with pytest.raises(CnnopsError, match=r"predicts cross, disc, stripes; the data has cat, dog"):
        load_teacher(folder, other)
    with pytest.raises(CnnopsError, match=r"^--distill-from nonsense: not a model folder, and not NAME@ALIAS"):
        resolve_teacher("nonsense")
