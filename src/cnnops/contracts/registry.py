"""What the registry holds for cnnops: the tag names, a version's tags as one typed record
(`VersionTags`, written by `version_tag_values` and read by `read_version_tags`), what a
registration did, and what `cnnops status` and `/info` say of a version."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from cnnops.contracts.gate import GateDecision
from cnnops.contracts.records import Frozen, Record

TAG_PREFIX = "cnnops."
# On the registered model: cnnops created it and manages its aliases.
MANAGED_TAG = "cnnops.managed"
# On a training run: the alias its registration gave it (the run's side of the decision).
DECISION_TAG = "cnnops.gate_decision"
SPEC_TAG = "cnnops.spec"
# A version's registration: pending from its creation until its alias is set, then complete;
# interrupted once a later reader has resolved one that was killed half way. Versions registered
# before this tag existed carry none and are complete.
REGISTRATION_TAG = "cnnops.registration"
PENDING, COMPLETE, INTERRUPTED = "pending", "complete", "interrupted"
# The run artifact that keeps the decision of one registered version, in one shape
# (`RegisteredDecision`): complete, interrupted, or rolled back.
DECISION_ARTIFACT = "gate/decision-v{version}.json"


class RecordedEvidence(Frozen):
    """The paired comparison a version's tags keep (the gate's `PairedEvidence`, less the scores)."""

    p_value: float
    difference: float
    interval_low: float
    interval_high: float
    confidence: float
    only_candidate_right: int
    only_champion_right: int


class VersionFacts(Frozen):
    """What is known of a model version besides its number: aliases, test scores, the gate's
    decision and evidence."""

    aliases: list[str]
    run_id: str | None
    created_at: str
    test_accuracy: float | None
    test_macro_f1: float | None
    decision: str | None
    reason: str | None
    registration: str | None  # pending, complete, interrupted; None for a version older than the tag
    champion_score: float | None
    candidate_score_compared: float | None
    compared_on: int | None
    compared_with_version: int | None
    chance_score: float | None
    best_baseline: str | None
    best_baseline_score: float | None
    evidence: RecordedEvidence | None
    # What serves it (onnx or keras; None: `serve.runtime` cannot serve it, or a version older than
    # the tag) and why.
    served_by: str | None = None
    served_by_reason: str | None = None


class VersionStatus(VersionFacts):
    """One registered version."""

    version: int


class ModelStatus(Frozen):
    name: str
    champion: VersionStatus | None
    challenger: VersionStatus | None
    versions: list[VersionStatus]


class RegistryStatus(Record):
    """The store described and the models in it."""

    tracking_uri: str
    models: list[ModelStatus]


class VersionTags(Frozen):
    """A registered version's `cnnops.*` tags as one record: what a registry reader needs without
    opening the run (scores, the gate's decision and evidence, the input spec). Every field is
    optional: a version registered by hand or by an older cnnops carries fewer."""

    decision: str | None = None
    reason: str | None = None
    gate_metric: str | None = None
    candidate_score: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    n_test: int | None = None
    spec: str | None = None  # the ModelSpec's JSON (`ModelSpec.to_json`)
    run_id: str | None = None
    registration: str | None = None
    compared_with_version: int | None = None
    champion_score: float | None = None
    candidate_score_compared: float | None = None
    compared_on: int | None = None
    chance_score: float | None = None
    best_baseline: str | None = None
    best_baseline_score: float | None = None
    evidence: RecordedEvidence | None = None
    # What serves it (onnx or keras; None when `serve.runtime` cannot serve it) and why.
    served_by: str | None = None
    served_by_reason: str | None = None


# How each kind of value is written into a tag; tags are strings, read back by `read_version_tags`.
SCORE_FIELDS = frozenset(
    {
        "candidate_score",
        "test_accuracy",
        "test_macro_f1",
        "champion_score",
        "candidate_score_compared",
        "chance_score",
        "best_baseline_score",
    }
)


def tag_key(field: str) -> str:
    """The registry tag that holds `field` of `VersionTags`."""
    return TAG_PREFIX + field


def version_tag_values(tags: VersionTags) -> dict[str, str]:
    """The one writer: the record as the registry's string tags (fields that are None are left out)."""
    values: dict[str, str] = {}
    for field, value in tags.model_dump(exclude={"evidence"}, exclude_none=True).items():
        values[tag_key(field)] = f"{value:.6f}" if field in SCORE_FIELDS else str(value)
    evidence = tags.evidence
    if evidence is not None:
        values.update(
            {
                tag_key("p_value"): f"{evidence.p_value:.6g}",
                tag_key("difference"): f"{evidence.difference:.6f}",
                tag_key("interval"): f"[{evidence.interval_low:.6f}, {evidence.interval_high:.6f}]",
                tag_key("confidence"): f"{evidence.confidence:g}",
                tag_key("only_candidate_right"): str(evidence.only_candidate_right),
                tag_key("only_champion_right"): str(evidence.only_champion_right),
            }
        )
    return values


def read_version_tags(values: Mapping[str, str]) -> VersionTags:
    """The one reader: the record from a version's tags (pydantic parses the numbers)."""
    fields = {
        field: values[tag_key(field)]
        for field in VersionTags.model_fields
        if field != "evidence" and tag_key(field) in values
    }
    evidence = None
    if tag_key("p_value") in values:
        low, high = json.loads(values[tag_key("interval")])
        evidence = RecordedEvidence(
            p_value=float(values[tag_key("p_value")]),
            difference=float(values[tag_key("difference")]),
            interval_low=low,
            interval_high=high,
            confidence=float(values[tag_key("confidence")]),
            only_candidate_right=int(values[tag_key("only_candidate_right")]),
            only_champion_right=int(values[tag_key("only_champion_right")]),
        )
    return VersionTags.model_validate({**fields, "evidence": evidence})


class RegisteredDecision(Record):
    """`gate/decision-vN.json` in the training run: what became of one registered version. A
    complete registration keeps the gate's whole decision (`gate`, the `GateDecision`'s JSON);
    an interrupted or rolled-back one says so, with the reason."""

    version: int
    alias: str
    reason: str
    outcome: Literal["complete", "interrupted", "rolled-back"]
    gate: GateDecision | None = None


class Registration(Frozen):
    """What `register_model` did: the new version and the alias it holds, and why."""

    registered_model: str
    version: int
    alias: str
    reason: str
