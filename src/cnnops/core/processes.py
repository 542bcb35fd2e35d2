"""Servers cnnops starts for a while: a free loopback port to put them on, and stopping them, with
everything they spawned, by their PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


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
