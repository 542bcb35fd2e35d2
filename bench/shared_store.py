"""The same `cnnops run` on the embedded sqlite store and on a shared tracking server backed by
PostgreSQL, with the subprocess runner.

    .venv/bin/python bench/shared_store.py [--per-class 30] [--epochs 3] [--repeats 2] \
        [--out bench/results/shared-store.json]

Writes a tiny class-folder dataset (tests/conftest.py `write_images`), starts a throwaway
PostgreSQL 15 (tests/postgres.py) and `mlflow server` on it with proxied artifacts, then times
`cnnops run` against sqlite (a fresh state folder) and against the server (MLFLOW_TRACKING_URI),
alternating (sqlite, server, server, sqlite, ...) so that a change in the machine's load falls on
both. Each run registers a model of its own. Also counts the HTTP requests the server answered
per run: the measure of how chatty logging is over the network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CNNOPS, write_images  # noqa: E402 - tests/ is not a package
from postgres import start_postgres  # noqa: E402

from cnnops.core.processes import free_port  # noqa: E402
from cnnops.tracking.server import running_server  # noqa: E402

SETTINGS = ["train.batch_size=16", "train.patience=20"]


def timed_run(source: Path, home: Path, name: str, epochs: int, uri: str | None) -> float:
    """One `cnnops run` on `uri` (None: the embedded sqlite store); its wall time."""
    env = {**os.environ, "CNNOPS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    command = [str(CNNOPS), "run", "--data", str(source), "--model-name", name, "--epochs", str(epochs), *sets]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"cnnops run failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def requests_answered(log: Path) -> int:
    """HTTP requests in the server's access log, health checks left out."""
    return sum(1 for line in log.read_text().splitlines() if "HTTP/1.1" in line and "/health" not in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnops-bench-shared-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, who must enter it
    source = write_images(work / "images", per_class=args.per_class, seed=0)
    postgres = start_postgres(work / "pg")
    times: dict[str, list[float]] = {"sqlite": [], "server": []}
    requests: list[int] = []
    log = work / "server.log"
    try:
        with running_server(free_port(), log, store=postgres.uri, artifacts=work / "artifacts") as uri:
            for repeat in range(args.repeats):
                order = ("sqlite", "server") if repeat % 2 == 0 else ("server", "sqlite")
                for store in order:
                    name = f"bench-{store}-{repeat}"
                    before = requests_answered(log)
                    seconds = timed_run(source, work / name, name, args.epochs, uri if store == "server" else None)
                    times[store].append(seconds)
                    if store == "server":
                        requests.append(requests_answered(log) - before)
                    print(f"{store}: {seconds:.1f} s", flush=True)
    finally:
        postgres.stop()
    sqlite, server = statistics.median(times["sqlite"]), statistics.median(times["server"])
    result = {
        "command": "bench/shared_store.py " + " ".join(sys.argv[1:]),
        "per_class": args.per_class,
        "epochs": args.epochs,
        "runner": "subprocess",
        "server": "mlflow server --workers 1 on PostgreSQL 15 (loopback), proxied artifacts",
        "sqlite_s": [round(s, 1) for s in times["sqlite"]],
        "server_s": [round(s, 1) for s in times["server"]],
        "sqlite_median_s": round(sqlite, 1),
        "server_median_s": round(server, 1),
        "server_over_sqlite": round(server / sqlite, 2),
        "server_requests_per_run": requests,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
