"""The traffic window: bounded by count and by age, and the same after a save and a load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnops.core.errors import CnnopsError
from cnnops.monitoring.window import Served, TrafficWindow, read_window


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def served(at: float, i: int) -> Served:
    return Served(
        at=at,
        embedding=np.full(8, i, dtype=np.float32),
        predicted=i % 3,
        confidence=0.5 + (i % 5) / 10,
        width=28 + i,
        height=28,
        mode="L",
        brightness=i / 1000,
    )


def test_the_window_keeps_only_the_newest_by_count() -> None:
    clock = Clock()
    window = TrafficWindow(size=10, max_age_s=3600, clock=clock)
    for i in range(25):
        window.add(served(clock.now, i))
    items = window.current()
    assert [int(s.embedding[0]) for s in items] == list(range(15, 25))


def test_the_window_drops_what_is_older_than_its_age_bound() -> None:
    clock = Clock()
    window = TrafficWindow(size=100, max_age_s=60, clock=clock)
    for i in range(5):
        window.add(served(clock.now - 120 + i * 30, i))  # 120, 90, 60, 30 and 0 s old
    # at exactly the bound an item stays; older ones go
    assert [round(clock.now - s.at) for s in window.current()] == [60, 30, 0]
    clock.now += 31
    assert [round(clock.now - s.at) for s in window.current()] == [31]


def test_a_saved_window_comes_back_the_same_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    window = TrafficWindow(size=50, max_age_s=3600, clock=clock)
    for i in range(30):
        window.add(served(clock.now - i, i))
    path = tmp_path / "state" / "window.npz"
    window.save(path, "run-a", 8)

    saved = read_window(path)
    assert saved is not None and (saved.run_id, saved.width) == ("run-a", 8)
    restarted = TrafficWindow(size=50, max_age_s=3600, clock=clock)
    assert restarted.extend(saved.items) == 30
    for a, b in zip(restarted.current(), window.current(), strict=True):
        assert np.array_equal(a.embedding, b.embedding)
        assert (a.at, a.predicted, a.confidence, a.width, a.height, a.mode, a.brightness) == (
            b.at,
            b.predicted,
            b.confidence,
            b.width,
            b.height,
            b.mode,
            b.brightness,
        )
    observed = restarted.observations(classes=3)
    assert observed.embeddings.shape == (30, 8) and len(observed) == 30
    assert list(tmp_path.joinpath("state").iterdir()) == [path]


def test_a_restart_with_a_smaller_bound_keeps_the_newest(tmp_path: Path) -> None:
    clock = Clock()
    window = TrafficWindow(size=50, max_age_s=3600, clock=clock)
    for i in range(30):
        window.add(served(clock.now - 30 + i, i))
    path = tmp_path / "window.npz"
    window.save(path, "run-a", 8)
    clock.now += 3600 - 10  # the oldest 20 are now past the age bound
    smaller = TrafficWindow(size=5, max_age_s=3600, clock=clock)
    saved = read_window(path)
    assert saved is not None and smaller.extend(saved.items) == 5
    assert [int(s.embedding[0]) for s in smaller.current()] == [25, 26, 27, 28, 29]


def test_no_saved_window_is_an_empty_one_and_a_broken_file_is_an_error(tmp_path: Path) -> None:
    assert read_window(tmp_path / "absent.npz") is None
    broken = tmp_path / "window.npz"
    saved = TrafficWindow(size=5, max_age_s=60)
    saved.add(served(saved.clock(), 1))
    saved.save(broken, "run-a", 8)
    whole = broken.read_bytes()
    for damaged in (b"not a window", b"", whole[: len(whole) // 2]):  # garbage, empty, cut short
        broken.write_bytes(damaged)
        with pytest.raises(CnnopsError, match="is not a readable traffic window"):
            read_window(broken)
        assert broken.read_bytes() == damaged


def test_an_empty_window_gives_empty_observations() -> None:
    observed = TrafficWindow(size=5, max_age_s=60).observations(classes=3)
    assert len(observed) == 0 and observed.classes == 3


def test_a_row_that_is_not_finite_is_not_kept() -> None:
    window = TrafficWindow(size=5, max_age_s=60)
    good = served(window.clock(), 1)
    bad_embedding = Served(**{**good.__dict__, "embedding": np.array([np.nan] * 8, np.float32)})
    bad_confidence = Served(**{**good.__dict__, "confidence": float("inf")})
    assert window.add(good) and not window.add(bad_embedding) and not window.add(bad_confidence)
    assert len(window.current()) == 1


def test_a_window_of_no_request_saves_and_reads_back_with_its_width(tmp_path: Path) -> None:
    path = tmp_path / "window.npz"
    TrafficWindow(size=5, max_age_s=60).save(path, "run-b", 16)
    saved = read_window(path)
    assert saved is not None and (saved.run_id, saved.width, saved.items) == ("run-b", 16, [])
