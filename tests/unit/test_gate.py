"""Small data and the gate, for real: the default recipe on 60 images per class, and a gate that
holds every candidate to chance, to the baselines on the same split, and to paired evidence
against the champion (a real sqlite store and registry)."""

import json
import os
import subprocess

import mlflow
import numpy as np
import pytest
from support.commands import CNNOPS
from support.images import write_images
from support.stores import own_store
from support.training import train_candidate

from cnnops.contracts.gate import GateDecision, GateFacts, read_decision, write_decision
from cnnops.contracts.registry import Registration
from cnnops.core.errors import CnnopsError
from cnnops.evaluation.baselines import train_baselines
from cnnops.evaluation.evidence import compare_paired
from cnnops.promotion.gate import decide_promotion, judge_candidate
from cnnops.promotion.registration import register_model
from cnnops.promotion.status import describe_registry
from cnnops.settings.config import build_config

NAME = "gate-test"
# 60 images per class, 3 classes: 108 train, 18 val, 54 test images.
SMALL = {"split.train": 0.6, "split.val": 0.1, "split.test": 0.3, "registry.model_name": NAME}
# The default recipe: none of the batch size and patience the other tests' helper pins.
DEFAULTS = {"train.batch_size": None, "train.patience": None}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    work = tmp_path_factory.mktemp("gate")
    with own_store(work):
        source = write_images(work / "images", per_class=60, seed=5)
        default = train_candidate(work / "default", source, **SMALL, **DEFAULTS)
        # A learning rate of 1e-7: the weights barely move, so it answers at chance.
        chance = train_candidate(
            work / "chance", source, **SMALL, **DEFAULTS, **{"train.learning_rate": 1e-7, "train.epochs": 2}
        )
        # One epoch at 3e-5: it learns something, but less than pixels-in-a-logistic-regression.
        weak = train_candidate(
            work / "weak", source, **SMALL, **DEFAULTS, **{"train.learning_rate": 3e-5, "train.epochs": 1}
        )
        floors = work / "baselines"
        train_baselines(work / "default" / "train", work / "default" / "test", default["config"], floors)
        yield {"work": work, "default": default, "chance": chance, "weak": weak, "baselines": floors}


def gate(candidate: dict, floors, **overrides) -> GateDecision:
    config = build_config(overrides={**SMALL, **overrides})
    return decide_promotion(candidate["model"], candidate["test"], candidate["evaluation"], config, floors)


def register(candidate: dict, decision: GateDecision, floors, **overrides) -> Registration:
    """Register with the inputs and rules the candidate was gated with, as the pipeline does: a
    champion's Bento infra-validated in a real server first."""
    from cnnops.serving.infra import validate_candidate

    config = build_config(overrides={**SMALL, **overrides})
    inputs = (candidate["model"], candidate["test"], candidate["evaluation"], config)
    validation = (
        validate_candidate(candidate["model"], candidate["evaluation"], config)
        if decision.alias == "champion"
        else None
    )
    return register_model(*inputs, decision, floors, validation)


@pytest.mark.slow
def test_the_default_recipe_learns_sixty_images_per_class(small):
    default = small["default"]
    assert default["metrics"]["n_test"] == 54
    assert default["metrics"]["accuracy"] >= 0.9  # chance is 0.33
    params = mlflow.get_run(default["run_id"]).data.params
    # 108 images: batches of 8 give 14 steps an epoch, too few for moving batchnorm averages.
    assert (params["recipe.batch_size"], params["recipe.steps_per_epoch"]) == ("8", "14")
    assert (params["recipe.patience"], params["recipe.min_epochs"]) == ("4", "8")
    assert params["recipe.recalibrate_batchnorm"] == "True"
    assert params["train.batch_size"] == "None"  # the config said "size it for me"


