"""Split: stratified, seeded train/val/test manifests. The test manifest is its own artifact so the
candidate and the champion are scored on exactly the same images.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cnnops.contracts.dataset import (
    SplitPlan,
    manifest_fingerprint,
    read_dataset_info,
    read_manifest,
    read_split_plan,
    write_dataset,
    write_source_labels,
)
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.settings.config import Config, SplitConfig

SPLITS = ("train", "val", "test")


def split_dataset(dataset_dir: Path, out_dirs: dict[str, Path], config: Config) -> dict[str, int]:
    """Write one dataset folder per split, by the plan `validate` kept when it fits this manifest
    and config, else planned here; returns the image count of each."""
    manifest = read_manifest(dataset_dir)
    info = read_dataset_info(dataset_dir)
    if not is_assigned(manifest):
        check_class_counts(info.class_counts, config.split)
    kept = read_split_plan(dataset_dir)
    plan = kept if kept is not None and plan_fits(kept, manifest, config) else plan_splits(manifest, config)
    assignment, moved = manifest["sha256"].map(plan.assignment).to_numpy(dtype=object), plan.moved
    if moved:
        say(f"split: moved {moved} near-duplicate groups so that each sits in one split")
    counts: dict[str, int] = {}
    for name in SPLITS:
        part = manifest[assignment == name].reset_index(drop=True)
        counts[name] = len(part)
        write_dataset(
            out_dirs[name],
            part,
            info.model_copy(
                update={
                    "split": name,
                    "seed": config.seed,
                    "n_images": len(part),
                    "near_duplicate_groups_moved": moved,
                    "class_counts": {str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()},
                }
            ),
        )
    write_source_labels(out_dirs["train"], manifest)
    say("split: " + ", ".join(f"{name} {counts[name]}" for name in SPLITS) + f" (seed {config.seed})")
    return counts


def plan_splits(manifest: pd.DataFrame, config: Config) -> SplitPlan:
    """Each image's split (the source's own, or seeded and stratified), with near-duplicate groups
    then moved whole, and how many groups had to move."""
    if is_assigned(manifest):
        assignment = check_assigned_splits(manifest)
    else:
        assignment = assign_splits(manifest, config.split, config.seed)
    assignment, moved = keep_groups_together(manifest, assignment, config.seed)
    return SplitPlan(
        fingerprint=manifest_fingerprint(manifest),
        seed=config.seed,
        fractions=fractions(config.split),
        assignment=dict(zip(manifest["sha256"], (str(name) for name in assignment), strict=True)),
        moved=moved,
    )


def plan_fits(plan: SplitPlan, manifest: pd.DataFrame, config: Config) -> bool:
    """True when `plan` was made for these images under this seed and these fractions."""
    return (
        plan.seed == config.seed
        and plan.fractions == fractions(config.split)
        and plan.fingerprint == manifest_fingerprint(manifest)
        and set(plan.assignment) == set(manifest["sha256"])
    )


def fractions(split: SplitConfig) -> tuple[float, float, float]:
    return (split.train, split.val, split.test)


def keep_groups_together(manifest: pd.DataFrame, assignment: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Put every member of a near-duplicate group in the split of its first member by seeded
    content hash, so no near-copy of a test image is trained on. Returns how many groups moved."""
    if "group" not in manifest or not (manifest["group"] != "").any():
        return assignment, 0
    members = pd.DataFrame(
        {"group": manifest["group"], "rank": seeded_rank(manifest, seed), "split": assignment}, index=manifest.index
    )
    members = members[members["group"] != ""].sort_values(["group", "rank"], kind="stable")
    target = members.groupby("group", sort=False)["split"].transform("first")
    moved = int(members.loc[members["split"] != target, "group"].nunique())
    assignment = assignment.copy()
    assignment[manifest.index.get_indexer(members.index)] = target.to_numpy()
    return assignment, moved


def is_assigned(manifest: pd.DataFrame) -> bool:
    """True when the source came split (a train/val/test tree): that split is kept, not redone."""
    return "split" in manifest and bool((manifest["split"] != "").all())


def check_assigned_splits(manifest: pd.DataFrame) -> np.ndarray:
    """The source's own split, refused when a split has no image or a class has no training image."""
    assignment = manifest["split"].to_numpy(dtype=object)
    empty = [name for name in SPLITS if not (assignment == name).any()]
    if empty:
        raise CnnopsError(
            f"the pre-split source has no usable image in {', '.join(empty)}/; every one of "
            "train/, val/ and test/ needs images."
        )
    untrained = sorted(set(manifest["label"]) - set(manifest.loc[assignment == "train", "label"]))
    if untrained:
        raise CnnopsError(f"class {', '.join(untrained)} has no image in train/; the model cannot learn it.")
    for name in ("val", "test"):
        missing = sorted(set(manifest["label"]) - set(manifest.loc[assignment == name, "label"]))
        if missing:
            say(f"split: warning: class {', '.join(missing)} has no image in {name}/ of the pre-split source")
    say("split: keeping the source's own train/val/test split")
    return assignment


def split_counts(n: int, split: SplitConfig) -> tuple[int, int, int]:
    """(train, val, test) image counts for a class of n >= 3 images: at least one in each."""
    n_test = max(1, round(n * split.test))
    n_val = max(1, round(n * split.val))
    while n - n_val - n_test < 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def min_images_per_class(split: SplitConfig) -> int:
    """Smallest class whose val and test shares are each worth at least one image."""
    return max(3, math.ceil(1 / min(split.val, split.test) - 1e-9))


def check_class_counts(class_counts: dict[str, int], split: SplitConfig) -> None:
    """Refuse a split that would leave a class out of val or test."""
    if len(class_counts) < 2:
        raise CnnopsError("the dataset has fewer than two classes with usable images; add another class folder.")
    needed = min_images_per_class(split)
    small = {label: n for label, n in class_counts.items() if n < needed}
    if small:
        listing = ", ".join(f"'{label}' has {n}" for label, n in sorted(small.items()))
        raise CnnopsError(
            f"{listing}; the {split.train:g}/{split.val:g}/{split.test:g} split needs at least {needed} "
            "usable images per class. Add images or remove the class folder."
        )


def assign_splits(manifest: pd.DataFrame, split: SplitConfig, seed: int) -> np.ndarray:
    """Per class, order images by a seeded hash of their content and cut by the fractions.

    Ordering by content hash (not by a shuffle) keeps an image in its split when the dataset
    grows: adding images moves only those near the cut points, so a later champion comparison
    is not scored on images the champion trained on.
    """
    assignment = np.empty(len(manifest), dtype=object)
    for _, group in manifest.assign(rank=seeded_rank(manifest, seed)).groupby("label", sort=True):
        index = group.sort_values("rank", kind="stable").index.to_numpy()
        _, n_val, n_test = split_counts(len(index), split)
        assignment[index[:n_test]] = "test"
        assignment[index[n_test : n_test + n_val]] = "val"
        assignment[index[n_test + n_val :]] = "train"
    return assignment


def seeded_rank(manifest: pd.DataFrame, seed: int) -> pd.Series:
    """Each image's place in a seeded order by content: the same image ranks the same under the
    same seed, whatever else is in the dataset."""
    return manifest["sha256"].map(lambda sha: hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest())
