"""Training's step lines, from a real (tiny) Keras fit."""

import keras
import numpy as np

from cnnops.train_progress import StepProgress


def test_steps_are_counted_within_each_epoch(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((12, 4), "float32"), np.zeros(12, "int32")
    counter = StepProgress(epochs=2, interval=0)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[counter])
    shown = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    # The first epoch's steps but its last, which the epoch's own line reports; later epochs
    # have only their own lines.
    assert shown == ["cnnops: train: epoch 1/2, steps: 1/3", "cnnops: train: epoch 1/2, steps: 2/3"]


def test_a_resumed_fit_counts_its_own_first_epoch(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    model.fit(x, y, batch_size=4, initial_epoch=2, epochs=4, verbose=0, callbacks=[StepProgress(4, interval=0)])
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == [
        "cnnops: train: epoch 3/4, steps: 1/2"
    ]
