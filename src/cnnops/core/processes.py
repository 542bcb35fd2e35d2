"""Servers cnnops starts for a while: a free loopback port to put them on, one way to start a
process, wait until it is ready and stop it (with everything it spawned) by its PID, and the
stopping itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
POLL_SECONDS = 0.5


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Started:
    """A process `running_process` started: the process, and why it never became ready (None once
    it did) with how long it took."""

    proc: subprocess.Popen
    problem: str | None
    ready_seconds: float | None


@contextmanager
def running_process(
    command: list[str],
    log: Path,
    ready: Callable[[], bool],
    seconds: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str = "the server",
) -> Iterator[Started]:
    """Start `command` in a session of its own, its output appended to `log`; wait until `ready()`
    is true, the process exits, or `seconds` pass; and stop it and its children by PID when the
    block ends, however it ends. The caller decides what a server that never got ready means."""
    started = time.monotonic()
    proc = start_process(command, log, env, cwd)
    try:
        problem = wait_until(ready, proc, seconds, what)
        yield Started(proc, problem, None if problem else round(time.monotonic() - started, 2))
    finally:
        stop_process_group(proc)


def start_process(
    command: list[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """`command` in a session of its own (so `stop_process_group` stops its children too), its
    output appended to `log`. For a process stopped and started again within one block; otherwise
    take `running_process`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen, seconds: float, what: str = "the server"
) -> str | None:
    """None once `ready()` is true; else why it never was: the process exited, or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"{what} exited with status {proc.returncode} before it was ready"
        if ready():
            return None
        time.sleep(POLL_SECONDS)
    return f"{what} was not ready within {seconds:g} s"


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children: SIGTERM, then SIGKILL
    after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
