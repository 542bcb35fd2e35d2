"""Data sources: a folder with one subfolder per class, or a built-in demo set written out once."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from cnnops.console import say
from cnnops.errors import CnnopsError
from cnnops.paths import data_cache

DEMO_PREFIX = "demo:"
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
# Where Debian's dataset-fashion-mnist package puts the IDX files.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Source:
    """A resolved data source: the folder to read and where it came from (for provenance)."""

    spec: str
    root: Path
    origin: str


def resolve_source(spec: str) -> Source:
    """Turn the user's `--data` value into a folder, writing a demo set out on first use."""
    if spec.startswith(DEMO_PREFIX):
        name = spec[len(DEMO_PREFIX):]
        writer = DEMOS.get(name)
        if writer is None:
            raise CnnopsError(
                f"unknown demo dataset '{spec}'; choose one of: {', '.join(DEMO_PREFIX + n for n in DEMOS)}."
            )
        return Source(spec, materialize_demo(name, writer), spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise CnnopsError(
            f"data source {spec} does not exist; pass a folder with one subfolder per class, or demo:animals."
        )
    if not path.is_dir():
        raise CnnopsError(f"data source {spec} is a file; pass a folder with one subfolder per class.")
    return Source(str(path.resolve()), path.resolve(), "folder")


def list_class_files(root: Path) -> dict[str, list[Path]]:
    """Map each class folder's name to its files (recursively, sorted), skipping hidden entries.

    Every file is listed, image suffix or not: ingest decides by content and quarantines the rest.
    """
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        classes[folder.name] = files
    return classes


def list_loose_files(root: Path) -> list[Path]:
    """Files directly in the source folder: they belong to no class, so ingest reports them."""
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def default_model_name(spec: str) -> str:
    """A registered-model name unique to the data source: demo name, or folder name plus path hash."""
    if spec.startswith(DEMO_PREFIX):
        return f"cnnops-{_slug(spec[len(DEMO_PREFIX):])}"
    path = Path(spec).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"cnnops-{_slug(path.name) or 'data'}-{digest}"


def materialize_demo(name: str, writer: Callable[[Path], None]) -> Path:
    """Write a demo dataset as PNG class folders once; a crash mid-write leaves nothing half-made."""
    target = data_cache() / f"demo-{name}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"writing demo:{name} out as image files under {target} (once)")
    staging = Path(tempfile.mkdtemp(prefix=f".demo-{name}-", dir=target.parent))
    try:
        writer(staging)
        (staging / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_animals(folder: Path) -> None:
    """animal-mnist (PyPI): 10,000 28x28 grey silhouettes, 10 classes, labels in alphabetical order."""
    try:
        package = resources.files("animal_mnist") / "data" / "Animal_MNIST"
    except ModuleNotFoundError:
        raise CnnopsError("demo:animals needs the animal-mnist package; run `make install`.") from None
    # The pickles ship inside a package we pinned and installed; they are not user input.
    with gzip.open(str(package / "animal_data_version_3.gz"), "rb") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(str(package / "animal_label_version_3.gz"), "rb") as f:
        labels = np.asarray(pickle.load(f))
    write_arrays(folder, images, [ANIMAL_CLASSES[i] for i in labels])


def write_arrays(folder: Path, images: np.ndarray, labels: list[str]) -> None:
    """Write uint8 arrays as PNG files under one folder per label."""
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        class_dir = folder / label
        class_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(class_dir / f"{label}-{index:05d}.png")


def write_digits(folder: Path) -> None:
    """scikit-learn's digits: 1,797 8x8 images of 0-9, 17 grey levels scaled to 0-255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    write_arrays(folder, images, [f"digit-{t}" for t in digits.target])


def write_faces(folder: Path) -> None:
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25x25 grey in [0, 1]."""
    from skimage.data import lfw_subset

    images = np.round(lfw_subset() * 255).astype(np.uint8)
    write_arrays(folder, images, ["face"] * 100 + ["non-face"] * (len(images) - 100))


def write_fashion(folder: Path) -> None:
    """Fashion-MNIST from Debian's dataset-fashion-mnist: 70,000 28x28 grey images, 10 classes."""
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    missing = [name for name in names if not (FASHION_DIR / name).is_file()]
    if missing:
        raise CnnopsError(f"demo:fashion reads Debian's Fashion-MNIST files from {FASHION_DIR}, and "
                          f"{missing[0]} is not there; install them with `sudo apt-get install "
                          "dataset-fashion-mnist`.")
    images = np.concatenate([read_idx(FASHION_DIR / names[0]), read_idx(FASHION_DIR / names[2])])
    labels = np.concatenate([read_idx(FASHION_DIR / names[1]), read_idx(FASHION_DIR / names[3])])
    write_arrays(folder, images, [FASHION_CLASSES[i] for i in labels])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format), gzipped: a magic number, dimensions, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise CnnopsError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise CnnopsError(f"{path} is truncated: {data.size} bytes for a {shape} array.")
    return data.reshape(shape)


DEMOS: dict[str, Callable[[Path], None]] = {
    "animals": write_animals, "digits": write_digits, "faces": write_faces, "fashion": write_fashion}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
