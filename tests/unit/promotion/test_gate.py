"""Small data and the gate, for real: the default recipe on 60 images per class, and a gate that
holds every candidate to chance, to the baselines on the same split, and to paired evidence
against the champion (a real sqlite store and registry)."""

import json

import numpy as np
import pytest

from cnnops.contracts.gate import GateDecision, GateFacts, read_decision, write_decision
from cnnops.core.errors import CnnopsError
from cnnops.evaluation.evidence import compare_paired
from cnnops.promotion.gate import judge_candidate
from cnnops.settings.config import build_config

NAME = "gate-test"


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
