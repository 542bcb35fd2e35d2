"""Resuming a killed training against starting it over: what a rerun of a killed `cnnops run` saves.

    .venv/bin/python bench/resume.py [--per-class 300] [--epochs 8] [--repeats 2] [--out bench/results/resume.json]

Writes a class-folder dataset (tests/conftest.py `write_images`, 3 classes of 16x16 RGB), ingests and
splits it once, then for each repeat, in a fresh state folder (embedded MLflow store):
  1. fresh: `cnnops train` for all --epochs (patience above it, min_steps 0, so every epoch runs);
  2. killed: the same command, SIGKILLed (its whole process group) as soon as the checkpoint of
     epoch --epochs/2 is on disk;
  3. resumed: the same command again, which resumes that run after its checkpointed epoch.
Each is timed as a user sees it, from starting the process to its exit (Python, TensorFlow and
MLflow start-up included). Prints the times and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CNNOPS, write_images  # noqa: E402 - tests/ is not a package

from cnnops.data.ingest import ingest_source  # noqa: E402
from cnnops.data.split import SPLITS, split_dataset  # noqa: E402
from cnnops.settings.config import build_config  # noqa: E402


def train_command(splits: Path, out: Path, epochs: int) -> list[str]:
    sets = {"train.batch_size": 16, "train.epochs": epochs, "train.patience": epochs + 2, "train.min_steps": 0}
    return [
        str(CNNOPS),
        "train",
        "--splits",
        str(splits),
        "--out",
        str(out),
        *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")],
    ]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stderr


def killed_at(command: list[str], env: dict[str, str], home: Path, epoch: int) -> float:
    """Run until epoch `epoch` is checkpointed, then SIGKILL the process group; the seconds it ran."""
    started = time.monotonic()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = started + 1800
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for path in (home / "checkpoints").glob("*/progress.json"):
                try:
                    if json.loads(path.read_text())["epoch"] >= epoch:
                        return time.monotonic() - started
                except (json.JSONDecodeError, OSError):  # replaced while being read
                    pass
            time.sleep(0.05)
        raise SystemExit(f"epoch {epoch} was never checkpointed (exit status {proc.poll()})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    kill_after = args.epochs // 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnops-bench-resume-") as scratch:
        work = Path(scratch)
        os.environ["CNNOPS_HOME"] = str(work / "prep")
        config = build_config(overrides={"data.source": str(write_images(work / "images", per_class=args.per_class))})
        ingest_source(config, work / "dataset")
        split_dataset(work / "dataset", {name: work / "splits" / name for name in SPLITS}, config)
        command = train_command(work / "splits", work / "model", args.epochs)
        for repeat in range(args.repeats):
            home = work / f"state-{repeat}"
            env = {**os.environ, "CNNOPS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("MLFLOW_TRACKING_URI", None)
            fresh, _ = timed(command, env)
            killed = killed_at(command, env, home, kill_after)
            resumed, said = timed(command, env)
            if f"after epoch {kill_after} (an earlier run was interrupted)" not in said:
                raise SystemExit(f"the rerun did not resume after epoch {kill_after}:\n{said[-3000:]}")
            rows.append({"fresh_s": fresh, "killed_after_s": killed, "resumed_s": resumed})
            print(f"repeat {repeat + 1}: fresh {fresh:.1f} s, killed after {killed:.1f} s, resumed {resumed:.1f} s")
    fresh = statistics.median(row["fresh_s"] for row in rows)
    resumed = statistics.median(row["resumed_s"] for row in rows)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "train_images": int(args.per_class * 3 * 0.8),
        "epochs": args.epochs,
        "killed_after_epoch": kill_after,
        "repeats": rows,
        "median_fresh_s": fresh,
        "median_resumed_s": resumed,
        "resumed_over_fresh": resumed / fresh,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
