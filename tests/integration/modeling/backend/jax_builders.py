"""Run under KERAS_BACKEND=jax by tests/unit/test_model.py: every builder builds, and two (a scratch net
and a backbone) predict and take a training step. Prints one JSON line of what it saw.

Only two are compiled: XLA-compiling all six on a 2-core CI machine would take minutes."""

import json
import sys

import keras
import numpy as np

from cnnops.contracts.model import ModelSpec
from cnnops.modeling.builders import ARCHITECTURES, ModelOptions, build_model

TRAINED = ("simple-cnn",)
seen = {"backend": keras.backend.backend(), "models": {}}
images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 1), dtype=np.uint8)
for name in sorted(ARCHITECTURES):
    model = build_model(
        ModelSpec(["a", "b", "c"], 28, 28, "L", name),
        ModelOptions(working_size=32, augment=(("flip", 1.0), ("rotation", 0.05))),
    )
    row = {"output": list(model.outputs[0].shape)}
    if name in TRAINED:
        row["predicted"] = list(np.asarray(model.predict_on_batch(images)).shape)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        before = [np.array(w) for w in model.trainable_weights]
        row["loss"] = float(model.train_on_batch(images, np.array([0, 1, 2, 0])))
        row["updated"] = any(
            not np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(before, model.trainable_weights, strict=True)
        )
    seen["models"][name] = row
seen["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(seen))
