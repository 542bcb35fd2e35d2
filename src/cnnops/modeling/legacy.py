"""Load legacy Keras 2 `.h5` full-model files (old tutorials' `model.save("x.h5")`) into Keras 3.

Keras 3 `load_model` refuses many of them (Keras 2 config keys it no longer accepts, a file name
without `.h5`). The fallback rebuilds the architecture from the file's `model_config`, after rewriting
the Keras 2 keys Keras 3 rejects, then copies every stored weight array onto the layer of the same
name, shape-checked. Anything in a user's file that cannot be mapped is one CnnopsError line.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from cnnops.core.errors import CnnopsError

# Keras 2 layer config keys Keras 3 rejects, each with the values that mean "Keras 3 does the same
# without it" (None: any value is harmless). A key with another value stays, and the rebuild names it.
_REMOVED_KEYS: dict[str, tuple[Any, ...] | None] = {
    "fused": None,  # BatchNormalization: an implementation choice
    "virtual_batch_size": (None,),  # BatchNormalization
    "adjustment": (None,),  # BatchNormalization
    "time_major": (False,),  # RNNs: Keras 3 is always batch-major
    "input_length": None,  # Embedding: shape inference only
}
_MODEL_CLASSES = {"Model": keras.Model, "Functional": keras.Model, "Sequential": keras.Sequential}
# Keras exception text often embeds a whole layer config; a user's line keeps only this much of it.
_REASON_CHARS = 200

# What Keras 3 raises for a file or config it refuses: an h5py open error, a layer argument it
# does not take, a value it rejects, a key it misses. Anything else is a bug and is not caught.
_KERAS_REFUSALS = (OSError, TypeError, ValueError, KeyError)


def load_legacy_h5(path: Path) -> keras.Model:
    """The float model exactly as saved in a Keras 2 `.h5` file, uncompiled.

    Keras 3's own loader is tried first; when it refuses the file, the model is rebuilt from its
    config and every stored weight array is copied by layer name, so no weight is silently left at
    its initial value and a file that does not match its own config is an error, not a bad model.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Keras 3 deprecation notes the user cannot act on
            return keras.saving.load_model(path, compile=False)
    except _KERAS_REFUSALS:  # a refusal falls back to the rebuild, whose errors name the cause
        pass
    if not path.is_file():
        raise CnnopsError(f"{path}: no such file.")
    if not h5py.is_hdf5(path):
        raise CnnopsError(f"{path}: not an HDF5 file; expected a Keras 2 model saved with model.save('x.h5').")
    try:
        with h5py.File(path, "r") as handle:
            config = _read_model_config(path, handle)
            model = _rebuild_model(path, config)
            _copy_weights(path, model, handle.get("model_weights", handle))
    except (OSError, KeyError) as err:  # a truncated or hand-edited file
        raise CnnopsError(f"{path}: unreadable Keras 2 model file: {_shorten_reason(err)}") from None
    return model


def _read_model_config(path: Path, handle: h5py.File) -> dict[str, Any]:
    """The parsed `model_config` attribute that `model.save` writes and `save_weights` does not."""
    raw = handle.attrs.get("model_config")
    if raw is None:
        raise CnnopsError(
            f"{path}: the HDF5 file has no model_config (weights only, from save_weights?); "
            "expected a full model saved with model.save('x.h5')."
        )
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise CnnopsError(f"{path}: model_config is not valid JSON: {_shorten_reason(err)}") from None
    if not isinstance(config, dict) or config.get("class_name") not in _MODEL_CLASSES:
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise CnnopsError(
            f"{path}: model_config describes a '{kind}', not a Keras 2 functional Model or "
            "Sequential; only those can be rebuilt."
        )
    if not isinstance(config.get("config"), dict | list):
        raise CnnopsError(f"{path}: model_config has no layers to rebuild the model from.")
    return config


def _rebuild_model(path: Path, config: dict[str, Any]) -> keras.Model:
    """Keras 3 model from a Keras 2 `model_config`; the first layer Keras 3 cannot build is named."""
    config = _rewrite_config(config)
    try:  # Keras pops keys from the config it builds from: keep this one for naming the culprit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Keras 3 deprecation notes the user cannot act on
            return _MODEL_CLASSES[config["class_name"]].from_config(copy.deepcopy(config["config"]))
    except _KERAS_REFUSALS as err:  # what Keras raises for a config it cannot build
        culprit = _find_unbuildable_layer(config["config"].get("layers", []))
        where = f"layer '{culprit[0]}' ({culprit[1]})" if culprit else "the model config"
        raise CnnopsError(f"{path}: {where} cannot be rebuilt in Keras 3: {_shorten_reason(err)}") from None


def _rewrite_config(node: Any) -> Any:
    """Rewrite a Keras 2 config tree, in place, into the keys Keras 3 `from_config` accepts."""
    if isinstance(node, list):
        for item in node:
            _rewrite_config(item)
        return node
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == "Sequential" and isinstance(node.get("config"), list):
        node["config"] = {"name": node.get("name", "sequential"), "layers": node["config"]}  # Keras <= 2.1
    config = node.get("config")
    if isinstance(config, dict) and "name" in config and "class_name" in node:
        _rewrite_layer_config(node["class_name"], config)
    for key, value in node.items():
        if key.endswith("_initializer") and isinstance(value, dict) and isinstance(value.get("config"), dict):
            value["config"].pop("dtype", None)  # Keras 2 initializers carried a dtype; Keras 3's take none
        _rewrite_config(value)
    return node


