"""The service's drift bookkeeping: per served image, what the model saw and said goes into the
traffic window; on demand the window is judged against the served model's own reference.

The reference must be of the model that is served (same run, same classes, same embedding
width), and so must a saved window read back at start: a window another model filled, or a
reference of another run, would compare two models' embeddings and say nothing true. Either is
set aside with its reason, and the service serves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnops.contracts.drift import DriftVerdict, ImageStats, ServedDrift
from cnnops.core.errors import CnnopsError
from cnnops.data.images import DecodedImage
from cnnops.monitoring.drift import Baseline, Observations, judge_drift, prepare_baseline
from cnnops.monitoring.reference import DriftReference, read_reference
from cnnops.monitoring.window import SavedWindow, Served, TrafficWindow, observations_of, read_window
from cnnops.settings.config import DriftConfig

# The window file is rewritten at most this often while requests come, and at shutdown.
SAVE_EVERY_S = 30.0
LOG = logging.getLogger("cnnops.drift")


class DriftMonitor:
    """The window of one served model and its baseline; `record` is called per batch of images."""

    def __init__(
        self,
        reference: DriftReference | None,
        unavailable: str,
        config: DriftConfig,
        classes: int,
        width: int,
        path: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reference = reference
        self.baseline: Baseline | None = None if reference is None else prepare_baseline(reference.observations, config)
        self.unavailable = unavailable
        self.config = config
        self.classes = classes
        self.width = width
        self.path = path
        self.clock = clock
        self.window = TrafficWindow(config.window_size, config.max_age_s, clock)
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._last_save = clock()
        self._claimed = False
        self._save_failed = False

    @property
    def recording(self) -> bool:
        return self.baseline is not None

    def restore(self) -> str:
        """Read back the window a previous start saved; one line on what came of it."""
        if not self.recording or self.path is None:
            return f"drift: not recording: {self.unavailable}" if not self.recording else "drift: window kept in memory"
        try:
            saved = read_window(self.path)
        except CnnopsError as err:
            return f"drift: starting with an empty window: {err} It is replaced at the next save."
        if saved is None:
            return f"drift: starting with an empty window, saved to {self.path}"
        stale = self.stale(saved)
        if stale:
            return f"drift: starting with an empty window: the one in {self.path} {stale}"
        held = self.window.extend(saved.items)
        return f"drift: {held} requests of the saved window in {self.path} are still inside its bounds"

    def stale(self, saved: SavedWindow) -> str | None:
        run_id = None if self.reference is None else self.reference.run_id
        if saved.run_id != run_id:
            return f"is of run {saved.run_id}, not the served model's run {run_id}"
        if saved.width != self.width:
            return f"holds embeddings {saved.width} wide, not the served model's {self.width}"
        return None

    def record(
        self, probabilities: np.ndarray, embeddings: np.ndarray, pixels: np.ndarray, images: list[DecodedImage]
    ) -> None:
        """Add one request's images (`pixels` is their stacked uint8 batch). The work is done per
        batch, not per image: one finiteness check, one brightness reduction, one lock; the
        embeddings are copied, so the rows keep nothing of the model call's output alive."""
        if not self.recording:
            return
        now = self.clock()
        kept = np.array(embeddings, dtype=np.float32)
        top = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(top)), top].astype(np.float64)
        brightness = pixels.mean(axis=tuple(range(1, pixels.ndim))) / 255.0
        finite = np.isfinite(kept).all(axis=1) & np.isfinite(confidence)
        self.window.extend_checked(
            [
                Served(
                    at=now,
                    embedding=kept[i],
                    predicted=int(top[i]),
                    confidence=float(confidence[i]),
                    width=images[i].width,
                    height=images[i].height,
                    mode=images[i].source_mode,
                    brightness=float(brightness[i]),
                )
                for i in np.flatnonzero(finite)
            ]
        )

    def verdict(self) -> DriftVerdict:
        if self.baseline is None:
            verdict = judge_drift(None, self.observations(), self.config)
            return verdict.model_copy(update={"reason": self.unavailable})
        return judge_drift(self.baseline, self.observations(), self.config)

    def observations(self) -> Observations:
        return observations_of(self.window.current(), self.classes, self.width)

    def claim_save(self) -> bool:
        """True, at most once per SAVE_EVERY_S and not while a claimed save is pending, for the
        caller to run `save` (in a worker thread: it writes a file)."""
        with self._state_lock:
            if self.path is None or not self.recording or self._claimed:
                return False
            if self.clock() - self._last_save < SAVE_EVERY_S:
                return False
            self._claimed = True
            return True

    def save(self) -> None:
        """Write the window; a save in progress is waited for, not raced. A folder that cannot be
        written is said once, and serving goes on with the window in memory."""
        if self.path is None or self.reference is None:
            return
        with self._write_lock:
            try:
                self.window.save(self.path, self.reference.run_id, self.width)
            except OSError as err:
                if not self._save_failed:
                    LOG.warning(
                        "drift: cannot save the traffic window to %s (%s); it is kept in memory only", self.path, err
                    )
                self._save_failed = True
            finally:
                with self._state_lock:
                    self._claimed = False
                    self._last_save = self.clock()

    def snapshot(self, registered_model: str, version: int | None, class_names: list[str]) -> ServedDrift:
        """The verdict, with the window's images beside the reference's, as `GET /drift` gives it."""
        items = self.window.current()
        return describe_window(
            registered_model, version, class_names, self.verdict(), items, self.reference, self.clock()
        )


