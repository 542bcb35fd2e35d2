"""The Bento service with a small real model: the class itself, then every endpoint and every bad
input through BentoML's ASGI app (Starlette's test client), checking the service keeps serving."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from support.images import draw

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def encode(pixels: np.ndarray, fmt: str = "PNG", **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **save)
    return out.getvalue()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return {kind: encode(draw(kind, rng)) for kind in ("disc", "cross", "stripes")}


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    """The real ASGI app with tight limits, so the limits can be tested with small bodies; its
    drift window is saved in a state folder of its own."""
    from cnnops.serving.service import Classifier

    limits = {"max_request_mb": 0.05, "max_image_pixels": 250_000, "max_batch_images": 4, "top_k": 2}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNOPS_HOME", str(tmp_path_factory.mktemp("service-state")))
        patch.setenv("CNNOPS_MODEL_DIR", str(served["model"].folder))
        patch.setenv("CNNOPS_SERVE_CONFIG", json.dumps(limits))
        with TestClient(Classifier.to_asgi()) as test_client:
            yield test_client


@pytest.fixture(scope="module")
def expected(served, images):
    """The label the model itself gives each image, called directly: what every endpoint must return."""
    from cnnops.modeling.predict import decode_for_model, load_keras_model, predict_pixels

    model = load_keras_model(served["model"].folder)
    spec = served["model"].spec
    names = spec.class_names
    return {
        kind: names[int(predict_pixels(model, decode_for_model(data, spec, 10**6)[None])[0].argmax())]
        for kind, data in images.items()
    }


def upload(client: TestClient, data: bytes, content_type: str = "image/png", **params):
    return client.post("/classify", files={"image": ("x.png", data, content_type)}, data=params)


def test_service_class_classifies_decoded_images(served, images, expected, monkeypatch, state_home):
    """The class on its own: model facts from the registry, decoding to the model's input."""
    import asyncio

    from cnnops.serving.service import Classifier

    monkeypatch.setenv("CNNOPS_MODEL_DIR", str(served["model"].folder))
    service = Classifier()
    info = service.info()
    assert info.registered_model == served["name"] and info.version == 1
    assert info.aliases == ["champion"] and info.class_names == ["cross", "disc", "stripes"]
    assert info.test_accuracy == pytest.approx(served["test_accuracy"])  # what evaluate scored
    image = service.decode(images["disc"])
    assert image.pixels.shape == (16, 16, 3) and image.pixels.dtype == np.uint8
    (top,) = asyncio.run(service.classify_images([image], [images["disc"]], 3))
    assert top[0].label == expected["disc"]
    assert sum(p.probability for p in top) == pytest.approx(1.0, abs=1e-5)


def test_upload_returns_top_k_labels_and_probabilities(client, images, expected):
    for kind, data in images.items():
        response = upload(client, data)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == 2  # the configured default top_k
        assert predictions[0]["label"] == expected[kind]
        assert predictions[0]["probability"] >= predictions[1]["probability"]
    assert len(upload(client, images["cross"], top_k="3").json()["predictions"]) == 3


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP"])
def test_every_accepted_format_and_any_size(client, fmt):
    big = np.asarray(Image.fromarray(draw("disc", np.random.default_rng(2), size=16)).resize((120, 90)))
    response = upload(client, encode(big, fmt), f"image/{fmt.lower()}")
    assert response.status_code == 200, response.text


def test_base64_and_data_url(client, images, expected):
    raw = base64.b64encode(images["stripes"]).decode()
    for text in (raw, "data:image/png;base64," + raw):
        response = client.post("/classify_base64", json={"image": text, "top_k": 1})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == expected["stripes"]


def test_batch_keeps_order(client, images, expected):
    order = ["stripes", "disc", "cross"]
    files = [("images", (f"{k}.png", images[k], "image/png")) for k in order]
    response = client.post("/classify_batch", files=files)
    assert response.status_code == 200, response.text
    assert [r["predictions"][0]["label"] for r in response.json()["results"]] == [expected[k] for k in order]