def _rewrite_layer_config(class_name: str, config: dict[str, Any]) -> None:
    """The renamed and removed keys of one Keras 2 layer's config."""
    batch_input_shape = config.pop("batch_input_shape", None)
    if batch_input_shape is not None:
        if class_name == "InputLayer":
            config["batch_shape"] = batch_input_shape
        else:  # a Sequential's first layer: Keras 3 takes the shape without the batch axis
            config["input_shape"] = batch_input_shape[1:]
    axis = config.get("axis")
    if isinstance(axis, list) and len(axis) == 1:
        config["axis"] = axis[0]  # BatchNormalization saved its axis as a one-item list
    dtype = config.get("dtype")
    if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
        config["dtype"] = dtype["config"].get("name")  # Keras 2.4+ mixed-precision Policy object
    if class_name == "LeakyReLU" and "alpha" in config:
        config["negative_slope"] = config.pop("alpha")
    for key, harmless in _REMOVED_KEYS.items():
        if key in config and (harmless is None or config[key] in harmless):
            del config[key]


def _find_unbuildable_layer(layers: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(name, class) of the first layer config Keras 3 cannot instantiate, nested models searched."""
    for layer in (item for item in layers if isinstance(item, dict)):
        class_name, config = str(layer.get("class_name")), layer.get("config")
        if class_name in _MODEL_CLASSES and isinstance(config, dict):
            found = _find_unbuildable_layer(config.get("layers", []))
            if found:
                return found
            continue
        name = str(layer.get("name") or (config or {}).get("name"))
        layer_class = getattr(keras.layers, class_name, None) or keras.saving.get_registered_object(class_name)
        if layer_class is None:
            return name, class_name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                layer_class.from_config(dict(config or {}))
        except _KERAS_REFUSALS:  # a layer Keras refuses to instantiate is the one named
            return name, class_name
    return None


def _copy_weights(path: Path, model: keras.Model, weights: h5py.Group) -> None:
    """Give every layer of `model` exactly its stored arrays; all checks pass before any assignment."""
    stored = {
        name: arrays
        for name in _read_string_list(weights, "layer_names")
        if name in weights and (arrays := _read_layer_arrays(weights[name]))
    }
    pairs: list[tuple[keras.Variable, np.ndarray]] = []
    for layer in model.layers:
        variables = layer.trainable_weights + layer.non_trainable_weights  # Keras 2's saving order
        if not variables:
            continue
        if layer.name not in stored:
            raise CnnopsError(
                f"{path}: layer '{layer.name}' ({type(layer).__name__}) holds weights the file "
                "does not have; the file does not match its own model_config."
            )
        pairs += _pair_weights(path, layer, variables, stored.pop(layer.name))
    if stored:
        name, arrays = next(iter(stored.items()))
        raise CnnopsError(
            f"{path}: layer '{name}' in the file has {len(arrays)} weight arrays but the rebuilt "
            "model has no layer of that name holding weights."
        )
    for variable, array in pairs:
        variable.assign(array)


def _pair_weights(
    path: Path, layer: keras.Layer, variables: list[keras.Variable], arrays: list[tuple[str, np.ndarray]]
) -> list[tuple[keras.Variable, np.ndarray]]:
    """Match one layer's stored arrays to its variables: by weight name when every name picks out a
    different variable, otherwise in Keras 2's saving order; shapes must agree either way."""
    where = f"{path}: layer '{layer.name}' ({type(layer).__name__})"
    if len(arrays) != len(variables):
        raise CnnopsError(f"{where} has {len(variables)} weights in Keras 3 but {len(arrays)} in the file.")
    by_name = [[v for v in variables if v.path == key or v.path.endswith(f"/{key}")] for key, _ in arrays]
    ordered = [found[0] for found in by_name if len(found) == 1]
    if len({id(v) for v in ordered}) != len(variables):
        ordered = variables  # names differ between Keras 2 and 3 (e.g. depthwise_kernel vs kernel)
    for variable, (key, array) in zip(ordered, arrays, strict=True):
        if tuple(variable.shape) != array.shape:
            raise CnnopsError(
                f"{where}: weight '{key}' has shape {array.shape} in the file, "
                f"the model expects {tuple(variable.shape)}."
            )
    return [(variable, array) for variable, (_, array) in zip(ordered, arrays, strict=True)]


def _read_layer_arrays(group: h5py.Group) -> list[tuple[str, np.ndarray]]:
    """(weight name without its ':0', array) of one Keras 2 layer group, in saved order."""
    return [(name.rsplit(":", 1)[0], np.asarray(group[name])) for name in _read_string_list(group, "weight_names")]


def _read_string_list(group: h5py.Group, name: str) -> list[str]:
    """A Keras 2 list-of-names attribute, which Keras 2 split into `name0`, `name1`... when large."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [
        item.decode("utf-8") if isinstance(item, bytes) else str(item)
        for chunk in chunks
        for item in np.atleast_1d(chunk)
    ]


def _shorten_reason(err: BaseException) -> str:
    """One short line from an exception whose text may carry a whole layer config."""
    line = " ".join(str(err).split("Exception encountered:")[-1].split()) or type(err).__name__
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."
