"""Which test images become canaries, and the rule that a champion needs a passed
infra-validation of its own run's Bento."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cnnops.contracts.gate import GateDecision
from cnnops.contracts.infra import CanaryCheck, InfraValidation, read_canaries, write_canaries
from cnnops.contracts.model import ModelSpec
from cnnops.evaluation.canaries import pick_canaries
from cnnops.inference.service_client import Answer
from cnnops.promotion.infra_validation import judge
from cnnops.promotion.registration import require_infra_validation
from cnnops.settings.config import InfraValidationConfig

SPEC = ModelSpec(class_names=["a", "b", "c"], height=8, width=8, mode="RGB", architecture="tiny")


def manifest(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"/img/{i}.png" for i in range(len(labels))],
            "sha256": [f"h{i}" for i in range(len(labels))],
            "label": labels,
        }
    )


def test_canaries_cover_every_class_before_any_twice_and_keep_the_probabilities(tmp_path):
    labels = ["a", "a", "a", "b", "c", "c"]
    probabilities = np.eye(3)[[0, 0, 0, 1, 2, 2]] * 0.9 + 0.1 / 3
    picked = pick_canaries(manifest(labels), probabilities, SPEC, "run1", count=4)
    assert [c.label for c in picked.images] == ["a", "a", "b", "c"]
    assert [c.path for c in picked.images] == ["/img/0.png", "/img/1.png", "/img/3.png", "/img/4.png"]
    assert picked.images[2].probabilities == pytest.approx(list(probabilities[3]))
    assert pick_canaries(manifest(labels), probabilities, SPEC, "run1", count=2).images[1].label == "b"
    write_canaries(tmp_path, picked)
    assert read_canaries(tmp_path) == picked


def decision(alias: str) -> GateDecision:
    return GateDecision(
        registered_model="m",
        metric="accuracy",
        margin=0.005,
        floor=0.5,
        forced=False,
        test="paired",
        confidence=0.95,
        candidate_score=0.9,
        n_test=10,
        chance_score=0.3,
        min_over_chance=0.05,
        decided_at="2026-12-03T00:00:00+00:00",
        alias=alias,
        reason="the gate's reason",
    )


def validation(passed: bool, run_id: str = "run1") -> InfraValidation:
    return InfraValidation(
        run_id=run_id,
        bento="cnnops:x",
        passed=passed,
        reason="canary 1.png was answered 500, not 200",
        ready_seconds=3.0,
        canaries=[],
        garbage_status=400,
        log_tail=[],
    )


def test_only_a_passed_validation_of_the_same_run_keeps_a_champion():
    assert require_infra_validation(decision("champion"), validation(True), "run1").alias == "champion"
    failed = require_infra_validation(decision("champion"), validation(False), "run1")
    assert failed.alias == "challenger"
    assert (
        failed.reason
        == "infra validation failed: canary 1.png was answered 500, not 200 (the gate said: the gate's reason)"
    )
    other = require_infra_validation(decision("champion"), validation(True, "run2"), "run1")
    assert other.alias == "challenger" and "is of run run2, not run1" in other.reason
    missing = require_infra_validation(decision("champion"), None, "run1")
    assert missing.alias == "challenger" and "was not infra-validated" in missing.reason
    assert require_infra_validation(decision("challenger"), None, "run1") == decision("challenger")


def check(**changes) -> CanaryCheck:
    fields = {"path": "/img/0.png", "label": "a", "expected": "a", "status": 200, "served": "a", "max_difference": 1e-7}
    return CanaryCheck(**{**fields, **changes})


def test_the_first_wrong_answer_is_the_reason():
    settings = InfraValidationConfig()
    refused = Answer(400, b"{}")
    assert judge([check()], refused, settings) is None
    assert judge([check(status=503, served=None, max_difference=None)], refused, settings) == (
        "canary 0.png was answered 503, not 200"
    )
    assert judge([check(served="b")], refused, settings) == "canary 0.png was served as b, the evaluation said a"
    assert "differ from the evaluation's by 0.002" in str(judge([check(max_difference=0.002)], refused, settings))
    assert judge([check()], Answer(500, b""), settings) == "a garbage upload was answered 500, not a 4xx"
    assert judge([check()], Answer(200, b""), settings) == "a garbage upload was answered 200, not a 4xx"
