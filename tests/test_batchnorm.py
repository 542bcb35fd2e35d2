"""Precise batchnorm statistics: the moving mean and variance become the average over the given
batches, and a nested backbone keeps its own."""

import keras
import numpy as np
import pytest

from cnnops.batchnorm import own_batchnorm_layers, recalibrate_batchnorm


def test_statistics_become_the_average_over_the_batches():
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=2.0, size=(16, 4)).astype("float32") for _ in range(5)]
    (norm,) = own_batchnorm_layers(model)
    assert recalibrate_batchnorm(model, batches) == 5
    assert np.asarray(norm.moving_mean) == pytest.approx(np.mean([b.mean(axis=0) for b in batches], axis=0),
                                                         abs=1e-5)
    assert np.asarray(norm.moving_variance) == pytest.approx(np.mean([b.var(axis=0) for b in batches], axis=0),
                                                             abs=1e-4)
    assert norm.momentum == 0.9  # put back for training


def test_a_nested_backbone_keeps_its_statistics():
    inner_in = keras.Input(shape=(4,))
    backbone = keras.Model(inner_in, keras.layers.BatchNormalization()(inner_in), name="backbone")
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, backbone(inputs, training=False))
    before = [np.asarray(w).copy() for w in backbone.weights]
    assert own_batchnorm_layers(model) == []
    assert recalibrate_batchnorm(model, [np.ones((8, 4), "float32")]) == 0
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, backbone.weights, strict=True))
