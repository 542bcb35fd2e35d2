"""The artifact contracts between steps, read and written in one place.

A *dataset folder* (ingest output, and each split) holds `manifest.parquet` (a row per image:
path, label, sha256, width, height, mode, origin, split, phash, group) and `dataset.json` (classes, colour mode, input
size, fingerprint, counts). A *model folder* holds `model.keras`, `model_spec.json` (what a caller
needs to feed the model), `config.json` (the resolved run config), `history.json` and `run.json`
(the MLflow run and logged-model URI). An *evaluation folder* holds `metrics.json`,
`predictions.csv` and plots. A *baselines folder* holds `baselines.json` (`BaselineScores`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnops.errors import CnnopsError

if TYPE_CHECKING:  # pandas is imported where a manifest is read: ModelSpec users (the model
    import pandas as pd  # builders, a bare GPU benchmark machine) need only this module's dataclass

# `split` is the split the source itself assigned (a pre-split tree), or "" to let `split` decide.
# `phash` is the image's perceptual hash; `group` names its near-duplicate group ("" when alone),
# set by `validate` so that `split` keeps a group in one split.
MANIFEST_COLUMNS = ["path", "label", "sha256", "width", "height", "mode", "origin", "split", "phash", "group"]
# Logged to each training run: the sha256 of every training image, one per line, so a later
# gate can leave the champion's own training images out of the comparison.
TRAIN_HASHES_ARTIFACT = "data/train_sha256.txt"
# In an evaluation folder: sha256, label and predicted class of every test image.
PREDICTIONS_FILE = "predictions.csv"
BASELINE_SCHEMA = 1


@dataclass(frozen=True)
class ModelSpec:
    """What a caller must know to feed a model: saved beside the weights and in the registry."""

    class_names: list[str]
    height: int
    width: int
    mode: str
    architecture: str

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        return cls(
            class_names=list(raw["class_names"]),
            height=int(raw["height"]),
            width=int(raw["width"]),
            mode=str(raw["mode"]),
            architecture=str(raw["architecture"]),
        )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CnnopsError(f"{path} is missing; was the step that writes it run on this folder?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CnnopsError(f"{path} is not valid JSON ({err}); run the step that writes it again.") from None


def write_dataset(folder: Path, manifest: pd.DataFrame, info: dict[str, Any]) -> None:
    """Write a dataset folder: the manifest table plus its description."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest[MANIFEST_COLUMNS].to_parquet(folder / "manifest.parquet", index=False)
    write_json(folder / "dataset.json", info)


def read_manifest(folder: Path) -> pd.DataFrame:
    path = folder / "manifest.parquet"
    if not path.is_file():
        raise CnnopsError(f"{folder} holds no manifest.parquet; point at the output of `cnnops ingest`/`split`.")
    import pandas as pd

    return pd.read_parquet(path)


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """Hash over the sorted (sha256, label) pairs: it changes exactly when the images or labels do."""
    lines = sorted(f"{sha}\t{label}\n" for sha, label in zip(manifest["sha256"], manifest["label"], strict=True))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_dataset_info(folder: Path) -> dict[str, Any]:
    return read_json(folder / "dataset.json")


def write_evaluation(folder: Path, scores: dict[str, Any]) -> None:
    write_json(folder / "metrics.json", scores)


def read_evaluation(folder: Path) -> dict[str, Any]:
    """The scores `evaluate` wrote: accuracy, macro_f1, n_test, per_class, confusion_matrix."""
    return read_json(folder / "metrics.json")


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


def read_model_spec(model_dir: Path) -> ModelSpec:
    return ModelSpec.from_dict(read_json(model_dir / "model_spec.json"))
