"""Prediction on raw image bytes, shared by the HTTP service, `cnnops predict` and the benchmarks.

A *served-model folder* holds one registered version, pinned: `model.keras` plus `served.json`
(the input spec from the registry, and the version's name, number, alias and test metrics).
Serving decodes with the one decode function into the exact uint8 array training saw; every
other step (resize, rescale) is inside the model, so there is no train/serve skew to drift.

TensorFlow, Keras and MLflow are imported only where a model is loaded or exported, so the
HTTP front end that only decodes stays light.
"""

from __future__ import annotations

import base64
import binascii
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnops.artifacts import ModelSpec, read_json, write_json
from cnnops.errors import CnnopsError, ImageDecodeError
from cnnops.images import decode_image
from cnnops.paths import state_home

if TYPE_CHECKING:
    import keras

SERVED_FILE = "served.json"
MODEL_FILE = "model.keras"
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ServedModel:
    """What the service says about its model and needs to feed it: the spec and the registry facts."""

    folder: Path
    spec: ModelSpec
    info: dict[str, Any]


def served_models_home() -> Path:
    """Where exported versions are kept, one folder per registered version."""
    return state_home() / "serving"


def export_registered(name: str, reference: str = "champion", out_root: Path | None = None) -> ServedModel:
    """Pin one registered version (an alias or a version number) into a served-model folder.

    The folder is named by version, so re-exporting the same version reuses it, and a new
    champion never changes what an already exported folder serves.
    """
    from cnnops.tracking_server import proxied_artifacts_reachable

    with proxied_artifacts_reachable(name):
        return export_version(name, reference, out_root or served_models_home())


def export_version(name: str, reference: str, out_root: Path) -> ServedModel:
    from mlflow.tracking import MlflowClient

    from cnnops.registry import describe_version
    from cnnops.tracking import use_tracking_store

    uri = use_tracking_store()
    client = MlflowClient()
    version = resolve_version(client, name, reference, uri)
    spec = model_spec_of(f"models:/{name}/{version.version}")
    if spec is None:
        raise CnnopsError(
            f"{name} v{version.version} carries no cnnops input spec in its model metadata (it was "
            "not trained by cnnops), so its classes and input size are unknown; it cannot be served."
        )
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items() if int(v) == int(version.version))
    folder = out_root / f"{name}-v{version.version}"
    # No tracking URI here: /info is public, and a store URI can carry credentials.
    info = {"registered_model": name, "requested": reference, **describe_version(version, aliases)}
    if not (folder / MODEL_FILE).is_file():
        write_model_file(f"models:/{name}/{version.version}", folder)
    write_json(folder / SERVED_FILE, {"spec": spec.to_dict(), "info": info})
    return ServedModel(folder, spec, info)


def model_spec_of(model_uri: str) -> ModelSpec | None:
    """The class names and input size and mode the model was saved with (its MLflow metadata)."""
    from mlflow.models import get_model_info

    raw = (get_model_info(model_uri).metadata or {}).get("cnnops")
    return None if raw is None else ModelSpec.from_dict(raw)


def resolve_version(client: Any, name: str, reference: str, uri: str) -> Any:
    """The model version an alias or a version number names, or one line saying why there is none."""
    from cnnops.registry import find_alias

    if reference.isdigit():
        from mlflow.exceptions import MlflowException

        try:
            return client.get_model_version(name, reference)
        except MlflowException:
            raise CnnopsError(f"{name} has no version {reference} in {uri}; see `cnnops status`.") from None
    version = find_alias(client, name, reference)
    if version is None:
        raise CnnopsError(
            f"no {reference} registered for model '{name}' in {uri}; run `make run` (or "
            "`cnnops run`) to train and register one, or name another model with --model-name."
        )
    return version


def write_model_file(model_uri: str, folder: Path) -> None:
    """Save a registered model as one `.keras` file, written aside and moved in whole."""
    import mlflow

    model = mlflow.keras.load_model(model_uri)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        path = Path(scratch) / MODEL_FILE
        model.save(path)
        shutil.move(path, folder / MODEL_FILE)


def read_served_model(folder: Path) -> ServedModel:
    """The spec and registry facts of an exported folder; no TensorFlow needed."""
    if not (folder / MODEL_FILE).is_file():
        raise CnnopsError(
            f"{folder} holds no {MODEL_FILE}; export a registered version first (`cnnops serve` and `make bento` do)."
        )
    raw = read_json(folder / SERVED_FILE)
    return ServedModel(folder, ModelSpec.from_dict(raw["spec"]), raw["info"])


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
    wrapping, no progress bar, and (unlike an eager `model(x)`) no per-layer Python dispatch."""
    return np.asarray(model.predict_on_batch(pixels), dtype=np.float32)


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


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[dict[str, Any]]:
    """The k most likely classes of one image, most likely first."""
    order = np.argsort(-probabilities, kind="stable")[: max(1, min(k, len(class_names)))]
    return [{"label": class_names[i], "probability": float(probabilities[i])} for i in order]


def classify_files(paths: list[Path], served: ServedModel, k: int, max_pixels: int) -> list[dict[str, Any]]:
    """`cnnops predict`: the service's decode and model call, on files; an unreadable file gets its
    reason instead of predictions and does not stop the others."""
    model = load_keras_model(served.folder)
    results: list[dict[str, Any]] = []
    pixels: list[np.ndarray] = []
    for path in paths:
        try:
            pixels.append(decode_for_model(path.read_bytes(), served.spec, max_pixels))
            results.append({"file": str(path)})
        except ImageDecodeError as err:
            results.append({"file": str(path), "error": str(err)})
        except OSError as err:
            results.append({"file": str(path), "error": f"cannot read: {err.strerror}"})
    if pixels:
        probabilities = iter(predict_pixels(model, np.stack(pixels)))
        for result in results:
            if "error" not in result:
                result["predictions"] = top_k(next(probabilities), served.spec.class_names, k)
    return results
