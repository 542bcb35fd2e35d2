"""The model records: a model folder holds `model.keras`, `model_spec.json` (`ModelSpec`: what a
caller needs to feed the model), `config.json` (the resolved run config), `history.json` and
`run.json` (`RunRecord`); `write_model_folder` writes it whole. A training checkpoint holds
`progress.json` (`TrainingState`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, TypeAdapter, ValidationError

from cnnops.contracts.records import (
    TRAIN_STEP,
    Frozen,
    Record,
    read_json,
    read_record,
    write_json,
    write_record,
)
from cnnops.core.errors import CnnopsError, first_problem

# In the model folder `select` outputs: the ranking of every sweep candidate.
SWEEP_FILE = "sweep.json"

if TYPE_CHECKING:  # ModelSpec users (a bare GPU benchmark machine, the served runtime) need no Keras
    import keras

    from cnnops.settings.config import Config

# The model spec's JSON, the same wherever it is kept: model_spec.json in a model or served-model
# folder, and the `cnnops.spec` tag of a registered version. One without a version reads as 1.
SPEC_SCHEMA = 1


@dataclass(frozen=True)
class ModelSpec:
    """What a caller must know to feed a model: saved beside the weights and in the registry,
    always through `to_json` and `from_json`."""

    class_names: list[str]
    height: int
    width: int
    mode: str
    architecture: str
    schema_version: int = SPEC_SCHEMA

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def class_index(self) -> dict[str, int]:
        """Class name to the model's output position."""
        return {name: i for i, name in enumerate(self.class_names)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> ModelSpec:
        """The spec in `text`, or one line naming `source` (the file or tag it came from)."""
        try:
            spec = TypeAdapter(cls).validate_json(text)
        except ValidationError as err:
            raise CnnopsError(f"{source} does not hold a valid model spec ({first_problem(err)}).") from None
        if spec.schema_version != SPEC_SCHEMA:
            raise CnnopsError(
                f"{source} holds a model spec of schema version {spec.schema_version}, this cnnops reads {SPEC_SCHEMA}."
            )
        return spec


class RunRecord(Record):
    """A model folder's MLflow run, logged model and registered-model name; a trained model adds its
    best epoch and that epoch's val scores (an imported model has no training history)."""

    run_id: str
    experiment_id: str
    model_uri: str
    model_id: str | None
    registered_model: str
    best_epoch: int | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None


def write_model_folder(
    out_dir: Path,
    model: keras.Model,
    spec: ModelSpec,
    config: Config,
    history: dict[str, list[float]],
    record: RunRecord,
) -> None:
    """The model folder whole: weights, spec, resolved config, history and run record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    write_model_spec(out_dir, spec)
    write_json(out_dir / "config.json", config.model_dump(mode="json"))
    write_json(out_dir / "history.json", {key: [float(v) for v in values] for key, values in history.items()})
    write_record(out_dir / "run.json", record)


def read_run_record(model_dir: Path) -> RunRecord:
    return read_record(model_dir / "run.json", RunRecord, TRAIN_STEP)


def read_history(model_dir: Path) -> dict[str, list[float]]:
    """Each metric's value per epoch ({} for an imported model)."""
    return {
        key: [float(v) for v in values] for key, values in read_json(model_dir / "history.json", TRAIN_STEP).items()
    }


def read_model_config(model_dir: Path) -> Config:
    """The resolved config the model was trained with."""
    from cnnops.settings.config import validate_config

    return validate_config(read_json(model_dir / "config.json", TRAIN_STEP))


def write_model_spec(folder: Path, spec: ModelSpec) -> None:
    """`model_spec.json`, in a model folder or a served-model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_spec.json").write_text(spec.to_json())


def read_model_spec(folder: Path) -> ModelSpec:
    path = folder / "model_spec.json"
    if not path.is_file():
        raise CnnopsError(f"{path} is missing; run {TRAIN_STEP} on this folder first.")
    return ModelSpec.from_json(path.read_text(), path)


class EarlyStoppingState(Frozen):
    wait: int
    best: float | None
    best_epoch: int
    stopped: bool


class PlateauState(Frozen):
    wait: int
    best: float | None
    cooldown_counter: int


class PhaseSummary(Frozen):
    """A finished training phase: its epochs (1-based, run-wide), best epoch and optimizer."""

    name: str
    first_epoch: int
    last_epoch: int
    best_epoch: int
    learning_rate: float
    trainable_weights: int


class TrainingState(Record):
    """Where a training run stands after an epoch: what it started from (config, fingerprint of
    its splits), the phase and epoch reached, the history so far, and the counters of the
    current phase's early stopping and learning-rate plateau."""

    run_id: str
    config: dict[str, Any]  # the resolved config's JSON, compared key by key on resume
    fingerprint: str
    phase: int = 0
    epoch: int = 0
    phase_start: int = 0
    history: dict[str, list[float]] = Field(default_factory=dict)
    phases: list[PhaseSummary] = Field(default_factory=list)
    early_stopping: EarlyStoppingState | None = None
    plateau: PlateauState | None = None


def write_training_state(path: Path, state: TrainingState) -> None:
    write_record(path, state)


def read_training_state(path: Path) -> TrainingState:
    return read_record(path, TrainingState, "`cnnops train` afresh (this checkpoint cannot be resumed)")


class RankedCandidate(Frozen):
    """A trained sweep candidate as the ranking shows it: its run, what it tried, its val scores."""

    run_id: str
    architecture: str
    learning_rate: float
    augmentation: str
    best_epoch: int | None
    val_accuracy: float
    val_loss: float
    folder: str

    def score(self, metric: str) -> float:
        return self.val_accuracy if metric == "val_accuracy" else self.val_loss


class SweepRanking(Record):
    """`sweep.json` in the selected model's folder: every candidate of the sweep, best first, by
    `metric`, under the sweep's parent run."""

    metric: str
    parent_run_id: str  # "" for a sweep run without MLflow parent
    ranking: list[RankedCandidate]


def write_sweep_ranking(folder: Path, ranking: SweepRanking) -> None:
    write_record(folder / SWEEP_FILE, ranking)


def read_sweep_ranking(folder: Path) -> SweepRanking:
    return read_record(folder / SWEEP_FILE, SweepRanking, "the sweep's select step")
