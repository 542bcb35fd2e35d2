"""The service against its own OpenAPI document: schemathesis generates requests for every
operation in /docs.json, valid and invalid, sends them to the real `cnnops serve`, and runs all
its checks on each answer (no 5xx, every status, content type, header and body as documented,
schema-valid requests accepted, schema-invalid ones refused).

The generators learn from the test what no schema keyword can say: a part or body of an `image/*`
type is a real image of that type, and the `image-base64` format is such an image in base64, bare
or as a data URL. The seed is fixed, so a failure reproduces; each one is reported with its curl
command."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image

pytestmark = pytest.mark.server

SEED = 20261203
# Fuzzing cases per operation; the examples and coverage phases add their own on top.
MAX_EXAMPLES = 150
MIN_CASES = 500
RUN_TIMEOUT_S = 480
# Image formats the service decodes, by media type, with the Pillow modes each is drawn in.
FORMATS = {
    "image/png": ("PNG", ("RGB", "L", "RGBA", "P")),
    "image/jpeg": ("JPEG", ("RGB", "L")),
    "image/gif": ("GIF", ("P", "L")),
    "image/webp": ("WEBP", ("RGB", "RGBA")),
    "image/bmp": ("BMP", ("RGB", "L")),
}


def encode_image(fmt: str, mode: str, width: int, height: int, seed: int) -> bytes:
    """A small image of noise; the pixels come from the seed, so hypothesis draws four integers."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt)
    return out.getvalue()


def images(media_type: str) -> st.SearchStrategy[bytes]:
    fmt, modes = FORMATS[media_type]
    sides = st.integers(1, 48)
    return st.builds(encode_image, st.just(fmt), st.sampled_from(modes), sides, sides, st.integers(0, 2**32 - 1))


def base64_images() -> st.SearchStrategy[str]:
    """What a client may send as `image` to /classify_base64: bare base64, or a data URL."""

    def text(media_type: str, data: bytes, as_data_url: bool) -> str:
        encoded = base64.b64encode(data).decode()
        return f"data:{media_type};base64,{encoded}" if as_data_url else encoded

    return st.sampled_from(sorted(FORMATS)).flatmap(
        lambda media_type: st.builds(text, st.just(media_type), images(media_type), st.booleans())
    )


def filter_body(context, body) -> bool:
    """Leave out two multipart cases that schemathesis 4.32.5 misjudges. It cannot validate a
    multipart body that carries a file, so it takes its own mutation's word for whether the body is
    invalid: `top_k` made null (which the document allows: `nullable`) and `top_k` made a list of
    nothing to send (`[]`, `[None]`: no part goes out, so the request simply has no `top_k`) are
    both valid requests it would count as invalid ones accepted."""
    form = getattr(body, "body", body)  # a form with per-part media types wraps its fields
    if not (isinstance(form, dict) and "top_k" in form and ("image" in form or "images" in form)):
        return True
    top = form["top_k"]
    return not (top is None or (isinstance(top, list) and all(item is None for item in top)))


def register_generators() -> None:
    """Teach schemathesis what a valid image part, body or base64 text is."""
    for media_type in FORMATS:
        schemathesis.openapi.media_type(media_type, images(media_type))
    schemathesis.openapi.format("image-base64", base64_images())
    schemathesis.hook(filter_body)


def run_schemathesis(url: str, report: Path) -> subprocess.CompletedProcess:
    """`st run --checks all` against the server, in a child process that first registers the
    generators; the JSON run report goes to `report`."""
    here = str(Path(__file__).resolve().parent)
    program = (
        f"import sys; sys.path.insert(0, {here!r}); import test_contract; test_contract.register_generators(); "
        "from schemathesis.cli import schemathesis; schemathesis(sys.argv[1:])"
    )
    arguments = [
        *("run", f"{url}/docs.json", "--checks", "all", "--mode", "all", "--seed", str(SEED)),
        *("--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--generation-database", "none"),
        *("--request-timeout", "30", "--no-color", "--report", "json", "--report-json-path", str(report)),
    ]
    return subprocess.run(  # in the report's folder: schemathesis keeps a cache where it runs
        [sys.executable, "-c", program, *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=report.parent,
    )


def test_every_operation_keeps_its_documented_contract(server, tmp_path):
    info = json.loads(urlopen(f"{server['url']}/info", timeout=10).read())
    assert info["runtime"]["name"] == "onnx"  # the contract is held on the runtime a champion gets
    started = time.monotonic()
    done = run_schemathesis(server["url"], tmp_path / "run.json")
    seconds = time.monotonic() - started
    assert done.returncode == 0, (
        f"schemathesis found failures (seed {SEED}):\n{done.stdout[-20000:]}{done.stderr[-3000:]}"
    )
    cases = generated_cases(done.stdout)
    assert cases >= MIN_CASES, f"only {cases} cases generated in {seconds:.0f} s:\n{done.stdout[-3000:]}"
    tested = re.search(r"Tested: (\d+)", done.stdout)
    operations = len(json.loads(urlopen(f"{server['url']}/docs.json", timeout=10).read())["paths"])
    assert tested is not None and int(tested.group(1)) == operations, done.stdout[-3000:]
    print(f"schemathesis: {cases} cases over {operations} operations in {seconds:.0f} s, no failures")


def generated_cases(summary: str) -> int:
    found = re.search(r"(\d+) generated", summary)
    return int(found.group(1)) if found else 0


def photo_jpeg() -> bytes:
    """A real photo (scikit-image's cat, Chelsea) as a JPEG, as a phone would send it."""
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.chelsea()).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_raw_image_body_gets_what_the_same_image_uploaded_gets(server):
    import httpx

    photo = photo_jpeg()
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        raw = client.post("/classify?top_k=3", content=photo, headers={"content-type": "image/jpeg"})
        uploaded = client.post("/classify", files={"image": ("cat.jpg", photo, "image/jpeg")}, data={"top_k": "3"})
        default = client.post("/classify", content=photo, headers={"content-type": "image/jpeg"})
    assert raw.status_code == uploaded.status_code == 200, (raw.text, uploaded.text)
    assert raw.headers["content-type"] == "application/json"
    got, want = raw.json()["predictions"], uploaded.json()["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in want] and len(got) == 3
    assert [p["probability"] for p in got] == pytest.approx([p["probability"] for p in want], abs=1e-6)
    assert len(default.json()["predictions"]) == 3  # serve.top_k's default (5) capped at the 3 classes


@pytest.mark.parametrize(
    "case",
    ["empty body", "not an image", "text/plain", "no content type", "over the byte limit", "bad top_k"],
)
def test_a_bad_raw_body_is_a_4xx_json_error(server, case):
    import httpx

    photo = photo_jpeg()
    path, body, content_type, status, words = {
        "empty body": ("/classify", b"", "image/png", 400, "empty"),
        "not an image": ("/classify", b"%PDF-1.4 not an image", "image/png", 400, "not an image"),
        "text/plain": ("/classify", photo, "text/plain", 415, "takes multipart/form-data, image/*"),
        "no content type": ("/classify", photo, None, 415, "no content-type"),
        "over the byte limit": ("/classify", b"\xff" * (10 * 1024 * 1024 + 1), "image/jpeg", 413, "over the limit"),
        "bad top_k": ("/classify?top_k=0", photo, "image/jpeg", 400, "top_k"),
    }[case]
    headers = {"content-type": content_type} if content_type else {}
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        response = client.post(path, content=body, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert words in response.json()["error"].lower()
        assert client.post("/classify", content=photo, headers={"content-type": "image/jpeg"}).status_code == 200
