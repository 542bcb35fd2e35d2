"""Training features: the two-phase transfer schedule, and the precision and XLA flags. (A training
killed and resumed, or started fresh, is tests/integration/training/test_train_faults.py.)"""

from __future__ import annotations

import json

import keras
import pytest
from mlflow.tracking import MlflowClient
from support.training import train_candidate


@pytest.mark.slow
def test_a_backbone_trains_head_then_fine_tune_in_one_run_with_the_right_layers_frozen(
    make_images, state_home, tmp_path
):
    from cnnops.modeling.builders import find_backbone

    trained = train_candidate(
        tmp_path / "ft",
        make_images(per_class=12),
        **{
            "train.architecture": "mobilenet_v2",
            "train.working_size": "32",
            "train.epochs": "2",
            "train.fine_tune_epochs": "2",
            "train.fine_tune_layers": "10",
            "train.learning_rate": "0.01",
        },
    )
    run = MlflowClient().get_run(trained["run_id"])
    phases = json.loads(run.data.tags["cnnops.phases"])
    assert [(p["name"], p["first_epoch"], p["last_epoch"]) for p in phases] == [("head", 1, 2), ("fine_tune", 3, 4)]
    assert phases[1]["learning_rate"] == pytest.approx(0.001)

    model = keras.saving.load_model(trained["model"] / "model.keras", compile=False)
    backbone = find_backbone(model)
    head_weights = 2  # the classifier's kernel and bias
    last_ten = sum(len(layer.trainable_weights) for layer in backbone.layers[-10:])
    assert phases[0]["trainable_weights"] == head_weights
    assert phases[1]["trainable_weights"] == head_weights + last_ten
    assert [layer.name for layer in backbone.layers[:-10] if layer.trainable and layer.weights] == []

    # The model kept is the best of both phases: fine-tuning had to beat the head's best val loss.
    history = json.loads((trained["model"] / "history.json").read_text())
    best = json.loads((trained["model"] / "run.json").read_text())["best_epoch"]
    assert history["val_loss"][best - 1] <= min(history["val_loss"]) + 1e-3

    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "head.loss")] == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fine_tune.loss")] == [2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]


@pytest.mark.slow
def test_bfloat16_with_xla_trains_and_records_both_flags(make_images, state_home, tmp_path):
    trained = train_candidate(
        tmp_path / "bf16",
        make_images(per_class=10),
        **{"train.epochs": "1", "train.precision": "mixed_bfloat16", "train.jit_compile": "true"},
    )
    run = MlflowClient().get_run(trained["run_id"])
    assert (run.data.params["train.precision"], run.data.params["train.jit_compile"]) == ("mixed_bfloat16", "True")
    assert run.data.tags["cnnops.xla"] == "true"  # Keras did compile it, rather than fall back
    model = keras.saving.load_model(trained["model"] / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)} == {
        "mixed_bfloat16"
    }
    assert keras.mixed_precision.global_policy().name == "float32"
