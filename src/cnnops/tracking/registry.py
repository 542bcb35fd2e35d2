"""Reads of the model registry that the gate, registration, export and status share: the version
an alias points at, a version's input spec and its tags as a `VersionStatus`. A failing store is
a one-line error naming it, never "none"."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from cnnops.contracts.model import ModelSpec
from cnnops.contracts.registry import SPEC_TAG, RecordedEvidence, VersionStatus
from cnnops.settings.naming import CHAMPION
from cnnops.tracking.stores import ALIAS_NOT_FOUND, lookup, store_faults, use_tracking_store


def find_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the model or the alias does not exist; a
    failing store is a one-line error naming it, never "none"."""
    return lookup(lambda: client.get_model_version_by_alias(name, alias), ALIAS_NOT_FOUND)


def current_champion(name: str) -> int | None:
    """The number of the version `champion` points at now, or None when there is none."""
    use_tracking_store()
    with store_faults():
        found = find_alias(MlflowClient(), name, CHAMPION)
    return None if found is None else int(found.version)


def version_spec(version: ModelVersion) -> ModelSpec | None:
    """A registered version's input spec, from its tags; None for a version cnnops did not register."""
    raw = version.tags.get(SPEC_TAG)
    source = f"the {SPEC_TAG} tag of {version.name} v{version.version}"
    return None if raw is None else ModelSpec.from_json(raw, source)


def describe_version(version: ModelVersion, aliases: list[str]) -> VersionStatus:
    tags = version.tags

    def number(key: str) -> float | None:
        return float(tags[key]) if key in tags else None

    def whole(key: str) -> int | None:
        return int(tags[key]) if key in tags else None

    return VersionStatus(
        version=int(version.version),
        aliases=aliases,
        run_id=version.run_id,
        created_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        test_accuracy=number("cnnops.test_accuracy"),
        test_macro_f1=number("cnnops.test_macro_f1"),
        decision=tags.get("cnnops.decision"),
        reason=tags.get("cnnops.reason"),
        registration=tags.get("cnnops.registration"),
        champion_score=number("cnnops.champion_score"),
        candidate_score_compared=number("cnnops.candidate_score_compared"),
        compared_on=whole("cnnops.compared_on"),
        compared_with_version=whole("cnnops.compared_with_version"),
        chance_score=number("cnnops.chance_score"),
        best_baseline=tags.get("cnnops.best_baseline"),
        best_baseline_score=number("cnnops.best_baseline_score"),
        evidence=version_evidence(tags),
    )


def version_evidence(tags: dict[str, str]) -> RecordedEvidence | None:
    """The paired comparison recorded on a version, or None when it was not compared paired."""
    if "cnnops.p_value" not in tags:
        return None
    low, high = json.loads(tags["cnnops.interval"])
    return RecordedEvidence(
        p_value=float(tags["cnnops.p_value"]),
        difference=float(tags["cnnops.difference"]),
        interval_low=low,
        interval_high=high,
        confidence=float(tags["cnnops.confidence"]),
        only_candidate_right=int(tags["cnnops.only_candidate_right"]),
        only_champion_right=int(tags["cnnops.only_champion_right"]),
    )
