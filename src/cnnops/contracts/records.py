"""The base of every record between steps: frozen pydantic models with a schema version, written
aside and renamed, read back only at the version this cnnops writes, and one formatter for the
first problem of a validation error, so every refusal reads the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cnnops.core.atomic import write_text_atomically
from cnnops.core.errors import CnnopsError, first_problem

# The steps that write each record, named in the error when one cannot be read.
INGEST_STEP, TRAIN_STEP, EVALUATE_STEP = "`cnnops ingest` (and validate, split)", "`cnnops train`", "`cnnops evaluate`"


class Frozen(BaseModel):
    """A part of a record: frozen, unknown keys refused, NaN kept as NaN (a diverged loss)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, ser_json_inf_nan="constants")


class Record(Frozen):
    """A record kept on disk, read only at the schema version this cnnops writes."""

    SCHEMA: ClassVar[int] = 1
    schema_version: int = 1


RecordT = TypeVar("RecordT", bound=Record)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Written aside and renamed, so a reader never finds half a record."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, step: str = "the step that writes it") -> dict[str, Any]:
    if not path.is_file():
        raise CnnopsError(f"{path} is missing; run {step} on this folder first.")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CnnopsError(f"{path} is not valid JSON ({err}); run {step} again.") from None
    if not isinstance(raw, dict):
        raise CnnopsError(f"{path} holds a JSON {type(raw).__name__}, not an object; run {step} again.")
    return raw


def write_record(path: Path, record: Record) -> None:
    write_json(path, record.model_dump(mode="json", by_alias=True))


def read_record(path: Path, kind: type[RecordT], step: str) -> RecordT:
    """The record at `path`, or one line naming the file and the step that writes it again."""
    raw = read_json(path, step)
    version = raw.get("schema_version")
    if version != kind.SCHEMA:
        raise CnnopsError(f"{path} has schema version {version}, this cnnops reads {kind.SCHEMA}; run {step} again.")
    try:
        return kind.model_validate(raw)
    except ValidationError as err:
        raise CnnopsError(
            f"{path} does not hold a valid {kind.__name__} ({first_problem(err)}); run {step} again."
        ) from None
