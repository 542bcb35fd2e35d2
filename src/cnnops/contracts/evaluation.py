"""The evaluation records: an evaluation folder holds `metrics.json` (`EvaluationScores`),
`predictions.csv` (each test image's predicted class, which the gate pairs with the champion's)
and plots; a baselines folder holds `baselines.json` (`BaselineScores`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from cnnops.contracts.records import EVALUATE_STEP, Frozen, Record, read_json, read_record, write_json, write_record
from cnnops.core.errors import CnnopsError

if TYPE_CHECKING:
    import pandas as pd

# In an evaluation folder: sha256, label and predicted class of every test image.
PREDICTIONS_FILE = "predictions.csv"
BASELINE_SCHEMA = 1


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