def describe_window(
    registered_model: str,
    version: int | None,
    class_names: list[str],
    verdict: DriftVerdict,
    items: list[Served],
    reference: DriftReference | None,
    now: float,
) -> ServedDrift:
    return ServedDrift(
        registered_model=registered_model,
        version=version,
        run_id=None if reference is None else reference.run_id,
        class_names=class_names,
        verdict=verdict,
        window_images=summarize_images(
            np.array([i.width for i in items]),
            np.array([i.height for i in items]),
            np.array([i.mode for i in items]),
            np.array([i.brightness for i in items]),
        ),
        reference_images=None
        if reference is None
        else summarize_images(reference.width, reference.height, reference.mode, reference.brightness),
        oldest_age_s=None if not items else max(0.0, now - items[0].at),
    )


def judge_saved_window(path: Path, folder: Path, config: DriftConfig, registered_model: str) -> ServedDrift:
    """A window file judged against the reference in `folder` (the served model's, or one
    downloaded for the window's run), as the service would have judged it when it was saved:
    every row the file holds counts, however old it is now."""
    saved = read_window(path)
    if saved is None:
        raise CnnopsError(f"there is no traffic window at {path}.")
    reference = read_reference(folder)
    if reference is None:
        raise CnnopsError(f"the model of run {saved.run_id} has no drift reference to judge {path} against.")
    if reference.run_id != saved.run_id or reference.observations.embeddings.shape[1] != saved.width:
        raise CnnopsError(f"{path} is the traffic of run {saved.run_id}, not of the model in {folder}.")
    classes = reference.class_names
    try:
        baseline = prepare_baseline(reference.observations, config)
    except ValueError as err:
        raise CnnopsError(f"{folder}: {err}; evaluate the model again.") from None
    verdict = judge_drift(baseline, observations_of(saved.items, len(classes), saved.width), config)
    newest = max((i.at for i in saved.items), default=time.time())
    return describe_window(registered_model, None, classes, verdict, saved.items, reference, newest)


def summarize_images(width: np.ndarray, height: np.ndarray, mode: np.ndarray, brightness: np.ndarray) -> ImageStats:
    def median(values: np.ndarray) -> float | None:
        return float(np.median(values)) if values.size else None

    names, counts = np.unique(mode.astype(str), return_counts=True)
    return ImageStats(
        count=int(width.size),
        median_width=median(width),
        median_height=median(height),
        median_brightness=median(brightness),
        modes={str(n): int(c) for n, c in zip(names, counts, strict=True)},
    )


def open_monitor(
    folder: Path,
    run_id: str | None,
    class_names: list[str],
    width: int | None,
    config: DriftConfig,
    path: Path | None,
    clock: Callable[[], float] = time.time,
) -> DriftMonitor:
    """The monitor of the model served from `folder`: its reference when it has one that fits the
    model (`width` is its embedding's, None when it gives none), else none and the reason."""
    reference, unavailable = fitting_reference(folder, run_id, class_names, width)
    return DriftMonitor(reference, unavailable, config, len(class_names), width or 0, path, clock)


def fitting_reference(
    folder: Path, run_id: str | None, class_names: list[str], width: int | None
) -> tuple[DriftReference | None, str]:
    if width is None:
        return None, "the served model gives no embedding (its last layer is not a dense head over a flat vector)"
    try:
        reference = read_reference(folder)
    except CnnopsError as err:
        return None, str(err)
    if reference is None:
        return None, "this model has no drift reference (it was evaluated without one)"
    if run_id is not None and reference.run_id != run_id:
        return None, f"the drift reference is of run {reference.run_id}, not the served model's run {run_id}"
    if reference.class_names != class_names:
        return None, "the drift reference names other classes than the served model"
    ref_width = int(reference.observations.embeddings.shape[1])
    if ref_width != width:
        return None, f"the drift reference's embeddings are {ref_width} wide, the served model's {width}"
    obs = reference.observations
    if len(obs) == 0 or not (np.isfinite(obs.embeddings).all() and np.isfinite(obs.confidence).all()):
        return None, "the drift reference is empty or holds values that are not finite; evaluate the model again"
    return reference, ""