@pytest.mark.slow
def test_the_gate_holds_candidates_to_chance_the_baselines_and_evidence(small):
    default, chance, floors = small["default"], small["chance"], small["baselines"]

    # No champion yet, and a candidate at chance: it stays challenger, and the reason says why.
    first = gate(chance, floors)
    assert chance["metrics"]["accuracy"] < 0.38
    assert first.alias == "challenger" and first.champion_version is None
    assert "does not beat chance" in first.reason and "0.3333" in first.reason
    assert register(chance, first, floors).alias == "challenger"

    # Above chance and the floor, but below the baselines on the same split: not worth serving.
    weak = small["weak"]
    below = gate(weak, floors)
    best, best_score = below.best_baseline, below.best_baseline_score
    assert best in {"logistic-regression", "random-forest"}
    assert 0.5 <= weak["metrics"]["accuracy"] < best_score
    assert below.alias == "challenger"
    assert f"below the {best} baseline's {best_score:.4f} on the same 54 test images" in below.reason

    # The weak model, crowned on purpose with the baseline rule off ...
    crowned_weak = gate(weak, floors, **{"gate.must_beat_baselines": False})
    assert crowned_weak.alias == "champion"
    weak_version = register(weak, crowned_weak, floors, **{"gate.must_beat_baselines": False}).version

    # ... is replaced by a clearly better candidate, on paired evidence over the same 54 images.
    better = gate(default, floors)
    evidence = better.evidence
    assert better.alias == "champion", better.reason
    assert better.reason.startswith(f"Better than champion v{weak_version} with 95% confidence")
    assert evidence.n_images == 54 and evidence.only_candidate_right > 12 > evidence.only_champion_right
    assert evidence.p_value < 1e-3 and evidence.interval_low > 0.1
    crowned = register(default, better, floors).version

    # With a real champion in place, a chance-level candidate still never takes its place.
    again = gate(chance, floors)
    assert again.alias == "challenger" and again.champion_version == crowned
    assert "does not beat chance" in again.reason

    # The evidence is on the version, and `cnnops status` shows it.
    (model,) = describe_registry(NAME).models
    assert model.champion.version == crowned
    assert model.champion.evidence.only_candidate_right == evidence.only_candidate_right
    assert model.champion.best_baseline == best
    status = subprocess.run(
        [str(CNNOPS), "status", "--model-name", NAME],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=True,
    )
    line = next(text for text in status.stdout.splitlines() if f"vs v{weak_version} on 54 images" in text)
    assert f"only this right {evidence.only_candidate_right}" in line and "McNemar p" in line
    assert f"best baseline {best} {best_score:.4f}" in status.stdout
    recorded = json.loads(mlflow.artifacts.load_text(f"runs:/{default['run_id']}/gate/decision-v{crowned}.json"))
    assert recorded["outcome"] == "complete" and recorded["version"] == crowned
    assert recorded["gate"]["evidence"] == evidence.model_dump() and recorded["gate"]["chance_score"] == pytest.approx(
        1 / 3
    )


def facts(**values) -> GateFacts:
    """What `decide_promotion` gathers, for a candidate at 0.80 on 20 images, 2 classes."""
    gathered = {
        "registered_model": NAME,
        "metric": "accuracy",
        "margin": 0.005,
        "floor": 0.5,
        "forced": False,
        "test": "paired",
        "confidence": 0.95,
        "min_over_chance": 0.05,
        "decided_at": "2026-01-01T00:00:00+00:00",
        "candidate_score": 0.8,
        "chance_score": 0.5,
        "n_test": 20,
        "champion_version": None,
        "best_baseline": None,
        "best_baseline_score": None,
        "candidate_score_compared": None,
        "champion_score": None,
        "compared_on": None,
        "champion_train_overlap": None,
        "evidence": None,
    }
    return GateFacts(**{**gathered, **values})


@pytest.mark.parametrize(
    ("values", "overrides", "alias", "phrase"),
    [
        ({"candidate_score": 0.52}, {}, "challenger", "does not beat chance"),
        # Chance comes first, and --force-promote does not lift it.
        (
            {"candidate_score": 0.52},
            {"gate.floor": 0.9, "gate.force_promote": True},
            "challenger",
            "does not beat chance",
        ),
        ({}, {"gate.floor": 0.9}, "challenger", "below the floor of 0.9000"),
        (
            {"best_baseline": "random-forest", "best_baseline_score": 0.85},
            {},
            "challenger",
            "below the random-forest baseline's 0.8500",
        ),
        (
            {"best_baseline": "random-forest", "best_baseline_score": 0.85},
            {"gate.baseline_tolerance": 0.05},
            "champion",
            "not below the best baseline, random-forest (0.8500)",
        ),
        (
            {"best_baseline": "random-forest", "best_baseline_score": 0.85},
            {"gate.must_beat_baselines": False},
            "champion",
            "There is no champion yet",
        ),
        (
            {"champion_version": 3, "candidate_score_compared": 0.8, "champion_score": 0.795, "compared_on": 20},
            {"gate.test": "none"},
            "champion",
            "Better by at least the margin of 0.0050",
        ),
    ],
)
def test_the_rules_apply_in_order(values, overrides, alias, phrase):
    got, reason = judge_candidate(facts(**values), build_config(overrides=overrides).gate, None)
    assert got == alias and phrase in reason
    assert reason.endswith(".") and "\n" not in reason


def test_a_decision_file_reads_back_whole_and_a_broken_one_is_one_line(tmp_path):
    evidence = compare_paired(
        "accuracy", np.array([0, 1, 1, 0]), np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), 0.95, 0
    )
    decided = GateDecision(
        **dict(facts(champion_version=2, champion_score=0.5, candidate_score_compared=0.75, evidence=evidence)),
        alias="challenger",
        reason="Not shown better.",
    )
    path = tmp_path / "decision"
    write_decision(path, decided)
    assert read_decision(path) == decided
    assert json.loads(path.read_text())["schema_version"] == 1
    path.write_text('{"schema_version": 1, "alias": "champion"}')
    with pytest.raises(CnnopsError, match=r"decision does not hold a valid GateDecision \(") as raised:
        read_decision(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    path.write_text("not json")
    with pytest.raises(CnnopsError, match=rf"^{path} is not valid JSON"):
        read_decision(path)
