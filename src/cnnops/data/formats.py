"""Data that does not arrive as image files in class folders: Quick, Draw! `.npy` bitmaps, a
DataFrame of image arrays (parquet, or a pickle the user vouches for), and archives of a tree.

Each is written out once as a class-folder tree in the state folder, under a key made of the
source's content and the options that shape the output. Everything after that (ingest, the
manifest, training) is the same code as for a folder. The user's files are only read.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from cnnops.core.errors import CnnopsError

QUICKDRAW_PREFIX = "full_numpy_bitmap_"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
DATAFRAME_SUFFIXES = (".parquet", ".pkl", ".pickle")
LABEL_COLUMNS = ("label", "labels", "class", "target", "y")
# Archives: refuse more than this much uncompressed data, or this many entries (zip/tar bombs).
MAX_ARCHIVE_BYTES = 20 * 1024**3
MAX_ARCHIVE_ENTRIES = 2_000_000


def content_key(*paths: Path, extra: str = "") -> str:
    """sha256 over the files' bytes (streamed) and the options: the cache key of a written-out copy."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def npy_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".npy")


def quickdraw_class(path: Path) -> str:
    """`full_numpy_bitmap_cat.npy` and `cat.npy` are both class `cat`."""
    name = path.stem
    return name[len(QUICKDRAW_PREFIX) :] if name.startswith(QUICKDRAW_PREFIX) else name


def write_quickdraw(files: list[Path], out: Path, max_per_class: int | None) -> None:
    """One `.npy` per class of N x 784 uint8 rows (28x28 bitmaps), read without unpickling."""
    for path in files:
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise CnnopsError(
                f"{path} is not a plain numpy array file ({err}); Quick, Draw! bitmaps are N x 784 uint8 arrays."
            ) from None
        if rows.ndim != 2 or rows.shape[1] != 784:
            raise CnnopsError(f"{path} holds a {rows.shape} array; Quick, Draw! bitmaps are N x 784 (28x28) rows.")
        if max_per_class is not None:
            rows = rows[:max_per_class]
        write_images(out / quickdraw_class(path), np.asarray(rows, dtype=np.uint8).reshape(-1, 28, 28))


def read_dataframe(path: Path, trust_pickle: bool) -> pd.DataFrame:
    """A DataFrame from parquet, or from a pickle only when the user said they trust it."""
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if not trust_pickle:
        raise CnnopsError(
            f"{path} is a pickle, and unpickling runs whatever code the file holds; cnnops reads "
            "it only with --trust-pickle (or --set data.trust_pickle=true). Parquet needs no flag."
        )
    frame = pd.read_pickle(path)  # noqa: S301 - the user vouched for this file with --trust-pickle
    if not isinstance(frame, pd.DataFrame):
        raise CnnopsError(f"{path} holds a {type(frame).__name__}, not a pandas DataFrame.")
    return frame


def dataframe_columns(frame: pd.DataFrame, path: Path) -> tuple[str, str]:
    """The label column (by name) and the image column (the one holding arrays or image bytes)."""
    label = next((c for c in frame.columns if str(c).lower() in LABEL_COLUMNS), None)
    if label is None:
        raise CnnopsError(f"{path} has no label column; name it one of {', '.join(LABEL_COLUMNS)}.")
    for column in frame.columns:
        sample = frame[column].dropna()
        if column != label and len(sample) and isinstance(sample.iloc[0], np.ndarray | list | bytes):
            return label, column
    raise CnnopsError(f"{path} has no column of image arrays or image bytes next to '{label}'.")


def write_dataframe(frame: pd.DataFrame, path: Path, out: Path, max_per_class: int | None) -> None:
    """Write each row's image into its label's folder: arrays as PNG, encoded bytes as they are."""
    label_column, image_column = dataframe_columns(frame, path)
    for label, group in frame.groupby(label_column, sort=True):
        values = group[image_column].dropna()
        if max_per_class is not None:
            values = values.iloc[:max_per_class]
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index, value in enumerate(values):
            if isinstance(value, bytes):
                (folder / f"row-{index:06d}.img").write_bytes(value)
            else:
                save_png(to_uint8_image(np.asarray(value), path), folder / f"row-{index:06d}.png")


def to_uint8_image(array: np.ndarray, path: Path) -> np.ndarray:
    """HxW, HxWxC, or a flat square (784 -> 28x28) array as uint8; floats in [0, 1] are scaled."""
    if array.ndim == 1:
        side = int(round(array.size**0.5))
        if side * side != array.size:
            raise CnnopsError(f"{path}: a flat image array of {array.size} values is not square; store HxW arrays.")
        array = array.reshape(side, side)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise CnnopsError(f"{path}: an image array of shape {array.shape} is not HxW, HxWx3 or HxWx4.")
    if array.dtype.kind == "f":
        array = array * 255.0 if float(np.nanmax(array)) <= 1.0 else array
    return np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)


def write_images(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, pixels in enumerate(images):
        save_png(pixels, folder / f"{folder.name}-{index:06d}.png")


def save_png(pixels: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(path: Path, out: Path) -> None:
    """Extract a zip or tar safely: every entry is checked before anything is written. An entry
    that is absolute or climbs out of the target, a link or a device, or a total over the size or
    entry bound refuses the whole archive."""
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            check_entries(path, [(e.filename, e.file_size, stat.S_ISLNK(e.external_attr >> 16)) for e in entries])
            for entry in entries:
                if not entry.is_dir():
                    target = out / safe_name(path, entry.filename)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(entry) as source, target.open("wb") as sink:
                        for block in iter(lambda: source.read(1 << 20), b""):
                            sink.write(block)
        return
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
            check_entries(path, [(m.name, m.size, not (m.isfile() or m.isdir())) for m in members])
            archive.extractall(out, members=[m for m in members if m.isfile() or m.isdir()], filter="data")
    except tarfile.TarError as err:
        raise CnnopsError(f"{path} is not a readable tar archive: {err}") from None


def check_entries(path: Path, entries: list[tuple[str, int, bool]]) -> None:
    """Refuse the archive before extracting anything; `entries` is (name, size, is_special)."""
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        raise CnnopsError(f"{path} has {len(entries)} entries, over the bound of {MAX_ARCHIVE_ENTRIES}.")
    total = 0
    for name, size, special in entries:
        safe_name(path, name)
        if special:
            raise CnnopsError(
                f"{path} holds '{name}', a link or special file; cnnops extracts only plain files "
                "and folders. Re-create the archive without links."
            )
        total += size
        if total > MAX_ARCHIVE_BYTES:
            raise CnnopsError(f"{path} expands to more than {MAX_ARCHIVE_BYTES} bytes; refusing to extract it.")


def safe_name(path: Path, name: str) -> PurePosixPath:
    """An entry's path inside the target, or a refusal if it is absolute or climbs out."""
    entry = PurePosixPath(name.replace("\\", "/"))
    if entry.is_absolute() or ".." in entry.parts or (entry.parts and ":" in entry.parts[0]):
        raise CnnopsError(
            f"{path} holds the entry '{name}', which would land outside the extraction folder; "
            "refusing the whole archive."
        )
    return entry


def tree_root(folder: Path) -> Path:
    """An archive of `images/cat/...` is the tree under `images/`: descend single wrapper folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and any(c.is_dir() for c in entries[0].iterdir()):
            folder = entries[0]
        else:
            return folder
