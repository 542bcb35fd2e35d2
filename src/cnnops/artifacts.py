"""The artifact contracts between steps, read and written in one place.

A *dataset folder* (ingest output, and each split) holds `manifest.parquet` (a row per image:
path, label, sha256, width, height, mode, origin, split, phash, group) and `dataset.json`
(`DatasetInfo`). A *model folder* holds `model.keras`, `model_spec.json` (what a caller needs to
feed the model), `config.json` (the resolved run config), `history.json` and `run.json`
(`RunRecord`: the MLflow run and logged-model URI); `write_model_folder` writes it whole. An
*evaluation folder* holds `metrics.json` (`EvaluationScores`), `predictions.csv` and plots. A
*baselines folder* holds `baselines.json` (`BaselineScores`). A training checkpoint holds
`progress.json` (`TrainingState`).

Every JSON record is a frozen pydantic model with a `schema_version`, written by one function and
read by one function; a file that is missing, unparsable or of another version is a one-line
error that names it and the step that writes it again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cnnops.atomic import write_text_atomically
from cnnops.errors import CnnopsError

if TYPE_CHECKING:  # pandas is imported where a manifest is read: ModelSpec users (the model
    import keras  # builders, a bare GPU benchmark machine) need only this module's records
    import pandas as pd

    from cnnops.config import Config

# `split` is the split the source itself assigned (a pre-split tree), or "" to let `split` decide.
# `phash` is the image's perceptual hash; `group` names its near-duplicate group ("" when alone),
# set by `validate` so that `split` keeps a group in one split.
MANIFEST_COLUMNS = ["path", "label", "sha256", "width", "height", "mode", "origin", "split", "phash", "group"]
# Logged to each training run: the sha256 of every training image, one per line, so a later
# gate can leave the champion's own training images out of the comparison.
TRAIN_HASHES_ARTIFACT = "data/train_sha256.txt"
# In a train split folder, and logged to its training run: the sha256 and label of every image of
# the whole source the split was drawn from, so a retrain can say what changed since, per class.
SOURCE_LABELS_FILE = "source_labels.parquet"
SOURCE_LABELS_ARTIFACT = f"data/{SOURCE_LABELS_FILE}"
# In an evaluation folder: sha256, label and predicted class of every test image.
PREDICTIONS_FILE = "predictions.csv"
# In a validated dataset folder: the split plan validation checked, which `split` applies.
SPLIT_PLAN_FILE = "split_plan.json"
VALIDATION_FILE = "validation.json"
BASELINE_SCHEMA = 1
# The steps that write each record, named in the error when one cannot be read.
INGEST_STEP, TRAIN_STEP, EVALUATE_STEP = "`cnnops ingest` (and validate, split)", "`cnnops train`", "`cnnops evaluate`"


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
        from pydantic import TypeAdapter

        try:
            spec = TypeAdapter(cls).validate_json(text)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "its fields"
            raise CnnopsError(f"{source} does not hold a valid model spec ({where}: {first['msg']}).") from None
        if spec.schema_version != SPEC_SCHEMA:
            raise CnnopsError(
                f"{source} holds a model spec of schema version {spec.schema_version}, this cnnops reads {SPEC_SCHEMA}."
            )
        return spec


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
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "its fields"
        raise CnnopsError(
            f"{path} does not hold a valid {kind.__name__} ({where}: {first['msg']}); run {step} again."
        ) from None


class DatasetInfo(Record):
    """A dataset folder's description: what ingest found, what validate and split added."""

    source: str
    origin: str
    classes: list[str]
    class_counts: dict[str, int]
    mode: str
    height: int
    width: int
    n_images: int
    fingerprint: str
    n_files: int | None = None  # ingest: files listed, quarantined, and exact duplicates dropped
    n_quarantined: int | None = None
    n_duplicates: int | None = None
    empty_classes: list[str] = Field(default_factory=list)
    verdict: str | None = None  # validate
    split: str | None = None  # split: which one, its seed, and the near-duplicate groups moved
    seed: int | None = None
    near_duplicate_groups_moved: int | None = None


def write_dataset(folder: Path, manifest: pd.DataFrame, info: DatasetInfo) -> None:
    """Write a dataset folder: the manifest table plus its description."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest[MANIFEST_COLUMNS].to_parquet(folder / "manifest.parquet", index=False)
    write_record(folder / "dataset.json", info)


def read_manifest(folder: Path) -> pd.DataFrame:
    path = folder / "manifest.parquet"
    if not path.is_file():
        raise CnnopsError(f"{folder} holds no manifest.parquet; point at the output of `cnnops ingest`/`split`.")
    import pandas as pd

    return pd.read_parquet(path)


def write_source_labels(folder: Path, manifest: pd.DataFrame) -> None:
    """The whole source's (sha256, label) pairs beside a split drawn from it."""
    manifest[["sha256", "label"]].to_parquet(folder / SOURCE_LABELS_FILE, index=False)


def read_source_labels(path: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path, columns=["sha256", "label"])


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """Hash over the sorted (sha256, label) pairs: it changes exactly when the images or labels do."""
    lines = sorted(f"{sha}\t{label}\n" for sha, label in zip(manifest["sha256"], manifest["label"], strict=True))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_dataset_info(folder: Path) -> DatasetInfo:
    return read_record(folder / "dataset.json", DatasetInfo, INGEST_STEP)


class ClassScore(Frozen):
    """One class's test scores (`class` in the JSON and per_class.csv)."""

    class_name: str = Field(validation_alias="class", serialization_alias="class")
    precision: float
    recall: float
    f1: float
    support: int


