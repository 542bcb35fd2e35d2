"""Clients that try to hold the real server (`cnnops serve`) get a limit answer or a closed
connection within a bound, over raw sockets: a body trickled in a few bytes a second (408 once
`serving.limits.BODY_TIMEOUT_S` has passed), 10,000 tiny multipart parts inside the byte limit
(400 at the first part over the route's count), and a request head over 16 KiB (431 from
`RequestGuard`, or 400 from h11 when the head is still incomplete at that size).
Each test is bounded in time and in what it sends, and the server must still classify afterwards.
No timing goals here: how other clients fare under attack is bench's to measure."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from urllib.parse import urlsplit

import pytest

from cnnops.serving.limits import BODY_TIMEOUT_S

pytestmark = pytest.mark.server

# How long past its own bound the server may take to answer, on a loaded 2-core machine.
SLACK_S = 15.0


def connect(url: str, timeout: float) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_answer(sock: socket.socket, deadline: float) -> tuple[int | None, dict, bool]:
    """The status, JSON body (or {}) and whether the server then closed the connection, reading
    until it closes or `deadline` (monotonic) passes."""
    data = b""
    closed = False
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        payload = {}
    return status, payload, closed


def still_serves(server: dict, png: bytes) -> int:
    import httpx

    with httpx.Client(base_url=server["url"], timeout=30) as client:
        return client.post("/classify", content=png, headers={"content-type": "image/png"}).status_code


@pytest.fixture(scope="module")
def png(server) -> bytes:
    return next((server["source"] / "disc").glob("*.png")).read_bytes()


def test_a_body_trickled_a_byte_a_second_is_cut_off_with_408(server, png):
    started = time.monotonic()
    deadline = started + BODY_TIMEOUT_S + SLACK_S
    with connect(server["url"], timeout=5) as sock:
        head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        sock.sendall(head)
        for _ in range(int(BODY_TIMEOUT_S + SLACK_S)):  # a byte a second, until the server answers
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                break
            sock.sendall(b"x")
        status, payload, closed = read_answer(sock, deadline)
    elapsed = time.monotonic() - started
    assert status == 408, (status, payload, elapsed)
    assert "did not arrive" in payload["error"] and closed
    assert BODY_TIMEOUT_S - 1 <= elapsed <= BODY_TIMEOUT_S + SLACK_S
    assert still_serves(server, png) == 200


def test_ten_thousand_tiny_parts_are_refused_at_the_first_part_over_the_count(server, png):
    boundary = "b0undary"
    for path, field in (("/classify_batch", "images"), ("/classify", "image"), ("/classify", "top_k")):
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n\r\nx\r\n'
        body = (part * 10_000 + f"--{boundary}--\r\n").encode()
        assert len(body) < 10 * 1024 * 1024  # inside the byte limit: only the count can refuse it
        started = time.monotonic()
        with connect(server["url"], timeout=30) as sock:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            ).encode()
            sock.sendall(head + body)
            status, payload, _ = read_answer(sock, time.monotonic() + SLACK_S)
        assert status == 400, (path, field, status, payload)
        assert field in payload["error"] and ("more than" in payload["error"]), payload
        assert time.monotonic() - started < SLACK_S
    assert still_serves(server, png) == 200


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Filler", "a" * 64 * 1024)],  # one huge header
        [(f"X-Filler-{i}", "a" * 30) for i in range(2000)],  # many small ones
    ],
    ids=["one-huge-header", "two-thousand-headers"],
)
def test_a_request_head_over_16_kib_is_refused_and_the_connection_closed(server, png, headers):
    started = time.monotonic()
    with connect(server["url"], timeout=10) as sock:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        with contextlib.suppress(OSError):  # closed while the rest was still being sent
            sock.sendall(f"GET /info HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        status, _, closed = read_answer(sock, time.monotonic() + SLACK_S)
    assert status in (400, 431) and closed, status
    assert time.monotonic() - started < SLACK_S
    assert still_serves(server, png) == 200
