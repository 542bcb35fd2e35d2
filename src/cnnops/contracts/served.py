"""The served-model folder: one registered version (or a candidate) pinned for serving. It holds
`model.keras`, `model_spec.json` (the input spec, the same file a model folder holds),
`served.json` (`ServedInfo`: the version's name, number, aliases and test scores, as `cnnops
status` describes it) and `drift_reference.npz` when its evaluation kept one. Reading one needs
neither TensorFlow nor MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cnnops.contracts.export import ExportReport, read_export_report
from cnnops.contracts.model import ModelSpec, read_model_spec
from cnnops.contracts.records import Record, read_record
from cnnops.contracts.registry import VersionFacts
from cnnops.core.errors import CnnopsError
from cnnops.settings.config import ServeConfig

SERVED_FILE = "served.json"


MODEL_FILE = "model.keras"
# Where a Bento packs its served-model folder, beside the service that reads it.
PACKED_MODEL_FOLDER = "src/cnnops/serving/model"


EXPORT_STEP = "`cnnops serve` (or `make bento`) to export it again"


class ServedInfo(VersionFacts, Record):
    """What the service says about its model (`/info`): the version as `cnnops status` shows it,
    the registered model, and the alias or number it was asked for. No tracking URI: /info is
    public, and a store URI can carry credentials. A candidate served to be infra-validated
    before it is registered has no version yet (None), and `requested` is "candidate"."""

    version: int | None
    registered_model: str
    requested: str


@dataclass(frozen=True)
class ServedModel:
    """An exported folder: where it is, the spec to feed its model, the registry facts, and the
    parity report of its ONNX export when it has one."""

    folder: Path
    spec: ModelSpec
    info: ServedInfo
    export: ExportReport | None = None


def read_served_model(folder: Path) -> ServedModel:
    """The spec, registry facts and export report of an exported folder; no TensorFlow needed."""
    if not (folder / MODEL_FILE).is_file():
        raise CnnopsError(
            f"{folder} holds no {MODEL_FILE}; export a registered version first (`cnnops serve` and `make bento` do)."
        )
    info = read_record(folder / SERVED_FILE, ServedInfo, EXPORT_STEP)
    return ServedModel(folder, read_model_spec(folder), info, read_export_report(folder))


class ServedRuntime(BaseModel):
    """What runs the served model, and why: `onnx` (ONNX Runtime) or `keras`."""

    model_config = ConfigDict(frozen=True)

    name: Literal["onnx", "keras"]
    reason: str


class Prediction(BaseModel):
    """One class and its probability: the one type of a prediction, from the library's `top_k` to
    the service's answers, `cnnops predict` and infra-validation's reading of a served answer.
    (A plain frozen model: the published OpenAPI contract keeps its shape.)"""

    model_config = ConfigDict(frozen=True)

    label: str = Field(description="A class name, as /info lists them.")
    probability: float = Field(ge=0, le=1)


class Classification(BaseModel):
    """One image's most likely classes, most likely first."""

    model_config = ConfigDict(frozen=True)

    predictions: list[Prediction] = Field(min_length=1)


class BatchClassification(BaseModel):
    """Each image's classes, in upload order."""

    model_config = ConfigDict(frozen=True)

    results: list[Classification] = Field(min_length=1)


class FilePrediction(BaseModel):
    """`cnnops predict`'s answer for one file: its classes, or why it could not be classified."""

    model_config = ConfigDict(frozen=True)

    file: str
    predictions: list[Prediction] | None = None
    error: str | None = None


class ModelInput(BaseModel):
    """What the model takes: decoded images of this height, width and colour mode."""

    model_config = ConfigDict(frozen=True)

    height: int
    width: int
    mode: str


class ServiceInfo(ServedInfo):
    """What the service's `GET /info` answers: the served version (`ServedInfo`), its classes and
    input, and this service's limits."""

    class_names: list[str] = Field(min_length=1)
    input: ModelInput
    runtime: ServedRuntime
    limits: ServeConfig
    max_request_bytes: int
