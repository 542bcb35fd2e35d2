"""Refuse what BentoML would parse badly, before it parses it: bodies over the size limit (413)
and malformed multipart bodies (400), each with a JSON error.

BentoML 1.4.40 answers a multipart body with no boundary, a broken part header, or an unexpected
file field with a 500; checking the structure here first turns each into the client's 400.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestGuard:
    """ASGI middleware. A declared Content-Length over the limit is refused at once; a body sent
    without one (chunked) is read up to the limit and refused as soon as it passes it. Multipart
    bodies for the routes in `multipart_fields` are read whole (within the limit) and checked for
    structure and field names, then handed on unchanged."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int], multipart_fields: Mapping[str, set[str]]) -> None:
        self.app = app
        self.limit = limit()
        self.multipart_fields = multipart_fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await refuse(send, 400, "Content-Length is not a number")
            return
        if declared is not None and int(declared) > self.limit:
            await refuse(send, 413, f"request body of {int(declared)} bytes is over the limit of {self.limit} bytes")
            return
        content_type = headers.get(b"content-type", b"")
        fields = self.multipart_fields.get(scope["path"])
        checked = fields is not None and content_type.lower().startswith(b"multipart/")
        if declared is not None and not checked:
            await self.app(scope, receive, send)
            return
        body = await self.read_within_limit(receive)
        if body is None:
            await refuse(send, 413, f"request body is over the limit of {self.limit} bytes")
            return
        problem = check_multipart(content_type, body, fields) if checked and fields is not None else None
        if problem is not None:
            await refuse(send, 400, problem)
            return
        await self.app(scope, replay(body, receive), send)

    async def read_within_limit(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (the rest is never read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def check_multipart(content_type: bytes, body: bytes, allowed: set[str]) -> str | None:
    """Why a multipart body cannot be used, or None: a boundary, well-formed parts, known names."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return "multipart body has no boundary in its Content-Type"
    names: list[str] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            _, options = parse_options_header(header["value"])
            names.append(options.get(b"name", b"").decode("utf-8", "replace"))
        header["field"] = header["value"] = b""

    parser = MultipartParser(
        boundary,
        {"on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end},
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as err:
        return f"malformed multipart body: {err}"
    unknown = sorted(set(names) - allowed)
    if unknown:
        return f"unknown multipart field {unknown[0]!r}; this endpoint takes {', '.join(sorted(allowed))}"
    return None


async def refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the app the already-read body, then the real channel."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
