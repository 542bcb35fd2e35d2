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

from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError
from cnnops.monitoring.drift import Observations

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


@dataclass(frozen=True)
class SavedWindow:
    """A window as its file holds it: whose model's traffic it is (the run id, and the width of
    that model's embedding), so that a restart with another model does not judge its traffic
    against this one's reference."""

    run_id: str
    width: int
    items: list[Served]


class TrafficWindow:
    """The last `size` served images that are younger than `max_age_s`. Thread-safe: the service
    adds from its request handlers while /drift and the saver read."""

    def __init__(self, size: int, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._items: deque[Served] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, item: Served) -> bool:
        """Keep `item`; False, and nothing kept, when its embedding or confidence is not finite
        (one such row would make every verdict NaN until it left the window)."""
        if not (np.isfinite(item.confidence) and np.isfinite(item.embedding).all()):
            return False
        with self._lock:
            self._items.append(item)
        return True

    def extend_checked(self, items: list[Served]) -> None:
        """Add items whose values the caller has checked to be finite, under one lock."""
        with self._lock:
            self._items.extend(items)

    def extend(self, items: list[Served]) -> int:
        """Add saved items, oldest first; how many the window holds now, within its bounds."""
        for item in items:
            self.add(item)
        return len(self.current())

    def current(self) -> list[Served]:
        """The items still inside the age bound, oldest first; older ones are dropped here."""
        cutoff = self.clock() - self.max_age_s
        with self._lock:
            while self._items and self._items[0].at < cutoff:
                self._items.popleft()
            return list(self._items)

    def observations(self, classes: int) -> Observations:
        return observations_of(self.current(), classes)

    def save(self, path: Path, run_id: str, width: int) -> None:
        """Written aside and renamed: a reader, or the next start, never finds half a window."""
        saved = SavedWindow(run_id, width, self.current())
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda tmp: write_window(tmp, saved))


def observations_of(items: list[Served], classes: int, width: int = 0) -> Observations:
    return Observations(
        embeddings=stack_embeddings(items, width),
        predicted=np.array([i.predicted for i in items], dtype=np.int64),
        confidence=np.array([i.confidence for i in items], dtype=np.float64),
        classes=classes,
    )


def stack_embeddings(items: list[Served], width: int) -> np.ndarray:
    return np.stack([i.embedding for i in items]) if items else np.zeros((0, width), np.float32)


def write_window(path: Path, saved: SavedWindow) -> None:
    items = saved.items
    with path.open("wb") as out:
        np.savez(
            out,
            format=np.array(WINDOW_FORMAT),
            run_id=np.array(saved.run_id),
            embedding_width=np.array(saved.width),
            at=np.array([i.at for i in items], dtype=np.float64),
            embeddings=stack_embeddings(items, saved.width),
            predicted=np.array([i.predicted for i in items], dtype=np.int64),
            confidence=np.array([i.confidence for i in items], dtype=np.float64),
            width=np.array([i.width for i in items], dtype=np.int64),
            height=np.array([i.height for i in items], dtype=np.int64),
            mode=np.array([i.mode for i in items], dtype="U8"),
            brightness=np.array([i.brightness for i in items], dtype=np.float64),
        )


def read_window(path: Path) -> SavedWindow | None:
    """A saved window; None when there is no file (a first start). A file that cannot be read is
    an error, and it is left as it is for whoever reads the error."""
    if not path.is_file():
        return None
    try:
        return read_items(path)
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as err:
        raise CnnopsError(f"{path} is not a readable traffic window ({err}).") from None


def read_items(path: Path) -> SavedWindow:
    """Each array read once, then sliced: rows share nothing with the file's arrays."""
    with np.load(path, allow_pickle=False) as saved:
        if int(saved["format"]) != WINDOW_FORMAT:
            raise ValueError(f"window format {int(saved['format'])}, this cnnops reads {WINDOW_FORMAT}")
        arrays = {name: saved[name] for name in saved.files}
    width = int(arrays["embedding_width"])
    if arrays["embeddings"].shape[1:] != (width,):
        raise ValueError(f"embeddings of shape {arrays['embeddings'].shape}, not {width} wide")
    items = [
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
    return SavedWindow(str(arrays["run_id"]), width, items)
