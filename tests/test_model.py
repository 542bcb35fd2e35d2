import ast
from pathlib import Path

import numpy as np
import pytest

from cnnops.artifacts import ModelSpec
from cnnops.errors import CnnopsError
from cnnops.model import ARCHITECTURES, build_model

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnops"


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_model_takes_uint8_images_and_returns_probabilities(mode):
    spec = ModelSpec(["a", "b", "c"], 20, 24, mode, "simple-cnn")
    model = build_model(spec)
    assert tuple(model.input.shape) == (None, 20, 24, spec.channels)
    assert model.input.dtype == "uint8"
    images = np.random.default_rng(0).integers(0, 256, size=(2, 20, 24, spec.channels), dtype=np.uint8)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_first_layers_resize_and_rescale():
    model = build_model(ModelSpec(["a", "b"], 8, 8, "L", "simple-cnn"))
    names = [layer.name for layer in model.layers[1:3]]
    assert names == ["resize", "rescale"]


def test_unknown_architecture():
    with pytest.raises(CnnopsError, match="unknown architecture 'vit'; choose one of: simple-cnn"):
        build_model(ModelSpec(["a", "b"], 8, 8, "L", "vit"))


def test_model_code_is_backend_agnostic():
    tree = ast.parse((SRC / "model.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert "tensorflow" not in imported and "keras" in imported
    assert set(ARCHITECTURES) == {"simple-cnn"}
