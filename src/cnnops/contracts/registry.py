"""What the registry holds for cnnops: the tag names, a version's tags as one typed record
(`VersionTags`, written by `version_tag_values` and read by `read_version_tags`), what a
registration did, and what `cnnops status` and `/info` say of a version."""

from __future__ import annotations

from cnnops.contracts.records import Frozen, Record


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


MANAGED_TAG = "cnnops.managed"


DECISION_TAG = "cnnops.gate_decision"


SPEC_TAG = "cnnops.spec"


# A version's registration: pending from its creation until its alias is set, then complete;
# interrupted once a later reader has resolved one that was killed half way. Versions registered
# before this tag existed carry none and are complete.
REGISTRATION_TAG = "cnnops.registration"


PENDING, COMPLETE, INTERRUPTED = "pending", "complete", "interrupted"


class Registration(Frozen):
    """What `register_model` did: the new version and the alias it holds, and why."""

    registered_model: str
    version: int
    alias: str
    reason: str
