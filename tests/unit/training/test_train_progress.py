"""Training's step lines, from a real (tiny) Keras fit."""

import keras
import numpy as np

from cnnops.training.progress import StepProgress


def test_steps_are_counted_in_the_first_epoch(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((32, 4), "float32"), np.zeros(32, "int32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[StepProgress(epochs=2)])
    shown = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    # A quarter, half and three quarters of the first epoch; later epochs have only their own lines.
    assert shown == [f"cnnops: train: epoch 1/2, steps: {step}/8" for step in (2, 4, 6)]


def test_a_resumed_fit_counts_its_own_first_epoch(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    model.fit(x, y, batch_size=4, initial_epoch=2, epochs=4, verbose=0, callbacks=[StepProgress(4, lines=1)])
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == [
        "cnnops: train: epoch 3/4, steps: 1/2"
    ]
