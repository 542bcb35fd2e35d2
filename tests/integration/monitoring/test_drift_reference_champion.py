"""The drift reference evaluation writes: the same forward pass's probabilities and embeddings of
every test image, read back without TensorFlow, and carried into a candidate's served folder."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from support.training import train_candidate

from cnnops.contracts.dataset import read_manifest
from cnnops.contracts.model import read_model_spec
from cnnops.monitoring.reference import REFERENCE_FILE, read_reference


@pytest.mark.slow
def test_evaluation_keeps_the_models_own_embeddings_of_its_val_and_test_images(make_images, state_home, tmp_path):
    from cnnops.inference.export import export_candidate
    from cnnops.modeling.inputs import predict_manifest

    trained = train_candidate(tmp_path / "m", make_images(per_class=10), **{"train.epochs": 1})
    reference = read_reference(trained["evaluation"])
    assert reference is not None and reference.run_id == trained["run_id"]
    spec = read_model_spec(trained["model"])
    test = read_manifest(trained["test"])
    manifest = pd.concat([read_manifest(tmp_path / "m" / "val"), test], ignore_index=True)
    model = keras.saving.load_model(trained["model"] / "model.keras", compile=False)
    head = model.get_layer("probabilities")
    obs = reference.observations
    assert obs.embeddings.shape == (len(manifest), head.input.shape[-1])
    assert reference.class_names == spec.class_names and obs.classes == len(spec.class_names)

    # the embedding is what the model's head reads: the head applied to it gives the probabilities
    probabilities = predict_manifest(model, spec, manifest)
    np.testing.assert_allclose(np.asarray(head(obs.embeddings)), probabilities, atol=1e-5)
    assert obs.predicted.tolist() == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(obs.confidence, probabilities.max(axis=1), atol=1e-5)
    # the scores evaluation kept came from the same pass
    predictions = (trained["evaluation"] / "predictions.csv").read_text()
    assert len(predictions.splitlines()) == len(test) + 1  # the scores are of the test images alone
    assert set(reference.mode.tolist()) <= {"RGB", "L", "RGBA", "P"}
    assert (reference.width > 0).all() and ((reference.brightness >= 0) & (reference.brightness <= 1)).all()

    served = export_candidate(trained["model"], trained["evaluation"], tmp_path / "served")
    assert (served.folder / REFERENCE_FILE).read_bytes() == (trained["evaluation"] / REFERENCE_FILE).read_bytes()
    assert json.loads((served.folder / "served.json").read_text())["requested"] == "candidate"
