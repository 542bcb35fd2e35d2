"""Precise batchnorm statistics: the moving mean and variance become the average over the given
batches, and a nested backbone keeps its own."""

import keras
import numpy as np
import pytest

from cnnops.training.batchnorm import own_batchnorm_layers, recalibrate_batchnorm


def test_statistics_become_the_average_over_the_batches():
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=2.0, size=(16, 4)).astype("float32") for _ in range(5)]
    (norm,) = own_batchnorm_layers(model)
    assert recalibrate_batchnorm(model, batches) == 5
    assert np.asarray(norm.moving_mean) == pytest.approx(np.mean([b.mean(axis=0) for b in batches], axis=0), abs=1e-5)
    assert np.asarray(norm.moving_variance) == pytest.approx(
        np.mean([b.var(axis=0) for b in batches], axis=0), abs=1e-4
    )
    assert norm.momentum == 0.9  # put back for training


def model_with_a_backbone() -> tuple[keras.Model, keras.Model]:
    """A batchnorm layer of the model's own after a nested backbone with its own batchnorm."""
    inner_in = keras.Input(shape=(4,))
    backbone = keras.Model(inner_in, keras.layers.BatchNormalization()(inner_in), name="backbone")
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.BatchNormalization(momentum=0.9, name="head_norm")(backbone(inputs, training=False))
    return keras.Model(inputs, outputs), backbone


def test_a_nested_backbone_keeps_its_statistics_while_the_own_layer_is_recalibrated():
    model, backbone = model_with_a_backbone()
    before = [np.asarray(w).copy() for w in backbone.weights]
    assert [layer.name for layer in own_batchnorm_layers(model)] == ["head_norm"]
    batches = [np.full((8, 4), 2.0, "float32"), np.full((8, 4), 4.0, "float32")]
    assert recalibrate_batchnorm(model, batches) == 2
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, backbone.weights, strict=True))
    assert backbone.trainable  # frozen only while the statistics were recomputed
    # The backbone (inference mode, fresh statistics 0 and 1) passes x through as about x: means 2 and 4.
    assert np.asarray(model.get_layer("head_norm").moving_mean) == pytest.approx(np.full(4, 3.0), abs=1e-2)


def test_a_failed_recalibration_leaves_the_statistics_as_they_were():
    model, _ = model_with_a_backbone()
    norm = model.get_layer("head_norm")
    norm.moving_mean.assign(np.full(4, 7.0, "float32"))

    def batches():
        yield np.ones((8, 4), "float32")
        raise OSError("a training image vanished")

    with pytest.raises(OSError, match="vanished"):
        recalibrate_batchnorm(model, batches())
    assert np.asarray(norm.moving_mean) == pytest.approx(np.full(4, 7.0)) and norm.momentum == 0.9


def test_early_stopping_waits_for_the_warm_up():
    from cnnops.training.checkpoints import ResumableEarlyStopping

    model, _ = model_with_a_backbone()
    early = ResumableEarlyStopping(monitor="val_loss", patience=1, min_epochs=5)
    early.set_model(model)
    early.on_train_begin()
    stopped_at = None
    for epoch in range(10):  # val loss only gets worse after the first epoch
        model.stop_training = False
        early.on_epoch_end(epoch, {"val_loss": 1.0 + epoch})
        if model.stop_training:
            stopped_at = epoch
            break
    assert stopped_at == 4  # the fifth epoch: the first that the warm-up allows
    assert early.best_epoch == 0  # the best epoch is still tracked from the start
