"""Per-epoch checkpoints of a training run, so that an interrupted run goes on from its last
finished epoch under the same MLflow run instead of starting again.

A checkpoint folder (`<state>/checkpoints/<run id>/`) holds the model with its optimizer state
(`last.keras`), the best weights so far of the current phase (`best.npz`) and `progress.json`:
the resolved config and data fingerprint the run started with, the phase and epoch reached, the
history, and the early-stopping and learning-rate-plateau counters (`TrainingState`). Every file is written to a
temporary name and renamed, so a kill mid-write leaves the previous checkpoint whole.

The process training a run holds an exclusive lock on its folder (`lock`, flock) until it ends, so
a second training never resumes, retires or deletes a run that is still being trained; the kernel
drops the lock when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cnnops.contracts.model import (
    EarlyStoppingState,
    PlateauState,
    TrainingState,
    read_training_state,
    write_training_state,
)
from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError
from cnnops.core.paths import state_home
from cnnops.settings.config import flatten_config, validate_config

MODEL_FILE, BEST_FILE, PROGRESS_FILE, LOCK_FILE = "last.keras", "best.npz", "progress.json", "lock"
# Config keys that differ between a run and its rerun without changing what trains: a sweep
# candidate names the parent run of its own pipeline run, and each pipeline run opens a new one.
RERUN_FIELDS = frozenset({"sweep.parent_run"})


def checkpoint_dir(run_id: str) -> Path:
    return state_home() / "checkpoints" / run_id


def read_progress(run_id: str) -> TrainingState:
    """The progress of an earlier run, or one line saying why it cannot be resumed."""
    folder = checkpoint_dir(run_id)
    path = folder / PROGRESS_FILE
    if not path.is_file() or not (folder / MODEL_FILE).is_file():
        raise CnnopsError(
            f"no checkpoint of run {run_id} under {folder.parent}: a finished run keeps none, and "
            "an unfinished one is resumed on the machine, with the CNNOPS_HOME, it started with "
            "(its id is printed when training starts)."
        )
    return read_training_state(path)


def config_changes(before_raw: dict[str, Any], now_raw: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each config key whose value differs, with its values before and now; the RERUN_FIELDS are left out."""
    before = flatten_config(validate_config(before_raw))
    now = flatten_config(validate_config(now_raw))
    keys = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
    return {key: (before.get(key), now.get(key)) for key in keys if key not in RERUN_FIELDS}


def check_resumable(progress: TrainingState, config_raw: dict[str, Any], fingerprint: str) -> None:
    """A resumed run must train what it started training: same config, same training data."""
    changed = config_changes(progress.config, config_raw)
    if changed:
        shown = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in list(changed.items())[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise CnnopsError(
            f"cannot resume run {progress.run_id}: its config differs ({shown}{more}); "
            "resume with the config it started with, or start a new run."
        )
    if progress.fingerprint != fingerprint:
        raise CnnopsError(
            f"cannot resume run {progress.run_id}: the train or val split differs from the one it "
            "started on; resume on the same splits, or start a new run."
        )


def matching_checkpoints(config_raw: dict[str, Any], fingerprint: str) -> list[TrainingState]:
    """The checkpoints in this state folder of runs that trained exactly this (same config but for
    the RERUN_FIELDS, same splits), newest first. A folder that cannot be read (half deleted, from
    another cnnops version) is no match: it is left for `--resume` to explain."""
    root = state_home() / "checkpoints"
    found: list[tuple[float, TrainingState]] = []
    for path in root.glob(f"*/{PROGRESS_FILE}") if root.is_dir() else []:
        try:
            progress = read_training_state(path)
            written = path.stat().st_mtime
        except (CnnopsError, OSError):
            continue
        if not (path.parent / MODEL_FILE).is_file() or progress.fingerprint != fingerprint:
            continue
        try:
            if config_changes(progress.config, config_raw):
                continue
        except CnnopsError:  # a config this cnnops no longer accepts
            continue
        found.append((written, progress))
    return [progress for _, progress in sorted(found, key=lambda pair: pair[0], reverse=True)]


class CheckpointBusy(CnnopsError):
    """Another process is training this run right now."""


@contextmanager
def locked_checkpoint(run_id: str) -> Iterator[Path]:
    """Hold the run's checkpoint folder for the block (created if need be), or raise
    CheckpointBusy at once when another process holds it. Yields the folder."""
    folder = checkpoint_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointBusy(
                f"run {run_id} is being trained by another process right now; wait for it, or start a new run."
            ) from None
        yield folder
    finally:
        os.close(handle)  # closing drops the lock


def write_checkpoint(
    folder: Path, model: keras.Model, progress: TrainingState, best_weights: list[np.ndarray] | None
) -> None:
    """Model (with optimizer state) and best weights first, progress last: progress.json only ever
    names an epoch whose files are complete."""
    replace_atomically(folder / MODEL_FILE, lambda tmp: model.save(tmp))
    if best_weights is not None:
        replace_atomically(folder / BEST_FILE, lambda tmp: np.savez(tmp, *best_weights))
    write_training_state(folder / PROGRESS_FILE, progress)


def read_best_weights(folder: Path) -> list[np.ndarray] | None:
    path = folder / BEST_FILE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping whose counters and best weights carry over from a checkpoint."""

    stopped_epoch: int  # set by Keras in on_train_begin

    def __init__(
        self,
        state: EarlyStoppingState | None = None,
        best_weights: list[np.ndarray] | None = None,
        min_epochs: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._resume_state, self._resume_weights = state, best_weights
        self.min_epochs = min_epochs

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait = self._resume_state.wait
            self.best = self._resume_state.best
            self.best_epoch = self._resume_state.best_epoch
            self.best_weights = self._resume_weights

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Track the best epoch from the start, but never stop before `min_epochs` (a warm-up in
        optimizer steps: a few short epochs are no evidence that training has stalled)."""
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and epoch > 0 and self.stopped_epoch == epoch and epoch + 1 < self.min_epochs:
            self.stopped_epoch = 0
            self.model.stop_training = False

    def state(self) -> EarlyStoppingState:
        return EarlyStoppingState(
            wait=self.wait, best=_plain(self.best), best_epoch=self.best_epoch, stopped=self.stopped_epoch > 0
        )


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """Reduce-on-plateau whose counters carry over from a checkpoint (the rate itself lives in the
    saved optimizer)."""

    def __init__(self, state: PlateauState | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._resume_state = state

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait = self._resume_state.wait
            self.best = self._resume_state.best
            self.cooldown_counter = self._resume_state.cooldown_counter

    def state(self) -> PlateauState:
        return PlateauState(wait=self.wait, best=_plain(self.best), cooldown_counter=self.cooldown_counter)


def _plain(value: Any) -> float | None:
    return None if value is None else float(value)
