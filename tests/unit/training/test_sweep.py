"""Sweep planning and selection, without training: the grid, the checks made before any parent run
exists, and a ranking that never crowns a diverged candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnops.contracts.model import RunRecord, read_sweep_ranking
from cnnops.contracts.records import write_record
from cnnops.core.errors import CnnopsError
from cnnops.settings.config import build_config
from cnnops.training.sweep import check_candidates, plan_candidates, select_best


def test_candidates_are_every_combination_and_empty_lists_keep_the_train_values():
    config = build_config(
        overrides={
            "sweep.architecture": ["simple-cnn", "deep-cnn"],
            "sweep.learning_rate": [0.01, 0.001],
            "train.augmentation": "light",
        }
    )
    candidates = plan_candidates(config)
    assert [(c.train.architecture, c.train.learning_rate, c.train.augmentation) for c in candidates] == [
        ("simple-cnn", 0.01, "light"),
        ("simple-cnn", 0.001, "light"),
        ("deep-cnn", 0.01, "light"),
        ("deep-cnn", 0.001, "light"),
    ]
    assert len(plan_candidates(build_config())) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"sweep.architecture": ["mobilenet_v2", "simple-cnn"], "train.fine_tune_epochs": 2},
            r"^simple-cnn is trained whole from the start, so it has no backbone to fine-tune",
        ),
        (
            {"sweep.architecture": ["mobilenet_v2", "deep-cnn"], "train.weights": "imagenet"},
            r"^deep-cnn is trained from scratch and has no pretrained weights",
        ),
    ],
)
def test_a_candidate_that_cannot_train_fails_the_plan_before_any_run(overrides, message):
    with pytest.raises(CnnopsError, match=message):
        check_candidates(build_config(overrides=overrides))


def test_a_zero_learning_rate_in_a_sweep_is_a_config_error():
    with pytest.raises(CnnopsError, match=r"sweep.learning_rate.1: Input should be greater than 0"):
        build_config(overrides={"sweep.learning_rate": [0.01, 0]})


def write_candidate(folder: Path, run_id: str, val_accuracy: float, val_loss: float) -> Path:
    folder.mkdir(parents=True)
    write_record(
        folder / "run.json",
        RunRecord(
            run_id=run_id,
            experiment_id="0",
            model_uri=f"models:/{run_id}",
            model_id=None,
            registered_model="cnnops-test",
            best_epoch=3,
            val_accuracy=val_accuracy,
            val_loss=val_loss,
        ),
    )
    (folder / "config.json").write_text(json.dumps(build_config().model_dump(mode="json")))
    return folder


@pytest.mark.parametrize("metric", ["val_accuracy", "val_loss"])
def test_a_diverged_candidate_ranks_last_whatever_the_metric(tmp_path, metric):
    config = build_config(overrides={"sweep.metric": metric})
    folders = [
        write_candidate(tmp_path / "nan", "diverged", float("nan"), float("nan")),
        write_candidate(tmp_path / "a", "good", 0.9, 0.3),
        write_candidate(tmp_path / "b", "better", 0.95, 0.2),
    ]
    best = select_best(folders, config, tmp_path / "best")
    assert best.run_id == "better"
    recorded = read_sweep_ranking(tmp_path / "best")
    assert [row.run_id for row in recorded.ranking] == ["better", "good", "diverged"]
    assert recorded.metric == config.sweep.metric
    with pytest.raises(CnnopsError, match=r"^every one of the 1 sweep candidates diverged"):
        select_best(folders[:1], config, tmp_path / "none")
