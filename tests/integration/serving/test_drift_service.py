"""Drift from served traffic, for real: `bentoml serve` with the shared champion and a reference
of its own images, fed over HTTP. Its own kind of image gives no drift, inverted images give
drift below 0.01; the window survives a restart and keeps no image unless asked; `cnnops drift`
and `cnnops retrain --if-drift` read the verdict as a CI job would. Seeds are fixed, so every
verdict here is the same on every run."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.commands import CNNOPS
from support.images import draw
from support.stores import champion_copy

from cnnops.core.processes import free_port, start_process, stop_process_group, wait_until
from cnnops.data.images import sha256_bytes
from cnnops.inference.service_client import is_ready, post_image

pytestmark = pytest.mark.server

SEED = 20261203
DRIFT = {"min_window": 30, "window_size": 60, "max_age_s": 3600}
REFERENCE_IMAGES = 240
KINDS = ("disc", "cross", "stripes")


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def fresh_images(seed: int, count: int) -> list[bytes]:
    """Images of the champion's own kind that it has never seen: new draws, the classes in turn."""
    rng = np.random.default_rng(seed)
    return [png(draw(KINDS[i % 3], rng)) for i in range(count)]


def inverted(images: list[bytes]) -> list[bytes]:
    return [png(255 - np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) for data in images]


def write_reference_of(folder: Path, images: list[bytes], work: Path) -> None:
    """The folder's drift reference made the way evaluation makes it (`embed_manifest`, then
    `build_reference`), on more images than the tiny champion's test split holds."""
    from cnnops.contracts.served import read_served_model
    from cnnops.evaluation.evaluate import embed_manifest
    from cnnops.modeling.predict import load_keras_model
    from cnnops.monitoring.reference import build_reference, write_reference

    rows = []
    for index, data in enumerate(images):
        path = work / f"reference-{index:03d}.png"
        path.write_bytes(data)
        rows.append({"path": str(path), "sha256": sha256_bytes(data), "label": KINDS[index % 3]})
    manifest = pd.DataFrame(rows)
    served = read_served_model(folder)
    embedded = embed_manifest(load_keras_model(folder), served.spec, manifest)
    assert embedded is not None
    assert served.info.run_id is not None
    write_reference(folder, build_reference(served.info.run_id, served.spec, manifest, *embedded))


@pytest.fixture(scope="module")
def drift_model(served, tmp_path_factory) -> dict:
    """A copy of the champion's served folder with a reference of 240 of its kind of image, and a
    copy without any reference."""
    work = tmp_path_factory.mktemp("drift")
    folder = work / "served"
    shutil.copytree(served["model"].folder, folder)
    (folder / "drift_reference.npz").unlink(missing_ok=True)
    bare = work / "served-bare"
    shutil.copytree(folder, bare)
    (work / "reference").mkdir()
    write_reference_of(folder, fresh_images(SEED, REFERENCE_IMAGES), work / "reference")
    return {**served, "folder": folder, "bare": bare, "work": work, "store": served["home"]}


