"""Prediction helpers shared by the service, `cnnops predict` and the benchmark, and the adaptive
batcher, with a real model and real threads."""

from __future__ import annotations

import numpy as np
import pytest

from cnnops.contracts.served import read_served_model
from cnnops.core.errors import CnnopsError
from cnnops.inference.export import export_registered
from cnnops.modeling.predict import (
    batch_buckets,
    load_keras_model,
    predict_bucketed,
    predict_pixels,
)


@pytest.mark.slow
def test_padding_to_a_bucket_changes_no_result(served):
    model = load_keras_model(served["model"].folder)
    spec = served["model"].spec
    pixels = np.random.default_rng(0).integers(0, 256, (5, spec.height, spec.width, spec.channels), dtype=np.uint8)
    padded = predict_bucketed(model, pixels, batch_buckets(64))
    assert padded.shape == (5, 3)
    np.testing.assert_allclose(padded, predict_pixels(model, pixels), atol=1e-6)


@pytest.mark.slow
def test_export_by_version_number_and_refusals(served, monkeypatch):
    monkeypatch.setenv("CNNOPS_HOME", str(served["home"]))
    pinned = export_registered(served["name"], "1")
    assert pinned.folder == served["model"].folder  # one folder per version, reused
    assert pinned.info.version == 1 and pinned.info.requested == "1"
    # The folder holds the model, its spec (the model folder's file), the version's facts, and what
    # its evaluation kept (downloaded from the run's evaluation artifacts): the drift reference, the
    # ONNX export with its parity report, and the images that parity was measured on.
    assert read_served_model(pinned.folder) == pinned
    assert sorted(p.name for p in pinned.folder.iterdir()) == [
        "drift_reference.npz",
        "export.json",
        "model.keras",
        "model.onnx",
        "model_spec.json",
        "parity_images.npz",
        "served.json",
    ]
    assert pinned.export is not None and pinned.export.passed
    with pytest.raises(CnnopsError, match="has no version 7"):
        export_registered(served["name"], "7")
    with pytest.raises(CnnopsError, match="no challenger registered"):
        export_registered(served["name"], "challenger")


@pytest.mark.slow
def test_a_version_without_cnnops_metadata_is_not_served(state_home):
    import keras
    import mlflow
    from mlflow.tracking import MlflowClient

    from cnnops.tracking.stores import use_tracking_store

    use_tracking_store()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with mlflow.start_run() as run:
        logged = mlflow.keras.log_model(model, name="model")
    client = MlflowClient()
    client.create_registered_model("foreign")
    version = client.create_model_version("foreign", logged.model_uri, run_id=run.info.run_id)
    client.set_registered_model_alias("foreign", "champion", version.version)
    with pytest.raises(CnnopsError, match="carries no cnnops input spec in its registry tags"):
        export_registered("foreign")
