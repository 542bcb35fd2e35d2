"""Training's step counter: a Keras callback that reports through cnnops.core.console, in place of
Keras's own progress bar (which `fit(verbose=0)` turns off, since it floods kfp logs)."""

from __future__ import annotations

import time
from typing import Any

import keras

from cnnops.core.console import Progress, say

# Step lines in a fit's first epoch, at even shares of it; the epoch's own line reports its end.
STEP_LINES = 3
# Seconds between step lines when Keras does not know how many steps an epoch has.
STEP_INTERVAL = 30.0


class StepProgress(keras.callbacks.Callback):
    """`train: epoch E/N, steps S/T (rate/s)` at a quarter, half and three quarters of a fit's first
    epoch, where the rate (and the time a first step takes to compile) shows. Each later epoch's own
    line says how long it took, so a run's terminal stays short whatever the machine's speed."""

    def __init__(self, epochs: int, lines: int = STEP_LINES) -> None:
        super().__init__()
        self.epochs, self.lines = epochs, lines
        self.progress: Progress | None = None
        self.marks: set[int] = set()
        self.first: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.first = epoch if self.first is None else self.first
        self.progress = None
        if epoch != self.first:
            return
        steps = int(self.params.get("steps") or 0)
        self.marks = {steps * share // (self.lines + 1) for share in range(1, self.lines + 1)} - {0, steps}
        # A known length reports at the marks only; an unknown one every STEP_INTERVAL seconds.
        interval = float("inf") if steps else STEP_INTERVAL
        self.progress = Progress(f"train: epoch {epoch + 1}/{self.epochs}, steps", steps, interval, final=False)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is None:
            return
        self.progress.advance()
        if self.progress.done in self.marks:
            say(f"{self.progress.label}: {self.progress.describe(time.monotonic())}")
