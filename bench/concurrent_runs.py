"""Two `cnnops run` at once against one run, on one MLflow tracking server backed by PostgreSQL.

    .venv/bin/python bench/concurrent_runs.py [--per-class 30] [--epochs 2] [--out bench/results/concurrent_runs.json]

Starts a throwaway PostgreSQL 15 (tests/postgres.py) and a tracking server on it with proxied
artifacts, writes a tiny class-folder dataset (tests/conftest.py `write_images`), then times one
`cnnops run` alone and two started together (same data and config, each in a state folder of its
own, one registered model per measurement). Prints the wall times and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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

SETTINGS = ["train.batch_size=16", "train.patience=20", "gate.floor=0", "gate.must_beat_baselines=false"]


def start_run(source: Path, home: Path, name: str, epochs: int, uri: str) -> subprocess.Popen:
    env = {**os.environ, "CNNOPS_HOME": str(home), "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    command = [str(CNNOPS), "run", "--data", str(source), "--model-name", name, "--epochs", str(epochs), *sets]
    home.mkdir(parents=True)
    with (home / "run.out").open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def timed(source: Path, work: Path, name: str, epochs: int, uri: str, count: int) -> list[float]:
    """Start `count` runs together; each one's wall time, from the common start to its own end."""
    started = time.monotonic()
    homes = [work / f"{name}-{index}" for index in range(count)]
    runs = [start_run(source, home, name, epochs, uri) for home in homes]
    ended: dict[int, float] = {}
    deadline = started + 3600
    while len(ended) < count and time.monotonic() < deadline:
        for index, proc in enumerate(runs):
            if index not in ended and proc.poll() is not None:
                ended[index] = time.monotonic() - started
                if proc.returncode != 0:
                    sys.exit(
                        f"cnnops run failed ({proc.returncode}):\n{(homes[index] / 'run.out').read_text()[-3000:]}"
                    )
        time.sleep(0.2)
    if len(ended) < count:
        sys.exit("a cnnops run did not finish within an hour")
    return [ended[index] for index in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="cnnops-bench-concurrent-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, who must enter it
    source = write_images(work / "images", per_class=args.per_class, seed=0)
    postgres = start_postgres(work / "pg")
    try:
        with running_server(free_port(), work / "server.log", store=postgres.uri, artifacts=work / "artifacts") as uri:
            one = timed(source, work, "bench-one", args.epochs, uri, 1)
            two = timed(source, work, "bench-two", args.epochs, uri, 2)
    finally:
        postgres.stop()
    result = {
        "command": "bench/concurrent_runs.py " + " ".join(sys.argv[1:]),
        "per_class": args.per_class,
        "epochs": args.epochs,
        "store": "MLflow tracking server on PostgreSQL 15, proxied artifacts",
        "one_run_s": round(one[0], 1),
        "two_runs_s": [round(s, 1) for s in two],
        "two_runs_wall_s": round(max(two), 1),
        "ratio": round(max(two) / one[0], 2),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.platform(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
