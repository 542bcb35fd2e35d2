"""The dataset records: a dataset folder (ingest output, and each split) holds `manifest.parquet`,
a row per image, and `dataset.json` (`DatasetInfo`); validate adds `validation.json`
(`ValidationReport`) and `split_plan.json` (`SplitPlan`), which split applies."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from cnnops.contracts.records import INGEST_STEP, Frozen, Record, read_record, write_record
from cnnops.core.errors import CnnopsError

if TYPE_CHECKING:  # pandas is imported where a manifest is read
    import pandas as pd

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
# In a validated dataset folder: the split plan validation checked, which `split` applies.
SPLIT_PLAN_FILE = "split_plan.json"
VALIDATION_FILE = "validation.json"


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
