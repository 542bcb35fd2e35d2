"""`cnnops retrain`'s two costs: the skip decision on 70,000 unchanged Fashion-MNIST images (cold
and with a warm ingest memo), and a full retrain against a plain `cnnops run` on tiny data.

    .venv/bin/python bench/retrain.py [--per-class 30] [--epochs 2] [--repeats 2] \
        [--out bench/results/retrain.json]

Needs Debian's dataset-fashion-mnist. The skip: Fashion-MNIST is written out as PNG class folders
once (not timed) and a version of its model is registered whose run logged that data as its
training input, as training logs it (tests/conftest.py `register_trained_on`; no model is trained,
the decision reads only what the run logged). Then `cnnops retrain` runs twice in a fresh state
folder against that store: the first with nothing cached (every image decoded), the second over
unchanged files (the ingest memo). Both must skip with "unchanged".

The overhead: `cnnops run` and `cnnops retrain` (no champion yet, so it trains) on the same tiny
folder, each in a fresh state folder, alternated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CNNOPS, register_trained_on, write_images  # noqa: E402 - tests/ is not a package

SETTINGS = ["train.batch_size=16", "train.patience=20"]


def timed(command: list[str], home: Path, uri: str | None = None) -> tuple[float, str]:
    env = {**os.environ, "CNNOPS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    started = time.monotonic()
    done = subprocess.run([str(CNNOPS), *command], env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"cnnops {command[0]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout


def measure_skip(work: Path) -> dict[str, object]:
    """Cold and warm skip decisions over unchanged Fashion-MNIST."""
    store_home = work / "registered"
    os.environ["CNNOPS_HOME"] = str(store_home)
    from cnnops.data.sources import list_class_files, resolve_source
    from cnnops.settings.config import build_config

    folder = resolve_source("demo:fashion").root
    n_images = sum(len(files) for files in list_class_files(folder).values())
    config = build_config(overrides={"data.source": str(folder)})
    register_trained_on(config, work, "champion")
    uri = f"sqlite:///{store_home / 'mlflow' / 'mlflow.db'}"
    home = work / "retrain-state"
    runs = {}
    for name in ("cold", "warm"):
        seconds, out = timed(["retrain", "--data", str(folder)], home, uri)
        if "skipped (unchanged)" not in out:
            sys.exit(f"the {name} retrain did not skip as unchanged:\n{out[-2000:]}")
        runs[name] = round(seconds, 1)
        print(f"skip, {name}: {seconds:.1f} s")
    return {"n_images": n_images, **runs}


def measure_overhead(work: Path, per_class: int, epochs: int, repeats: int) -> dict[str, object]:
    source = write_images(work / "tiny", per_class=per_class)
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    times: dict[str, list[float]] = {"run": [], "retrain": []}
    for repeat in range(repeats):
        for kind in ("run", "retrain") if repeat % 2 == 0 else ("retrain", "run"):
            command = [kind, "--data", str(source), "--epochs", str(epochs), *sets]
            seconds, _ = timed(command, work / f"{kind}-{repeat}")
            times[kind].append(round(seconds, 1))
            print(f"{kind} {repeat + 1}: {seconds:.1f} s")
    run, retrain = round(statistics.median(times["run"]), 1), round(statistics.median(times["retrain"]), 1)
    return {**times, "median_run_s": run, "median_retrain_s": retrain, "overhead_s": round(retrain - run, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnops-bench-retrain-"))
    load_before = os.getloadavg()[0]
    result = {
        "command": "bench/retrain.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "skip": measure_skip(work),
        "overhead": measure_overhead(work, args.per_class, args.epochs, args.repeats),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
