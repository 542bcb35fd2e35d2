"""Step outputs kept by a digest of everything that decides them, so a step over unchanged inputs
copies its earlier outputs instead of doing the work again.

Entries live in the state folder under `cache/<step>/<digest>/`, written aside and renamed into
place whole, so an interrupted write is never found.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cnnops
from cnnops.core.atomic import is_complete, write_folder_atomically
from cnnops.core.paths import state_home

# Bump when a step's outputs change meaning for the same inputs.
MEMO_VERSION = 2


def new_digest(step: str) -> hashlib._Hash:
    """A digest already holding the step, the cnnops version and the memo version."""
    return hashlib.sha256(f"{step}\0{cnnops.__version__}\0{MEMO_VERSION}\n".encode())


def memo_dir(step: str, key: str) -> Path:
    return state_home() / "cache" / step / key


def restore(step: str, key: str, out_dir: Path, names: list[str]) -> bool:
    """Copy a complete earlier output into `out_dir`; False when there is none. An output the
    earlier run did not write (a step may leave one out) is removed from `out_dir` too."""
    entry = memo_dir(step, key)
    if not is_complete(entry):
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (entry / name).is_file():
            shutil.copyfile(entry / name, out_dir / name)
        else:
            (out_dir / name).unlink(missing_ok=True)
    return True


def store(step: str, key: str, out_dir: Path, names: list[str]) -> None:
    """Keep copies of this step's outputs under `key` (those of `names` it wrote)."""
    entry = memo_dir(step, key)
    if is_complete(entry):
        return

    def copy_outputs(staging: Path) -> None:
        for name in names:
            if (out_dir / name).is_file():
                shutil.copyfile(out_dir / name, staging / name)

    write_folder_atomically(entry, copy_outputs)
