"""Serving benchmark: the cnnops service on its two runtimes (ONNX Runtime and Keras) against
`mlflow models serve`, a tutorial-style Flask app, a no-op endpoint on the same BentoML stack and
the in-process ceiling of each runtime, with the same registered version on the same machine; then
the service beside hostile clients, a soak, and the long runs whose latency tail is attributed.

    .venv/bin/python bench/serve.py [--requests 1000] [--concurrency 1 8 32] [--soak-seconds 300]
                                    [--tail-seconds 300] [--parts ...] [--out FILE]

Each server runs alone while it is measured (the others are stopped), on a free loopback port.
The load (bench/load.py) is an async loop with a fixed request count per concurrency level and a
time bound, its bodies prepared before the clock starts; it reports req/s, images/s, p50 and p99.
The loop uses aiohttp's client, not httpx: on this machine httpx's client alone tops out near
260 req/s with a p99 of about 500 ms at concurrency 32, against an endpoint that does nothing, so
it would measure itself (docs/benchmarks.md has the figures).

What each server is fed:
- cnnops (`serving.service:Classifier`, `serve.runtime: auto`, so ONNX Runtime when the version's
  export passed parity, as /info reports): one multipart `image` per request; the raw image as the
  body (`Content-Type: image/png`), when the service answers one with a 200 (else that mode is
  skipped, saying why); `/classify_batch` with 32 images a request.
- keras: the same service and requests with `serve.runtime: keras`.
- `mlflow models serve -m models:/NAME/VERSION --env-manager local`, as a user gets it (its own
  default worker count): `/invocations` with `{"inputs": [HxWxC uint8]}`, each image decoded
  client-side by `cnnops.modeling.predict.decode_for_model` before the clock starts.
- no-op (`bench/noop_service.py`): the multipart upload, read and answered with a constant.
- Flask (`bench/flask_app.py`): the multipart upload, one `model.predict` each.
- ceiling: decode plus the model call in-process on batches of 32, no HTTP, for each runtime.
- tail: a fresh service per variant (ONNX, Keras, ONNX with `drift.record` off) under multipart
  uploads at `--tail-concurrency` for `--tail-seconds`, after a 10 s warm-up; what it paused for in
  that window is read from its own /metrics (`cnnops_gc_pause_seconds`, by generation, and
  `cnnops_drift_save_seconds`), so a stall is attributed by the service's own measurements.
- drift: the cnnops service with its drift window recorded (the default) against `drift.record`
  off, multipart uploads at the top level, rounds in alternating order, a fresh server each; and
  the bookkeeping's own time per request, in process.
The goals are judged at the highest concurrency level (32 by default) and printed as a table;
everything measured goes to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import (  # noqa: E402 - bench/ is not a package; its sibling module is imported by path
    HOSTILE_KINDS,
    LoadResult,
    Payload,
    SoakResult,
    load,
    load_beside_hostiles,
    mlflow_payload,
    multipart_payload,
    raw_payload,
    soak,
    tree_rss_bytes,
)

from cnnops.core.processes import LOOPBACK, free_port, stop_process_group  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEADLINE_S = 300  # per load run: the loop stops here even if requests remain
READY_S = 180
BATCH_IMAGES = 32
SOAK_CONCURRENCY = 32
WARMUP = (4, 50)  # concurrency and requests sent before a server is measured
PARTS = ("cnnops", "keras", "hostile", "drift", "noop", "mlflow", "flask", "ceiling", "soak", "tail")
# The long runs whose tail is profiled: the service's runtime, and whether it records its drift window.
TAIL_VARIANTS = {
    "onnx": {"serve": {"runtime": "onnx"}, "drift": {}},
    "keras": {"serve": {"runtime": "keras"}, "drift": {}},
    "onnx-no-drift": {"serve": {"runtime": "onnx"}, "drift": {"record": False}},
}


@dataclass(frozen=True)
class Server:
    """A server to start for a while: its command, environment, and the URL that says it is up."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    ready_path: str

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


@dataclass(frozen=True)
class Goal:
    """One target: what it asks, what was measured, and whether it was met (None: not measured)."""

    goal: str
    measured: str
    met: bool | None


