"""A throwaway PostgreSQL 15 for the tests that need a shared MLflow store: Debian's own binaries,
`initdb` in a temporary folder, the server on loopback, stopped (or restarted) by its PID.

PostgreSQL refuses to run as root, so as root the cluster belongs to Debian's `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cnnops.core.processes import LOOPBACK, free_port

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "cnnops"
DATABASE = "mlflow"
READY_SECONDS = 60


def available() -> bool:
    return (BIN / "initdb").is_file() and (os.geteuid() != 0 or has_postgres_user())


def has_postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


@dataclass
class Postgres:
    """One cluster: its data folder, port and log. `start`, `stop`, `restart`, and `uri`."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def uri(self) -> str:
        """The store URI MLflow takes (psycopg2, password-less on loopback)."""
        return f"postgresql+psycopg2://{USER}@{LOOPBACK}:{self.port}/{DATABASE}"

    def as_owner(self, *command: str) -> list[str]:
        """A command run as the cluster's owner: the `postgres` user when this process is root."""
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def initialise(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(
            self.as_owner(
                str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8"
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.start()
        subprocess.run(
            self.as_owner(str(BIN / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", USER, DATABASE),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start the server on loopback only (no unix socket outside the folder) and wait for it."""
        options = f"-h {LOOPBACK} -p {self.port} -k {self.folder} -c fsync=off"
        subprocess.run(
            self.as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"),
            check=True,
            capture_output=True,
            timeout=READY_SECONDS,
        )

    def pid(self) -> int | None:
        """The postmaster's PID, from the file it writes; None when it is not running."""
        pidfile = self.data / "postmaster.pid"
        if not pidfile.is_file():
            return None
        return int(pidfile.read_text().splitlines()[0])

    def stop(self) -> None:
        """Stop the postmaster by its PID (fast shutdown: SIGINT), and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down a while, start again: what a database restart looks like to its clients."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


def start_postgres(folder: Path) -> Postgres:
    """A fresh cluster under `folder` with the `mlflow` database, listening on a free loopback port."""
    server = Postgres(folder, free_port())
    server.initialise()
    return server
