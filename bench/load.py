"""The client side of bench/serve.py: request bodies built before the clock starts, a load loop
bounded in count and time, hostile clients that hold connections open beside it, and a server's
resident memory read from /proc.

Every body (multipart, raw image, MLflow's JSON) is prepared up front, so the client does the same
small amount of work per request whatever the server, and the load generator, which shares the
cores with the server, costs each server alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.queues
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

BOUNDARY = "cnnopsbenchboundary7e1f"
REQUEST_TIMEOUT_S = 30
# A hostile connection that has been refused or answered waits this long before it opens again,
# so hostile clients hold connections (and send junk) without becoming a load test of their own.
HOSTILE_PAUSE_S = 0.25
# The slowloris client sends one byte of its body this often.
TRICKLE_EVERY_S = 1.0
HOSTILE_KINDS = ("slowloris", "huge-header", "many-parts")
# Hostile connections open this long before the timed load starts beside them.
HOSTILE_LEAD_S = 2.0


@dataclass(frozen=True)
class Payload:
    """One request body, ready to send: the bytes, their Content-Type, and how many images it holds."""

    body: bytes
    content_type: str
    images: int = 1


@dataclass(frozen=True)
class LoadResult:
    """One load run: answers counted by status (or by the client error that stood in for one)."""

    concurrency: int
    requests: int
    errors: int
    answers: dict[str, int]
    seconds: float
    req_per_s: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    first_error: str | None = None


@dataclass(frozen=True)
class SoakResult:
    """A soak: its warm-up and its load, and the server tree's memory (MiB) along the way."""

    warmup: LoadResult
    load: LoadResult
    rss_after_warmup_mb: float
    rss_at_end_mb: float
    rss_growth: float
    rss_samples_mb: list[tuple[float, float]]


@dataclass
class HostileTally:
    """What the hostile clients of one kind did: connections opened and how each one ended."""

    kind: str
    connections: int
    opened: int = 0
    endings: Counter[str] = field(default_factory=Counter)


def multipart_payload(name: str, images: list[bytes], media_type: str = "image/png") -> Payload:
    """A multipart body with each image as a file part called `name`, as a browser or aiohttp sends it."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="x.png"\r\n'
        f"Content-Type: {media_type}\r\n\r\n".encode()
        + image
        + b"\r\n"
        for image in images
    ]
    return Payload(
        b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}", len(images)
    )


def raw_payload(image: bytes, media_type: str = "image/png") -> Payload:
    """The image itself as the body."""
    return Payload(image, media_type)


def mlflow_payload(pixels: np.ndarray) -> Payload:
    """MLflow's scoring protocol: a batch of one decoded HxWxC uint8 tensor under `inputs`."""
    return Payload(json.dumps({"inputs": pixels[None].tolist()}).encode(), "application/json")


async def load(url: str, payloads: list[Payload], concurrency: int, requests: int, seconds: float) -> LoadResult:
    """Send at most `requests` bodies, for at most `seconds`, with `concurrency` in flight; any
    answer but a 200, and any client error or timeout, is an error."""
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    first_error: list[str] = []
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            for index in counter:
                if time.monotonic() > stop_at:
                    return
                payload = payloads[index % len(payloads)]
                began = time.perf_counter()
                try:
                    async with client.post(
                        url, data=payload.body, headers={"Content-Type": payload.content_type}
                    ) as response:
                        text = await response.read()
                        answers[str(response.status)] += 1
                        if response.status != 200 and not first_error:
                            first_error.append(f"{response.status}: {text[:300].decode('utf-8', 'replace')}")
                except (aiohttp.ClientError, TimeoutError) as err:
                    answers[type(err).__name__] += 1
                    if not first_error:
                        first_error.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    ms = np.array(latencies or [float("nan")]) * 1000
    done = answers["200"]
    images = sum(payloads[i % len(payloads)].images for i in range(done)) if done else 0
    return LoadResult(
        concurrency=concurrency,
        requests=sum(answers.values()),
        errors=sum(answers.values()) - done,
        answers=dict(answers),
        seconds=wall,
        req_per_s=done / wall,
        images_per_s=images / wall,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        first_error=first_error[0] if first_error else None,
    )


def load_beside_hostiles(
    url: str,
    payloads: list[Payload],
    concurrency: int,
    requests: int,
    seconds: float,
    hostiles: int,
    kinds: tuple[str, ...] = HOSTILE_KINDS,
) -> tuple[LoadResult, list[HostileTally]]:
    """`load`, while `hostiles` connections of each hostile kind stay open against the same server.
    The hostile clients run in a process of their own, so their work never delays the timed loop's."""
    context = multiprocessing.get_context("spawn")
    tallies: multiprocessing.queues.Queue[list[HostileTally]] = context.Queue()
    child = context.Process(target=hostiles_in_process, args=(url, hostiles, kinds, HOSTILE_LEAD_S + seconds, tallies))
    child.start()
    try:
        time.sleep(HOSTILE_LEAD_S)
        result = asyncio.run(load(url, payloads, concurrency, requests, seconds))
        return result, tallies.get(timeout=REQUEST_TIMEOUT_S + 30)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.terminate()
            child.join(timeout=10)


def hostiles_in_process(
    url: str, per_kind: int, kinds: tuple[str, ...], seconds: float, out: multiprocessing.queues.Queue
) -> None:
    """A child process's body: hold the hostile connections for `seconds`, then report their tallies."""
    out.put(asyncio.run(hold_hostiles(url, per_kind, kinds, seconds)))


