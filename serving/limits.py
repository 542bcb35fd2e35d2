"""Refuse what BentoML would parse badly or wait on forever, before it sees it, each with a JSON
error: request heads over 16 KiB (431), bodies over the size limit (413), bodies that do not arrive
in time (408), a content type a route does not take (415), and malformed or outsized multipart
bodies (400).

What the stack below already bounds, and so is not repeated here: h11 (through uvicorn) answers an
incomplete request head over 16 KiB with a 400 and closes the connection (a complete one passes,
hence the 431 here); uvicorn closes an idle keep-alive connection 5 s after a response.

BentoML's traffic timeout (504 when no response has started in time) is `TrafficTimeout` here:
BentoML 1.4.40's own never cancels its timer, so each request's timer, holding the request's
context and tracing span, outlived it by the whole timeout. At 400 requests a second that kept
about 24,000 of them alive, and every full garbage collection walked them all while every request
in flight waited (pauses of 250-500 ms, the long-run latency tail).

What BentoML 1.4.40 gets wrong, and this module checks first: a multipart body with no boundary, a
broken part, an unknown field, more parts than Starlette's 1000, or a plain field over Starlette's
1 MiB each end in a 500; a file field's part without a filename is fetched as a URL (this module
gives such a part a filename, so it is read as the file it is).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A whole request body must arrive within this many seconds of its headers: a client trickling a
# few bytes a second is answered 408 and cut off, instead of holding a request open.
BODY_TIMEOUT_S = 30.0
# Starlette's form parser refuses more files or fields than this with an exception BentoML turns
# into a 500, so no route may take more parts than this.
MAX_PARTS = 1000
# h11 refuses a request head over 16 KiB only while it is still incomplete: one that arrives whole
# in a single read passes at any size up to the read's. Past this, a request is answered 431.
MAX_HEAD_BYTES = 16 * 1024
# A multipart field that is not a file (`top_k`) is a short value; Starlette's own cap is 1 MiB.
MAX_TEXT_PART_BYTES = 1024


@dataclass(frozen=True)
class RouteRules:
    """What one POST route takes: its media types (`image/*` matches any image type) and, for
    multipart bodies, its file fields with the most parts each, and its plain fields (at most one
    part each)."""

    media_types: tuple[str, ...]
    file_fields: Mapping[str, int] = field(default_factory=dict)
    text_fields: frozenset[str] = frozenset()

    def accepts(self, media_type: str) -> bool:
        return any(matches(media_type, accepted) for accepted in self.media_types)


class MultipartRefused(Exception):
    """Why a multipart body is refused; raised from inside the parser to stop at the first problem."""


class RequestGuard:
    """ASGI middleware. A declared Content-Length over the limit is refused at once. Any body is then
    read whole, within the size limit and `body_timeout_s`, before the app sees it (a chunked body is
    refused as soon as it passes the limit), so nothing behind it ever waits on a slow client. A
    POST to a route in `routes` must have a media type the route takes, and a multipart body must
    parse with known fields, file fields as files, and bounded part counts and sizes."""

    def __init__(
        self,
        app: ASGIApp,
        limit: Callable[[], int],
        routes: Callable[[], Mapping[str, RouteRules]],
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.limit = limit()
        self.routes = routes()
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > MAX_HEAD_BYTES:
            await refuse(send, 431, f"request line and headers of {head} bytes are over {MAX_HEAD_BYTES} bytes")
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await refuse(send, 400, "Content-Length is not a number")
            return
        if declared is not None and int(declared) > self.limit:
            await refuse(send, 413, f"request body of {int(declared)} bytes is over the limit of {self.limit} bytes")
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        media_type = content_type.split(";")[0].strip().lower()
        rules = self.routes.get(scope["path"]) if scope["method"] == "POST" else None
        if rules is not None and not rules.accepts(media_type):
            sent = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
            await refuse(send, 415, f"{sent}: {scope['path']} takes {', '.join(rules.media_types)}")
            return
        if rules is None and declared in (None, b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # nothing to check and no body to read
            return
        try:
            with anyio.fail_after(self.body_timeout_s):
                body = await self.read_within_limit(receive)
        except TimeoutError:
            await refuse(send, 408, f"request body did not arrive within {self.body_timeout_s:g} s")
            return
        if body is None:
            await refuse(send, 413, f"request body is over the limit of {self.limit} bytes")
            return
        if rules is not None and media_type == "multipart/form-data":
            checked = check_multipart(content_type.encode("latin-1"), body, rules)
            if checked.problem is not None:
                await refuse(send, 400, checked.problem)
                return
            if checked.body is not body:
                scope = with_length(scope, len(checked.body))
            body = checked.body
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


def matches(media_type: str, accepted: str) -> bool:
    """Whether a request's media type is one a route takes; `image/*` takes every `image/...`."""
    if accepted.endswith("/*"):
        return media_type.startswith(accepted[:-1]) and len(media_type) > len(accepted) - 1
    return media_type == accepted


@dataclass(frozen=True)
class MultipartCheck:
    """A multipart body's verdict: why it is refused, or the body to hand on."""

    problem: str | None
    body: bytes


