"""The served model's second output: the embedding its dense head reads, from the same call as
the probabilities, for cnnops' own models and for imported ones wrapped around a user's model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from cnnops.modeling.predict import predict_pixels, with_embedding
from cnnops.promotion.importer import wrap_for_cnnops

PIXELS = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3)).astype(np.uint8)


def users_model(logits: bool) -> keras.Model:
    image = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu")(image)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(5, activation="relu")(x)
    return keras.Model(image, layers.Dense(3, activation=None if logits else "softmax")(x), name="users")


@pytest.mark.parametrize("logits", [False, True])
def test_an_imported_model_gives_the_embedding_of_its_own_head(logits: bool, tmp_path: Path) -> None:
    wrapped, _ = wrap_for_cnnops(users_model(logits), ["a", "b", "c"], "unit", tmp_path / "users.keras", logits)
    wrapped.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    both = with_embedding(loaded)
    assert both is not None
    probabilities, embedding = both.predict_on_batch(PIXELS)
    assert embedding.shape == (6, 5)  # the width of the layer the head reads
    np.testing.assert_allclose(probabilities, loaded.predict_on_batch(PIXELS), atol=1e-6)
    # one pass through the user's layers: the wrapper's own call of the user's model is not in the
    # graph, and the one nested model there is built of the user's very layers (shared weights)
    user = next(layer for layer in loaded.layers if isinstance(layer, keras.Model))
    nested = [layer for layer in both.layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1 and nested[0] is not user
    assert [id(layer) for layer in nested[0].layers[1:]] == [id(layer) for layer in user.layers[1:]]
    # predict_pixels gives both side by side, as the service's batcher passes them on
    assert predict_pixels(both, PIXELS).shape == (6, 3 + 5)


def test_a_model_with_no_dense_head_over_a_vector_gives_none() -> None:
    image = keras.Input((16, 16, 3))
    x = layers.Conv2D(3, 16)(image)  # a 1x1x3 map, never flattened
    assert with_embedding(keras.Model(image, layers.Softmax()(x))) is None
    sequential = keras.Sequential([keras.Input((16, 16, 3)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    found = with_embedding(sequential)
    assert found is not None and found.outputs[1].shape[-1] == 16 * 16 * 3