class EvaluationScores(Record):
    """A model's scores on a test split, tied to the run scored (`run_id`, None for a model outside
    MLflow) and the images it was scored on (`test_fingerprint`)."""

    accuracy: float
    macro_f1: float
    n_test: int
    class_names: list[str]
    confusion_matrix: list[list[int]]
    per_class: list[ClassScore]
    test_fingerprint: str
    run_id: str | None = None

    def score(self, metric: str) -> float:
        """The gate metric by its config name (`accuracy` or `macro_f1`)."""
        if metric not in ("accuracy", "macro_f1"):
            raise CnnopsError(f"{metric} is not a test score; use accuracy or macro_f1.")
        return float(getattr(self, metric))


def write_evaluation(folder: Path, scores: EvaluationScores) -> None:
    write_record(folder / "metrics.json", scores)


def read_evaluation(folder: Path) -> EvaluationScores:
    """The scores `evaluate` wrote."""
    return read_record(folder / "metrics.json", EvaluationScores, EVALUATE_STEP)


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
    from cnnops.config import validate_config

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


Verdict = Literal["pass", "warn", "fail"]


class Check(Frozen):
    """One validation check: pass, warn or fail, and one line saying why."""

    name: str
    status: Verdict
    detail: str


class NearDuplicateGroup(Frozen):
    group: str
    paths: list[str]
    labels: list[str]


class NumberSummary(Frozen):
    min: float
    median: float
    max: float
    mean: float


class SizeCount(Frozen):
    size: str  # "WxH"
    count: int


class SizeStats(Frozen):
    width: NumberSummary
    height: NumberSummary
    aspect: NumberSummary
    most_common: list[SizeCount]


class ChannelStats(Frozen):
    """Per-channel mean and std of pixel values in [0, 1], by channel name."""

    sampled_images: int
    mean: dict[str, float]
    std: dict[str, float]


class ValidationReport(Record):
    """What `validate` found: the verdict and each check behind it, with the statistics the report
    shows. Kept as `validation.json` beside the validated dataset."""

    verdict: Verdict
    checks: list[Check]
    source: str
    fingerprint: str
    n_images: int
    class_counts: dict[str, int]
    n_quarantined: int
    n_duplicates: int
    near_duplicate_groups: list[NearDuplicateGroup]
    near_duplicate_groups_moved: int | None  # None: the split could not be planned (split says why)
    sizes: SizeStats
    channels: ChannelStats


def write_validation(folder: Path, report: ValidationReport) -> None:
    write_record(folder / VALIDATION_FILE, report)


def read_validation(folder: Path) -> ValidationReport:
    return read_record(folder / VALIDATION_FILE, ValidationReport, "`cnnops validate`")


class SplitPlan(Record):
    """Which split each image goes to (by sha256), for a manifest (`fingerprint`) under a seed and
    split fractions; `moved` counts the near-duplicate groups moved to keep each in one split.
    `validate` plans it and keeps it beside its dataset; `split` applies it."""

    fingerprint: str
    seed: int
    fractions: tuple[float, float, float]  # train, val, test
    assignment: dict[str, str]
    moved: int


def write_split_plan(folder: Path, plan: SplitPlan) -> None:
    write_record(folder / SPLIT_PLAN_FILE, plan)


def read_split_plan(folder: Path) -> SplitPlan | None:
    """The plan `validate` kept in a dataset folder; None for a folder without one (ingest output)."""
    path = folder / SPLIT_PLAN_FILE
    return read_record(path, SplitPlan, "`cnnops validate`") if path.is_file() else None


def write_predictions(folder: Path, manifest: pd.DataFrame, predicted: list[str]) -> None:
    """Each test image's predicted class, in manifest order: what the gate pairs with the champion's."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"sha256": manifest["sha256"].to_numpy(), "label": manifest["label"].to_numpy(), "predicted": predicted}
    ).to_csv(folder / PREDICTIONS_FILE, index=False)


def read_predictions(folder: Path, manifest: pd.DataFrame) -> list[str]:
    """The predicted classes `write_predictions` wrote, checked to be for `manifest`'s images."""
    import pandas as pd

    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        raise CnnopsError(f"{path} is missing; run `cnnops evaluate` again to write per-image predictions.")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"sha256", "predicted"} <= set(table.columns):
        raise CnnopsError(f"{path} has no sha256 and predicted columns; run `cnnops evaluate` again.")
    if list(table["sha256"]) != list(manifest["sha256"]):
        raise CnnopsError(
            f"{path} holds predictions for other images than the test split; evaluate on the "
            "test folder you pass to the gate."
        )
    return list(table["predicted"])


@dataclass(frozen=True)
class BaselineScores:
    """The baselines' test scores, tied to the test split they were scored on (the gate compares a
    candidate with them only on the same images)."""

    test_fingerprint: str
    n_test: int
    scores: dict[str, dict[str, float]]  # baseline -> {"accuracy": ..., "macro_f1": ...}
    schema_version: int = BASELINE_SCHEMA

    def best(self, metric: str) -> tuple[str, float]:
        name = max(sorted(self.scores), key=lambda baseline: self.scores[baseline][metric])
        return name, self.scores[name][metric]


def write_baseline_scores(folder: Path, scores: BaselineScores) -> None:
    write_json(folder / "baselines.json", asdict(scores))


def read_baseline_scores(folder: Path) -> BaselineScores:
    raw = read_json(folder / "baselines.json")
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != BASELINE_SCHEMA:
        raise CnnopsError(
            f"{folder}/baselines.json has schema version {version}, this cnnops reads "
            f"{BASELINE_SCHEMA}; run the baselines step again."
        )
    try:
        return BaselineScores(**raw)
    except TypeError:
        raise CnnopsError(
            f"{folder}/baselines.json does not hold the baselines' scores; run the baselines step again."
        ) from None
