"""Writes that a kill cannot leave half-made: a file or a folder is written aside, on the same file
system, flushed to disk and renamed into place, so a reader finds the old version or the new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# In a folder written by `write_folder_atomically`: present once every file in it is.
COMPLETE = ".complete"


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write` on a temporary file beside `path` (same name, so a writer that picks its format
    from the suffix, as Keras does, still can), flush it to disk and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        temporary = Path(scratch) / path.name
        write(temporary)
        sync(temporary)
        os.replace(temporary, path)
    sync(path.parent)


def write_text_atomically(path: Path, text: str) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(text))


def is_complete(folder: Path) -> bool:
    """True once `write_folder_atomically` has put the whole folder in place."""
    return (folder / COMPLETE).is_file()


def write_folder_atomically(target: Path, fill: Callable[[Path], None]) -> None:
    """Call `fill` on a staging folder beside `target`, mark it complete and rename it over
    `target`. The folder is left readable by all: a pipeline task in a container runs as another
    user than the one that wrote it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(staging)
        (staging / COMPLETE).write_text("ok\n")
        sync(staging / COMPLETE)
        staging.chmod(0o755)  # mkdtemp makes the folder private
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        sync(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sync(path: Path) -> None:
    """Flush a file's (or a folder's entries') writes to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
