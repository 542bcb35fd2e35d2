"""`serving.limits` on its own: the multipart checks, and `RequestGuard` in front of a small echo
app, driven with ASGI messages (a slow client is a receive channel that sleeps)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from cnnops.serving.limits import (
    MAX_HEAD_BYTES,
    MAX_PARTS,
    MAX_TEXT_PART_BYTES,
    RequestGuard,
    RouteRules,
    check_multipart,
    matches,
)

RULES = RouteRules(("multipart/form-data", "image/*"), {"images": 3}, frozenset({"top_k"}))
MULTIPART = b"multipart/form-data; boundary=b"


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body of (name, filename, data) parts, boundary `b`."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + b"--b--\r\n"


def test_media_types_match_exactly_or_by_a_wildcard_subtype():
    assert matches("image/png", "image/*") and matches("application/json", "application/json")
    assert not matches("image/", "image/*") and not matches("text/plain", "image/*")
    assert not matches("application/json5", "application/json")
    assert RULES.accepts("multipart/form-data") and not RULES.accepts("")


def test_a_well_formed_body_passes_unchanged():
    body = form(("images", "a.png", b"x"), ("images", "b.png", b"y"), ("top_k", None, b"2"))
    checked = check_multipart(MULTIPART, body, RULES)
    assert checked.problem is None and checked.body is body


def test_a_file_part_without_a_filename_is_given_one():
    checked = check_multipart(MULTIPART, form(("images", None, b"x"), ("top_k", None, b"2")), RULES)
    assert checked.problem is None
    assert checked.body == form(("images", "images", b"x"), ("top_k", None, b"2"))


@pytest.mark.parametrize(
    "body, words",
    [
        (form(("picture", "a.png", b"x")), "unknown multipart field 'picture'"),
        (b"--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n", "no field name"),
        (form(*[("images", "a.png", b"x")] * 4), "images: more than 3 images"),
        (form(("top_k", None, b"1"), ("top_k", None, b"2")), "top_k: the field is sent more than once"),
        (form(("top_k", None, b"1" * (MAX_TEXT_PART_BYTES + 1))), f"over {MAX_TEXT_PART_BYTES} bytes"),
        (b"--b\r\nnot really multipart", "malformed multipart body"),
        (b'--b\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n3', "before its closing boundary"),
    ],
)
def test_a_bad_multipart_body_is_refused_with_its_reason(body, words):
    problem = check_multipart(MULTIPART, body, RULES).problem
    assert problem is not None and words in problem


def test_parts_are_counted_across_fields_and_refused_past_the_cap():
    rules = RouteRules(("multipart/form-data",), {"images": MAX_PARTS + 10}, frozenset())
    problem = check_multipart(MULTIPART, form(*[("images", "a.png", b"x")] * (MAX_PARTS + 1)), rules).problem
    assert problem == f"multipart body has more than {MAX_PARTS} parts"
    assert check_multipart(b"multipart/form-data", form(), RULES).problem == (
        "multipart body has no boundary in its Content-Type"
    )


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """The app behind the guard: answers 200 with the body it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(
    headers: dict[str, str], chunks: list[bytes], path: str = "/classify", pause_s: float = 0.0, **guard: Any
) -> tuple[int, bytes, dict[bytes, bytes]]:
    """One request through a RequestGuard (limit 100 bytes) and `echo`: status, body, headers."""
    app = RequestGuard(echo, limit=lambda: 100, routes=lambda: {"/classify": RULES}, **guard)
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    pending = list(chunks)
    sent: list[dict] = []

    async def receive() -> dict:
        await anyio.sleep(pause_s)
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), dict(sent[0].get("headers", []))


def test_a_body_within_the_rules_reaches_the_app_whole():
    status, body, _ = call({"content-type": "image/png", "content-length": "6"}, [b"abc", b"def"])
    assert (status, body) == (200, b"abcdef")


def test_a_declared_or_streamed_body_over_the_limit_is_413_and_closes():
    status, body, headers = call({"content-type": "image/png", "content-length": "101"}, [])
    assert status == 413 and headers[b"connection"] == b"close"
    assert json.loads(body)["error"] == "request body of 101 bytes is over the limit of 100 bytes"
    status, _, _ = call({"content-type": "image/png", "transfer-encoding": "chunked"}, [b"x" * 60, b"x" * 60])
    assert status == 413


def test_a_content_type_the_route_does_not_take_is_415():
    status, body, _ = call({"content-type": "text/plain", "content-length": "1"}, [b"x"])
    assert status == 415 and "takes multipart/form-data, image/*" in json.loads(body)["error"]
    assert call({"content-length": "1"}, [b"x"])[0] == 415
    assert call({"content-type": "text/plain", "content-length": "1"}, [b"x"], path="/elsewhere")[0] == 200


def test_a_request_head_over_the_cap_is_431():
    status, body, _ = call({"content-type": "image/png", "x-filler": "a" * MAX_HEAD_BYTES}, [])
    assert status == 431 and "over 16384 bytes" in json.loads(body)["error"]


def test_a_body_slower_than_the_timeout_is_408():
    headers = {"content-type": "image/png", "content-length": "3"}
    status, body, headers_out = call(headers, [b"a", b"b", b"c"], pause_s=0.2, body_timeout_s=0.3)
    assert status == 408 and headers_out[b"connection"] == b"close"
    assert json.loads(body)["error"] == "request body did not arrive within 0.3 s"


def test_a_malformed_multipart_body_is_400_before_the_app_sees_it():
    status, body, _ = call({"content-type": "multipart/form-data; boundary=b", "content-length": "7"}, [b"--b\r\nno"])
    assert status == 400 and "malformed multipart body" in json.loads(body)["error"]
    assert call({"content-type": "multipart/form-data", "content-length": "0"}, [])[0] == 400
    assert call({"content-length": "nope", "content-type": "image/png"}, [])[0] == 400
