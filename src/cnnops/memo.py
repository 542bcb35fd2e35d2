"""Step outputs kept by a digest of everything that decides them, so a step over unchanged inputs
copies its earlier outputs instead of doing the work again.

Entries live in the state folder under `cache/<step>/<digest>/`, written aside and renamed into
place whole, so an interrupted write is never found.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import cnnops
from cnnops.paths import state_home

# Bump when a step's outputs change meaning for the same inputs.
MEMO_VERSION = 1
COMPLETE = ".complete"


def new_digest(step: str) -> hashlib._Hash:
    """A digest already holding the step, the cnnops version and the memo version."""
    return hashlib.sha256(f"{step}\0{cnnops.__version__}\0{MEMO_VERSION}\n".encode())


def memo_dir(step: str, key: str) -> Path:
    return state_home() / "cache" / step / key


def restore(step: str, key: str, out_dir: Path, names: list[str]) -> bool:
    """Copy a complete earlier output into `out_dir`; False when there is none."""
    entry = memo_dir(step, key)
    if not (entry / COMPLETE).is_file():
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(entry / name, out_dir / name)
    return True


def store(step: str, key: str, out_dir: Path, names: list[str]) -> None:
    """Keep copies of this step's outputs under `key`."""
    entry = memo_dir(step, key)
    if (entry / COMPLETE).is_file():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
    try:
        for name in names:
            shutil.copyfile(out_dir / name, staging / name)
        (staging / COMPLETE).write_text("ok\n")
        shutil.rmtree(entry, ignore_errors=True)
        staging.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