@contextmanager
def running(server: Server, logs: Path) -> Iterator[subprocess.Popen]:
    """The server started in its own session, ready, and stopped with its whole process group."""
    log = logs / f"{server.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server.command, env=server.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(proc, server.url(server.ready_path), log)
        yield proc
    finally:
        stop_process_group(proc)


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Wait (at most READY_S) until `url` answers 200, or 405 from a route that only takes POST."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as err:
            if err.code == 405:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready in {READY_S} s; see {log}")


def run_load(
    url: str, payloads: list[Payload], concurrency: int, requests: int, seconds: float = DEADLINE_S
) -> LoadResult:
    return asyncio.run(load(url, payloads, concurrency, requests, seconds))


def show(name: str, row: LoadResult) -> None:
    per_image = f"  {row.images_per_s:8.1f} images/s" if row.images_per_s != row.req_per_s else ""
    errors = f"  errors {row.errors} {row.first_error or ''}" if row.errors else ""
    print(
        f"{name:>16}  c={row.concurrency:<3} {row.req_per_s:8.1f} req/s{per_image}  p50 {row.p50_ms:7.1f} ms  "
        f"p99 {row.p99_ms:7.1f} ms{errors}",
        flush=True,
    )


def measure_levels(name: str, url: str, payloads: list[Payload], levels: list[int], requests: int) -> list[LoadResult]:
    """A short warm-up, then each concurrency level in turn."""
    run_load(url, payloads, *WARMUP)
    rows = []
    for level in levels:
        rows.append(run_load(url, payloads, level, requests))
        show(name, rows[-1])
    return rows


