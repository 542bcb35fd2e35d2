"""`cnnops status`: the registered models cnnops manages, their champion and challenger, and each
version's test scores and gate evidence, read from the version tags registration wrote.

`RegistryStatus` (`cnnops.contracts.registry`) is what `cnnops status --json` prints;
`format_status` is the text view of it.

Its one write: a version a killed registration left pending is resolved (challenger,
"interrupted", no alias; see `cnnops.promotion.registration`) when the model's promotion lock is
free, so that a registration in progress is shown as registering, never marked interrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnops.contracts.registry import ModelStatus, RegistryStatus, VersionStatus
from cnnops.core.errors import CnnopsError
from cnnops.settings.naming import CHALLENGER, CHAMPION
from cnnops.tracking.registry import describe_version

if TYPE_CHECKING:  # MLflow is imported where the registry is read: a served model's facts
    from mlflow.tracking import MlflowClient


def describe_registry(name: str | None = None) -> RegistryStatus:
    """The registered models cnnops manages (or one), with aliases and each version's test metrics."""
    from mlflow.tracking import MlflowClient

    from cnnops.contracts.registry import MANAGED_TAG
    from cnnops.tracking.stores import lookup, store_faults, use_tracking_store

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
    from cnnops.promotion.registration import pending_versions, resolve_interrupted
    from cnnops.tracking.locks import lock_if_free

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
    if version.served_by_reason is not None:
        lines.append(f"served by {version.served_by or 'nothing'}: {version.served_by_reason}")
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
