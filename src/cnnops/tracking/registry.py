"""Reads of the model registry that the gate, registration, export and status share: the version
an alias points at, a version's input spec and its tags as a `VersionStatus`. A failing store is
a one-line error naming it, never "none"."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from cnnops.contracts.model import ModelSpec
from cnnops.contracts.registry import SPEC_TAG, VersionFacts, VersionStatus, read_version_tags
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
    """A registered version as `cnnops status` and `/info` show it, from its tags."""
    tags = read_version_tags(version.tags)
    return VersionStatus(
        version=int(version.version),
        aliases=aliases,
        run_id=version.run_id,
        created_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        **tags.model_dump(include=set(VersionFacts.model_fields) - {"aliases", "run_id", "created_at"}),
    )
