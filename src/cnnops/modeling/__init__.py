"""Keras models: the builders, pretrained backbones, legacy imports, tf.data inputs and prediction."""