class Server:
    """`bentoml serve` of a served-model folder on a free loopback port, stopped by PID."""

    def __init__(self, folder: Path, home: Path, window: Path, serve: dict, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "CNNOPS_HOME": str(home),
            "CNNOPS_MODEL_DIR": str(folder),
            "CNNOPS_DRIFT_CONFIG": json.dumps(DRIFT),
            "CNNOPS_SERVE_CONFIG": json.dumps(serve),
            "CNNOPS_WINDOW_FILE": str(window),
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        port = self.url.rsplit(":", 1)[1]
        self.log = log
        command = [sys.executable, "-m", "bentoml", "serve", "cnnops.serving.service:Classifier"]
        self.proc = start_process([*command, "--host", "127.0.0.1", "--port", port], log, env)
        failed = wait_until(lambda: is_ready(self.url), self.proc, 120)
        if failed:
            self.stop()
            raise RuntimeError(f"{failed}:\n{log.read_text()[-3000:]}")

    def send(self, images: list[bytes]) -> None:
        for data in images:
            answer = post_image(self.url, data, "image.png", "image/png")
            assert answer.status == 200, answer.body[:300]

    def drift(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/drift", timeout=30) as response:
            return json.loads(response.read())

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as response:
            lines = response.read().decode().splitlines()
        return {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("cnnops_drift_")}

    def stop(self) -> None:
        stop_process_group(self.proc)


@pytest.fixture(scope="module")
def stack(drift_model) -> Iterator[dict]:
    """One state folder and one window file for the module's servers, which the tests start."""
    work = drift_model["work"]
    yield {**drift_model, "home": work / "state", "window": work / "pod-volume" / "window.npz", "log": work / "log"}


def serve(stack: dict, folder: Path | None = None, **settings: object) -> Server:
    return Server(folder or stack["folder"], stack["home"], stack["window"], settings, stack["log"])


def cnnops(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CNNOPS), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CNNOPS_HOME": str(home), **(env or {})},
    )


def test_own_images_are_quiet_shifted_ones_drift_and_the_window_outlives_a_restart(stack, tmp_path):
    server = serve(stack)
    try:
        first = server.drift()
        assert first["verdict"]["status"] == "too-few" and first["verdict"]["window_size"] == 0
        assert server.metrics()["cnnops_drift_window_size"] == 0

        server.send(fresh_images(SEED + 1, DRIFT["window_size"]))
        quiet = server.drift()
        verdict = quiet["verdict"]
        assert verdict["status"] == "no-drift", verdict["reason"]
        assert verdict["p_value"] >= 0.01 and verdict["window_size"] == DRIFT["window_size"]
        assert quiet["window_images"]["count"] == DRIFT["window_size"]
        assert quiet["reference_images"]["count"] == REFERENCE_IMAGES
        assert set(quiet["class_names"]) == set(KINDS)
        report = tmp_path / "quiet.html"
        done = cnnops("drift", "--url", server.url, "--out", str(report), home=stack["home"])
        assert done.returncode == 0, done.stderr
        assert "no-drift" in done.stdout and report.read_text().count("<svg") >= 2

        server.send(inverted(fresh_images(SEED + 2, DRIFT["window_size"])))
        shifted = server.drift()["verdict"]
        assert shifted["status"] == "drift" and shifted["drift"] is True
        assert shifted["p_value"] < 0.01
        gauges = server.metrics()
        assert gauges["cnnops_drift_detected"] == 1 and gauges["cnnops_drift_p_value"] < 0.01
        assert gauges["cnnops_drift_window_size"] == DRIFT["window_size"]
        report = tmp_path / "drift.html"
        done = cnnops("drift", "--url", server.url, "--out", str(report), home=stack["home"])
        assert done.returncode == 3, done.stderr
        assert "drift" in report.read_text()
    finally:
        server.stop()

    # SIGTERM saved the window on the pod's volume; a new process judges the same requests
    assert stack["window"].is_file()
    again = serve(stack)
    try:
        restored = again.drift()["verdict"]
        assert restored["window_size"] == DRIFT["window_size"]
        assert restored == shifted
    finally:
        again.stop()

    window = ["--window", str(stack["window"]), "--model-dir", str(stack["folder"])]
    window += ["--set", f"drift.min_window={DRIFT['min_window']}"]  # as the service was configured
    done = cnnops("drift", *window, "--out", str(tmp_path / "w.html"), home=stack["home"])
    assert done.returncode == 3, done.stderr
    # no image was kept: the state folder and the volume hold the window's numbers only
    kept = [p.name for folder in (stack["home"], stack["window"].parent) for p in folder.rglob("*") if p.is_file()]
    assert [name for name in kept if not name.endswith((".npz", ".yaml", ".json", ".db", ".log"))] == []
    assert not (stack["home"] / "samples").exists()


def test_samples_are_kept_only_when_asked_and_at_the_rate_asked(stack):
    server = serve(stack, keep_samples=True, samples_per_minute=3, max_samples=10)
    try:
        server.send(fresh_images(SEED + 3, 10))
    finally:
        server.stop()
    folder = stack["home"] / "samples"
    images = sorted(p for p in folder.rglob("*.png"))
    assert len(images) == 3  # ten requests in a few seconds: the rate's burst of 3, no more
    lines = [json.loads(line) for line in next(folder.rglob("samples.jsonl")).read_text().splitlines()]
    assert sorted(line["file"] for line in lines) == [p.name for p in images]
    assert all(line["label"] in KINDS for line in lines)


def test_a_model_without_a_reference_serves_and_says_so(stack):
    server = serve(stack, folder=stack["bare"])
    try:
        server.send(fresh_images(SEED + 4, 3))
        verdict = server.drift()["verdict"]
    finally:
        server.stop()
    assert verdict["status"] == "no-reference" and verdict["drift"] is None
    assert "no drift reference" in verdict["reason"]


def retrain(source: Path, url: str, name: str) -> list[str]:
    cheap = ["train.epochs=2", "train.batch_size=16", "train.patience=20"]
    flags = ["--data", str(source), "--model-name", name, "--if-drift", url]
    return ["retrain", *flags, *[f"--set={item}" for item in cheap]]


def test_retrain_if_drift_trains_only_on_a_drift_verdict(stack, champion, tmp_path):
    """Against the service, with the champion's store copied and six images added to a copy of
    its source: a quiet service is a skip though the data changed; a drifted one trains a new
    version, with "drift" as the reason and the change in the detail."""
    with champion_copy(champion, tmp_path) as copy:
        home = copy["work"] / "state"
        name = copy["strong"]["registered_model"]
        source = tmp_path / "images"
        shutil.copytree(copy["source"], source)
        for index, data in enumerate(fresh_images(SEED + 7, 18)[::3]):  # six discs
            (source / "disc" / f"labelled_{index}.png").write_bytes(data)
        server = serve(stack)
        try:
            server.send(fresh_images(SEED + 5, DRIFT["window_size"]))
            outputs = tmp_path / "quiet.out"
            quiet = cnnops(*retrain(source, server.url, name), home=home, env={"GITHUB_OUTPUT": str(outputs)})
            assert quiet.returncode == 0, quiet.stderr
            said = outputs.read_text()
            assert "reason=no-drift" in said and "trained=false" in said

            server.send(inverted(fresh_images(SEED + 6, DRIFT["window_size"])))
            outputs = tmp_path / "drift.out"
            drifted = cnnops(*retrain(source, server.url, name), home=home, env={"GITHUB_OUTPUT": str(outputs)})
        finally:
            server.stop()
        assert drifted.returncode == 0, drifted.stderr
        said = outputs.read_text()
        assert "reason=drift" in said and "trained=true" in said and "+6 in disc" in said
        assert "version=2" in said


def test_if_drift_says_whose_fault_an_unanswered_url_is(stack, tmp_path):
    source = str(stack["source"])
    unreachable = cnnops("retrain", "--data", source, "--if-drift", f"http://127.0.0.1:{free_port()}", home=tmp_path)
    assert unreachable.returncode == 1 and "did not answer" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    malformed = cnnops("drift", "--url", "myhost/drift", home=tmp_path)
    assert malformed.returncode == 2 and "is not a service URL" in malformed.stderr


def test_a_window_file_is_judged_against_its_runs_reference_from_the_registry(stack, tmp_path):
    """No --model-dir: the window names its run, and the reference comes from that run's
    evaluation artifacts in the store (the shared champion's, read only)."""
    from cnnops.monitoring.window import TrafficWindow

    assert stack["window"].is_file()  # saved by the first test's servers
    done = cnnops("drift", "--window", str(stack["window"]), "--out", str(tmp_path / "r.html"), home=stack["store"])
    assert done.returncode in (0, 3), done.stderr
    assert done.stdout.startswith(f"cnnops: {stack['name']}: ") and (tmp_path / "r.html").is_file()

    stranger = tmp_path / "stranger.npz"
    TrafficWindow(10, 60).save(stranger, "f" * 32, 8)
    unknown = cnnops("drift", "--window", str(stranger), home=stack["store"])
    assert unknown.returncode == 2 and "which this store does not have" in unknown.stderr
