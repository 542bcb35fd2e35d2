"""Training's step counter: a Keras callback that reports through cnnops.console, in place of
Keras's own progress bar (which `fit(verbose=0)` turns off, since it floods kfp logs)."""

from __future__ import annotations

from typing import Any

import keras

from cnnops.console import Progress

# Seconds between step lines; the epoch's own line reports its end.
STEP_INTERVAL = 30.0


class StepProgress(keras.callbacks.Callback):
    """`train: epoch E/N, steps S/T (rate/s)` every `interval` seconds of a fit's first epoch, where
    the rate (and the time a first step takes to compile) shows; each later epoch's own line says
    how long it took, so a run's terminal stays short."""

    def __init__(self, epochs: int, interval: float = STEP_INTERVAL) -> None:
        super().__init__()
        self.epochs, self.interval = epochs, interval
        self.progress: Progress | None = None
        self.first: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.first = epoch if self.first is None else self.first
        self.progress = None
        if epoch == self.first:
            steps = int(self.params.get("steps") or 0)
            label = f"train: epoch {epoch + 1}/{self.epochs}, steps"
            self.progress = Progress(label, steps, interval=self.interval, final=False)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is not None:
            self.progress.advance()