async def hold_hostiles(url: str, per_kind: int, kinds: tuple[str, ...], seconds: float) -> list[HostileTally]:
    """`per_kind` connections of each hostile kind, each reopened when the server ends it, for
    `seconds`; then the stop, with at most one request timeout for the last answers."""
    host, port = hostport(url)
    stop = asyncio.Event()
    tallies = [HostileTally(kind, per_kind) for kind in kinds]
    tasks = [asyncio.create_task(hostile_client(host, port, tally, stop)) for tally in tallies for _ in range(per_kind)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    for task in tasks:
        task.cancel()
    return tallies


def hostport(url: str) -> tuple[str, int]:
    """Host and port of an http://host:port/... URL."""
    authority = url.split("//", 1)[1].split("/", 1)[0]
    host, port = authority.rsplit(":", 1)
    return host, int(port)


async def hostile_client(host: str, port: int, tally: HostileTally, stop: asyncio.Event) -> None:
    """Open a connection, misbehave on it in the tally's way until the server ends it (or `stop`),
    note how it ended, and open another; never more than one connection at a time."""
    behave = {"slowloris": trickle_body, "huge-header": send_huge_header, "many-parts": send_many_parts}[tally.kind]
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            tally.opened += 1
            ending = await behave(reader, writer, host, stop)
        except OSError as err:
            ending = type(err).__name__
        finally:
            if writer is not None:
                writer.close()
        tally.endings[ending] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HOSTILE_PAUSE_S)


async def trickle_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, stop: asyncio.Event
) -> str:
    """Slowloris: complete headers for a 1 MB multipart upload, then one body byte a second."""
    writer.write(
        f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: 1000000\r\n\r\n--{BOUNDARY}\r\n".encode()
    )
    await writer.drain()
    while not stop.is_set():
        try:
            line = await asyncio.wait_for(reader.readline(), TRICKLE_EVERY_S)
        except TimeoutError:
            writer.write(b"x")
            await writer.drain()
            continue
        return status_of(line)
    return "held to the end"


async def send_huge_header(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, stop: asyncio.Event
) -> str:
    """A request whose header block is 64 KiB, four times h11's limit on a header block still
    arriving. Sent in one write, it arrives whole on loopback, and whether it is refused shows."""
    padding = "".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(64))
    writer.write(f"GET /info HTTP/1.1\r\nHost: {host}\r\n{padding}\r\n".encode())
    await writer.drain()
    return await answer_of(reader, stop)


MANY_PARTS = multipart_payload("images", [b"x"] * 5000)


async def send_many_parts(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, stop: asyncio.Event
) -> str:
    """A batch upload of 5,000 one-byte parts: five times Starlette's part limit."""
    writer.write(
        f"POST /classify_batch HTTP/1.1\r\nHost: {host}\r\nContent-Type: {MANY_PARTS.content_type}\r\n"
        f"Content-Length: {len(MANY_PARTS.body)}\r\n\r\n".encode()
        + MANY_PARTS.body
    )
    await writer.drain()
    return await answer_of(reader, stop)


async def answer_of(reader: asyncio.StreamReader, stop: asyncio.Event) -> str:
    """The status the server answered, or how the wait for it ended."""
    try:
        line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
    except TimeoutError:
        return "no answer in 30 s"
    return status_of(line)


def status_of(line: bytes) -> str:
    """`HTTP/1.1 400 Bad Request` -> "400"; an empty read -> the server closed without answering."""
    words = line.split()
    return words[1].decode() if len(words) > 1 else "closed without an answer"


def tree_rss_bytes(root: int) -> int:
    """Resident memory summed over a process and all its descendants, from /proc. Followed by parent
    PIDs, not by process group: BentoML's arbiter starts each worker in a session of its own."""
    page = os.sysconf("SC_PAGE_SIZE")
    parents: dict[int, int] = {}
    pages: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "(comm) ": state, ppid
            pages[int(entry.name)] = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was read
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(pages.get(pid, 0) for pid in tree) * page


async def soak(
    url: str, payloads: list[Payload], concurrency: int, seconds: float, warmup_s: float, root: int, every_s: float = 10
) -> SoakResult:
    """A warm-up, then `seconds` of load; the server's memory after the warm-up, every `every_s`
    while the load runs, and at the end. The count bound is far above what the server can serve."""
    cap = int((seconds + warmup_s) * 10_000)
    warm = await load(url, payloads, concurrency, cap, warmup_s)
    after_warmup = tree_rss_bytes(root)
    samples: list[tuple[float, float]] = []
    began = time.monotonic()

    async def sample() -> None:
        while True:
            await asyncio.sleep(every_s)
            samples.append((round(time.monotonic() - began, 1), tree_rss_bytes(root) / 2**20))

    sampler = asyncio.create_task(sample())
    try:
        result = await load(url, payloads, concurrency, cap, seconds)
    finally:
        sampler.cancel()
    at_end = tree_rss_bytes(root)
    return SoakResult(
        warmup=warm,
        load=result,
        rss_after_warmup_mb=after_warmup / 2**20,
        rss_at_end_mb=at_end / 2**20,
        rss_growth=(at_end - after_warmup) / after_warmup if after_warmup else float("nan"),
        rss_samples_mb=samples,
    )
