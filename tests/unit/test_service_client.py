"""`fetch_drift` tells a caller's mistake from a service's fault: a loopback HTTP server that
answers each way a broken or foreign service can, and a URL that cannot be a service's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cnnops.errors import CnnopsError, ServiceFault
from cnnops.service_client import fetch_drift, service_base

ANSWERS = {
    "/missing/drift": (404, b'{"error": "not found"}'),
    "/locked/drift": (403, b"forbidden"),
    "/broken/drift": (500, b"internal error"),
    "/foreign/drift": (200, b'{"status": "ok"}'),
    "/garbage/drift": (200, b"<html>a proxy's page</html>"),
}


class Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        status, body = ANSWERS.get(self.path, (404, b""))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "path, fault, said",
    [
        ("/missing", CnnopsError, "has no /drift"),
        ("/locked", CnnopsError, "refused the request with HTTP 403"),
        ("/broken", ServiceFault, "failed with HTTP 500"),
        ("/foreign", ServiceFault, "not a drift verdict"),
        ("/garbage", ServiceFault, "not a drift verdict"),
    ],
)
def test_each_wrong_answer_is_named_as_the_callers_or_the_services(url, path, fault, said) -> None:
    with pytest.raises(fault, match=said) as raised:
        fetch_drift(url + path + "/", timeout=5)
    assert isinstance(raised.value, ServiceFault) == (fault is ServiceFault)


def test_no_answer_is_the_services_fault() -> None:
    with pytest.raises(ServiceFault, match="did not answer"):
        fetch_drift("http://127.0.0.1:9", timeout=5)


@pytest.mark.parametrize("url", ["myhost/drift", "ftp://host/x", "http://", "http://host:port", ""])
def test_a_url_that_cannot_be_a_services_is_the_callers(url: str) -> None:
    with pytest.raises(CnnopsError, match="is not a service URL"):
        service_base(url)


def test_a_trailing_slash_is_dropped() -> None:
    assert service_base(" http://127.0.0.1:3000/ ") == "http://127.0.0.1:3000"
