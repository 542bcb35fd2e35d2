"""The records between steps: the registry tags written and read by one pair of functions, and the
formatter every refusal of a record uses."""

import pytest
from pydantic import ValidationError

from cnnops.contracts.model import ModelSpec
from cnnops.contracts.registry import (
    RecordedEvidence,
    VersionTags,
    read_version_tags,
    tag_key,
    version_tag_values,
)
from cnnops.core.errors import first_problem

SPEC = ModelSpec(["cat", "dog"], 28, 28, "L", "simple-cnn")


def full_tags() -> VersionTags:
    evidence = RecordedEvidence(
        p_value=0.0123,
        difference=0.05,
        interval_low=0.01,
        interval_high=0.09,
        confidence=0.95,
        only_candidate_right=7,
        only_champion_right=2,
    )
    return VersionTags(
        decision="champion",
        reason="Better than champion v1.",
        gate_metric="accuracy",
        candidate_score=0.9,
        test_accuracy=0.9,
        test_macro_f1=0.89,
        n_test=40,
        spec=SPEC.to_json(),
        run_id="abc",
        compared_with_version=1,
        champion_score=0.85,
        candidate_score_compared=0.9,
        compared_on=38,
        chance_score=0.5,
        best_baseline="logistic",
        best_baseline_score=0.7,
        evidence=evidence,
    )


def test_version_tags_read_back_as_written():
    tags = full_tags()
    values = version_tag_values(tags)
    assert all(key.startswith("cnnops.") and isinstance(value, str) for key, value in values.items())
    assert values[tag_key("test_accuracy")] == "0.900000" and values[tag_key("n_test")] == "40"
    assert values["cnnops.interval"] == "[0.010000, 0.090000]"
    assert read_version_tags(values) == tags
    assert ModelSpec.from_json(values["cnnops.spec"], "tag") == SPEC


def test_a_version_cnnops_did_not_tag_reads_as_empty_and_foreign_tags_are_ignored():
    assert read_version_tags({"owner": "someone"}) == VersionTags()
    assert version_tag_values(VersionTags()) == {}


def test_a_refusal_names_the_first_problem():
    with pytest.raises(ValidationError) as caught:
        VersionTags.model_validate({"n_test": "many"})
    assert first_problem(caught.value).startswith("n_test: ")
    with pytest.raises(ValidationError) as caught:
        RecordedEvidence.model_validate([])
    assert first_problem(caught.value, "the answer").startswith("the answer: ")
