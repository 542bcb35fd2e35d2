from pathlib import Path

import numpy as np
import pytest

from cnnops.contracts.model import ModelSpec
from cnnops.core.errors import CnnopsError
from cnnops.modeling.builders import ARCHITECTURES, ModelOptions, build_model

SMALL = ModelOptions(working_size=32)


@pytest.mark.slow
def test_weights_from_a_local_file_and_a_mismatched_file(tmp_path):
    import keras

    from cnnops.modeling.builders import load_backbone

    own = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    own.save_weights(tmp_path / "mobilenet.weights.h5")
    loaded = load_backbone(
        keras.applications.MobileNetV2, "mobilenet_v2", (32, 32, 3), str(tmp_path / "mobilenet.weights.h5")
    )
    np.testing.assert_array_equal(loaded.get_weights()[0], own.get_weights()[0])
    with pytest.raises(CnnopsError, match="does not hold weights for resnet50"):
        load_backbone(keras.applications.ResNet50, "resnet50", (32, 32, 3), str(tmp_path / "mobilenet.weights.h5"))
    with pytest.raises(CnnopsError, match="not 'none', 'imagenet' or an existing weights file"):
        load_backbone(keras.applications.ResNet50, "resnet50", (32, 32, 3), str(tmp_path / "missing.h5"))


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_takes_uint8_reloads_exports_and_trains_a_step(architecture, tmp_path):
    """Grey input feeds three-channel backbones; the saved model loads with plain Keras (as serving
    does) and exports to ONNX with parity, its embedding included; and one optimizer step on tiny
    colour data moves its weights. One build per architecture."""
    import keras

    from cnnops.modeling.convert import export_model
    from cnnops.settings.config import ExportConfig

    spec = ModelSpec(["a", "b", "c"], 28, 28, "L", architecture)
    grey = build_model(spec, SMALL)
    images = np.random.default_rng(1).integers(0, 256, size=(8, 28, 28, 1), dtype=np.uint8)
    probabilities = np.asarray(grey.predict_on_batch(images))
    assert probabilities.shape == (8, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    grey.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(again.predict_on_batch(images)), probabilities, atol=1e-5)
    exported = export_model(again, spec, images, "onnx", tmp_path / "m.onnx", ExportConfig())
    assert exported.passed and exported.embedding_width > 0, exported.verdict()

    model = build_model(ModelSpec(["a", "b", "c"], 16, 16, "RGB", architecture), SMALL)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    before = [np.array(weight) for weight in model.trainable_weights]
    colour = np.random.default_rng(2).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    loss = float(model.train_on_batch(colour, np.array([0, 1, 2, 0])))
    assert np.isfinite(loss)
    assert any(not np.array_equal(old, np.array(new)) for old, new in zip(before, model.trainable_weights, strict=True))


@pytest.mark.slow
def test_the_builders_run_under_the_jax_backend():
    """In a fresh interpreter with KERAS_BACKEND=jax: every builder builds, one trains a step, and
    TensorFlow is never imported."""
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).parent / "backend" / "jax_builders.py"
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["backend"] == "jax" and seen["tensorflow_imported"] is False
    assert set(seen["models"]) == set(ARCHITECTURES)
    assert all(row["output"] == [None, 3] for row in seen["models"].values())
    trained = seen["models"]["simple-cnn"]
    assert trained["predicted"] == [4, 3] and trained["updated"] and trained["loss"] > 0
