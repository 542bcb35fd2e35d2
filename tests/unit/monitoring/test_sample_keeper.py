"""The sample keeper: rate-limited, bounded in count and bytes across restarts, its own files only,
an index that matches the files, and a failed write that costs the request nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cnnops.core.errors import CnnopsError
from cnnops.monitoring.sample_keeper import INDEX, SampleKeeper


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def image(i: int, size: int = 100) -> bytes:
    """Distinct bytes per `i`, of exactly `size` bytes (the keeper does not decode)."""
    return i.to_bytes(4, "big") + b"x" * (size - 4)


def index_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / INDEX).read_text().splitlines()]


def kept_names(keeper: SampleKeeper) -> list[str]:
    return [p.name for p in keeper.kept()]


def offer_spaced(keeper: SampleKeeper, clock: Clock, count: int, size: int = 100, start: int = 0) -> list[Path]:
    """Offer `count` images a minute apart, so the rate never refuses one."""
    paths = []
    for i in range(start, start + count):
        clock.now += 60
        path = keeper.offer(image(i, size), "png", f"class{i % 3}", 0.5 + i / 1000)
        assert path is not None
        paths.append(path)
    return paths


def test_only_the_burst_is_kept_at_one_instant_then_the_rate_refills(tmp_path: Path) -> None:
    clock = Clock()
    keeper = SampleKeeper(tmp_path / "samples", per_minute=6, max_count=1000, max_bytes=10**9, clock=clock)
    results = [keeper.offer(image(i), "png", "cat", 0.9) for i in range(100)]
    assert sum(r is not None for r in results) == 6
    assert results[:6] == keeper.kept()
    clock.now += 10  # one token at six a minute
    assert keeper.offer(image(200), "png", "cat", 0.9) is not None
    assert keeper.offer(image(201), "png", "cat", 0.9) is None
    assert len(keeper.kept()) == 7


def test_a_refused_offer_does_not_touch_the_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    keeper = SampleKeeper(folder, per_minute=1, max_count=10, max_bytes=10**6, clock=clock)
    assert keeper.offer(image(0), "png", "cat", 0.9) is not None
    (folder / INDEX).unlink()
    (folder / keeper.kept()[0].name).unlink()
    folder.rmdir()
    with caplog.at_level(logging.WARNING, logger="cnnops.samples"):
        assert all(keeper.offer(image(i), "png", "cat", 0.9) is None for i in range(1, 50))
    assert not folder.exists()
    assert caplog.records == []


def test_the_count_bound_evicts_the_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    keeper = SampleKeeper(folder, per_minute=1, max_count=3, max_bytes=10**6, clock=clock)
    paths = offer_spaced(keeper, clock, 5)
    assert keeper.kept() == paths[2:]
    assert [p.exists() for p in paths] == [False, False, True, True, True]
    assert [line["file"] for line in index_lines(folder)] == [p.name for p in paths[2:]]
    assert keeper.total_bytes() == 300


def test_the_byte_bound_evicts_the_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    keeper = SampleKeeper(folder, per_minute=1, max_count=100, max_bytes=250, clock=clock)
    paths = offer_spaced(keeper, clock, 4)
    assert keeper.kept() == paths[2:]
    assert keeper.total_bytes() == 200
    assert sum(p.stat().st_size for p in folder.iterdir() if p.name != INDEX) == 200
    paths += offer_spaced(keeper, clock, 1, size=250, start=10)  # exactly the bound: alone
    assert keeper.kept() == paths[-1:]
    assert keeper.total_bytes() == 250


def test_an_image_bigger_than_the_byte_bound_is_refused_without_spending_a_token(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    keeper = SampleKeeper(folder, per_minute=1, max_count=10, max_bytes=100, clock=Clock())
    assert keeper.offer(image(0, 101), "png", "cat", 0.9) is None
    assert list(folder.iterdir()) == []
    assert keeper.offer(image(1, 100), "png", "cat", 0.9) is not None


def test_index_lines_describe_the_kept_files(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    keeper = SampleKeeper(folder, per_minute=1, max_count=10, max_bytes=10**6, clock=clock)
    clock.now = 1_700_000_000.25
    path = keeper.offer(image(7, 120), "JPG", "dog", 0.75)
    assert path is not None
    assert path.name.startswith("20231114T221320.250000Z-") and path.suffix == ".jpg"
    [line] = index_lines(folder)
    data = path.read_bytes()
    assert data == image(7, 120)
    assert line["file"] == path.name
    assert line["sha256"] == hashlib.sha256(data).hexdigest()
    assert path.name.split("-")[1] == line["sha256"][:8] + ".jpg"
    assert line["size"] == 120
    assert (line["label"], line["confidence"]) == ("dog", 0.75)
    assert datetime.fromisoformat(line["time"]).timestamp() == 1_700_000_000.25
    assert datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0)


def test_a_restart_keeps_the_bounds_and_the_index(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    first = SampleKeeper(folder, per_minute=1, max_count=3, max_bytes=10**6, clock=clock)
    paths = offer_spaced(first, clock, 3)
    second = SampleKeeper(folder, per_minute=1, max_count=3, max_bytes=10**6, clock=clock)
    assert second.kept() == paths
    assert second.total_bytes() == 300
    paths += offer_spaced(second, clock, 1, start=3)
    assert second.kept() == paths[1:]
    assert not paths[0].exists()
    assert [line["file"] for line in index_lines(folder)] == [p.name for p in paths[1:]]
    smaller = SampleKeeper(folder, per_minute=1, max_count=2, max_bytes=150, clock=clock)
    assert smaller.kept() == paths[3:]
    assert [line["file"] for line in index_lines(folder)] == [paths[3].name]


def test_a_restart_drops_the_lines_of_gone_files(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    paths = offer_spaced(SampleKeeper(folder, per_minute=1, max_count=5, max_bytes=10**6, clock=clock), clock, 3)
    paths[1].unlink()
    keeper = SampleKeeper(folder, per_minute=1, max_count=5, max_bytes=10**6, clock=clock)
    assert keeper.kept() == [paths[0], paths[2]]
    assert keeper.total_bytes() == 200
    assert [line["file"] for line in index_lines(folder)] == [paths[0].name, paths[2].name]


def test_a_restart_skips_damaged_lines_and_a_torn_last_line_spoils_nothing(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    paths = offer_spaced(SampleKeeper(folder, per_minute=1, max_count=5, max_bytes=10**6, clock=clock), clock, 3)
    paths[0].unlink()
    with (folder / INDEX).open("a") as index:
        index.write('{"file": "torn\n[1, 2]\n{"file": "../../etc/passwd"}\n')
    keeper = SampleKeeper(folder, per_minute=1, max_count=5, max_bytes=10**6, clock=clock)
    assert keeper.kept() == paths[1:]
    assert [line["file"] for line in index_lines(folder)] == [p.name for p in paths[1:]]
    later = offer_spaced(keeper, clock, 1, start=3)
    assert [line["file"] for line in index_lines(folder)] == [p.name for p in paths[1:] + later]


def test_a_kept_file_without_an_index_line_still_counts_against_the_bounds(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    paths = offer_spaced(SampleKeeper(folder, per_minute=1, max_count=2, max_bytes=10**6, clock=clock), clock, 2)
    (folder / INDEX).unlink()
    keeper = SampleKeeper(folder, per_minute=1, max_count=2, max_bytes=10**6, clock=clock)
    assert keeper.kept() == paths
    later = offer_spaced(keeper, clock, 1, start=2)
    assert keeper.kept() == [paths[1], *later]
    assert not paths[0].exists()
    assert [line["file"] for line in index_lines(folder)] == [later[0].name]


def test_other_files_in_the_folder_are_never_deleted(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "samples"
    folder.mkdir()
    others = ["notes.txt", "20231114T221320-abcdef12.png", "20231114T221320.000000Z-ABCDEF12.png", "a.png"]
    for name in others:
        (folder / name).write_bytes(b"y" * 5000)
    (folder / "20231114T221320.000000Z-abcdef13.png").mkdir()
    keeper = SampleKeeper(folder, per_minute=1, max_count=2, max_bytes=250, clock=clock)
    assert keeper.kept() == [] and keeper.total_bytes() == 0
    paths = offer_spaced(keeper, clock, 6)
    SampleKeeper(folder, per_minute=1, max_count=1, max_bytes=100, clock=clock)
    assert all((folder / name).read_bytes() == b"y" * 5000 for name in others)
    assert (folder / "20231114T221320.000000Z-abcdef13.png").is_dir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*others, "20231114T221320.000000Z-abcdef13.png", INDEX, paths[-1].name]
    )


def test_concurrent_offers_keep_the_bounds_and_the_index(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    keeper = SampleKeeper(folder, per_minute=10_000, max_count=7, max_bytes=10**6, clock=Clock())

    def offer_many(start: int) -> None:
        for i in range(start, start + 50):
            keeper.offer(image(i), "png", "cat", 0.9)

    threads = [threading.Thread(target=offer_many, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keeper.kept()) == 7
    assert sorted(p.name for p in folder.iterdir() if p.name != INDEX) == sorted(kept_names(keeper))
    assert [line["file"] for line in index_lines(folder)] == kept_names(keeper)


def test_an_unwritable_folder_gives_none_and_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="cnnops.samples"):
        keeper = SampleKeeper(blocker / "samples", per_minute=60, max_count=10, max_bytes=10**6, clock=clock)
        results = [keeper.offer(image(i), "png", "cat", 0.9) for i in range(5)]
    assert results == [None] * 5
    assert keeper.kept() == [] and keeper.total_bytes() == 0
    assert [(r.name, r.levelno) for r in caplog.records] == [("cnnops.samples", logging.WARNING)]


def test_bad_settings_and_extensions_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CnnopsError, match="positive"):
        SampleKeeper(tmp_path / "s", per_minute=0, max_count=10, max_bytes=100)
    with pytest.raises(CnnopsError, match="positive"):
        SampleKeeper(tmp_path / "s", per_minute=1, max_count=0, max_bytes=100)
    keeper = SampleKeeper(tmp_path / "s", per_minute=1, max_count=10, max_bytes=100)
    with pytest.raises(CnnopsError, match="extension"):
        keeper.offer(image(0), "../png", "cat", 0.9)
    assert list((tmp_path / "s").iterdir()) == []
