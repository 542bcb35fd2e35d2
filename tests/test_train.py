import keras
import numpy as np
from conftest import train_candidate
from mlflow.tracking import MlflowClient


def test_mixed_precision_trains_and_leaves_the_global_policy_alone(make_images, state_home, tmp_path):
    result = train_candidate(tmp_path / "mixed", make_images(per_class=10),
                             **{"train.epochs": 1, "train.mixed_precision": True})
    assert keras.mixed_precision.global_policy().name == "float32"
    assert MlflowClient().get_run(result["run_id"]).data.params["train.mixed_precision"] == "True"
    model = keras.saving.load_model(result["model"] / "model.keras")
    policies = {layer.__class__.__name__: layer.dtype_policy.name for layer in model.layers}
    assert policies["Conv2D"] == "mixed_float16" and policies["Dense"] == "float32"
    probabilities = np.asarray(model(np.zeros((1, 16, 16, 3), dtype=np.uint8), training=False))
    assert probabilities.dtype == np.float32