def check_multipart(content_type: bytes, body: bytes, rules: RouteRules) -> MultipartCheck:
    """Whether a multipart body can be used: a boundary, well-formed parts up to the closing
    boundary, known names, at most the allowed parts of each, short plain fields. A part of a file
    field sent without a filename (an image with only its Content-Type, say) is given one, so that
    BentoML reads it as the file it is and never as a URL to fetch."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return MultipartCheck("multipart body has no boundary in its Content-Type", body)
    allowed = sorted({*rules.file_fields, *rules.text_fields})
    counts: dict[str, int] = {}
    unnamed_files: list[tuple[int, str]] = []  # where a file part's Content-Disposition ends, its name
    part: dict[str, Any] = {"field": b"", "value": b"", "disposition": b"", "name": "", "size": 0}

    def on_part_begin() -> None:
        part.update(field=b"", value=b"", disposition=b"", end=0, disposition_end=0, name="", size=0)
        if sum(counts.values()) >= MAX_PARTS:
            raise MultipartRefused(f"multipart body has more than {MAX_PARTS} parts")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]
        part["end"] = end  # offsets into `body`: it is written to the parser in one piece

    def on_header_end() -> None:
        if part["field"].lower() == b"content-disposition":
            part["disposition"], part["disposition_end"] = part["value"], part["end"]
        part["field"] = part["value"] = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(part["disposition"])
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in allowed:
            shown = f"unknown multipart field {name!r}" if name else "a multipart part has no field name"
            raise MultipartRefused(f"{shown}; this endpoint takes {', '.join(allowed)}")
        counts[name] = counts.get(name, 0) + 1
        if name in rules.file_fields:
            most = rules.file_fields[name]
            if counts[name] > most:
                raise MultipartRefused(f"{name}: more than {most} {'image' if most == 1 else 'images'} in one request")
            if b"filename" not in options:
                unnamed_files.append((part["disposition_end"], name))
        elif counts[name] > 1:
            raise MultipartRefused(f"{name}: the field is sent more than once")
        part["name"] = name

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["name"] in rules.text_fields:
            part["size"] += end - start
            if part["size"] > MAX_TEXT_PART_BYTES:
                raise MultipartRefused(f"{part['name']}: the field is over {MAX_TEXT_PART_BYTES} bytes")

    def on_end() -> None:
        part["ended"] = True

    callbacks = {
        "on_end": on_end,
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartRefused as refused:
        return MultipartCheck(str(refused), body)
    except MultipartParseError as err:
        return MultipartCheck(f"malformed multipart body: {err}", body)
    if not part.get("ended"):
        return MultipartCheck("malformed multipart body: it ends before its closing boundary", body)
    return MultipartCheck(None, with_filenames(body, unnamed_files))


def with_filenames(body: bytes, unnamed: list[tuple[int, str]]) -> bytes:
    """`body` with `; filename="NAME"` added at the end of each listed Content-Disposition."""
    if not unnamed:
        return body
    pieces, last = [], 0
    for end, name in unnamed:
        pieces += [body[last:end], f'; filename="{name}"'.encode()]
        last = end
    return b"".join([*pieces, body[last:]])


async def refuse(send: Send, status: int, message: str) -> None:
    """A JSON error that also closes the connection, so a client still sending gets nowhere."""
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


def with_length(scope: Scope, length: int) -> Scope:
    """The scope of a request whose body was rewritten to `length` bytes (sent without chunks)."""
    kept = [(key, value) for key, value in scope["headers"] if key not in (b"content-length", b"transfer-encoding")]
    return {**scope, "headers": [*kept, (b"content-length", str(length).encode())]}


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


class TrafficTimeout:
    """ASGI middleware: a 504 when the app has not started its response within `timeout` seconds,
    the app then cancelled; the timer cancelled as soon as the response starts or the app ends,
    so no request leaves anything behind it. An app that fails before answering fails at once."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        begun: asyncio.Future[None] = loop.create_future()

        async def send_begun(message: Message) -> None:
            settle(begun, None)
            await send(message)

        handling = asyncio.ensure_future(self.app(scope, receive, send_begun))
        handling.add_done_callback(lambda _: settle(begun, None))
        timer = loop.call_later(self.timeout, settle, begun, TimeoutError())
        try:
            await begun
        except TimeoutError:
            if handling.cancel():
                await refuse(send, 504, f"no answer could start within {self.timeout:g} s")
            return
        except asyncio.CancelledError:  # the server is stopping or the client went: so does the app
            handling.cancel()
            raise
        finally:
            timer.cancel()
        await handling


def settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    """Resolve `future` with `outcome` (an exception to raise, or None) unless it already is."""
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def use_traffic_timeout() -> None:
    """Have BentoML build its traffic-timeout middleware from `TrafficTimeout`: it looks the class
    up in its `traffic` module each time it builds a service's app, and no setting turns it off
    (`traffic.timeout` must be over 0)."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = TrafficTimeout  # type: ignore[misc,assignment]
