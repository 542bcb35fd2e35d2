"""Training's step lines, from a real (tiny) Keras fit."""

import keras
import numpy as np

from cnnops.train_progress import StepProgress


def test_steps_are_counted_within_each_epoch(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((12, 4), "float32"), np.zeros(12, "int32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[StepProgress(epochs=2, interval=0)])
    shown = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    # Every step but the last of an epoch; the epoch's own line reports its end.
    assert shown == [f"cnnops: train: epoch {e}/2, steps: {s}/3" for e in (1, 2) for s in (1, 2)]
