"""Progress lines: counted, with a rate, at most every interval, and the end once unless another
line reports it."""

import re

from cnnops.core.console import Progress, say


def lines(capsys):
    return capsys.readouterr().err.splitlines()


def test_say_prefixes_the_line(capsys):
    say("ingest: reading 3 files")
    assert lines(capsys) == ["cnnops: ingest: reading 3 files"]


def test_the_end_is_reported_once_with_a_rate(capsys):
    progress = Progress("ingest", 3, interval=3600)
    for _ in range(3):
        progress.advance()
    (line,) = lines(capsys)
    assert re.fullmatch(r"cnnops: ingest: 3/3 \(\d+\.\d/s\)", line), line


def test_a_slow_step_reads_as_seconds_each(capsys):
    progress = Progress("train", 2, interval=0)
    progress._start -= 10  # as if the first step had taken ten seconds
    progress.advance()
    assert re.fullmatch(r"cnnops: train: 1/2 \(10\.\ds each\)", lines(capsys)[0])


def test_each_interval_reports_and_the_end_can_be_left_to_another_line(capsys):
    progress = Progress("train: epoch 1/2 step", 3, interval=0, final=False)
    for _ in range(3):
        progress.advance()
    shown = lines(capsys)
    assert [line.split(" (")[0] for line in shown] == [
        "cnnops: train: epoch 1/2 step: 1/3",
        "cnnops: train: epoch 1/2 step: 2/3",
    ]


def test_an_unknown_total_counts_without_one(capsys):
    progress = Progress("read", 0, interval=0)
    progress.advance(5)
    assert lines(capsys)[0].startswith("cnnops: read: 5 (")
