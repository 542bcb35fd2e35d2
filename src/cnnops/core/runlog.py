"""One run's full log, and the filter that keeps its terminal short.

While a run is captured, file descriptors 1 and 2 of this process point into a pipe, so everything
reaches the log: this process's prints and logging, its subprocesses' output, containers' streamed
logs and C-level writes (TensorFlow, absl, CUDA). A thread reads the pipe, appends every line to
the log file and echoes to the terminal only what a person needs: a line per task as it starts and
ends, and cnnops's own `cnnops: ...` lines. With `verbose` the terminal gets every line as well.

The task lines are read from kfp.local's own log lines ("Executing task 'x'", "Task 'x' finished
with status ..."); this module does not import kfp.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cnnops.core.console import PREFIX, say

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TASK_STARTED = re.compile(r" - INFO - Executing task '(?P<task>[^']+)'$")
TASK_ENDED = re.compile(r" - (?:INFO|ERROR) - Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)$")
# A task's one-line user error: the run reports it once, after the task, with what it means.
TASK_ERROR = f"{PREFIX}error: "
SUCCESS, FAILURE, RUNNING = "SUCCESS", "FAILURE", "RUNNING"
# The pipeline's bookkeeping tasks (resolving the parameters, the exit handler): the terminal
# shows their start and end only when they fail; the log keeps every line.
QUIET_TASKS = frozenset({"configure", "finalize"})
# How long the reader waits on a quiet pipe after the run before it stops reading.
QUIET_SECONDS = 0.5


class TaskFailure(Exception):
    """A task failed for a reason that is not the user's (a bug, a crash): one line naming the
    task and its last error line, then the log file that holds the rest."""

    def __init__(self, reason: str, log: Path) -> None:
        super().__init__(f"{reason}; full log in {log}")
        self.log = log


@dataclass
class TaskRecord:
    """One task as its log lines told it: when it started, how it ended, its last output line."""

    name: str
    started: float
    seconds: float | None = None
    status: str = RUNNING
    last_line: str = ""


def format_seconds(seconds: float) -> str:
    """`42s`, or `3m 05s` from a minute on."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


class RunLog:
    """Sorts one run's captured lines: every line to the log file, a few to the terminal."""

    def __init__(self, path: Path, verbose: bool = False) -> None:
        self.path, self.verbose = path, verbose
        self.tasks: list[TaskRecord] = []

    def failed_task(self, stopped: bool = False) -> TaskRecord | None:
        """The first task that ended in failure; when kfp `stopped` the run, also one that never
        ended (kfp can stop at a failed task without saying how it ended)."""
        failed = (FAILURE, RUNNING) if stopped else (FAILURE,)
        return next((task for task in self.tasks if task.status in failed), None)

    def sort_line(self, line: str) -> tuple[list[str], list[str]]:
        """For one captured line (no newline): the lines for the log and those for the terminal."""
        text = ANSI.sub("", line).rstrip()
        said = self.task_event(text)
        if said is not None:
            event = TASK_STARTED.search(text) or TASK_ENDED.search(text)
            status = event.groupdict().get("status", SUCCESS) if event else FAILURE
            quiet = event is not None and event["task"] in QUIET_TASKS and status == SUCCESS
            return [text, said], [text, said] if self.verbose else ([] if quiet else [said])
        running = self.tasks[-1] if self.tasks and self.tasks[-1].status == RUNNING else None
        if running is not None and text[:1].isspace() and text.strip():  # kfp indents a task's output
            running.last_line = text.strip()
        own = text.lstrip()
        if own.startswith(PREFIX) and not (running is not None and own.startswith(TASK_ERROR)):
            return [own], [own]  # as the terminal shows it, without kfp's indent
        return [text], [text] if self.verbose else []

    def task_event(self, text: str) -> str | None:
        """The terminal's line for a task that starts or ends, or None for any other line."""
        started = TASK_STARTED.search(text)
        if started:
            self.tasks.append(TaskRecord(started["task"], time.monotonic()))
            return f"{PREFIX}{started['task']}: started"
        ended = TASK_ENDED.search(text)
        if not ended:
            return None
        # A ParallelFor's iterations share a name and may run at once: the earliest still running.
        task = next((t for t in self.tasks if t.name == ended["task"] and t.status == RUNNING), None)
        if task is None:
            task = TaskRecord(ended["task"], time.monotonic())
            self.tasks.append(task)
        task.seconds, task.status = time.monotonic() - task.started, ended["status"]
        verb = "finished in" if task.status == SUCCESS else "failed after"
        return f"{PREFIX}{task.name}: {verb} {format_seconds(task.seconds)}"


def append_to_log(path: Path, lines: list[str]) -> None:
    """Add lines the terminal shows outside the capture (the log's path, the summary) to the log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.writelines(f"{line}\n" for line in lines)


def announce(log: RunLog, message: str) -> None:
    """A `cnnops: ...` line on the terminal, outside the capture, and in the log."""
    say(message)
    append_to_log(log.path, [f"{PREFIX}{message}"])


@contextlib.contextmanager
def captured(log: RunLog) -> Iterator[RunLog]:
    """Send fds 1 and 2, and sys.stdout and sys.stderr (which a host such as pytest may have pointed
    elsewhere), into `log` for the block, echoing its kept lines to the terminal's stderr. All four
    are restored when the block ends, also on an error or KeyboardInterrupt."""
    log.path.parent.mkdir(parents=True, exist_ok=True)
    flush_streams()
    saved_out, saved_err = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    # Line-buffered, so a print reaches the log (and the terminal) when it happens.
    ours = {os.dup(write_end): saved_out, write_end: saved_err}
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, encoding="utf-8", errors="replace") for fd in ours)  # noqa: SIM115
    done = threading.Event()
    reader = threading.Thread(target=pump, args=(log, read_end, saved_err, done), name="cnnops-runlog", daemon=True)
    reader.start()
    try:
        yield log
    finally:
        flush_streams()
        sys.stdout, sys.stderr = streams
        # A handler made during the block may keep one of our streams: point them at the terminal,
        # which also closes the pipe's last write ends, so the reader sees the end of the run.
        for fd, saved in ours.items():
            os.dup2(saved, fd)
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        done.set()
        reader.join(QUIET_SECONDS + 1)
        os.close(saved_out)
        if not reader.is_alive():  # else a process the run left keeps writing: let it, to the end
            os.close(read_end)
            os.close(saved_err)


def pump(log: RunLog, source: int, terminal: int, done: threading.Event) -> None:
    """Read the pipe until it closes, or until the run is over and it has been quiet a moment (a
    process the run left behind may hold it open)."""
    pending = b""
    quiet_since: float | None = None
    with log.path.open("ab") as out:
        while True:
            ready, _, _ = select.select([source], [], [], 0.1)
            if not ready:
                if done.is_set():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > QUIET_SECONDS:
                        break
                continue
            quiet_since = None
            chunk = os.read(source, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                write_line(log, line, out, terminal)
        if pending:
            write_line(log, pending, out, terminal)


def write_line(log: RunLog, raw: bytes, out: BinaryIO, terminal: int) -> None:
    logged, shown = log.sort_line(raw.decode("utf-8", errors="replace"))
    out.write("".join(f"{line}\n" for line in logged).encode())
    out.flush()
    if shown:
        with contextlib.suppress(OSError):  # a closed terminal loses the echo, never the log
            os.write(terminal, "".join(f"{line}\n" for line in shown).encode())


def flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
