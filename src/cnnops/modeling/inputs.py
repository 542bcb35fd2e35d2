"""tf.data input pipelines over a manifest: decode in parallel with the one decode function, cache
the decoded uint8 arrays, shuffle with the seed, batch and prefetch.

Every file is checked against the sha256 ingest recorded, so a model is never trained or scored
on data other than what its fingerprint describes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import tensorflow as tf

from cnnops.contracts.model import ModelSpec
from cnnops.core.errors import CnnopsError

if TYPE_CHECKING:
    import keras
from cnnops.data.images import decode_image, sha256_bytes

# Errors raised inside tf.numpy_function reach the caller wrapped in a TensorFlow error; this
# marker lets `input_errors_as_user_errors` find the user-facing sentence again.
_MARKER = "cnnops-input:"


def make_dataset(
    manifest: pd.DataFrame,
    spec: ModelSpec,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    targets: np.ndarray | None = None,
) -> tf.data.Dataset:
    """(image, label index) batches; labels not in `spec.class_names` map to -1 (never trained on).

    `targets`, one row per manifest row, replaces the label index (distillation packs the label and
    a teacher's probabilities into one row).
    """
    index = spec.class_index
    labels = np.array([index.get(label, -1) for label in manifest["label"]], dtype=np.int32)
    if targets is not None:
        labels = targets
    shape = (spec.height, spec.width, spec.channels)

    def load(path: bytes, sha256: bytes) -> np.ndarray:
        return load_checked(Path(path.decode()), sha256.decode(), spec)

    def load_tensor(path: tf.Tensor, sha256: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixels = tf.numpy_function(load, [path, sha256], tf.uint8, stateful=False)
        return tf.ensure_shape(pixels, shape), label

    ds = tf.data.Dataset.from_tensor_slices(
        (manifest["path"].astype(str).to_numpy(), manifest["sha256"].astype(str).to_numpy(), labels)
    )
    ds = ds.map(load_tensor, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if shuffle:
        ds = ds.shuffle(len(manifest), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_checked(path: Path, sha256: str, spec: ModelSpec) -> np.ndarray:
    """Read and decode one manifest entry, refusing a file that changed since ingest."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{_MARKER} {path} can no longer be read ({err.strerror}); re-run ingest.") from None
    if sha256_bytes(data) != sha256:
        raise ValueError(f"{_MARKER} {path} changed since ingest; re-run ingest on the current data.")
    return decode_image(data, spec.mode, spec.size).pixels


def load_sample(manifest: pd.DataFrame, spec: ModelSpec, count: int, seed: int = 0) -> np.ndarray:
    """At most `count` of the manifest's images, drawn with the seed and decoded as the model
    takes them (N×H×W×C uint8): what an export is checked on."""
    rows = manifest.sample(n=min(count, len(manifest)), random_state=seed).sort_index()
    try:
        return np.stack(
            [load_checked(Path(path), sha, spec) for path, sha in zip(rows["path"], rows["sha256"], strict=True)]
        )
    except ValueError as err:
        raise CnnopsError(str(err).removeprefix(_MARKER).strip()) from None


@contextmanager
def input_errors_as_user_errors() -> Iterator[None]:
    """Turn a changed or vanished input file, met deep inside tf.data, into a one-line CnnopsError."""
    try:
        yield
    except tf.errors.OpError as err:
        found = re.search(re.escape(_MARKER) + r" ([^\n]*?)(?:'\)|\n|$)", err.message)
        if found is None:
            raise
        raise CnnopsError(found.group(1).strip()) from None


def make_deterministic(seed: int, exact_kernels: bool = True) -> None:
    """Same seed, same weights, same metrics: seed every generator and pin TF's kernels.

    Keras will not compile with XLA while TF's deterministic kernels are on, so an XLA run is
    seeded but not bit-for-bit repeatable (`exact_kernels=False`).
    """
    import keras
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(seed)
    if exact_kernels:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


# Images per model call when a whole manifest is scored.
EVAL_BATCH = 256


def predict_manifest(model: keras.Model, spec: ModelSpec, manifest: pd.DataFrame) -> np.ndarray:
    """Class probabilities for every image of a manifest, in manifest order."""
    batches = make_dataset(manifest, spec, EVAL_BATCH).map(lambda image, label: image)
    with input_errors_as_user_errors():
        return np.concatenate([np.asarray(model(batch, training=False)) for batch in batches])
