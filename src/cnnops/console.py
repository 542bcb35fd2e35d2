"""Progress lines for long steps: plain lines, so they read the same in a terminal and in kfp logs."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    print(f"cnnops: {message}", file=sys.stderr, flush=True)


class Progress:
    """Prints `label: done/total` at most every `interval` seconds, and once at the end."""

    def __init__(self, label: str, total: int, interval: float = 5.0) -> None:
        self.label, self.total, self.interval = label, total, interval
        self.done = 0
        self._last = time.monotonic()

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= self.interval:
            self._last = now
            say(f"{self.label}: {self.done}/{self.total}")
