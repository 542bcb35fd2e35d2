"""Ingest + validate at scale: Fashion-MNIST's 70,000 images written out as PNG class folders.

    .venv/bin/python bench/ingest.py [--home DIR] [--out FILE]

Needs Debian's dataset-fashion-mnist. Writes the images once into a fresh state folder (not
timed), then runs ingest + validate three times in a child process each, as `cnnops ingest` and
`cnnops validate` would: the first decodes every image; the second, over unchanged files, reuses
the earlier outputs; the third, with one image added, decodes that one and finds the other
70,000 in the content-addressed image cache. Reports wall time, images/s, the child's peak RSS
and how many cores it kept busy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys
from pathlib import Path
from cnnops.settings.config import build_config
from cnnops.data.ingest import ingest_source
from cnnops.data.validate import validate_dataset
config = build_config(overrides={"data.source": sys.argv[1]})
out = Path(sys.argv[2])
ingest_source(config, out / "dataset")
validate_dataset(out / "dataset", out / "validated", config, track=False)
"""


def timed_child(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a child to completion; its wall time and peak RSS (from wait4's rusage)."""
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest + validate failed with {os.waitstatus_to_exitcode(status)}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": cpu, "cores_busy": cpu / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="state folder to use (default: a fresh temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="cnnops-bench-ingest-"))
    env = {**os.environ, "CNNOPS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}

    os.environ["CNNOPS_HOME"] = str(home)
    from cnnops.data.sources import list_class_files, resolve_source

    began = time.perf_counter()
    folder = resolve_source("demo:fashion").root
    n_images = sum(len(files) for files in list_class_files(folder).values())
    print(f"wrote {n_images} PNG files under {folder} in {time.perf_counter() - began:.0f} s (not timed below)")

    import shutil

    from PIL import Image

    shutil.rmtree(home / "cache", ignore_errors=True)  # the first run starts with nothing known
    extra = folder / "bag" / "bench-extra.png"
    runs = {}
    for name in ("first", "second", "one_added"):
        if name == "one_added":  # the listing changed: per-image content addressing serves the rest
            Image.new("L", (28, 28), 128).save(extra)
        with tempfile.TemporaryDirectory(prefix="cnnops-bench-out-") as out:
            runs[name] = timed_child([str(folder), out], env)
        extra.unlink(missing_ok=True)
        runs[name]["images_per_s"] = n_images / runs[name]["wall_s"]
        print(
            f"{name:>6} run: {runs[name]['wall_s']:.1f} s, {runs[name]['images_per_s']:.0f} images/s, "
            f"peak RSS {runs[name]['peak_rss_mb']:.0f} MB, {runs[name]['cores_busy']:.2f} cores busy"
        )
    speedup = runs["first"]["wall_s"] / runs["second"]["wall_s"]
    added = runs["first"]["wall_s"] / runs["one_added"]["wall_s"]
    print(f"second run {speedup:.1f}x faster; with one image added {added:.1f}x faster")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "n_images": n_images,
                "cpus": os.cpu_count(),
                "runs": runs,
                "second_run_speedup": speedup,
                "one_added_speedup": added,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
