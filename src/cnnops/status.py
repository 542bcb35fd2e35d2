"""`cnnops status`: the registered models cnnops manages, their champion and challenger, and each
version's test scores and gate evidence, read from the version tags registration wrote.

`RegistryStatus` is what `cnnops status --json` prints; `format_status` is the text view of it.

Its one write: a version a killed registration left pending is resolved (challenger,
"interrupted", no alias; see `cnnops.registration`) when the model's promotion lock is free, so
that a registration in progress is shown as registering, never marked interrupted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cnnops.artifacts import Frozen, Record
from cnnops.errors import CnnopsError
from cnnops.naming import CHALLENGER, CHAMPION

if TYPE_CHECKING:  # MLflow is imported where the registry is read: a served model's facts
    from mlflow.entities.model_registry import ModelVersion  # (`VersionStatus`) need none of it
    from mlflow.tracking import MlflowClient


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


def describe_registry(name: str | None = None) -> RegistryStatus:
    """The registered models cnnops manages (or one), with aliases and each version's test metrics."""
    from mlflow.tracking import MlflowClient

    from cnnops.registration import MANAGED_TAG
    from cnnops.tracking import lookup, store_faults, use_tracking_store

    uri = use_tracking_store()
    with store_faults():
        client = MlflowClient()
        if name is not None:
            found = lookup(lambda: client.get_registered_model(name))
            if found is None:
                raise CnnopsError(f"no registered model named '{name}' in {uri}; run `cnnops run` first.")
            models = [found]
        else:
            models = client.search_registered_models(filter_string=f"tags.`{MANAGED_TAG}` = 'true'")
        return RegistryStatus(tracking_uri=uri, models=[describe_model(client, m.name) for m in models])


def describe_model(client: MlflowClient, name: str) -> ModelStatus:
    from cnnops.locks import lock_if_free
    from cnnops.registration import pending_versions, resolve_interrupted

    if pending_versions(client, name):
        with lock_if_free(client, name) as lease:
            if lease is not None:
                resolve_interrupted(client, name)
    # Version search results carry no aliases; the registered model holds the alias -> version map.
    aliases: dict[int, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        aliases.setdefault(int(number), []).append(alias)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    described = [describe_version(v, sorted(aliases.get(int(v.version), []))) for v in versions]
    by_alias = {alias: d for d in described for alias in d.aliases}
    return ModelStatus(
        name=name, champion=by_alias.get(CHAMPION), challenger=by_alias.get(CHALLENGER), versions=described
    )


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


def format_status(described: RegistryStatus) -> str:
    """The text `cnnops status` prints: each model's aliases, then a line per version."""
    lines = [f"MLflow store: {described.tracking_uri}"]
    if not described.models:
        lines.append("no registered models yet; run `cnnops run`.")
    for model in described.models:
        lines.append(f"{model.name}: {len(model.versions)} version(s)")
        for alias, holder in ((CHAMPION, model.champion), (CHALLENGER, model.challenger)):
            lines.append(f"  {alias:<10} " + ("none" if holder is None else f"v{holder.version}"))
        lines.append(f"  {'version':>7}  {'aliases':<20} {'test acc':>8} {'macro F1':>8}  gate decision")
        for version in model.versions:
            lines.append(
                f"  {'v' + str(version.version):>7}  {','.join(version.aliases) or '-':<20} "
                f"{_fmt(version.test_accuracy):>8} {_fmt(version.test_macro_f1):>8}  " + describe_decision(version)
            )
            lines.extend(f"  {'':>7}  {'':<20} {'':>8} {'':>8}  {line}" for line in format_evidence(version))
    return "\n".join(lines)


def describe_decision(version: VersionStatus) -> str:
    if version.registration == "pending":
        return "registering now: no decision yet"
    return f"{version.decision}: {version.reason}"


def format_evidence(version: VersionStatus) -> list[str]:
    """The numbers behind a version's gate decision, a line each."""
    lines = []
    if version.chance_score is not None:
        floors = f"chance {version.chance_score:.4f}"
        if version.best_baseline is not None and version.best_baseline_score is not None:
            floors += f", best baseline {version.best_baseline} {version.best_baseline_score:.4f}"
        lines.append(floors)
    evidence = version.evidence
    if evidence is not None:
        lines.append(
            f"vs v{version.compared_with_version} on {version.compared_on} images: only this right "
            f"{evidence.only_candidate_right}, only the champion right {evidence.only_champion_right}, "
            f"McNemar p {evidence.p_value:.3g}, difference {evidence.difference:+.4f}, "
            f"{evidence.confidence:.0%} interval [{evidence.interval_low:+.4f}, "
            f"{evidence.interval_high:+.4f}]"
        )
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
