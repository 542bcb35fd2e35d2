"""The service's drift bookkeeping without a server: the reference must be the served model's,
a saved window of another model is set aside, saves are throttled and survive a folder that
cannot be written, and a recorded row keeps nothing of its batch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from cnnops.core.errors import CnnopsError
from cnnops.data.images import DecodedImage
from cnnops.monitoring.drift import Observations
from cnnops.monitoring.monitor import SAVE_EVERY_S, judge_saved_window, open_monitor
from cnnops.monitoring.reference import DriftReference, write_reference
from cnnops.monitoring.window import read_window
from cnnops.settings.config import DriftConfig

CLASSES = ["cat", "dog", "fox"]
WIDTH = 12
RUN = "0123456789abcdef0123456789abcdef"
CONFIG = DriftConfig(min_window=20, window_size=50)


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def reference_in(folder: Path, run_id: str = RUN, n: int = 200, width: int = WIDTH) -> Path:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1, 1, 1], size=n)
    reference = DriftReference(
        run_id=run_id,
        class_names=CLASSES,
        observations=Observations(
            embeddings=rng.normal(size=(n, width)).astype(np.float32),
            predicted=probabilities.argmax(1),
            confidence=probabilities.max(1),
            classes=3,
        ),
        width=np.full(n, 64),
        height=np.full(n, 48),
        mode=np.array(["RGB"] * n),
        brightness=rng.uniform(0.3, 0.6, n),
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_reference(folder, reference)
    return folder


def batch(
    rng: np.random.Generator, n: int, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[DecodedImage]]:
    probabilities = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
    embeddings = (rng.normal(size=(n, WIDTH)) + shift).astype(np.float32)
    images = [DecodedImage(np.full((8, 8, 3), 100, np.uint8), "PNG", "RGB", 64, 48) for _ in range(n)]
    return probabilities, embeddings, np.stack([image.pixels for image in images]), images


def test_the_window_is_judged_against_the_served_models_reference(tmp_path: Path) -> None:
    monitor = open_monitor(reference_in(tmp_path / "m"), RUN, CLASSES, WIDTH, CONFIG, None)
    rng = np.random.default_rng(1)
    assert monitor.verdict().status == "too-few"
    monitor.record(*batch(rng, 50))
    assert monitor.verdict().status == "no-drift"
    monitor.record(*batch(rng, 50, shift=1.0))
    verdict = monitor.verdict()
    assert verdict.status == "drift" and verdict.p_value is not None and verdict.p_value < 0.01
    shown = monitor.snapshot("animals", 3, CLASSES)
    assert shown.window_images.count == 50 and shown.window_images.median_brightness == pytest.approx(100 / 255)
    assert shown.reference_images is not None and shown.reference_images.modes == {"RGB": 200}


@pytest.mark.parametrize(
    "run_id, classes, width, said",
    [
        ("f" * 32, CLASSES, WIDTH, "is of run"),
        (RUN, ["cat", "dog", "owl"], WIDTH, "other classes"),
        (RUN, CLASSES, WIDTH + 1, "wide"),
        (RUN, CLASSES, None, "gives no embedding"),
    ],
)
def test_a_reference_that_does_not_fit_the_model_is_set_aside(tmp_path, run_id, classes, width, said) -> None:
    monitor = open_monitor(reference_in(tmp_path / "m"), run_id, classes, width, CONFIG, tmp_path / "w.npz")
    assert not monitor.recording
    monitor.record(*batch(np.random.default_rng(2), 5))
    verdict = monitor.verdict()
    assert verdict.status == "no-reference" and said in verdict.reason and verdict.window_size == 0


def test_a_folder_without_a_reference_says_so(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    monitor = open_monitor(tmp_path / "m", RUN, CLASSES, WIDTH, CONFIG, None)
    assert monitor.verdict().reason == "this model has no drift reference (it was evaluated without one)"


def test_a_saved_window_of_another_model_is_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "volume" / "window.npz"
    first = open_monitor(reference_in(tmp_path / "a"), RUN, CLASSES, WIDTH, CONFIG, path)
    first.record(*batch(np.random.default_rng(3), 30))
    first.save()
    same = open_monitor(reference_in(tmp_path / "a"), RUN, CLASSES, WIDTH, CONFIG, path)
    assert "30 requests" in same.restore() and same.verdict().window_size == 30
    other_run = "e" * 32
    other = open_monitor(reference_in(tmp_path / "b", run_id=other_run), other_run, CLASSES, WIDTH, CONFIG, path)
    assert "is of run" in other.restore() and other.verdict().window_size == 0


def test_a_damaged_window_file_starts_an_empty_window(tmp_path: Path) -> None:
    path = tmp_path / "window.npz"
    path.write_bytes(b"not a window")
    monitor = open_monitor(reference_in(tmp_path / "m"), RUN, CLASSES, WIDTH, CONFIG, path)
    assert "not a readable traffic window" in monitor.restore()
    assert monitor.verdict().window_size == 0


def test_saves_are_throttled_and_an_unwritable_volume_is_said_once(tmp_path: Path, caplog) -> None:
    clock = Clock()
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    monitor = open_monitor(reference_in(tmp_path / "m"), RUN, CLASSES, WIDTH, CONFIG, blocker / "w.npz", clock)
    assert not monitor.claim_save()  # just started
    clock.now += SAVE_EVERY_S
    assert monitor.claim_save() and not monitor.claim_save()  # one claim at a time
    with caplog.at_level(logging.WARNING, logger="cnnops.drift"):
        monitor.save()
        clock.now += SAVE_EVERY_S
        assert monitor.claim_save()
        monitor.save()
    assert len(caplog.records) == 1 and "kept in memory only" in caplog.records[0].getMessage()


def test_a_recorded_row_holds_no_view_of_its_batch_and_no_row_that_is_not_finite(tmp_path: Path) -> None:
    monitor = open_monitor(reference_in(tmp_path / "m"), RUN, CLASSES, WIDTH, CONFIG, None)
    probabilities, embeddings, pixels, images = batch(np.random.default_rng(4), 4)
    embeddings[1, 3] = np.nan
    probabilities[2, 0] = np.inf
    monitor.record(probabilities, embeddings, pixels, images)
    rows = monitor.window.current()
    assert len(rows) == 2 and not any(np.shares_memory(row.embedding, embeddings) for row in rows)
    np.testing.assert_array_equal(np.stack([row.embedding for row in rows]), embeddings[[0, 3]])


def test_a_saved_window_is_judged_as_saved_however_old(tmp_path: Path) -> None:
    path = tmp_path / "window.npz"
    folder = reference_in(tmp_path / "m")
    ten_days_ago = lambda: time.time() - 10 * 86_400  # noqa: E731
    monitor = open_monitor(folder, RUN, CLASSES, WIDTH, CONFIG, path, ten_days_ago)
    monitor.record(*batch(np.random.default_rng(5), 40, shift=1.0))
    monitor.save()
    saved = read_window(path)
    assert saved is not None and len(saved.items) == 40
    judged = judge_saved_window(path, folder, CONFIG, "animals")  # days after it was saved
    assert judged.verdict.status == "drift" and judged.verdict.window_size == 40
    with pytest.raises(CnnopsError, match="not of the model"):
        judge_saved_window(path, reference_in(tmp_path / "n", run_id="d" * 32), CONFIG, "animals")
    with pytest.raises(CnnopsError, match="no traffic window"):
        judge_saved_window(tmp_path / "absent.npz", folder, CONFIG, "animals")


def test_a_reference_that_is_not_finite_is_set_aside_by_the_service_and_refused_by_the_cli(tmp_path: Path) -> None:
    from cnnops.monitoring.reference import read_reference

    folder = reference_in(tmp_path / "m")
    reference = read_reference(folder)
    assert reference is not None
    reference.observations.embeddings[0, 0] = np.inf
    write_reference(folder, reference)
    monitor = open_monitor(folder, RUN, CLASSES, WIDTH, CONFIG, tmp_path / "w.npz")
    assert not monitor.recording and "not finite" in monitor.verdict().reason
    healthy = open_monitor(reference_in(tmp_path / "n"), RUN, CLASSES, WIDTH, CONFIG, tmp_path / "w.npz")
    healthy.record(*batch(np.random.default_rng(6), 30))
    healthy.save()
    with pytest.raises(CnnopsError, match="non-finite.*evaluate the model again"):
        judge_saved_window(tmp_path / "w.npz", folder, CONFIG, "animals")
