"""`TrafficTimeout`, the service's 504, driven with ASGI messages on a real asyncio loop: a request
leaves nothing alive behind it (BentoML's own middleware, side by side, keeps every request's
context for the whole timeout), a slow app is cut off with a 504, and a failing one fails at once."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib.util
import json
import time
import weakref
from typing import Any

import pytest

from cnnops.serving.limits import TrafficTimeout, use_traffic_timeout

REQUESTS = 500
# A tracing middleware outside the timeout keeps its span in a context variable, as OpenTelemetry does.
SPAN: contextvars.ContextVar[object] = contextvars.ContextVar("span")


class Span:
    """Stands for one request's tracing span: something only the request should keep alive. Each
    one is counted in `CREATED`, without being kept alive by it."""

    def __init__(self) -> None:
        CREATED.append(weakref.ref(self))


CREATED: list[weakref.ref[Span]] = []


async def answer(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def serve(middleware: Any, app: Any = answer) -> list[dict]:
    """One request through `middleware`, inside its own span; the messages the client got."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def traced() -> None:
        SPAN.set(Span())
        await middleware(app)({"type": "http", "path": "/classify", "headers": []}, receive, send)

    await asyncio.get_running_loop().create_task(traced())  # a task: its own copy of the context
    return sent


def spans_alive_after_requests(middleware: Any) -> int:
    """How many of `REQUESTS` answered requests' spans are still alive, with the loop still running
    (the 60 s timeout far from due)."""

    async def run() -> int:
        CREATED.clear()
        for _ in range(REQUESTS):
            assert (await serve(middleware))[0]["status"] == 200
        gc.collect()
        return sum(ref() is not None for ref in CREATED)

    return asyncio.run(run())


def bentoml_timeout_middleware() -> type:
    """BentoML's own TimeoutMiddleware, from a private copy of its module: importing the service
    (any earlier test in this process may have) puts `TrafficTimeout` in the shared module's place."""
    spec = importlib.util.find_spec("bentoml._internal.server.http.traffic")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TimeoutMiddleware is not TrafficTimeout
    return module.TimeoutMiddleware


def test_an_answered_request_leaves_no_timer_holding_its_context():
    TimeoutMiddleware = bentoml_timeout_middleware()  # noqa: N806 (a class)

    ours = spans_alive_after_requests(lambda app: TrafficTimeout(app, timeout=60))
    bentomls = spans_alive_after_requests(lambda app: TimeoutMiddleware(app, timeout=60))
    # asyncio purges cancelled timers once they are over half of a heap of more than 100
    assert ours <= 101
    assert bentomls == REQUESTS  # every request's context, held until its timer fires a minute later


def test_an_app_that_has_not_answered_in_time_is_cancelled_with_a_504():
    cancelled = []

    async def stuck(scope: dict, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    began = time.monotonic()
    sent = asyncio.run(serve(lambda app: TrafficTimeout(app, timeout=0.2), stuck))
    assert time.monotonic() - began < 5
    assert sent[0]["status"] == 504 and cancelled == [True]
    assert json.loads(sent[1]["body"]) == {"error": "no answer could start within 0.2 s"}


def test_an_app_that_started_answering_is_not_cut_off():
    async def slow_body(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.4)  # past the timeout, which only bounds the start of the answer
        await send({"type": "http.response.body", "body": b"late"})

    sent = asyncio.run(serve(lambda app: TrafficTimeout(app, timeout=0.2), slow_body))
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"late"


def test_an_app_that_fails_before_answering_fails_at_once():
    async def broken(scope: dict, receive: Any, send: Any) -> None:
        raise RuntimeError("the app's own fault")

    began = time.monotonic()
    with pytest.raises(RuntimeError, match="the app's own fault"):
        asyncio.run(serve(lambda app: TrafficTimeout(app, timeout=30), broken))
    assert time.monotonic() - began < 5  # not held until the timeout


def test_bentoml_builds_the_service_s_timeout_from_it():
    from _bentoml_impl.server.app import ServiceAppFactory

    from cnnops.serving.service import SERVICE, TRAFFIC_TIMEOUT_S

    use_traffic_timeout()
    SERVICE.inject_config()
    built = [m for m in ServiceAppFactory(SERVICE, is_main=True).middlewares if m.cls is TrafficTimeout]
    assert len(built) == 1 and built[0].kwargs == {"timeout": TRAFFIC_TIMEOUT_S}
