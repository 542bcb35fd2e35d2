"""An opt-in, rate-limited sample of served images, kept for later labelling: bounded in count and
in bytes, across restarts. Keeping a sample must never fail the request that offered it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cnnops.core.atomic import replace_atomically, write_text_atomically
from cnnops.core.errors import CnnopsError
from cnnops.data.images import sha256_bytes

INDEX = "samples.jsonl"
# Only names of this shape are the keeper's own; the stamp sorts as the time does.
NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.[a-z0-9]{1,8}")
SUFFIX = re.compile(r"[a-z0-9]{1,8}")

log = logging.getLogger("cnnops.samples")


class SampleKeeper:
    """Keeps at most `per_minute` offered images a minute (a token bucket), and evicts its oldest
    so that at most `max_count` images and `max_bytes` bytes stay in `folder`. Thread-safe."""

    def __init__(
        self, folder: Path, per_minute: float, max_count: int, max_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        if not (math.isfinite(per_minute) and per_minute > 0) or max_count < 1 or max_bytes < 1:
            raise CnnopsError(
                f"Sample keeping needs a positive rate, count and size, not {per_minute}, {max_count}, {max_bytes}."
            )
        self.folder = folder
        self.per_minute = per_minute
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.clock = clock
        self._capacity = max(1.0, per_minute)
        self._tokens = self._capacity
        self._last = clock()
        self._kept: dict[str, tuple[int, str | None]] = {}  # name -> (size, index line), oldest first
        self._bytes = 0
        self._warned = False
        self._lock = threading.Lock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._load()
        except OSError as err:
            self._warn(err)

    def offer(self, data: bytes, extension: str, label: str, confidence: float) -> Path | None:
        """The kept file's path, or None when the image is not kept (rate, size, a failed write)."""
        if not self.admit(len(data)):
            return None
        return self.keep(data, extension, label, confidence)

    def admit(self, size: int) -> bool:
        """Whether an image of `size` bytes is to be kept: a token taken, no file touched. The
        service asks this in its event loop and runs `keep` in a worker thread."""
        with self._lock:
            return size <= self.max_bytes and self._take_token()

    def keep(self, data: bytes, extension: str, label: str, confidence: float) -> Path | None:
        """Write an admitted image and its index line, then enforce the bounds."""
        suffix = extension.lower().lstrip(".")
        if not SUFFIX.fullmatch(suffix):
            raise CnnopsError(f"{extension!r} is not an image file extension for a kept sample.")
        with self._lock:
            return self._keep(data, suffix, label, confidence)

    def kept(self) -> list[Path]:
        with self._lock:
            return [self.folder / name for name in self._kept]

    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def _take_token(self) -> bool:
        now = self.clock()
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self._capacity, self._tokens + elapsed * self.per_minute / 60)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _keep(self, data: bytes, suffix: str, label: str, confidence: float) -> Path | None:
        at = datetime.fromtimestamp(self.clock(), UTC)
        digest = sha256_bytes(data)
        name = f"{at:%Y%m%dT%H%M%S.%fZ}-{digest[:8]}.{suffix}"
        if name in self._kept:  # the same bytes in the same microsecond: kept already
            return None
        when = at.isoformat(timespec="microseconds")
        record = {"file": name, "sha256": digest, "size": len(data), "label": str(label)}
        line = json.dumps(record | {"confidence": float(confidence), "time": when}) + "\n"
        path = self.folder / name
        try:
            replace_atomically(path, lambda temporary: temporary.write_bytes(data))
            with (self.folder / INDEX).open("a") as index:
                index.write(line)
        except OSError as err:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            self._warn(err)
            return None
        self._kept[name] = (len(data), line)
        self._bytes += len(data)
        self._evict()
        return path

    def _load(self) -> None:
        """What a previous process kept: sizes from the files, lines only for files still there;
        the index is rewritten when a line was dropped, so a torn last line cannot spoil the next."""
        sizes = {p.name: p.stat().st_size for p in self.folder.iterdir() if NAME.fullmatch(p.name) and p.is_file()}
        lines = read_lines(self.folder / INDEX)
        recorded: dict[str, str] = {}
        for line in lines:
            name = file_of(line)
            if name in sizes and name not in recorded:
                recorded[name] = line
        for name in sorted(sizes):
            self._kept[name] = (sizes[name], recorded.get(name))
        self._bytes = sum(sizes.values())
        self._evict(rewrite=len(recorded) != len(lines))

    def _evict(self, rewrite: bool = False) -> None:
        """Delete the oldest kept images until both bounds hold, then rewrite the index to match."""
        try:
            while self._kept and (len(self._kept) > self.max_count or self._bytes > self.max_bytes):
                name = next(iter(self._kept))
                size, _ = self._kept.pop(name)
                self._bytes -= size
                (self.folder / name).unlink(missing_ok=True)
                rewrite = True
            if rewrite:
                text = "".join(line for _, line in self._kept.values() if line is not None)
                write_text_atomically(self.folder / INDEX, text)
        except OSError as err:
            self._warn(err)

    def _warn(self, err: OSError) -> None:
        """Once per keeper: a full disk would otherwise log on every kept request."""
        if not self._warned:
            self._warned = True
            log.warning("Served images are not being kept in %s: %s", self.folder, err)


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    return [line + "\n" for line in text.splitlines() if line.strip()]


def file_of(line: str) -> str | None:
    """The file an index line names, or None for a damaged line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    name = record.get("file") if isinstance(record, dict) else None
    return name if isinstance(name, str) and NAME.fullmatch(name) else None
