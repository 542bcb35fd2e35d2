"""Serving benchmark: the cnnops service, a tutorial-style Flask app and the in-process ceiling,
with the same champion on the same machine.

    .venv/bin/python bench/serve.py [--requests 1000] [--concurrency 1 8 32] [--out FILE]

Each server runs alone while it is measured (the others are stopped), on a free loopback port.
The load is an async loop with a fixed request count per concurrency level (and a time bound),
each request uploading one of the demo test images; it reports req/s, p50 and p99. The loop uses
aiohttp's client, not httpx: on this machine httpx's client alone tops out near 260 req/s with a
p99 of about 500 ms at concurrency 32, against an endpoint that does nothing, so it would
measure itself (docs/benchmarks.md has the figures). The ceiling decodes the same images and
calls the model in-process on batches of 32.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np

from cnnops.processes import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEADLINE_S = 300  # per load level: the loop stops here even if requests remain


def start(command: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen:
    """Start a server and wait (at most 180 s) until `url` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in (200, 405):
                    return proc
        except urllib.error.HTTPError as err:
            if err.code == 405:  # the Flask route only takes POST: it is up
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    stop_process_group(proc)
    raise SystemExit(f"server not ready in 180 s; see {log}")


async def load(url: str, images: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """Send `requests` uploads with `concurrency` in flight; every answer must be a 200."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        stop_at = time.monotonic() + DEADLINE_S

        async def worker() -> None:
            nonlocal errors
            for index in counter:
                if time.monotonic() > stop_at:
                    return
                form = aiohttp.FormData()
                form.add_field("image", images[index % len(images)], filename="x.png", content_type="image/png")
                began = time.perf_counter()
                async with client.post(url, data=form) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(ms) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def measure_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    ready: str,
    endpoint: str,
    images: list[bytes],
    levels: list[int],
    requests: int,
    logs: Path,
) -> list[dict[str, float]]:
    proc = start(command, env, ready, logs / f"{name}.log")
    try:
        asyncio.run(load(endpoint, images, 4, 50))  # warm up
        rows = []
        for level in levels:
            row = asyncio.run(load(endpoint, images, level, requests))
            print(
                f"{name:>8}  c={level:<3} {row['req_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}",
                flush=True,
            )
            rows.append(row)
        return rows
    finally:
        stop_process_group(proc)


def measure_ceiling(model_dir: Path, images: list[bytes], seconds: float = 10.0) -> float:
    """Images/s for decode + model call in-process, on batches of 32: no HTTP at all."""
    from cnnops.export import read_served_model
    from cnnops.predict import decode_for_model, load_keras_model, predict_pixels

    served = read_served_model(model_dir)
    model = load_keras_model(model_dir)
    batch = [images[i % len(images)] for i in range(32)]
    predict_pixels(model, np.stack([decode_for_model(b, served.spec, 25_000_000) for b in batch]))
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        predict_pixels(model, np.stack([decode_for_model(b, served.spec, 25_000_000) for b in batch]))
        done += len(batch)
    rate = done / (time.perf_counter() - began)
    print(f" ceiling  in-process batches of 32: {rate:8.1f} images/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", default="cnnops-animals")
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()

    from cnnops.export import export_registered
    from cnnops.paths import data_cache, keep_tool_state_inside

    keep_tool_state_inside()
    served = export_registered(args.model_name)
    test_images = sorted(data_cache().rglob("*.png"))[::97][:200] or sys.exit("run `make run` first")
    images = [p.read_bytes() for p in test_images]
    logs = args.out.parent
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNOPS_MODEL_DIR": str(served.folder)}
    print(
        f"model {args.model_name} v{served.info.version}, {len(images)} distinct images, "
        f"{args.requests} requests per level, {os.cpu_count()} CPUs",
        flush=True,
    )

    port = free_port()
    cnnops = measure_server(
        "cnnops",
        [str(BIN / "bentoml"), "serve", "serving.service:Classifier", "--host", "127.0.0.1", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/readyz",
        f"http://127.0.0.1:{port}/classify",
        images,
        args.concurrency,
        args.requests,
        logs,
    )
    port = free_port()
    flask = measure_server(
        "flask",
        [sys.executable, str(ROOT / "bench" / "flask_app.py"), str(served.folder), str(port)],
        env,
        f"http://127.0.0.1:{port}/predict",
        f"http://127.0.0.1:{port}/predict",
        images,
        args.concurrency,
        args.requests,
        logs,
    )
    ceiling = measure_ceiling(served.folder, images)

    top = max(args.concurrency)
    best = max(r["req_per_s"] for r in cnnops)
    at_top = {
        name: next(r for r in rows if r["concurrency"] == top) for name, rows in (("cnnops", cnnops), ("flask", flask))
    }
    summary = {
        f"cnnops_over_flask_at_c{top}": at_top["cnnops"]["req_per_s"] / at_top["flask"]["req_per_s"],
        f"cnnops_p99_ms_at_c{top}": at_top["cnnops"]["p99_ms"],
        "cnnops_best_over_ceiling": best / ceiling,
    }
    print(json.dumps(summary, indent=2))
    args.out.write_text(
        json.dumps(
            {
                "model": served.info.registered_model,
                "version": served.info.version,
                "cpus": os.cpu_count(),
                "cnnops": cnnops,
                "flask": flask,
                "ceiling_images_per_s": ceiling,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
