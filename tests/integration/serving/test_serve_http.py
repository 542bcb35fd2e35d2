"""`cnnops serve` for real: BentoML answering HTTP on loopback, a BentoML client calling it, the
parity of serving with training, and the refusals when there is nothing to serve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.images import draw

from cnnops.data.images import sha256_bytes


@pytest.mark.server
def test_bentoml_client_against_the_real_server(server):
    import bentoml

    image = next((server["source"] / "disc").glob("*.png"))
    with bentoml.SyncHTTPClient(server["url"], timeout=30) as client:
        assert client.is_ready()
        result = client.classify(image=image, top_k=3)
    assert [p["label"] for p in result["predictions"]] != []
    assert len(result["predictions"]) == 3
    assert sum(p["probability"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-5)


def parity_files(folder: Path) -> list[Path]:
    """Images in every accepted format, mode and size, so decoding and resizing are both exercised."""
    rng = np.random.default_rng(5)
    folder.mkdir()
    cases = [
        ("PNG", "RGB", 16),
        ("JPEG", "RGB", 40),
        ("WEBP", "RGB", 23),
        ("GIF", "P", 16),
        ("BMP", "RGB", 16),
        ("PNG", "RGBA", 30),
        ("PNG", "L", 16),
        ("JPEG", "L", 64),
    ]
    paths = []
    for index, (fmt, mode, size) in enumerate(cases):
        img = Image.fromarray(draw(("disc", "cross", "stripes")[index % 3], rng)).resize((size, size)).convert(mode)
        path = folder / f"case{index}.{fmt.lower()}"
        img.save(path, fmt)
        paths.append(path)
    return paths


@pytest.mark.server
def test_parity_training_input_and_http_endpoint(server, tmp_path):
    """The same files through the training input path (tf.data) and through HTTP: identical uint8
    arrays, and probabilities equal to 1e-5."""
    import httpx

    from cnnops.modeling.inputs import make_dataset, predict_manifest
    from cnnops.modeling.predict import decode_for_model, load_keras_model

    model = server["model"]
    spec = model.spec
    paths = parity_files(tmp_path / "parity")
    manifest = pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "sha256": [sha256_bytes(p.read_bytes()) for p in paths],
            "label": spec.class_names[0],
        }
    )
    trained_on = np.concatenate([batch.numpy() for batch, _ in make_dataset(manifest, spec, batch_size=4)])
    served_as = np.stack([decode_for_model(p.read_bytes(), spec, max_pixels=25_000_000) for p in paths])
    assert trained_on.dtype == served_as.dtype == np.uint8
    assert np.array_equal(trained_on, served_as)

    expected = predict_manifest(load_keras_model(model.folder), spec, manifest)
    names = spec.class_names
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        for path, row in zip(paths, expected, strict=True):
            kind = "image/" + {"jpg": "jpeg"}.get(path.suffix[1:], path.suffix[1:])
            response = client.post(
                "/classify", files={"image": (path.name, path.read_bytes(), kind)}, data={"top_k": str(len(names))}
            )
            assert response.status_code == 200, response.text
            got = {p["label"]: p["probability"] for p in response.json()["predictions"]}
            np.testing.assert_allclose([got[n] for n in names], row, atol=1e-5, rtol=0)


@pytest.mark.server
def test_real_server_refuses_bad_input_and_keeps_serving(server):
    import httpx

    good = next((server["source"] / "cross").glob("*.png")).read_bytes()
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        bad = [
            client.post("/classify", files={"image": ("x.png", b"\x89PNG\r\n\x1a\n\x00", "image/png")}),
            client.post(
                "/classify",
                content=b"x" * (11 * 1024 * 1024),
                headers={"content-type": "multipart/form-data; boundary=b"},
            ),
            client.post("/classify_base64", json={"image": "%%%"}),
        ]
        assert [r.status_code for r in bad] == [400, 413, 400]
        assert all("error" in r.json() for r in bad)
        assert client.post("/classify", files={"image": ("x.png", good, "image/png")}).status_code == 200
        metrics = client.get("/metrics").text
    assert "cnnops_batch_size_count" in metrics


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "CNNOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "cnnops"), *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_serve_refuses_to_start_without_a_champion(tmp_path):
    done = run_cli("serve", "--port", "9", home=tmp_path / "empty")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("cnnops: error: no champion registered for model 'cnnops-animals'")
    )
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_predict_command_uses_the_service_path(served, tmp_path):
    image = next((served["source"] / "stripes").glob("*.png"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    done = run_cli("predict", str(image), str(junk), "--model-name", served["name"], "--json", home=served["home"])
    assert done.returncode == 1, done.stderr  # one file could not be classified
    import json

    results = json.loads(done.stdout)["results"]
    assert len(results[0]["predictions"]) == 3
    assert results[1]["error"] == "not an image"


@pytest.mark.server
def test_the_real_server_runs_onnx_runtime_without_tensorflow(server):
    """`cnnops serve` of the champion answers through ONNX Runtime, and no process of the server
    has TensorFlow's libraries mapped: the serving process never imported it."""
    import httpx
    import psutil

    info = httpx.get(f"{server['url']}/info", timeout=30).json()
    assert info["runtime"]["name"] == "onnx", info["runtime"]
    processes = [psutil.Process(server["pid"]), *psutil.Process(server["pid"]).children(recursive=True)]
    mapped = {proc.pid: {m.path for m in proc.memory_maps()} for proc in processes}
    assert any("onnxruntime" in path for paths in mapped.values() for path in paths), mapped
    loaded = sorted(path for paths in mapped.values() for path in paths if "tensorflow" in path.lower())
    assert loaded == []
