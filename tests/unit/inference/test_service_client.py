"""`fetch_drift` tells a caller's mistake from a service's fault: a loopback HTTP server that
answers each way a broken or foreign service can, and a URL that cannot be a service's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cnnops.core.errors import CnnopsError, ServiceFault
from cnnops.inference.service_client import fetch_drift, service_base

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
        ("/foreign", ServiceFault, "not this cnnops's drift verdict .registered_model: Field required"),
        ("/garbage", ServiceFault, "not this cnnops's drift verdict"),
    ],
)
def test_each_wrong_answer_is_named_as_the_callers_or_the_services(url, path, fault, said) -> None:
    with pytest.raises(fault, match=said) as raised:
        fetch_drift(url + path + "/", timeout=5)
    assert isinstance(raised.value, ServiceFault) == (fault is ServiceFault)


def test_no_answer_is_the_services_fault() -> None:
    with pytest.raises(ServiceFault, match="did not answer"):
        fetch_drift("http://127.0.0.1:9", timeout=5)


@pytest.mark.parametrize(
    "url", ["myhost/drift", "ftp://host/x", "http://", "http://host:port", "", "http://host/a b", "http://h\x00"]
)
def test_a_url_that_cannot_be_a_services_is_the_callers(url: str) -> None:
    with pytest.raises(CnnopsError, match="is not a service URL") as raised:
        service_base(url)
    assert not isinstance(raised.value, ServiceFault)


def test_a_trailing_slash_or_drift_is_dropped_and_a_prefix_kept() -> None:
    assert service_base(" http://127.0.0.1:3000/ ") == "http://127.0.0.1:3000"
    assert service_base("http://127.0.0.1:3000/drift") == "http://127.0.0.1:3000"
    assert service_base("https://ml.example/classifier/") == "https://ml.example/classifier"


def test_a_port_that_does_not_speak_http_is_the_services_fault() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def banner() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=banner, daemon=True)
        thread.start()
        with pytest.raises(ServiceFault, match="did not answer as an HTTP service"):
            fetch_drift(f"http://127.0.0.1:{port}", timeout=5)
        thread.join(5)
