"""A small client of the cnnops HTTP service, on the standard library alone: wait for a started
server to be ready, and upload one image the way the web page does (multipart field `image`)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status and body (bytes, whatever the status)."""

    status: int
    body: bytes


def wait_until_ready(url: str, proc: subprocess.Popen, seconds: float) -> str | None:
    """Poll `url`/readyz until it answers 200; None once it does, else why it never did (the
    process exited, or `seconds` passed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the server exited with status {proc.returncode} before it was ready"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return None
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return f"the server was not ready within {seconds:g} s"


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
