"""Time a whole `cnnops run` on a dataset and split it into training and pipeline overhead.

    .venv/bin/python bench/pipeline.py [--data demo:animals] [--state DIR] [-- extra cnnops run args]

Runs in a fresh state folder (a temp dir unless --state), so the figures include writing the demo
set out and creating the MLflow store, as a first `make run` does. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

TASK_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (Executing task|Task) .*?'(\S+?)'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo:animals")
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    state = args.state or Path(tempfile.mkdtemp(prefix="cnnops-bench-"))
    env = {**os.environ, "CNNOPS_HOME": str(state), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cnnops = str(Path(sys.executable).parent / "cnnops")

    started = time.monotonic()
    run = subprocess.run(
        [cnnops, "run", "--data", args.data, *args.extra], env=env, capture_output=True, text=True, timeout=3600
    )
    wall = time.monotonic() - started
    if run.returncode != 0:
        sys.exit(f"cnnops run failed ({run.returncode}):\n{run.stderr[-2000:]}")
    tasks = task_durations(run.stdout)
    status = json.loads(
        subprocess.run([cnnops, "status", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    model = status["models"][0]
    newest = model["versions"][-1]
    fit_seconds = train_seconds(env, newest["run_id"])

    print("| measure | value |\n|---|---|")
    print(f"| data | {args.data} |")
    print(f"| `cnnops run` wall time | {wall:.1f} s |")
    for name, seconds in tasks.items():
        print(f"| task `{name}` | {seconds:.1f} s |")
    print(f"| of which `model.fit` (MLflow `train_seconds`) | {fit_seconds:.1f} s |")
    print(f"| pipeline overhead (wall - fit) | {wall - fit_seconds:.1f} s ({(wall - fit_seconds) / wall:.0%}) |")
    print(f"| new version | v{newest['version']} @{newest['decision']} |")
    print(f"| its test accuracy | {newest['test_accuracy']:.4f} |")
    print(f"| its test macro F1 | {newest['test_macro_f1']:.4f} |")
    print(f"\nstate folder: {state}")


def task_durations(log: str) -> dict[str, float]:
    """Seconds per task, from kfp.local's 'Executing task' / 'Task ... finished' log lines."""
    begun: dict[str, datetime] = {}
    durations: dict[str, float] = {}
    for line in log.splitlines():
        match = TASK_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if not match:
            continue
        stamp, kind, task = datetime.strptime(match[1], "%H:%M:%S.%f"), match[2], match[3]
        if kind == "Executing task":
            begun[task] = stamp
        elif task in begun:
            durations[task] = (stamp - begun.pop(task)).total_seconds()
    return durations


def train_seconds(env: dict[str, str], run_id: str) -> float:
    code = (
        "import sys, mlflow; from cnnops.tracking.stores import use_tracking_store; use_tracking_store(); "
        "print(mlflow.get_run(sys.argv[1]).data.metrics['train_seconds'])"
    )
    out = subprocess.run([sys.executable, "-c", code, run_id], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