def raw_body_refused(url: str, image: bytes) -> str | None:
    """None when the endpoint answers a raw image body with a 200; else why the raw mode is skipped."""
    request = urllib.request.Request(url, data=image, headers={"Content-Type": "image/png"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status == 200:
                return None
            answer = f"{response.status} {response.read(300).decode('utf-8', 'replace')}"
    except urllib.error.HTTPError as err:
        answer = f"{err.code} {err.read(300).decode('utf-8', 'replace')}"
    except OSError as err:
        answer = f"{type(err).__name__}: {err}"
    return (
        f"POST /classify with a raw image/png body was answered {answer.strip()}, not 200: the service "
        "does not take raw-body uploads yet, so the raw-body mode is skipped"
    )


def measure_cnnops(server: Server, bodies: dict[str, list[Payload]], args: argparse.Namespace, logs: Path) -> dict:
    """Multipart, raw-body and batch uploads at each level; then, at the top level, the idle p99
    against the p99 beside hostile clients."""
    classify = server.url("/classify")
    results: dict[str, Any] = {}
    with running(server, logs) as proc:
        results["runtime"] = served_runtime(server)
        print(f"{'runtime':>16}  {results['runtime']['name']}: {results['runtime']['reason']}", flush=True)
        if {"cnnops", "keras"} & set(args.parts):
            results["multipart"] = measure_levels(
                "cnnops multipart", classify, bodies["multipart"], args.concurrency, args.requests
            )
            refused = raw_body_refused(classify, bodies["raw"][0].body)
            if refused is None:
                results["raw"] = measure_levels("cnnops raw", classify, bodies["raw"], args.concurrency, args.requests)
            else:
                print(f"      cnnops raw  skipped: {refused}", flush=True)
                results["raw"] = {"skipped": refused}
            results["batch"] = measure_levels(
                "cnnops batch/32", server.url("/classify_batch"), bodies["batch"], args.concurrency, args.batch_requests
            )
        if "hostile" in args.parts:
            results["hostile"] = measure_hostile(classify, bodies["multipart"], args)
        results["rss_mb"] = tree_rss_bytes(proc.pid) / 2**20
    return results


def served_runtime(server: Server) -> dict[str, str]:
    """What runs the model, as the service's /info says."""
    with urllib.request.urlopen(server.url("/info"), timeout=10) as response:
        return json.loads(response.read())["runtime"]


def measure_tail(
    variant: str, env: dict[str, str], payloads: list[Payload], args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    """A fresh server of one `TAIL_VARIANTS` variant under `--tail-concurrency` for `--tail-seconds`
    after a warm-up, then what it paused for: its garbage collections and drift saves, read from
    its /metrics (counts per duration bucket)."""
    settings = TAIL_VARIANTS[variant]
    server = bentoml_server(
        f"tail-{variant}",
        "cnnops.serving.service:Classifier",
        {
            **env,
            "CNNOPS_SERVE_CONFIG": json.dumps(settings["serve"]),
            "CNNOPS_DRIFT_CONFIG": json.dumps(settings["drift"]),
        },
    )
    with running(server, logs):
        cap = int((args.tail_seconds + 10) * 10_000)
        asyncio.run(load(server.url("/classify"), payloads, args.tail_concurrency, cap, 10))
        before = read_pauses(server)
        result = asyncio.run(load(server.url("/classify"), payloads, args.tail_concurrency, cap, args.tail_seconds))
        after = read_pauses(server)
    show(f"tail {variant}", result)
    pauses = {name: {le: after[name].get(le, 0) - before[name].get(le, 0) for le in after[name]} for name in after}
    for name, counts in pauses.items():
        print(f"{'':>16}  {name}: {describe_buckets(counts)}", flush=True)
    return {"load": result, "p99_over_p50": result.p99_ms / result.p50_ms, "pauses": pauses}


PAUSE_METRICS = ("cnnops_gc_pause_seconds", "cnnops_drift_save_seconds")


def read_pauses(server: Server) -> dict[str, dict[str, float]]:
    """Cumulative counts per bucket (`le`) of each pause histogram, over every label (generation)."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, dict[str, float]] = {name: {} for name in PAUSE_METRICS}
    for line in text.splitlines():
        found = re.match(r'(\w+)_bucket\{.*le="([^"]+)".*\} ([0-9.e+]+)$', line)
        if found and found.group(1) in counts:
            le = found.group(2)
            counts[found.group(1)][le] = counts[found.group(1)].get(le, 0.0) + float(found.group(3))
    return counts


def describe_buckets(counts: dict[str, float]) -> str:
    """How many pauses, and how many of them took 50 ms or more (cumulative buckets)."""
    total = counts.get("+Inf", 0.0)
    over = total - counts.get("0.05", 0.0)
    over_250 = total - counts.get("0.25", 0.0)
    return f"{total:.0f} pauses, {over:.0f} of them ≥ 50 ms, {over_250:.0f} ≥ 250 ms"


def measure_drift_cost(
    env: dict[str, str], payloads: list[Payload], args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    """Multipart uploads at the top level against the service with its drift window recorded
    (the default) and with `drift.record` off, in alternating order over `--drift-rounds`
    rounds, a fresh server each time; the cost is the drop in median req/s. Beside it, the
    bookkeeping's own time per request, in process, and the share of the event loop it takes at
    the measured rate: the A/B difference is within run-to-run noise on a small machine."""
    top = max(args.concurrency)
    rows: dict[str, list[LoadResult]] = {"recorded": [], "off": []}
    for round_ in range(args.drift_rounds):
        order = ("recorded", "off") if round_ % 2 == 0 else ("off", "recorded")
        for mode in order:
            drift = {} if mode == "recorded" else {"record": False}
            server_env = {**env, "CNNOPS_DRIFT_CONFIG": json.dumps(drift)}
            server = bentoml_server(f"drift-{mode}", "cnnops.serving.service:Classifier", server_env)
            with running(server, logs):
                url = server.url("/classify")
                run_load(url, payloads, *WARMUP)
                check_recording(server.url("/drift"), mode == "recorded")
                rows[mode].append(run_load(url, payloads, top, args.drift_requests))
                show(f"drift {mode}", rows[mode][-1])
    medians = {mode: float(np.median([r.req_per_s for r in found])) for mode, found in rows.items()}
    record_us = time_bookkeeping(Path(env["CNNOPS_MODEL_DIR"]))
    print(f"      bookkeeping {record_us:.1f} µs a request in process", flush=True)
    return {
        **rows,
        "median_req_per_s": medians,
        "cost": 1 - medians["recorded"] / medians["off"],
        "bookkeeping_us_per_request": record_us,
        "loop_share": record_us * medians["recorded"] / 1e6,
    }


def time_bookkeeping(folder: Path, calls: int = 20_000) -> float:
    """Microseconds per one-image request of what recording adds to `classify_images`: the
    window's `record` and the save check, with the served model's reference and width."""
    from cnnops.contracts.served import read_served_model
    from cnnops.data.images import DecodedImage
    from cnnops.monitoring.monitor import open_monitor
    from cnnops.monitoring.reference import read_reference
    from cnnops.settings.config import DriftConfig

    served = read_served_model(folder)
    reference = read_reference(folder)
    if reference is None:
        raise SystemExit(f"drift cost: {folder} has no drift reference")
    width = reference.observations.embeddings.shape[1]
    names = served.spec.class_names
    monitor = open_monitor(folder, reference.run_id, names, width, DriftConfig(), None)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1, served.spec.height, served.spec.width, served.spec.channels), dtype=np.uint8)
    images = [DecodedImage(pixels[0], "PNG", served.spec.mode, served.spec.width, served.spec.height)]
    outputs = rng.random((1, len(names) + width)).astype(np.float32)
    began = time.perf_counter()
    for _ in range(calls):
        monitor.record(outputs[:, : len(names)], outputs[:, len(names) :], pixels, images)
        monitor.claim_save()
    return (time.perf_counter() - began) / calls * 1e6


def check_recording(url: str, expected: bool) -> None:
    """Stop unless the server records its window exactly when it should: a version without a
    drift reference records nothing, and would make the cost look like none."""
    with urllib.request.urlopen(url, timeout=30) as response:
        verdict = json.loads(response.read())["verdict"]
    recording = verdict["status"] != "no-reference"
    if recording != expected:
        raise SystemExit(f"drift cost: expected recording={expected}, the service says: {verdict['reason']}")


def measure_hostile(url: str, payloads: list[Payload], args: argparse.Namespace) -> dict[str, Any]:
    """The same load for the same time, first alone, then beside hostile connections."""
    top, cap = max(args.concurrency), int(args.hostile_seconds * 10_000)
    idle = run_load(url, payloads, top, cap, args.hostile_seconds)
    show("idle", idle)
    beside, tallies = load_beside_hostiles(
        url, payloads, top, cap, args.hostile_seconds, args.hostile, tuple(args.hostile_kinds)
    )
    show("beside hostiles", beside)
    for tally in tallies:
        endings = ", ".join(f"{ending} ×{count}" for ending, count in tally.endings.most_common())
        print(f"{tally.kind:>16}  {tally.connections} at a time, {tally.opened} opened: {endings}", flush=True)
    return {
        "idle": idle,
        "beside_hostiles": beside,
        "hostiles": [{**asdict(t), "endings": dict(t.endings)} for t in tallies],
        "p99_ratio": beside.p99_ms / idle.p99_ms,
    }


def measure_soak(server: Server, payloads: list[Payload], args: argparse.Namespace, logs: Path) -> SoakResult:
    """A fresh cnnops server under SOAK_CONCURRENCY for `--soak-seconds`, after a warm-up."""
    with running(server, logs) as proc:
        result = asyncio.run(
            soak(
                server.url("/classify"),
                payloads,
                SOAK_CONCURRENCY,
                args.soak_seconds,
                args.soak_warmup_seconds,
                proc.pid,
            )
        )
    show("soak", result.load)
    print(
        f"{'soak memory':>16}  {result.rss_after_warmup_mb:.0f} MiB after warm-up, {result.rss_at_end_mb:.0f} MiB "
        f"at the end ({result.rss_growth:+.1%})",
        flush=True,
    )
    return result


def measure_simple(server: Server, url: str, payloads: list[Payload], args: argparse.Namespace, logs: Path) -> dict:
    with running(server, logs) as proc:
        rows = measure_levels(server.name, url, payloads, args.concurrency, args.requests)
        return {"levels": rows, "rss_mb": tree_rss_bytes(proc.pid) / 2**20}


def mlflow_workers(log: Path) -> int | None:
    """The worker count `mlflow models serve` gave uvicorn, from the command it logs."""
    found = re.search(r"uvicorn .*--workers (\d+)", log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


def measure_ceiling(model_dir: Path, images: list[bytes], runtime: str, seconds: float = 10.0) -> float:
    """Images/s for decode + model call in-process on batches of 32 (no HTTP), with the runtime
    the service uses: ONNX Runtime on the export, or Keras's compiled predict step."""
    from cnnops.contracts.export import ONNX_FILE
    from cnnops.contracts.served import read_served_model
    from cnnops.inference.onnx_runtime import load_onnx_model
    from cnnops.modeling.predict import decode_for_model, load_keras_model, predict_pixels
    from cnnops.settings.config import ServeConfig

    served = read_served_model(model_dir)
    spec = served.spec
    if runtime == "onnx":
        threads = ServeConfig().onnx_threads  # as the service runs it
        predict = load_onnx_model(model_dir / ONNX_FILE, spec.height, spec.width, spec.channels, threads).predict
    else:
        model = load_keras_model(model_dir)
        predict = lambda pixels: predict_pixels(model, pixels)  # noqa: E731
    pixels = ServeConfig().max_image_pixels
    batch = [images[i % len(images)] for i in range(BATCH_IMAGES)]
    predict(np.stack([decode_for_model(b, spec, pixels) for b in batch]))
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        predict(np.stack([decode_for_model(b, spec, pixels) for b in batch]))
        done += len(batch)
    rate = done / (time.perf_counter() - began)
    print(f"{'ceiling ' + runtime:>16}  in-process batches of {BATCH_IMAGES}: {rate:8.1f} images/s", flush=True)
    return rate


def prepare_bodies(images: list[bytes], model_dir: Path) -> dict[str, list[Payload]]:
    """Every request body of every mode, built before any clock starts."""
    from cnnops.contracts.served import read_served_model
    from cnnops.modeling.predict import decode_for_model
    from cnnops.settings.config import ServeConfig

    spec = read_served_model(model_dir).spec
    pixels = ServeConfig().max_image_pixels
    batches = max(1, len(images) // BATCH_IMAGES)
    return {
        "multipart": [multipart_payload("image", [image]) for image in images],
        "raw": [raw_payload(image) for image in images],
        "batch": [
            multipart_payload("images", images[i * BATCH_IMAGES : (i + 1) * BATCH_IMAGES]) for i in range(batches)
        ],
        "mlflow": [mlflow_payload(decode_for_model(image, spec, pixels)) for image in images],
    }


def at(rows: Any, level: int) -> LoadResult | None:
    """The row of one concurrency level, when that mode was measured."""
    if not isinstance(rows, list):
        return None
    return next((row for row in rows if row.concurrency == level), None)


def ratio_goal(
    goal: str, top: LoadResult | None, base: LoadResult | None, least: float, what: str = "req_per_s"
) -> Goal:
    if top is None or base is None:
        return Goal(goal, "not measured", None)
    a, b = getattr(top, what), getattr(base, what)
    unit = "req/s" if what == "req_per_s" else "images/s"
    share = f"{a / b:.0%} of" if least < 1 else f"{a / b:.2f}×:"
    return Goal(goal, f"{share} {a:.1f} vs {b:.1f} {unit}", a / b >= least)


def judge(results: dict[str, Any], top: int) -> list[Goal]:
    """Each goal at the top concurrency level, met, missed or not measured."""
    cnnops = results.get("cnnops", {})
    multipart, raw, batch = at(cnnops.get("multipart"), top), at(cnnops.get("raw"), top), at(cnnops.get("batch"), top)
    mlflow, noop, flask = (at(results.get(name, {}).get("levels"), top) for name in ("mlflow", "noop", "flask"))
    goals = [
        ratio_goal(f"cnnops ≥ 5× `mlflow models serve` req/s at c={top}", multipart, mlflow, 5),
        ratio_goal(f"cnnops ≥ 5× Flask req/s at c={top}", multipart, flask, 5),
        Goal(
            f"p99 ≤ 50 ms at c={top}, single multipart uploads",
            f"{multipart.p99_ms:.1f} ms (p50 {multipart.p50_ms:.1f} ms)" if multipart else "not measured",
            multipart.p99_ms <= 50 if multipart else None,
        ),
    ]
    if isinstance(cnnops.get("raw"), dict):
        goals.append(Goal(f"p99 ≤ 50 ms at c={top}, single raw-body uploads", "skipped: raw body refused", None))
        goals.append(Goal(f"raw body ≥ 1.3× multipart req/s at c={top}", "skipped: raw body refused", None))
    else:
        goals.append(
            Goal(
                f"p99 ≤ 50 ms at c={top}, single raw-body uploads",
                f"{raw.p99_ms:.1f} ms (p50 {raw.p50_ms:.1f} ms)" if raw else "not measured",
                raw.p99_ms <= 50 if raw else None,
            )
        )
        goals.append(ratio_goal(f"raw body ≥ 1.3× multipart req/s at c={top}", raw, multipart, 1.3))
    goals.append(ratio_goal(f"cnnops ≥ 60 % of the no-op endpoint's req/s at c={top}", multipart, noop, 0.6))
    ceiling = results.get("ceiling_images_per_s")
    if batch is None or ceiling is None:
        goals.append(Goal(f"batch ≥ 50 % of the in-process ceiling's images/s at c={top}", "not measured", None))
    else:
        share = batch.images_per_s / ceiling
        goals.append(
            Goal(
                f"batch ≥ 50 % of the in-process ceiling's images/s at c={top}",
                f"{share:.0%} ({batch.images_per_s:.0f} of {ceiling:.0f} images/s)",
                share >= 0.5,
            )
        )
    hostile = cnnops.get("hostile")
    goals.append(
        Goal(
            f"p99 beside hostile clients ≤ 2× idle p99 at c={top}",
            f"{hostile['p99_ratio']:.2f}× ({hostile['beside_hostiles'].p99_ms:.1f} vs {hostile['idle'].p99_ms:.1f} ms)"
            if hostile
            else "not measured",
            hostile["p99_ratio"] <= 2 and hostile["beside_hostiles"].errors == 0 if hostile else None,
        )
    )
    soaked = results.get("soak")
    if isinstance(soaked, SoakResult):
        run = soaked.load
        goals.append(
            Goal(
                "soak: 0 errors",
                f"{run.errors} errors in {run.requests} requests over {run.seconds:.0f} s",
                run.errors == 0,
            )
        )
        growth = f"{soaked.rss_growth:+.1%} ({soaked.rss_after_warmup_mb:.0f} → {soaked.rss_at_end_mb:.0f} MiB)"
        goals.append(Goal("soak: RSS growth < 10 % after warm-up", growth, soaked.rss_growth < 0.10))
    else:
        goals += [
            Goal("soak: 0 errors", "not measured", None),
            Goal("soak: RSS growth < 10 % after warm-up", "not measured", None),
        ]
    drift = results.get("drift")
    goals.append(
        Goal(
            f"drift bookkeeping costs ≤ 5 % of req/s at c={top}",
            f"{drift['cost']:.1%} ({drift['median_req_per_s']['recorded']:.0f} recorded vs "
            f"{drift['median_req_per_s']['off']:.0f} off, median of {len(drift['off'])}); "
            f"{drift['bookkeeping_us_per_request']:.0f} µs a request in process, "
            f"{drift['loop_share']:.1%} of the event loop"
            if drift
            else "not measured",
            drift["cost"] <= 0.05 if drift else None,
        )
    )
    goals += runtime_goals(results, top)
    errors = sum(row.errors for row in measured_rows(results))
    goals.append(Goal("no errors in any measured run", f"{errors} errors", errors == 0))
    return goals


def runtime_goals(results: dict[str, Any], top: int) -> list[Goal]:
    """ONNX Runtime against Keras on the same version, and the long run's tail."""
    onnx, keras = results.get("cnnops", {}), results.get("keras", {})
    goals = [
        ratio_goal(
            f"ONNX ≥ 1.3× Keras on /classify_batch images/s at c={top}",
            at(onnx.get("batch"), top),
            at(keras.get("batch"), top),
            1.3,
            "images_per_s",
        )
    ]
    for mode in ("multipart", "raw"):
        goals.append(
            ratio_goal(
                f"ONNX no worse than Keras on single {mode} uploads at c={top}",
                at(onnx.get(mode), top),
                at(keras.get(mode), top),
                1.0,
            )
        )
    tail = results.get("tail_onnx")
    goals.append(
        Goal(
            "long run at c=8 (ONNX): p99 ≤ 3× p50",
            f"{tail['p99_over_p50']:.2f}× (p99 {tail['load'].p99_ms:.1f}, p50 {tail['load'].p50_ms:.1f} ms "
            f"over {tail['load'].seconds:.0f} s)"
            if tail
            else "not measured",
            tail["p99_over_p50"] <= 3 if tail else None,
        )
    )
    return goals


def measured_rows(value: Any) -> Iterator[LoadResult]:
    """Every load result anywhere in the results."""
    if isinstance(value, LoadResult):
        yield value
    elif isinstance(value, SoakResult):
        yield from (value.warmup, value.load)
    elif isinstance(value, dict):
        for item in value.values():
            yield from measured_rows(item)
    elif isinstance(value, list):
        for item in value:
            yield from measured_rows(item)


def print_goals(goals: list[Goal]) -> None:
    width = max(len(g.goal) for g in goals)
    print(f"\n{'goal':<{width}}  {'result':<8} measured")
    for g in goals:
        verdict = (
            "met" if g.met else "MISSED" if g.met is False else "skipped" if g.measured.startswith("skipped") else "n/a"
        )
        print(f"{g.goal:<{width}}  {verdict:<8} {g.measured}")


def as_json(value: Any) -> Any:
    if isinstance(value, LoadResult | Goal | SoakResult):
        return asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def bentoml_server(name: str, target: str, env: dict[str, str]) -> Server:
    port = free_port()
    return Server(
        name, [str(BIN / "bentoml"), "serve", target, "--host", LOOPBACK, "--port", str(port)], env, port, "/readyz"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-name", default="cnnops-animals")
    parser.add_argument("--version", default="champion", help="an alias or a version number")
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    parser.add_argument("--batch-requests", type=int, default=250, help="batch requests (32 images each) per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--drift-requests", type=int, default=3000, help="requests per run of the drift cost")
    parser.add_argument("--drift-rounds", type=int, default=5, help="rounds of the drift cost, each both servers")
    parser.add_argument("--hostile", type=int, default=8, help="hostile connections of each kind held open")
    parser.add_argument("--hostile-kinds", nargs="+", choices=HOSTILE_KINDS, default=list(HOSTILE_KINDS))
    parser.add_argument("--hostile-seconds", type=float, default=60, help="idle run, then the run beside hostiles")
    parser.add_argument("--soak-seconds", type=float, default=300)
    parser.add_argument("--soak-warmup-seconds", type=float, default=30)
    parser.add_argument("--tail-seconds", type=float, default=300, help="each long run whose tail is profiled")
    parser.add_argument("--tail-concurrency", type=int, default=8)
    parser.add_argument("--tail-variants", nargs="+", choices=list(TAIL_VARIANTS), default=list(TAIL_VARIANTS))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    from cnnops.core.paths import data_cache, keep_tool_state_inside, tracking_uri
    from cnnops.inference.export import export_registered

    keep_tool_state_inside()
    served = export_registered(args.model_name, args.version)
    version = served.info.version
    test_images = sorted(data_cache().rglob("*.png"))[::97][:200] or sys.exit("run `make run` first")
    images = [p.read_bytes() for p in test_images]
    bodies = prepare_bodies(images, served.folder)
    logs = args.out.parent
    logs.mkdir(parents=True, exist_ok=True)
    # The servers' drift windows go to a scratch file, not the one `cnnops serve` of this version reads.
    scratch = Path(tempfile.mkdtemp(prefix="cnnops-bench-serve-"))
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CNNOPS_MODEL_DIR": str(served.folder),
        "CNNOPS_WINDOW_FILE": str(scratch / "window.npz"),
    }
    top = max(args.concurrency)
    began = time.monotonic()
    print(
        f"model {args.model_name} v{version}, {len(images)} distinct images, {args.requests} requests per level "
        f"({args.batch_requests} of {BATCH_IMAGES} images for the batch), {os.cpu_count()} CPUs",
        flush=True,
    )

    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = []
    if {"cnnops", "hostile"} & set(args.parts):
        steps.append(
            (
                "cnnops",
                lambda: measure_cnnops(
                    bentoml_server("cnnops", "cnnops.serving.service:Classifier", env), bodies, args, logs
                ),
            )
        )
    if "keras" in args.parts:
        keras_env = {**env, "CNNOPS_SERVE_CONFIG": json.dumps({"runtime": "keras"})}
        keras_args = argparse.Namespace(**{**vars(args), "parts": ["keras"]})  # no hostile run on this one
        steps.append(
            (
                "keras",
                lambda: measure_cnnops(
                    bentoml_server("cnnops-keras", "cnnops.serving.service:Classifier", keras_env),
                    bodies,
                    keras_args,
                    logs,
                ),
            )
        )
    if "drift" in args.parts:
        steps.append(("drift", lambda: measure_drift_cost(env, bodies["multipart"], args, logs)))
    if "noop" in args.parts:
        noop = bentoml_server("noop", "bench.noop_service:Noop", env)
        steps.append(("noop", lambda: measure_simple(noop, noop.url("/classify"), bodies["multipart"], args, logs)))
    if "mlflow" in args.parts:
        steps.append(
            ("mlflow", lambda: measure_mlflow(args.model_name, version, tracking_uri(), bodies["mlflow"], args, logs))
        )
    if "flask" in args.parts:
        port = free_port()
        flask = Server(
            "flask",
            [sys.executable, str(ROOT / "bench" / "flask_app.py"), str(served.folder), str(port)],
            env,
            port,
            "/predict",
        )
        steps.append(("flask", lambda: measure_simple(flask, flask.url("/predict"), bodies["multipart"], args, logs)))
    if "ceiling" in args.parts:
        steps.append(("ceiling_images_per_s", lambda: measure_ceiling(served.folder, images, "onnx")))
        steps.append(("keras_ceiling_images_per_s", lambda: measure_ceiling(served.folder, images, "keras")))
    if "soak" in args.parts and args.soak_seconds > 0:
        steps.append(
            (
                "soak",
                lambda: measure_soak(
                    bentoml_server("soak", "cnnops.serving.service:Classifier", env), bodies["multipart"], args, logs
                ),
            )
        )
    if "tail" in args.parts:
        for variant in args.tail_variants:
            steps.append((f"tail_{variant}", partial(measure_tail, variant, env, bodies["multipart"], args, logs)))
    for key, step in steps:
        results[key] = step()
    shutil.rmtree(scratch, ignore_errors=True)

    goals = judge(results, top)
    print_goals(goals)
    minutes = (time.monotonic() - began) / 60
    print(f"\n{minutes:.1f} min; results in {args.out}", flush=True)
    record = {
        "model": served.info.registered_model,
        "version": version,
        "cpus": os.cpu_count(),
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        **results,
        "goals": goals,
        "minutes": minutes,
    }
    args.out.write_text(json.dumps(record, indent=2, default=as_json) + "\n")


def measure_mlflow(
    name: str, version: int | None, uri: str, payloads: list[Payload], args: argparse.Namespace, logs: Path
) -> dict:
    """`mlflow models serve` on the same registered version, with what a user gets by default."""
    # `mlflow models serve` execs `uvicorn` from PATH, as a user's activated venv has it.
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": uri, "PATH": path}
    env.pop("MLFLOW_MODELS_WORKERS", None)  # the default worker count, not one set for this shell
    port = free_port()
    command = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local"]
    server = Server("mlflow", [*command, "--host", LOOPBACK, "--port", str(port)], env, port, "/ping")
    measured = measure_simple(server, server.url("/invocations"), payloads, args, logs)
    measured["workers"] = mlflow_workers(logs / "mlflow.log")
    print(f"{'mlflow':>16}  workers: {measured['workers']}", flush=True)
    return measured


if __name__ == "__main__":
    main()
