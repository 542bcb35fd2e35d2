"""Data sources: a folder with one subfolder per class (images at any depth inside it), a CSV or
parquet table of path and label, a built-in demo set, or data that `cnnops.data.formats` writes out
once as class folders (Quick, Draw! `.npy` files, a DataFrame of image arrays, an archive)."""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
from PIL import Image

from cnnops.core.atomic import is_complete, write_folder_atomically
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.core.paths import data_cache
from cnnops.settings.naming import DEMO_PREFIX

ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
# Where Debian's dataset-fashion-mnist package puts the IDX files.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Source:
    """A resolved data source: the folder whose class subfolders hold the images, where it came
    from (for provenance), and for a path/label table, the table."""

    spec: str
    root: Path
    origin: str
    table: Path | None = None


MANIFEST_SUFFIXES = (".csv", ".parquet")
# A pre-split tree: these folders, each holding class folders; the split they make is kept.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
PATH_COLUMNS = ("path", "uri", "file", "filename")


def resolve_source(spec: str, *, trust_pickle: bool = False, max_per_class: int | None = None) -> Source:
    """Turn the user's `--data` value into a folder (or a path/label table), writing a demo set,
    `.npy` bitmaps, a DataFrame or an archive out as class folders on first use."""
    from cnnops.data import formats

    if spec.startswith(DEMO_PREFIX):
        name = spec[len(DEMO_PREFIX) :]
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
    path = path.resolve()
    cap = f"cap={max_per_class}"
    if path.is_dir():
        arrays = formats.npy_files(path)
        if arrays and not any(p.is_dir() for p in path.iterdir()):
            key = formats.content_key(*arrays, extra=cap)
            folder = materialize(f"npy-{key}", lambda out: formats.write_quickdraw(arrays, out, max_per_class))
            return Source(str(path), folder, "npy")
        return Source(str(path), path, "pre-split" if is_pre_split(path) else "folder")
    name = path.name.lower()
    if formats.is_archive(path):
        folder = materialize(f"archive-{formats.content_key(path)}", lambda out: formats.extract_archive(path, out))
        root = formats.tree_root(folder)
        return Source(str(path), root, "pre-split" if is_pre_split(root) else "archive")
    if name.endswith(MANIFEST_SUFFIXES) and is_path_table(path):
        return Source(str(path), path.parent, "manifest", table=path)
    if name.endswith(formats.DATAFRAME_SUFFIXES):
        frame = formats.read_dataframe(path, trust_pickle)
        folder = materialize(
            f"dataframe-{formats.content_key(path, extra=cap)}",
            lambda out: formats.write_dataframe(frame, path, out, max_per_class),
        )
        return Source(str(path), folder, "dataframe")
    raise CnnopsError(
        f"data source {spec} is a file cnnops cannot read as data; pass a class-folder tree, a folder of .npy "
        "files, a .zip/.tar/.tar.gz archive, a CSV or parquet table of path and label, or a DataFrame "
        "(.parquet, or .pkl with --trust-pickle)."
    )