def test_model_info_health_metrics_docs_and_page(client, served):
    info = client.get("/info").json()
    assert info["version"] == 1 and info["input"] == {"height": 16, "width": 16, "mode": "RGB"}
    assert info["limits"]["max_batch_images"] == 4
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert "/classify_batch" in client.get("/docs.json").json()["paths"]
    assert "swagger-ui" in client.get("/docs").text
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "non-image bytes": (b"%PDF-1.4 not an image at all", "image/png", 400, "not an image"),
    "truncated png": (None, "image/png", 400, "corrupt image"),
    "truncated jpeg": (None, "image/jpeg", 400, "corrupt image"),
    "empty upload": (b"", "image/png", 400, "empty"),
    "wrong part type": (None, "text/plain", 400, "content type"),
    "over the pixel limit": (None, "image/png", 400, "over the limit"),
    "over the body limit": (None, "image/png", 413, "over the limit"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_a_4xx_json_error_and_the_service_carries_on(client, images, case):
    data, content_type, status, words = BAD_UPLOADS[case]
    rng = np.random.default_rng(0)
    if case == "truncated png":
        data = truncated(encode(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    elif case == "truncated jpeg":
        data = truncated(encode(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "JPEG"))
    elif case == "wrong part type":
        data = images["disc"]
    elif case == "over the pixel limit":
        data = encode(np.zeros((600, 600), np.uint8))  # 360,000 pixels, small as a PNG
    elif case == "over the body limit":
        data = encode(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))  # ~200 KB of noise
    response = upload(client, data, content_type)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()).lower()
    assert upload(client, images["disc"]).status_code == 200


def test_chunked_body_over_the_limit_is_refused(client, images):
    def chunks():
        for _ in range(20):
            yield b"x" * 10_000

    response = client.post("/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert upload(client, images["disc"]).status_code == 200


@pytest.mark.parametrize(
    "body, words",
    [
        ({"image": "not base64!"}, "invalid base64"),
        ({"image": "data:image/png,rawtext"}, "not base64"),
        ({"image": base64.b64encode(b"hello").decode()}, "not an image"),
        ({"image": ""}, "at least 1 character"),
        ({"picture": "x"}, "validation error"),
        ({"image": "eA==", "top_k": 0}, "validation error"),
    ],
)
def test_bad_base64_requests(client, images, body, words):
    response = client.post("/classify_base64", json=body)
    assert response.status_code == 400, response.text
    assert words in json.dumps(response.json()).lower()


def test_wrong_request_content_types(client, images):
    # A raw image body is one of /classify's two forms; text and JSON are neither.
    assert client.post("/classify", content=images["disc"], headers={"content-type": "image/png"}).status_code == 200
    assert (
        client.post("/classify_base64", content=b"image=abc", headers={"content-type": "text/plain"}).status_code == 415
    )
    assert client.post("/classify", content=b"{", headers={"content-type": "application/json"}).status_code == 415


def test_bad_batches(client, images):
    empty = client.post("/classify_batch", data={"top_k": "1"}, files={})  # no files: sent urlencoded
    assert empty.status_code == 415
    over = client.post("/classify_batch", files=[("images", ("a.png", images["disc"], "image/png"))] * 5)
    assert over.status_code == 400 and "more than 4 images" in over.json()["error"]
    one_bad = client.post(
        "/classify_batch",
        files=[("images", ("a.png", images["disc"], "image/png")), ("images", ("b.png", b"nope", "image/png"))],
    )
    assert one_bad.status_code == 400 and one_bad.json()["error"].startswith("images[1]:")
    assert upload(client, images["disc"]).status_code == 200


def test_service_refuses_to_start_without_a_model(tmp_path, monkeypatch):
    from cnnops.serving.service import load_served_model

    monkeypatch.setenv("CNNOPS_MODEL_DIR", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="cannot serve: .*holds no model.keras"):
        load_served_model()


def test_odd_requests_never_get_a_5xx(client, images):
    """Shapes a careless or hostile client might send; each must be refused with a 4xx."""
    png = ("x.png", images["disc"], "image/png")
    odd = [
        client.post("/classify", files={"image": png}, data={"top_k": "many"}),
        client.post("/classify", files={"image": png}, data={"top_k": "-3"}),
        client.post("/classify", files={"picture": png}),
        client.post(
            "/classify",
            content=b"--b\r\nnot really multipart",
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        client.post("/classify", content=b"", headers={"content-type": "multipart/form-data"}),
        client.post("/classify_base64", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}),
        client.post("/classify_base64", json=["image", "x"]),
        client.post("/classify_base64", json={"image": 12345}),
        client.post("/classify_base64", json={"image": "eA==", "top_k": 10**9}),
        client.post("/classify_batch", files=[("images", ("a.txt", b"hello", "text/plain"))]),
        client.post(
            "/classify",
            content=b"x",
            headers={"content-type": "multipart/form-data; boundary=b", "content-length": "nope"},
        ),
    ]
    statuses = [response.status_code for response in odd]
    assert all(400 <= status < 500 for status in statuses), statuses
    assert client.get("/classify").status_code == 405
    assert upload(client, images["disc"]).status_code == 200


def test_info_does_not_reveal_the_tracking_store(client):
    assert "tracking_uri" not in client.get("/info").json()
    assert "sqlite" not in client.get("/info").text
