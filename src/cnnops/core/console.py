"""Progress lines for long steps: plain lines, so they read the same in a terminal and in kfp logs.

Every line starts with `cnnops: `; that prefix is what `cnnops run` keeps on the terminal
(cnnops.core.runlog).
"""

from __future__ import annotations

import sys
import time

PREFIX = "cnnops: "


def say(message: str) -> None:
    print(f"{PREFIX}{message}", file=sys.stderr, flush=True)


class Progress:
    """Prints `label: done/total (rate/s)` at most every `interval` seconds, and once at the end
    unless `final` is False (when another line reports the end)."""

    def __init__(self, label: str, total: int, interval: float = 10.0, final: bool = True) -> None:
        self.label, self.total, self.interval, self.final = label, total, interval, final
        self.done = 0
        self._start = self._last = time.monotonic()

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        finished = self.total > 0 and self.done >= self.total
        if (finished and self.final) or (not finished and now - self._last >= self.interval):
            self._last = now
            say(f"{self.label}: {self.describe(now)}")

    def describe(self, now: float) -> str:
        """`done/total (rate/s)`, or `done (rate/s)` when the total is unknown; a slow step reads
        as seconds each instead."""
        counted = f"{self.done}/{self.total}" if self.total > 0 else str(self.done)
        elapsed = now - self._start
        if elapsed <= 0 or self.done <= 0:
            return counted
        rate = self.done / elapsed
        return f"{counted} ({rate:.1f}/s)" if rate >= 1 else f"{counted} ({1 / rate:.1f}s each)"
