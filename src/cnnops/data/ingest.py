"""Ingest: read every image once through the decode function, write the manifest, the quarantine
list and the dataset fingerprint. Bad files are quarantined, never fatal; the source is only read.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from cnnops.contracts.dataset import DatasetInfo, manifest_fingerprint, read_dataset_info, write_dataset
from cnnops.core.console import Progress, say
from cnnops.core.errors import CnnopsError, ImageDecodeError
from cnnops.core.memo import new_digest, restore, store
from cnnops.data.image_cache import ImageCache, ImageFields, load_cache, save_cache
from cnnops.data.images import decode_image, perceptual_hash, sha256_bytes
from cnnops.data.sources import Source, assigned_split, list_source_files, resolve_source
from cnnops.settings.config import Config

# When images differ in size (or are large), the model takes this square side unless configured.
FALLBACK_SIDE = 128
MAX_NATIVE_SIDE = 256
# zip, gzip, bzip2, xz and 7z signatures (a tar is recognised by "ustar" at byte 257).
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf")
# What an ingest writes, and so what an unchanged source gets back from the memo.
INGEST_OUTPUTS = ["manifest.parquet", "dataset.json", "quarantine.csv", "duplicates.csv"]
# Files per pool task: per-file tasks cost more in scheduling than a small image costs to decode.
READ_CHUNK = 128
# From this many files to decode, worker processes (a second or two to start) beat threads.
PROCESS_MIN_FILES = 4000


def ingest_source(config: Config, out_dir: Path) -> DatasetInfo:
    """Ingest `config.data.source` into a dataset folder; returns the dataset description."""
    source = open_source(config)
    class_files, unclassed = list_source_files(source)
    check_has_classes(source, class_files)
    jobs = [(label, path) for label, files in class_files.items() for path in files]
    say(f"ingest: reading {len(jobs)} files in {len(class_files)} classes from {source.table or source.root}")
    memo_key = listing_key(source, jobs, unclassed, config)
    if restore("ingest", memo_key, out_dir, INGEST_OUTPUTS):
        say("ingest: no file changed since an earlier ingest; its manifest is reused")
        return read_dataset_info(out_dir)

    rows: list[dict[str, Any]] = []
    quarantine = [{"path": str(path), "label": "", "reason": reason} for path, reason in unclassed]
    progress = Progress("ingest", len(jobs))
    cache = load_cache()
    max_pixels = config.data.max_image_pixels
    outcomes: dict[Path, tuple[str, ImageFields] | str] = {}
    pending: list[Path] = []
    for _, path in jobs:
        known = cached_fields(path, cache, max_pixels)
        if known is None:
            pending.append(path)
        else:
            outcomes[path] = known
            progress.advance()
    for path, key, sha256, fields in read_files(pending, max_pixels):
        progress.advance()
        if key is not None:
            cache.learned_files[key] = sha256
        if isinstance(fields, ImageFields):
            cache.learned_images[sha256] = fields
            outcomes[path] = (sha256, fields)
        else:
            outcomes[path] = fields
    for label, path in jobs:
        result = outcomes[path]
        if isinstance(result, str):
            quarantine.append({"path": str(path), "label": label, "reason": result})
        else:
            sha256, fields = result
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "origin": source.origin,
                    "split": assigned_split(source, path),
                    "sha256": sha256,
                    **asdict(fields),
                    "group": "",
                }
            )
    save_cache(cache)
    if cache.images:
        say(
            f"ingest: {len(rows) - len(cache.learned_images)} images known from an earlier run, "
            f"{len(cache.learned_images)} decoded"
        )
    if not rows:
        first = quarantine[0]["reason"] if quarantine else "no files"
        raise CnnopsError(
            f"no decodable image in {source.spec}: all {len(jobs)} files were quarantined "
            f"(first reason: {first}); use jpg, png, bmp, gif or webp files."
        )
    manifest, duplicates, conflicts = drop_duplicates(pd.DataFrame(rows))
    quarantine.extend(conflicts)
    info = describe_dataset(manifest, source, config).model_copy(
        update={
            "n_files": len(jobs),
            "n_quarantined": len(quarantine),
            "n_duplicates": len(duplicates),
            "empty_classes": sorted(set(class_files) - set(manifest["label"])),
        }
    )
    write_dataset(out_dir, manifest, info)
    pd.DataFrame(quarantine, columns=["path", "label", "reason"]).to_csv(out_dir / "quarantine.csv", index=False)
    duplicates.to_csv(out_dir / "duplicates.csv", index=False)
    say(
        f"ingest: {len(manifest)} images in {len(info.classes)} classes, {len(quarantine)} quarantined, "
        f"{len(duplicates)} exact duplicates dropped; fingerprint {info.fingerprint[:12]}"
    )
    for label in info.empty_classes:
        say(f"ingest: warning: class folder '{label}' has no usable image and is left out")
    store("ingest", memo_key, out_dir, INGEST_OUTPUTS)
    return info


def listing_key(source: Source, jobs: list[tuple[str, Path]], unclassed: list[tuple[Path, str]], config: Config) -> str:
    """A digest of every listed file's path, label, size and mtime, and of the settings ingest
    uses: the same key means the same ingest output."""
    digest = new_digest("ingest")
    digest.update(
        f"{source.spec}\0{source.origin}\0{config.data.max_image_pixels}\0{config.data.image_size}\n".encode()
    )
    for label, path in jobs:
        try:
            stat = os.stat(path)
            digest.update(f"{label}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError as err:
            digest.update(f"{label}\0{path}\0{err.errno}\n".encode())
    for path, reason in unclassed:
        digest.update(f"\0{path}\0{reason}\n".encode())
    return digest.hexdigest()


def open_source(config: Config) -> Source:
    """The configured source, with the data options that shape how it is read."""
    data = config.data
    return resolve_source(data.source, trust_pickle=data.trust_pickle, max_per_class=data.max_per_class)


def check_has_classes(source: Source, class_files: dict[str, list[Path]]) -> None:
    """Fail fast, before any decoding, on a folder that cannot make a classifier."""
    filled = [label for label, files in class_files.items() if files]
    if not filled:
        raise CnnopsError(f"data source {source.spec} is empty: it needs one subfolder per class, each holding images.")
    if len(filled) < 2:
        raise CnnopsError(
            f"data source {source.spec} has one class only ('{filled[0]}'); a classifier needs at least "
            "two class subfolders."
        )


def drop_duplicates(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, str]]]:
    """Keep one copy of each exact duplicate, so one image never lands in both train and test.

    Copies filed under different labels are a label conflict: every copy is quarantined.
    """
    manifest = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    labels_per_hash = manifest.groupby("sha256")["label"].nunique()
    conflicted = set(labels_per_hash[labels_per_hash > 1].index)
    conflict_rows = manifest[manifest["sha256"].isin(conflicted)]
    conflicts = [
        {
            "path": row.path,
            "label": row.label,
            "reason": "label conflict: the same image is filed under "
            + ", ".join(sorted(conflict_rows.loc[conflict_rows.sha256 == row.sha256, "label"].unique())),
        }
        for row in conflict_rows.itertuples()
    ]
    clean = manifest[~manifest["sha256"].isin(conflicted)]
    first = clean.groupby("sha256")["path"].transform("first")
    is_copy = clean["path"] != first
    duplicates = pd.DataFrame(
        {"path": clean.loc[is_copy, "path"], "label": clean.loc[is_copy, "label"], "duplicate_of": first[is_copy]}
    )
    return clean[~is_copy].reset_index(drop=True), duplicates.reset_index(drop=True), conflicts


def describe_dataset(manifest: pd.DataFrame, source: Source, config: Config) -> DatasetInfo:
    """Classes, colour mode, model input size and fingerprint of a deduplicated manifest."""
    mode = "L" if (manifest["mode"] == "L").all() else "RGB"
    height, width = choose_input_size(manifest, config.data.image_size)
    counts = Counter(manifest["label"])
    return DatasetInfo(
        source=source.spec,
        origin=source.origin,
        classes=sorted(counts),
        class_counts=dict(sorted(counts.items())),
        mode=mode,
        height=height,
        width=width,
        n_images=len(manifest),
        fingerprint=manifest_fingerprint(manifest),
    )


def choose_input_size(manifest: pd.DataFrame, image_size: int | None) -> tuple[int, int]:
    """The configured square side; else the images' own size when they all share a small one."""
    if image_size is not None:
        return image_size, image_size
    sizes = set(zip(manifest["height"], manifest["width"], strict=True))
    if len(sizes) == 1:
        height, width = sizes.pop()
        if max(height, width) <= MAX_NATIVE_SIDE:
            return int(height), int(width)
    return FALLBACK_SIDE, FALLBACK_SIDE


