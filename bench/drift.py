"""Drift benchmark through the served path: a registered version served by `bentoml serve`, fed
windows of images over HTTP, and asked `GET /drift` after each window.

    .venv/bin/python bench/drift.py [--version latest] [--windows 20] [--window-size 300] [--out FILE]

The version must have a drift reference (evaluated by this cnnops; `make run` makes one). Its
pipeline run's test split is found under the state folder's pipeline root, by the run id its
evaluation recorded. The service runs with the default `drift` settings but `window_size` set to
`--window-size`, so each window of that many requests fills the service's window exactly, and its
verdict is of those requests alone. Each window's images are drawn without replacement from one
pool, sent one per request as the raw image body (16 in flight), and every answer must be a 200.
Pools:
- test: the version's own test images, their files as they are (the false-alarm rate the issue
  asks for: these images are in the reference, which is of the val and test images);
- test, held out: the same, to a second server whose reference is of the val images alone, so
  that no window image is in it (a stricter false-alarm rate);
- inverted, rotated by 90 degrees, brightness x0.5: the test images, decoded, shifted, sent as PNG;
- Fashion-MNIST: Debian's test split, sent to the model as if it were its own kind of image.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import load, raw_payload  # noqa: E402 - bench/ is not a package; its sibling is imported by path

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 16
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
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


def find_split(run_id: str) -> Path:
    """The split folder of the pipeline run whose evaluation scored this model run."""
    from cnnops.core.paths import state_home

    for metrics in sorted((state_home() / "pipeline-root").glob("*/evaluate/evaluation/metrics.json")):
        if json.loads(metrics.read_text()).get("run_id") == run_id:
            return metrics.parents[2] / "split"
    sys.exit(f"no pipeline run under {state_home() / 'pipeline-root'} evaluated run {run_id}")


def val_only_copy(folder: Path, reference: Any, n_val: int, target: Path) -> Path:
    """A copy of the served folder whose reference keeps only its first `n_val` rows: the val
    images (evaluation puts them before the test images)."""
    import shutil
    from dataclasses import replace

    from cnnops.monitoring.drift import Observations
    from cnnops.monitoring.reference import write_reference

    shutil.copytree(folder, target)
    obs = reference.observations
    kept = slice(0, n_val)
    write_reference(
        target,
        replace(
            reference,
            observations=Observations(obs.embeddings[kept], obs.predicted[kept], obs.confidence[kept], obs.classes),
            width=reference.width[kept],
            height=reference.height[kept],
            mode=reference.mode[kept],
            brightness=reference.brightness[kept],
        ),
    )
    return target


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(out, "PNG")
    return out.getvalue()


def fashion_images() -> list[bytes]:
    from cnnops.data.sources import FASHION_DIR, read_idx

    return [png(image[..., None]) for image in read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:3000]]


def latest_version(name: str) -> str:
    from mlflow.tracking import MlflowClient

    from cnnops.tracking.stores import use_tracking_store

    use_tracking_store()
    versions = MlflowClient().search_model_versions(f"name = '{name}'")
    return str(max(int(v.version) for v in versions))


def pools_of(test_files: list[Path], spec: Any) -> dict[str, list[bytes]]:
    """Each case's images as request bodies, encoded before any clock starts."""
    from cnnops.modeling.predict import decode_for_model
    from cnnops.settings.config import ServeConfig

    originals = [path.read_bytes() for path in test_files]
    pixels = np.stack([decode_for_model(data, spec, ServeConfig().max_image_pixels) for data in originals])
    pools = {"test": originals}
    for name, shift in SHIFTS.items():
        pools[f"test, {name}"] = [png(image) for image in shift(pixels)]
    pools["fashion-mnist"] = fashion_images()
    return pools


def start_server(folder: Path, window_size: int, scratch: Path) -> tuple[subprocess.Popen, str]:
    from cnnops.core.processes import LOOPBACK, free_port, start_process, wait_until
    from cnnops.inference.service_client import is_ready

    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "CNNOPS_MODEL_DIR": str(folder),
        "CNNOPS_DRIFT_CONFIG": json.dumps({"window_size": window_size}),
        "CNNOPS_WINDOW_FILE": str(scratch / "window.npz"),
    }
    command = [sys.executable, "-m", "bentoml", "serve", "cnnops.serving.service:Classifier", "--host", LOOPBACK]
    (scratch / "serve.log").unlink(missing_ok=True)
    proc = start_process([*command, "--port", str(port)], scratch / "serve.log", env, ROOT)
    url = f"http://{LOOPBACK}:{port}"
    failed = wait_until(lambda: is_ready(url), proc, 180)
    if failed:
        sys.exit(f"{failed}; see {scratch / 'serve.log'}")
    return proc, url


