"""The service's window of served traffic: per request, what the model saw and said, bounded in
count and in age, and kept in a file so that a restart does not empty it. No image is kept here.
"""

from __future__ import annotations

import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnops.atomic import replace_atomically
from cnnops.drift import Observations
from cnnops.errors import CnnopsError

WINDOW_FORMAT = 1


@dataclass(frozen=True)
class Served:
    """One served image: its embedding, top class and confidence, and what the image was."""

    at: float  # seconds since the epoch
    embedding: np.ndarray
    predicted: int
    confidence: float
    width: int
    height: int
    mode: str
    brightness: float  # mean pixel value of the decoded image, 0 to 1


class TrafficWindow:
    """The last `size` served images that are younger than `max_age_s`. Thread-safe: the service
    adds from its batcher while /drift reads."""

    def __init__(self, size: int, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._items: deque[Served] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, item: Served) -> None:
        with self._lock:
            self._items.append(item)

    def current(self) -> list[Served]:
        """The items still inside the age bound, oldest first; older ones are dropped here."""
        cutoff = self.clock() - self.max_age_s
        with self._lock:
            while self._items and self._items[0].at < cutoff:
                self._items.popleft()
            return list(self._items)

    def observations(self, classes: int) -> Observations:
        return observations_of(self.current(), classes)

    def save(self, path: Path) -> None:
        """Written aside and renamed: a reader, or the next start, never finds half a window."""
        items = self.current()
        replace_atomically(path, lambda tmp: write_items(tmp, items))

    def load(self, path: Path) -> int:
        """Add a saved window's items (those still young enough); how many the window now holds.
        A missing file is an empty window; an unreadable one is an error, and the file is left as
        it is for whoever reads the error."""
        if not path.is_file():
            return 0
        try:
            items = read_items(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise CnnopsError(f"{path} is not a readable traffic window ({err}).") from None
        for item in items:
            self.add(item)
        return len(self.current())


def observations_of(items: list[Served], classes: int) -> Observations:
    width = items[0].embedding.shape[0] if items else 0
    return Observations(
        embeddings=np.stack([i.embedding for i in items]) if items else np.zeros((0, width), np.float32),
        predicted=np.array([i.predicted for i in items], dtype=np.int64),
        confidence=np.array([i.confidence for i in items], dtype=np.float64),
        classes=classes,
    )


def write_items(path: Path, items: list[Served]) -> None:
    width = items[0].embedding.shape[0] if items else 0
    with path.open("wb") as out:
        np.savez(
            out,
            format=np.array(WINDOW_FORMAT),
            at=np.array([i.at for i in items], dtype=np.float64),
            embeddings=np.stack([i.embedding for i in items]) if items else np.zeros((0, width), np.float32),
            predicted=np.array([i.predicted for i in items], dtype=np.int64),
            confidence=np.array([i.confidence for i in items], dtype=np.float64),
            width=np.array([i.width for i in items], dtype=np.int64),
            height=np.array([i.height for i in items], dtype=np.int64),
            mode=np.array([i.mode for i in items], dtype="U8"),
            brightness=np.array([i.brightness for i in items], dtype=np.float64),
        )


def read_items(path: Path) -> list[Served]:
    """Each array read once, then sliced: rows share nothing with the file's arrays."""
    with np.load(path, allow_pickle=False) as saved:
        if int(saved["format"]) != WINDOW_FORMAT:
            raise ValueError(f"window format {int(saved['format'])}")
        arrays = {name: saved[name] for name in saved.files}
    return [
        Served(
            at=float(arrays["at"][i]),
            embedding=arrays["embeddings"][i].copy(),
            predicted=int(arrays["predicted"][i]),
            confidence=float(arrays["confidence"][i]),
            width=int(arrays["width"][i]),
            height=int(arrays["height"][i]),
            mode=str(arrays["mode"][i]),
            brightness=float(arrays["brightness"][i]),
        )
        for i in range(arrays["at"].shape[0])
    ]
