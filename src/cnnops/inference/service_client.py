"""A small client of the cnnops HTTP service, on the standard library alone: wait for a started
server to be ready, upload one image the way the web page does (multipart field `image`), and
ask a running service for its drift verdict."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cnnops.core.errors import CnnopsError, ServiceFault, first_problem

if TYPE_CHECKING:
    from cnnops.contracts.drift import ServedDrift
    from cnnops.contracts.served import ServiceInfo


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status and body (bytes, whatever the status)."""

    status: int
    body: bytes


def is_ready(url: str) -> bool:
    """Whether the service at `url` answers its readiness probe (`/readyz`) with 200."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def fetch_info(url: str, timeout: float = 10) -> ServiceInfo | None:
    """`url`/info as the service describes itself, or None when it does not answer with one."""
    from pydantic import ValidationError

    from cnnops.contracts.served import ServiceInfo

    try:
        with urllib.request.urlopen(f"{url}/info", timeout=timeout) as response:
            return ServiceInfo.model_validate_json(response.read())
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValidationError):
        return None


def post_image(
    url: str, data: bytes, filename: str, content_type: str, top_k: int | None = None, timeout: float = 30
) -> Answer:
    """POST one image to `url`/classify as multipart, with `top_k` as a form field when given."""
    boundary = f"cnnops-{uuid.uuid4().hex}"
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    ]
    if top_k is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n{top_k}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url}/classify",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.read())


def fetch_drift(url: str, timeout: float = 30) -> ServedDrift:
    """`url`/drift, as the service judged its window. A URL that cannot be a service's, or a
    service that refuses this client (no /drift, 401, 403), is the caller's to fix; a service
    that does not answer, fails (5xx) or answers something else is a fault of the service."""
    from pydantic import ValidationError

    from cnnops.contracts.drift import ServedDrift

    base = service_base(url)
    try:
        with urllib.request.urlopen(f"{base}/drift", timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise ServiceFault(f"{base}/drift failed with HTTP {err.code}; see the service's log.") from None
        if err.code == 404:
            raise CnnopsError(f"{base} has no /drift: is it a cnnops service, and of this version?") from None
        raise CnnopsError(f"{base}/drift refused the request with HTTP {err.code} {err.reason}.") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ServiceFault(f"{base} did not answer ({reason}); is the service running?") from None
    except http.client.HTTPException as err:  # not HTTP on that port, or an answer cut short
        raise ServiceFault(f"{base} did not answer as an HTTP service ({type(err).__name__}).") from None
    try:
        return ServedDrift.model_validate_json(body)
    except ValidationError as err:
        raise ServiceFault(
            f"{base}/drift answered with something that is not this cnnops's drift verdict "
            f"({first_problem(err, 'the answer')}; a service of another cnnops version?)."
        ) from None


def service_base(url: str) -> str:
    """`url` without a trailing slash (or `/drift`), once it is an http(s) URL with a host. A
    path is kept: a service may sit under a prefix behind a proxy."""
    if any(c.isspace() or not c.isprintable() for c in url.strip()):
        raise CnnopsError(f"{url!r} is not a service URL: it holds spaces or control characters.")
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CnnopsError(f"{url!r} is not a service URL; give one like http://127.0.0.1:3000.")
    base = url.strip().rstrip("/")
    return base.removesuffix("/drift") if parts.path.rstrip("/").endswith("/drift") else base
