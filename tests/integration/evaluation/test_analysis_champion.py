"""Error analysis on tiny real models: the files evaluate writes and logs, the top-losses ranking,
the misclassified grid, the model summary and activation maps (from inside a nested backbone)."""

import json

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from support.fixtures import SPLIT
from support.images import PNGS, assert_png, write_images
from support.training import train_candidate

from cnnops.evaluation.analysis import (
    compute_activations,
    find_feature_layers,
    write_analysis,
)
from cnnops.modeling.inputs import predict_manifest


@pytest.mark.slow
def test_misclassified_counts_match_the_confusion_matrix(trained, tmp_path):
    metrics = json.loads((trained["evaluation"] / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"])
    probabilities = predict_manifest(trained["keras"], trained["spec"], trained["manifest"])
    summary = write_analysis(trained["keras"], trained["spec"], trained["manifest"], probabilities, tmp_path)
    wrong = {name: int(matrix[i].sum() - matrix[i, i]) for i, name in enumerate(metrics["class_names"])}
    assert summary.misclassified == wrong


@pytest.mark.slow
def test_backbone_activation_maps_come_from_inside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNOPS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    source = write_images(tmp_path / "images", per_class=10, seed=5)
    result = train_candidate(
        tmp_path / "run",
        source,
        **{"train.architecture": "mobilenet_v2", "train.working_size": 32, "train.epochs": 1, **SPLIT},
    )
    folder = result["evaluation"] / "analysis"
    for name in PNGS:
        assert_png(folder / name)
    assert "Conv1_relu" in (folder / "model_summary.txt").read_text()

    model = keras.saving.load_model(result["model"] / "model.keras", compile=False)
    chain, shown = find_feature_layers(model)
    backbone = chain[-1]
    assert len(chain) == 2 and backbone in model.layers and isinstance(backbone, keras.Model)
    assert shown[0].name == "Conv1_relu" and all(layer in backbone.layers for layer in shown)
    assert not {layer.name for layer in shown} & {layer.name for layer in model.layers}

    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    maps = dict(compute_activations(model, images))
    assert maps["Conv1_relu"].shape == (2, 16, 16, 32)
    # The same maps by hand: the outer model's resize (uint8 in, rounded uint8 out) and [-1, 1]
    # scaling, then the backbone's own layers.
    resized = np.round(keras.ops.convert_to_numpy(keras.ops.image.resize(images.astype("float32"), (32, 32))))
    x = resized / 127.5 - 1.0
    by_hand = keras.Model(backbone.inputs[0], backbone.get_layer("Conv1_relu").output)(x, training=False)
    np.testing.assert_allclose(maps["Conv1_relu"], keras.ops.convert_to_numpy(by_hand), atol=1e-4)
    logged = {a.path for a in MlflowClient().list_artifacts(result["run_id"], "evaluation/analysis")}
    assert "evaluation/analysis/activation_maps.png" in logged