def cached_fields(path: Path, cache: ImageCache, max_pixels: int) -> tuple[str, ImageFields] | None:
    """A file's sha256 and image fields from the cache when it is unchanged since an earlier ingest
    (same path, size and mtime) and its image is known and within today's pixel limit; else None."""
    try:
        stat = path.stat()
    except OSError:
        return None  # read_file reports why
    sha256 = cache.files.get((str(path), stat.st_size, stat.st_mtime_ns))
    known = cache.images.get(sha256) if sha256 is not None else None
    if sha256 is None or known is None or known.width * known.height > max_pixels:
        return None
    return sha256, known


FileOutcome = tuple[Path, "tuple[str, int, int] | None", str, "ImageFields | str"]


def read_files(paths: list[Path], max_pixels: int) -> Iterator[FileOutcome]:
    """Read, hash and decode files in parallel: in worker processes for a large set (decoding is
    Python-heavy and would otherwise share one core), in threads for a small one (no start-up)."""
    chunks = [paths[i : i + READ_CHUNK] for i in range(0, len(paths), READ_CHUNK)]
    workers = os.cpu_count() or 1
    if len(paths) >= PROCESS_MIN_FILES and workers > 1:
        pool: Executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    else:
        pool = ThreadPoolExecutor(max_workers=min(8, workers * 2))
    with pool:
        for done in pool.map(read_chunk, chunks, [max_pixels] * len(chunks)):
            yield from done


def read_chunk(paths: list[Path], max_pixels: int) -> list[FileOutcome]:
    return [(path, *read_file(path, max_pixels)) for path in paths]


def read_file(path: Path, max_pixels: int) -> tuple[tuple[str, int, int] | None, str, ImageFields | str]:
    """One file's cache key, sha256 and decoded fields, or the reason it is quarantined."""
    try:
        stat = path.stat()
        data = path.read_bytes()
    except OSError as err:
        return None, "", f"unreadable: {err.strerror or err}"
    sha256 = sha256_bytes(data)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as err:
        if data.startswith(ARCHIVE_MAGIC) or data[257:262] == b"ustar":
            return (
                key,
                sha256,
                ("archive inside the source (not extracted): extract it into the tree, or pass it as the source"),
            )
        return key, sha256, str(err)
    return key, sha256, ImageFields(image.width, image.height, image.natural_mode, perceptual_hash(image.pixels))
