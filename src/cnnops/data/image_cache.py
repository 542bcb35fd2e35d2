"""What ingest learned about each image, kept by content hash, so a second ingest of unchanged
images does not decode them again.

Two tables in one sqlite file in the state folder: `images` (sha256 -> size, mode, perceptual
hash) and, in front of it like git's index, `files` (path, byte size and mtime -> sha256), so an
untouched file is not even read. A file edited in place keeps neither its size nor its mtime in
practice; and training re-hashes every file it reads, so a stale entry could never train a model
on other bytes than the manifest names. Both tables are loaded whole at the start (a few dozen
bytes per image) and written in one transaction at the end; the read threads never touch the
database.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from cnnops.core.paths import state_home

# Bump when what is stored changes meaning (the perceptual hash, the natural mode rule).
VERSION = 1


def cache_path() -> Path:
    return state_home() / "cache" / "images.sqlite"


FileKey = tuple[str, int, int]  # path, byte size, mtime in ns


@dataclass(frozen=True)
class ImageFields:
    """What decoding an image once tells its manifest row: size, natural colour mode, perceptual hash."""

    width: int
    height: int
    mode: str
    phash: str


@dataclass
class ImageCache:
    """Images by sha256, files by (path, size, mtime); `learned_*` is what to save at the end."""

    images: dict[str, ImageFields] = field(default_factory=dict)
    files: dict[FileKey, str] = field(default_factory=dict)
    learned_images: dict[str, ImageFields] = field(default_factory=dict)
    learned_files: dict[FileKey, str] = field(default_factory=dict)


def load_cache(path: Path | None = None) -> ImageCache:
    """Everything cached; empty when there is no cache yet or it cannot be read."""
    path = path or cache_path()
    if not path.is_file():
        return ImageCache()
    with closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute("SELECT sha256, width, height, mode, phash FROM images WHERE version = ?", (VERSION,))
            images = {sha: ImageFields(width, height, mode, phash) for sha, width, height, mode, phash in rows}
            files = {
                (p, size, mtime): sha
                for p, size, mtime, sha in db.execute("SELECT path, size, mtime_ns, sha256 FROM files")
            }
        except sqlite3.DatabaseError:  # an unreadable or foreign file: start again, never fail ingest
            return ImageCache()
    return ImageCache(images, files)


def save_cache(cache: ImageCache, path: Path | None = None) -> None:
    """Add what this ingest learned, in one transaction."""
    if not cache.learned_images and not cache.learned_files:
        return
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS images (sha256 TEXT PRIMARY KEY, version INTEGER, width INTEGER, "
            "height INTEGER, mode TEXT, phash TEXT)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)",
            [(sha, VERSION, f.width, f.height, f.mode, f.phash) for sha, f in cache.learned_images.items()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
            [(*key, sha) for key, sha in cache.learned_files.items()],
        )
