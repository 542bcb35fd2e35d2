"""tf.data input pipelines over a manifest: decode in parallel with the one decode function, cache
the decoded uint8 arrays, shuffle with the seed, batch and prefetch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from cnnops.artifacts import ModelSpec
from cnnops.images import decode_image


def make_dataset(
    manifest: pd.DataFrame,
    spec: ModelSpec,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """(image, label index) batches; labels not in `spec.class_names` map to -1 (never trained on)."""
    index = {name: i for i, name in enumerate(spec.class_names)}
    labels = np.array([index.get(label, -1) for label in manifest["label"]], dtype=np.int32)
    shape = (spec.height, spec.width, spec.channels)

    def load(path: bytes) -> np.ndarray:
        return decode_image(Path(path.decode()).read_bytes(), spec.mode, spec.size).pixels

    def load_tensor(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixels = tf.numpy_function(load, [path], tf.uint8, stateful=False)
        return tf.ensure_shape(pixels, shape), label

    ds = tf.data.Dataset.from_tensor_slices((manifest["path"].astype(str).to_numpy(), labels))
    ds = ds.map(load_tensor, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if shuffle:
        ds = ds.shuffle(len(manifest), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_deterministic(seed: int) -> None:
    """Same seed, same weights, same metrics: seed every generator and pin TF's kernels."""
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