def is_pre_split(root: Path) -> bool:
    """train/ and test/ (and val/, valid/ or validation/) folders, and no other folders."""
    folders = {p.name.lower() for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return (
        {"train", "test"} <= folders
        and folders <= set(SPLIT_FOLDERS)
        and bool(folders & {"val", "valid", "validation"})
    )


def assigned_split(source: Source, path: Path) -> str:
    """The split a pre-split tree put a file in ("train", "val" or "test"), else ""."""
    if source.origin != "pre-split":
        return ""
    return SPLIT_FOLDERS[path.relative_to(source.root).parts[0].lower()]


def is_path_table(path: Path) -> bool:
    """A CSV, or a parquet whose columns include a path column (not image arrays)."""
    if path.suffix.lower() == ".csv":
        return True
    import pyarrow.parquet as pq

    try:
        names = {name.lower() for name in pq.read_schema(path).names}
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise CnnopsError(f"{path} is not a readable parquet file: {err}") from None
    return bool(names & set(PATH_COLUMNS))


def list_source_files(source: Source) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Each class's files, and the files that belong to no class with the reason why."""
    if source.table is not None:
        return read_path_table(source.table)
    loose = [(p, "not inside a class folder") for p in list_loose_files(source.root)]
    if source.origin != "pre-split":
        return list_class_files(source.root), loose
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in source.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        loose += [(p, f"not inside a class folder of {folder.name}/") for p in list_loose_files(folder)]
        for label, files in list_class_files(folder).items():
            classes.setdefault(label, []).extend(files)
    return {label: sorted(files) for label, files in sorted(classes.items())}, loose


def list_class_files(root: Path) -> dict[str, list[Path]]:
    """Map each class folder's name to its files (recursively, sorted), skipping hidden entries.

    Every file is listed, image suffix or not: ingest decides by content and quarantines the rest.
    Links to folders are not followed (a link loop cannot trap the walk).
    """
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes[folder.name] = [Path(f) for f in sorted(walk_files(str(folder)))]
    return classes


def walk_files(folder: str) -> list[str]:
    """Every regular file under `folder`, hidden entries left out, links to folders not followed;
    scandir's entries answer is_file()/is_dir() without a stat per file."""
    files: list[str] = []
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # an unreadable folder: its files cannot be listed, so none are read
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file():
                files.append(entry.path)
    return files


def list_loose_files(root: Path) -> list[Path]:
    """Files directly in the source folder: they belong to no class, so ingest reports them."""
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def read_path_table(table: Path) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """A CSV or parquet of (path or file URI, label); relative paths are relative to the table."""
    frame = (
        pd.read_csv(table, dtype=str, keep_default_na=False)
        if table.suffix.lower() == ".csv"
        else pd.read_parquet(table)
    )
    columns = {str(c).lower(): c for c in frame.columns}
    path_column = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
    label_column = next((columns[c] for c in ("label", "labels", "class", "target") if c in columns), None)
    if path_column is None or label_column is None:
        raise CnnopsError(
            f"{table} needs a path column ({', '.join(PATH_COLUMNS)}) and a label column; "
            f"it has {', '.join(map(str, frame.columns))}."
        )
    classes: dict[str, set[Path]] = {}
    problems: list[tuple[Path, str]] = []
    for raw, label in zip(frame[path_column].astype(str), frame[label_column].astype(str), strict=True):
        if raw.startswith("file://"):
            raw = unquote(urlparse(raw).path)
        elif "://" in raw:
            problems.append((Path(raw), "not a local file (only paths and file:// URIs are read; download it first)"))
            continue
        path = (table.parent / raw).resolve()
        if not label.strip():
            problems.append((path, "no label in the table"))
        elif not path.is_file():
            problems.append((path, "listed in the table but not found"))
        else:
            classes.setdefault(label.strip(), set()).add(path)  # a file listed twice is read once
    return {label: sorted(files) for label, files in sorted(classes.items())}, problems


def materialize_demo(name: str, writer: Callable[[Path], None]) -> Path:
    """Write a demo dataset as PNG class folders once."""
    return materialize(f"demo-{name}", writer)


def materialize(key: str, writer: Callable[[Path], None]) -> Path:
    """Write a class-folder tree into the data cache once, under `key`; a crash mid-write leaves
    nothing half-made, and a second call finds the finished tree."""
    target = data_cache() / key
    if is_complete(target):
        return target
    say(f"writing {key} out as image files under {target} (once)")
    write_folder_atomically(target, writer)
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
    names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    missing = [name for name in names if not (FASHION_DIR / name).is_file()]
    if missing:
        raise CnnopsError(
            f"demo:fashion reads Debian's Fashion-MNIST files from {FASHION_DIR}, and "
            f"{missing[0]} is not there; install them with `sudo apt-get install "
            "dataset-fashion-mnist`."
        )
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
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise CnnopsError(f"{path} is truncated: {data.size} bytes for a {shape} array.")
    return data.reshape(shape)


DEMOS: dict[str, Callable[[Path], None]] = {
    "animals": write_animals,
    "digits": write_digits,
    "faces": write_faces,
    "fashion": write_fashion,
}