def judge_window(url: str, bodies: list[bytes]) -> tuple[dict[str, Any], float]:
    """Send the window's requests, then ask for the verdict: the verdict and the /drift time."""
    sent = asyncio.run(load(f"{url}/classify", [raw_payload(b) for b in bodies], CONCURRENCY, len(bodies), 300))
    if sent.errors or sent.requests != len(bodies):
        sys.exit(f"{sent.errors} of {sent.requests} requests failed: {sent.first_error}")
    began = time.perf_counter()
    with urllib.request.urlopen(f"{url}/drift", timeout=60) as response:
        answer = json.loads(response.read())
    return answer, time.perf_counter() - began


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnops.contracts.dataset import read_manifest
    from cnnops.core.paths import keep_tool_state_inside
    from cnnops.core.processes import stop_process_group
    from cnnops.inference.export import export_registered
    from cnnops.monitoring.reference import read_reference

    keep_tool_state_inside()
    version = latest_version(args.model_name) if args.version == "latest" else args.version
    served = export_registered(args.model_name, version)
    reference = read_reference(served.folder)
    if reference is None:
        sys.exit(f"{args.model_name} v{version} has no drift reference; run `make run` with this cnnops first")
    split = find_split(reference.run_id)
    test_files = [Path(p) for p in read_manifest(split / "test_data")["path"]]
    n_val = len(read_manifest(split / "val_data"))
    if n_val + len(test_files) != len(reference.observations):
        sys.exit(f"the reference holds {len(reference.observations)} images, not the run's val and test images")
    pools = pools_of(test_files, served.spec)
    small = [name for name, pool in pools.items() if len(pool) < args.window_size]
    if small:  # a window must be all of one pool, or its verdict mixes two
        sys.exit(f"pools smaller than a window of {args.window_size}: {', '.join(small)}")
    rng = np.random.default_rng(args.seed)
    print(
        f"model {args.model_name} v{version}, reference {len(reference.observations)} images "
        f"({n_val} val, {len(test_files)} test), {args.windows} windows of {args.window_size} requests over HTTP",
        flush=True,
    )
    results: dict[str, Any] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cnnops-bench-drift-") as scratch:
        held_out = val_only_copy(served.folder, reference, n_val, Path(scratch) / "val-only")
        cases = [(served.folder, name, pool) for name, pool in pools.items()]
        cases.insert(1, (held_out, "test, held out", pools["test"]))
        for folder in (served.folder, held_out):
            proc, url = start_server(folder, args.window_size, Path(scratch) / folder.name)
            try:
                for name, pool in [(name, pool) for where, name, pool in cases if where == folder]:
                    row = results[name] = measure_pool(url, pool, rng, args)
                    print(
                        f"{name:>24}  drift in {row['drift']:2d} of {args.windows}  median p {row['median_p']:.2g}  "
                        f"max p {row['max_p']:.2g}  GET /drift {row['drift_ms_median']:.0f} ms",
                        flush=True,
                    )
            finally:
                stop_process_group(proc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model_name, "version": version, "settings": vars(args) | {"out": str(args.out)}}
    payload |= {"results": results, "minutes": (time.monotonic() - began) / 60}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results in {args.out}")


def measure_pool(url: str, pool: list[bytes], rng: np.random.Generator, args: argparse.Namespace) -> dict[str, Any]:
    verdicts, drift_s = [], []
    for _ in range(args.windows):
        chosen = rng.choice(len(pool), size=args.window_size, replace=False)
        answer, seconds = judge_window(url, [pool[i] for i in chosen])
        verdicts.append(answer["verdict"])
        drift_s.append(seconds)
    return summarize(verdicts, drift_s, args.window_size)


def summarize(verdicts: list[dict[str, Any]], drift_s: list[float], window_size: int) -> dict[str, Any]:
    judged = [v for v in verdicts if v["window_size"] == window_size and v["p_value"] is not None]
    if len(judged) != len(verdicts):
        sys.exit(f"{len(verdicts) - len(judged)} windows were not judged whole: {verdicts[0]['reason']}")
    p_values = [float(v["p_value"]) for v in verdicts]
    return {
        "windows": len(verdicts),
        "drift": sum(bool(v["drift"]) for v in verdicts),
        "median_p": float(np.median(p_values)),
        "max_p": max(p_values),
        "min_p": min(p_values),
        "reasons": [v["reason"] for v in verdicts][:3],
        "drift_ms_median": 1000 * float(np.median(drift_s)),
    }


if __name__ == "__main__":
    main()
