"""Small labelled sets for the small-data and gate benchmarks, and a fresh state folder to train
them in. The sets come from data that ships in packages: a few classes of Debian's Fashion-MNIST,
as a pre-split tree (train/val/test class folders) whose test split comes from the official
held-out file, so that a model trained on 30 images a class is still measured on thousands."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cnnops.data.sources import FASHION_CLASSES, FASHION_DIR, read_idx

# Three classes that look alike (tops): hard enough that models, seeds and baselines differ.
CLASSES = ("pullover", "coat", "shirt")


def fresh_state(prefix: str) -> Path:
    """A new work folder whose `state/` is this process's CNNOPS_HOME (and so its MLflow store)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["CNNOPS_HOME"] = str(work / "state")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return work


def write_fashion_subset(
    root: Path,
    per_class: int,
    test_per_class: int,
    seed: int = 0,
    classes: tuple[str, ...] = CLASSES,
    val_share: float = 0.2,
) -> Path:
    """`per_class` training images a class (a `val_share` of them as val), drawn with `seed` from
    the training file, and `test_per_class` test images a class from the test file."""
    rng = np.random.default_rng(seed)
    train_x, train_y = (
        read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz"),
        read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz"),
    )
    test_x, test_y = (
        read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"),
        read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz"),
    )
    n_val = max(1, round(per_class * val_share))
    for name in classes:
        label = FASHION_CLASSES.index(name)
        chosen = rng.choice(np.flatnonzero(train_y == label), size=per_class, replace=False)
        write_pngs(root / "val" / name, train_x[chosen[:n_val]])
        write_pngs(root / "train" / name, train_x[chosen[n_val:]])
        write_pngs(root / "test" / name, test_x[np.flatnonzero(test_y == label)[:test_per_class]])
    return root


def write_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{index:05d}.png")
