"""Drift benchmark, in process: how often the drift test alarms on a registered version's own
images, and how often it catches each kind of shift, over seeded windows of the served size.

    .venv/bin/python bench/drift.py [--version latest] [--windows 20] [--window-size 300] [--out FILE]

The version must have a drift reference (evaluated by this cnnops; `make run` makes one). Its
pipeline run's val and test splits are found under the state folder's pipeline root, by the
run id its evaluation recorded. Each window is `--window-size` images drawn without replacement
from one pool, decoded by the service's decode function, transformed, and passed through the
model with its embedding as a second output, as the service will; then `judge_drift` with the
default `drift` settings. Pools:
- test: the reference's own test images (the false-alarm rate the issue asks for);
- val: held-out images of the same distribution that the reference never saw (a stricter one);
- inverted, rotated by 90 degrees, brightness x0.5: the test images, shifted;
- Fashion-MNIST: Debian's test split, sent to the model as if it were its own kind of image.
The served path (HTTP, the window in the service) is not in this figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "inverted": lambda x: 255 - x,
    "rotated 90": lambda x: np.ascontiguousarray(np.rot90(x, axes=(1, 2))),
    "brightness x0.5": lambda x: (x.astype(np.float32) * 0.5).astype(np.uint8),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-name", default="cnnops-animals")
    parser.add_argument("--version", default="latest", help="a version number, an alias, or latest")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--window-size", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    return parser.parse_args()


def find_splits(run_id: str) -> Path:
    """The pipeline run folder whose evaluation scored this model run."""
    from cnnops.paths import state_home

    for metrics in sorted((state_home() / "pipeline-root").glob("*/evaluate/evaluation/metrics.json")):
        if json.loads(metrics.read_text()).get("run_id") == run_id:
            return metrics.parents[2]
    sys.exit(f"no pipeline run under {state_home() / 'pipeline-root'} evaluated run {run_id}")


def load_pixels(manifest_dir: Path, spec: Any) -> np.ndarray:
    from cnnops.artifacts import read_manifest
    from cnnops.config import ServeConfig
    from cnnops.predict import decode_for_model

    limit = ServeConfig().max_image_pixels
    paths = read_manifest(manifest_dir)["path"]
    return np.stack([decode_for_model(Path(p).read_bytes(), spec, limit) for p in paths])


def fashion_pixels() -> np.ndarray:
    from cnnops.sources import FASHION_DIR, read_idx

    return read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[..., None]


def latest_version(name: str) -> str:
    from mlflow.tracking import MlflowClient

    from cnnops.tracking import use_tracking_store

    use_tracking_store()
    versions = MlflowClient().search_model_versions(f"name = '{name}'")
    return str(max(int(v.version) for v in versions))


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnops.config import DriftConfig
    from cnnops.drift import Observations, judge_drift, prepare_baseline
    from cnnops.drift_reference import read_reference
    from cnnops.export import export_registered
    from cnnops.paths import keep_tool_state_inside
    from cnnops.predict import load_keras_model, with_embedding

    keep_tool_state_inside()
    version = latest_version(args.model_name) if args.version == "latest" else args.version
    served = export_registered(args.model_name, version)
    reference = read_reference(served.folder)
    if reference is None:
        sys.exit(f"{args.model_name} v{version} has no drift reference; run `make run` with this cnnops first")
    model = with_embedding(load_keras_model(served.folder))
    if model is None:
        sys.exit(f"{args.model_name} v{version} gives no embedding to judge drift on")
    classes = len(served.spec.class_names)
    run = find_splits(reference.run_id)
    pools = {
        "test": load_pixels(run / "split" / "test_data", served.spec),
        "val": load_pixels(run / "split" / "val_data", served.spec),
        "fashion-mnist": fashion_pixels(),
    }
    cases = [("test", "none"), ("val", "none")] + [("test", s) for s in SHIFTS if s != "none"]
    cases.append(("fashion-mnist", "none"))
    config = DriftConfig()
    baseline = prepare_baseline(reference.observations, config)
    rng = np.random.default_rng(args.seed)
    print(
        f"model {args.model_name} v{version}, reference {len(reference.observations)} images, "
        f"{args.windows} windows of {args.window_size}, alpha {config.alpha}",
        flush=True,
    )
    results: dict[str, Any] = {}
    for pool, shift in cases:
        name = pool if shift == "none" else f"test, {shift}"
        verdicts, judge_s = [], []
        for _ in range(args.windows):
            chosen = rng.choice(len(pools[pool]), size=min(args.window_size, len(pools[pool])), replace=False)
            pixels = SHIFTS[shift](pools[pool][chosen])
            probabilities, embeddings = (np.asarray(o) for o in model.predict_on_batch(pixels))
            window = Observations(embeddings, probabilities.argmax(1), probabilities.max(1).astype(np.float64), classes)
            began = time.perf_counter()
            verdicts.append(judge_drift(baseline, window, config))
            judge_s.append(time.perf_counter() - began)
        flagged = sum(bool(v.drift) for v in verdicts)
        p_values = [1.0 if v.p_value is None else float(v.p_value) for v in verdicts]
        results[name] = {
            "windows": args.windows,
            "drift": flagged,
            "median_p": float(np.median(p_values)),
            "max_p": max(p_values),
            "min_p": min(p_values),
            "strongest": [v.reason for v in verdicts][:3],
            "judge_ms_median": 1000 * float(np.median(judge_s)),
        }
        print(
            f"{name:>24}  drift in {flagged:2d} of {args.windows}  median p {np.median(p_values):.2g}  "
            f"max p {max(p_values):.2g}  judge {1000 * np.median(judge_s):.1f} ms",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model_name, "version": version, "settings": vars(args) | {"out": str(args.out)}}
    args.out.write_text(json.dumps(payload | {"results": results, "config": config.model_dump()}, indent=2) + "\n")
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
