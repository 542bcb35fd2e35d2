"""`serve.runtime` on the shared champion's served folder: ONNX Runtime by default when the export
passed, Keras on request or when it did not (with the reason in /info), the two answering alike,
and a folder the runtime cannot serve stopping the service at start-up with one line."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.images import draw

from cnnops.contracts.export import ONNX_FILE, read_export_report, write_export_report

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def start(monkeypatch: pytest.MonkeyPatch, folder: Path, **serve: object):
    """The service class on `folder`, with `serve` as its serve section; its state kept apart."""
    from cnnops.serving.service import Classifier

    monkeypatch.setenv("CNNOPS_MODEL_DIR", str(folder))
    monkeypatch.setenv("CNNOPS_SERVE_CONFIG", json.dumps(serve))
    return Classifier()


@pytest.fixture
def own_folder(served, tmp_path) -> Path:
    """A copy of the shared served folder, for a test that changes it."""
    return Path(shutil.copytree(served["model"].folder, tmp_path / "served"))


def test_auto_serves_onnx_and_keras_answers_alike(served, monkeypatch, state_home):
    pixels = np.stack([draw(kind, np.random.default_rng(i)) for i, kind in enumerate(("disc", "cross", "stripes") * 4)])
    onnx = start(monkeypatch, served["model"].folder)
    assert onnx.runtime.name == "onnx"
    assert onnx.runtime.reason.startswith("the onnx export matches the Keras model on ")
    assert onnx.info().runtime == onnx.runtime  # what GET /info answers
    keras = start(monkeypatch, served["model"].folder, runtime="keras")
    assert (keras.runtime.name, keras.runtime.reason) == ("keras", "serve.runtime is keras")

    from_onnx = asyncio.run(onnx.batcher.predict(pixels))
    from_keras = asyncio.run(keras.batcher.predict(pixels))
    assert from_onnx.shape == from_keras.shape  # probabilities and the embedding, in both
    classes = len(served["model"].spec.class_names)
    assert np.abs(from_onnx[:, :classes] - from_keras[:, :classes]).max() <= 1e-4
    assert (from_onnx[:, :classes].argmax(axis=1) == from_keras[:, :classes].argmax(axis=1)).all()


def test_onnx_runtime_runs_the_configured_threads_without_spinning(served, monkeypatch, state_home):
    # serve.onnx_threads reaches the session the batcher calls; its idle threads sleep, leaving the
    # cores to decoding and the event loop.
    for threads in (1, 2):
        service = start(monkeypatch, served["model"].folder, onnx_threads=threads)
        session = service.batcher.model_call.__self__.session
        options = session.get_session_options()
        assert options.intra_op_num_threads == threads
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_failed_export_is_served_by_keras_under_auto_and_refused_under_onnx(own_folder, monkeypatch, state_home):
    report = read_export_report(own_folder)
    assert report is not None and report.passed
    write_export_report(own_folder, report.model_copy(update={"passed": False, "max_abs_diff": 0.62}))
    (own_folder / ONNX_FILE).unlink()

    auto = start(monkeypatch, own_folder)
    assert auto.runtime.name == "keras"
    assert "ONNX cannot serve it: the onnx export does not match the Keras model" in auto.runtime.reason
    assert "max |Δp| 0.62" in auto.runtime.reason
    with pytest.raises(SystemExit) as stopped:
        start(monkeypatch, own_folder, runtime="onnx")
    said = str(stopped.value)
    assert said.startswith("cnnops: error: cannot serve: serve.runtime is onnx, but the onnx export does not match")
    assert "\n" not in said


def test_a_corrupt_onnx_file_stops_the_service_at_start_up_with_one_line(own_folder, monkeypatch, state_home):
    (own_folder / ONNX_FILE).write_bytes(b"\x08\x07these bytes are not an ONNX model")
    with pytest.raises(SystemExit) as stopped:
        start(monkeypatch, own_folder)
    said = str(stopped.value)
    assert said.startswith(f"cnnops: error: cannot serve: {own_folder / ONNX_FILE} is not a model ONNX Runtime")
    assert "\n" not in said
