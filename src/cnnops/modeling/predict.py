"""Prediction on raw image bytes, shared by the HTTP service, `cnnops predict` and the benchmarks.

The model comes from a served-model folder (`cnnops.inference.export`). Serving decodes with the one decode
function into the exact uint8 array training saw; every other step (resize, rescale) is inside
the model, so there is no train/serve skew to drift.

TensorFlow and Keras are imported only where a model is loaded, so the HTTP front end that only
decodes stays light.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnops.contracts.model import ModelSpec
from cnnops.contracts.served import MODEL_FILE, FilePrediction, Prediction, ServedModel
from cnnops.core.errors import ImageDecodeError
from cnnops.data.images import decode_image

if TYPE_CHECKING:
    import keras

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.IGNORECASE)


def load_keras_model(folder: Path) -> keras.Model:
    """The exported model, ready to call; compiled state is not needed to predict."""
    import keras

    return keras.saving.load_model(folder / MODEL_FILE, compile=False)


def decode_for_model(data: bytes, spec: ModelSpec, max_pixels: int) -> np.ndarray:
    """Image bytes to the HxWxC uint8 array the model takes, exactly as the training input does."""
    return decode_image(data, spec.mode, spec.size, max_pixels=max_pixels).pixels


def decode_base64_image(text: str, max_bytes: int) -> bytes:
    """Bytes of a base64 image, bare or as a data URL (what a drawing canvas's toDataURL sends)."""
    text = text.strip()
    found = _DATA_URL.match(text)
    if found is not None:
        text = text[found.end() :]
    elif text.startswith("data:"):
        raise ImageDecodeError("data URL is not base64-encoded (expected 'data:<type>;base64,<data>')")
    if len(text) * 3 // 4 > max_bytes:
        raise ImageDecodeError(f"image is over the size limit of {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("invalid base64 image data") from None


def predict_pixels(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities for a uint8 batch through the model's compiled predict step: no pyfunc
    wrapping, no progress bar, and (unlike an eager `model(x)`) no per-layer Python dispatch.
    A model `with_embedding` made gives [probabilities | embedding] side by side in one array, so
    a batcher passes both through as one."""
    outputs = model.predict_on_batch(pixels)
    if isinstance(outputs, list | tuple):
        return np.concatenate([np.asarray(o, dtype=np.float32) for o in outputs], axis=1)
    return np.asarray(outputs, dtype=np.float32)


def with_embedding(model: keras.Model) -> keras.Model | None:
    """The same model with its penultimate activations (the input of its dense head) as a second
    output: [probabilities, embedding] from one call, sharing every weight.

    The head is the last layer, or the layer a final softmax reads (an imported logits model). An
    imported model is wrapped around the user's own model, nested: its head is found inside, and
    the nested model is called once, on what the wrapper fed it. None when there is no head that
    reads a flat vector: such a model serves, but gets no drift reference."""
    import keras

    layers = model.layers
    finish = layers[-1] if isinstance(layers[-1], keras.layers.Softmax) and len(layers) > 1 else None
    position = len(layers) - (2 if finish is not None else 1)
    head = layers[position]
    if isinstance(head, keras.Model):
        return nested_with_embedding(model, head, position, finish)
    if len(head.input.shape) != 2 or (finish is not None and finish.input is not head.output):
        return None
    return keras.Model(model.inputs, [model.outputs[0], head.input], name=f"{model.name}_embedding")


def nested_with_embedding(
    model: keras.Model, nested: keras.Model, position: int, finish: keras.Layer | None
) -> keras.Model | None:
    """`with_embedding` of a wrapper whose last model call is `nested`, fed by the layer before it."""
    import keras

    inner = with_embedding(nested)
    if inner is None or position == 0 or len(model.inputs) != 1:
        return None
    fed = model.layers[position - 1].output
    if tuple(fed.shape) != tuple(nested.inputs[0].shape):
        return None
    probabilities, embedding = inner(fed)
    if finish is not None:
        probabilities = finish(probabilities)
    return keras.Model(model.inputs, [probabilities, embedding], name=f"{model.name}_embedding")


def batch_buckets(max_batch_size: int) -> list[int]:
    """The batch sizes a server calls the model with: powers of two up to the cap."""
    sizes = [1]
    while sizes[-1] < max_batch_size:
        sizes.append(min(sizes[-1] * 2, max_batch_size))
    return sizes


def predict_bucketed(model: keras.Model, pixels: np.ndarray, buckets: list[int]) -> np.ndarray:
    """`predict_pixels`, with the batch zero-padded up to the next bucket size.

    A compiled predict step is traced once per input shape, and a trace costs a few hundred ms;
    with adaptive batching every batch size from 1 to the cap turns up, so without buckets the
    first minutes of serving keep stalling. Padding caps the traces at len(buckets), all made at
    warm-up. Rows are independent at inference, so the padding cannot change any result.
    """
    size = next((b for b in buckets if b >= len(pixels)), len(pixels))
    if size == len(pixels):
        return predict_pixels(model, pixels)
    padded = np.zeros((size, *pixels.shape[1:]), dtype=pixels.dtype)
    padded[: len(pixels)] = pixels
    return predict_pixels(model, padded)[: len(pixels)]


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[Prediction]:
    """The k most likely classes of one image, most likely first."""
    order = np.argsort(-probabilities, kind="stable")[: max(1, min(k, len(class_names)))]
    return [Prediction(label=class_names[i], probability=float(probabilities[i])) for i in order]


def classify_files(paths: list[Path], served: ServedModel, k: int, max_pixels: int) -> list[FilePrediction]:
    """`cnnops predict`: the service's decode and model call, on files; an unreadable file gets its
    reason instead of predictions and does not stop the others."""
    model = load_keras_model(served.folder)
    results: list[FilePrediction] = []
    pixels: list[np.ndarray] = []
    for path in paths:
        try:
            pixels.append(decode_for_model(path.read_bytes(), served.spec, max_pixels))
            results.append(FilePrediction(file=str(path)))
        except ImageDecodeError as err:
            results.append(FilePrediction(file=str(path), error=str(err)))
        except OSError as err:
            results.append(FilePrediction(file=str(path), error=f"cannot read: {err.strerror}"))
    if not pixels:
        return results
    probabilities = iter(predict_pixels(model, np.stack(pixels)))
    return [
        result
        if result.error is not None
        else result.model_copy(update={"predictions": top_k(next(probabilities), served.spec.class_names, k)})
        for result in results
    ]
