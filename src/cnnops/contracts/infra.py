"""Infra-validation's records: the canaries evaluation picks (`canaries.json`: test images and the
answers the evaluation gave them), and what serving them in a real server showed
(`infra_validation.json`)."""

from __future__ import annotations

from pathlib import Path

from cnnops.contracts.records import EVALUATE_STEP, Frozen, Record, read_record, write_record
from cnnops.contracts.served import ServedRuntime

CANARIES_FILE = "canaries.json"


class Canary(Frozen):
    """One test image and what the evaluated model said of it, in the model's class order."""

    path: str
    sha256: str
    label: str
    probabilities: list[float]


class CanarySet(Record):
    """The canaries of one evaluation: the run it evaluated and the class order of every row."""

    run_id: str
    class_names: list[str]
    images: list[Canary]


def write_canaries(folder: Path, canaries: CanarySet) -> None:
    write_record(folder / CANARIES_FILE, canaries)


def read_canaries(folder: Path) -> CanarySet:
    return read_record(folder / CANARIES_FILE, CanarySet, EVALUATE_STEP)


VALIDATION_FILE = "infra_validation.json"


INFRA_STEP = "the infra-validate step"


class CanaryCheck(Frozen):
    """One canary as the server answered it."""

    path: str
    label: str
    expected: str
    status: int
    served: str | None
    max_difference: float | None


class InfraValidation(Record):
    """The outcome for one candidate's Bento: passed or not, the one reason, and the evidence."""

    run_id: str
    bento: str
    passed: bool
    reason: str
    ready_seconds: float | None
    canaries: list[CanaryCheck]
    garbage_status: int | None
    log_tail: list[str]
    # What ran the model (its /info), None when the server never answered.
    runtime: ServedRuntime | None = None


def write_infra_validation(folder: Path, validation: InfraValidation) -> None:
    write_record(folder / VALIDATION_FILE, validation)


def read_infra_validation(folder: Path) -> InfraValidation:
    return read_record(folder / VALIDATION_FILE, InfraValidation, INFRA_STEP)
