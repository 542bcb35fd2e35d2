"""Export a Keras model to a runtime format, and refuse an export that answers differently.

Every format exports the *served function*: uint8 images in, `[probabilities | embedding]` out,
the model called in inference mode. Keras 3's own `model.export(format="onnx")` traces the
batchnorm layers as in training and answers wrongly with no error, so ONNX goes through tf2onnx
on an explicit `training=False` function; and whatever the converter, the export is run on the
version's own test images and held to the tolerances in `export` before anyone uses it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cnnops.contracts.export import EXPORT_FILES, ExportFormat, ExportReport, TensorSignature
from cnnops.contracts.model import ModelSpec
from cnnops.core.errors import CnnopsError
from cnnops.inference.onnx_runtime import load_onnx_model
from cnnops.modeling.predict import predict_pixels, with_embedding
from cnnops.settings.config import ExportConfig

ONNX_OPSET = 17
# An export loaded in its own runtime: its predict function, and its inputs and outputs as the
# runtime reports them.
LoadedExport = tuple[Callable[[np.ndarray], np.ndarray], list[TensorSignature], list[TensorSignature]]
# Exports are checked in batches of this many images (the served batcher's largest call).
PARITY_BATCH = 64


def served_model(model: keras.Model, spec: ModelSpec) -> tuple[keras.Model, int]:
    """The model whose outputs the service reads, [probabilities, embedding], and the embedding's
    width. Refuses, in one line, a model that does not take uint8 images of the spec's size, whose
    output is not one row of class probabilities, or that has no embedding to give beside it."""
    expected = (None, spec.height, spec.width, spec.channels)
    if len(model.inputs) != 1 or tuple(model.inputs[0].shape) != expected or model.inputs[0].dtype != "uint8":
        found = ", ".join(f"{i.dtype} {tuple(i.shape)}" for i in model.inputs)
        raise CnnopsError(
            f"cannot export: the model takes {found}, not uint8 images of {expected[1:]}; "
            "cnnops exports models whose first layers decode-scale uint8 images (train one with cnnops)."
        )
    if len(model.outputs) != 1 or tuple(model.outputs[0].shape) != (None, len(spec.class_names)):
        found = ", ".join(str(tuple(o.shape)) for o in model.outputs)
        raise CnnopsError(
            f"cannot export: the model gives {found}, not one row of {len(spec.class_names)} class probabilities."
        )
    embedded = with_embedding(model)
    if embedded is None:
        raise CnnopsError(
            "cannot export: the model's output cannot carry its embedding (its last layer is not a dense head over "
            "a flat vector), and the served function gives both for drift; serve it with serve.runtime: keras."
        )
    return embedded, int(embedded.outputs[1].shape[-1])


def served_function(model: keras.Model, spec: ModelSpec) -> tf.types.experimental.GenericFunction:
    """The served function as one TensorFlow graph, every layer in inference mode."""

    @tf.function(input_signature=[tf.TensorSpec((None, spec.height, spec.width, spec.channels), tf.uint8, "image")])
    def serve(image: tf.Tensor) -> tf.Tensor:
        outputs = model(image, training=False)
        if isinstance(outputs, list | tuple):
            return tf.concat([tf.cast(o, tf.float32) for o in outputs], axis=1, name="outputs")
        return tf.identity(tf.cast(outputs, tf.float32), name="outputs")

    return serve


def write_onnx(model: keras.Model, spec: ModelSpec, path: Path) -> None:
    """The served function frozen into one graph (weights and the constants layers keep, such as
    a Normalization's mean, become graph constants; tf2onnx's own freezing leaves the latter as
    extra inputs), then converted."""
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(served_function(model, spec).get_concrete_function())
    tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs],
        opset=ONNX_OPSET,
        output_path=str(path),
    )


def write_litert(model: keras.Model, spec: ModelSpec, path: Path) -> None:
    """Keras's own LiteRT export (it traces in inference mode and matches), of the served outputs
    joined into the one output the runtime reads."""
    outputs = model.outputs
    joined = keras.layers.Concatenate(name="outputs")(outputs) if len(outputs) > 1 else outputs[0]
    keras.Model(model.inputs, joined).export(str(path), format="litert", verbose=False)


def write_savedmodel(model: keras.Model, spec: ModelSpec, path: Path) -> None:
    serve = served_function(model, spec)
    holder = tf.Module()
    holder.model, holder.serve = model, serve
    tf.saved_model.save(holder, str(path), signatures={"serving_default": serve})


def run_onnx(path: Path, spec: ModelSpec) -> LoadedExport:
    loaded = load_onnx_model(path, spec.height, spec.width, spec.channels)
    inputs, outputs = loaded.signature()
    return loaded.predict, inputs, outputs


def run_litert(path: Path, spec: ModelSpec) -> LoadedExport:
    interpreter = tf.lite.Interpreter(model_path=str(path))
    (feed,), (fetch,) = interpreter.get_input_details(), interpreter.get_output_details()

    def predict(pixels: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(feed["index"], list(pixels.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(feed["index"], pixels)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(fetch["index"]), dtype=np.float32)

    return predict, [litert_signature(feed)], [litert_signature(fetch)]


def litert_signature(detail: dict) -> TensorSignature:
    shape = [None if int(s) < 0 else int(s) for s in detail.get("shape_signature", detail["shape"])]
    return TensorSignature(name=str(detail["name"]), shape=shape, dtype=np.dtype(detail["dtype"]).name)


def run_savedmodel(path: Path, spec: ModelSpec) -> LoadedExport:
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (feed,) = serve.structured_input_signature[1].values()
    ((name, fetch),) = serve.structured_outputs.items()

    def predict(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(serve(tf.constant(pixels))[name], dtype=np.float32)

    return predict, [tensor_signature(feed.name, feed)], [tensor_signature(name, fetch)]


def tensor_signature(name: str, tensor: tf.TensorSpec) -> TensorSignature:
    return TensorSignature(
        name=name, shape=[None if d is None else int(d) for d in tensor.shape], dtype=tensor.dtype.name
    )


WRITERS: dict[ExportFormat, Callable[[keras.Model, ModelSpec, Path], None]] = {
    "onnx": write_onnx,
    "litert": write_litert,
    "savedmodel": write_savedmodel,
}
RUNNERS: dict[ExportFormat, Callable[[Path, ModelSpec], LoadedExport]] = {
    "onnx": run_onnx,
    "litert": run_litert,
    "savedmodel": run_savedmodel,
}


def predict_in_batches(predict: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(pixels[i : i + PARITY_BATCH]) for i in range(0, len(pixels), PARITY_BATCH)])


def measure_parity(
    fmt: ExportFormat,
    file: str,
    expected: np.ndarray,
    exported: np.ndarray | Exception,
    classes: int,
    signature: tuple[list[TensorSignature], list[TensorSignature]],
    config: ExportConfig,
) -> ExportReport:
    """The export's answers against the Keras model's: the largest probability difference and
    the share of images with the same top class; or, when the converter or the runtime failed
    (`exported` is its exception), no figures and that failure as the problem."""
    difference = agreement = problem = None
    if isinstance(exported, Exception):
        said = str(exported).strip().splitlines()
        problem = f"{type(exported).__name__}: {said[0][:300] if said else 'no message'}"
    else:
        probabilities, served = expected[:, :classes], exported[:, :classes]
        difference = float(np.abs(probabilities - served).max())
        agreement = float((probabilities.argmax(axis=1) == served.argmax(axis=1)).mean())
    return ExportReport(
        format=fmt,
        file=file,
        passed=(
            difference is not None
            and agreement is not None
            and difference <= config.max_abs_diff
            and agreement >= config.min_top1_agreement
        ),
        images=len(expected),
        max_abs_diff=difference,
        top1_agreement=agreement,
        allowed_abs_diff=config.max_abs_diff,
        required_top1_agreement=config.min_top1_agreement,
        probabilities=classes,
        embedding_width=expected.shape[1] - classes,
        inputs=signature[0],
        outputs=signature[1],
        problem=problem,
    )


def export_model(
    model: keras.Model, spec: ModelSpec, pixels: np.ndarray, fmt: ExportFormat, target: Path, config: ExportConfig
) -> ExportReport:
    """Write `fmt`'s export of the served function to `target` and report its parity on
    `pixels`. A failed export is not written (and an earlier one at `target` is removed): the
    report says why."""
    served, _ = served_model(model, spec)
    if pixels.shape[1:] != (spec.height, spec.width, spec.channels):
        raise CnnopsError(
            f"the parity images are {'×'.join(map(str, pixels.shape[1:]))}, the model takes "
            f"{spec.height}×{spec.width}×{spec.channels}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as scratch:
        written = Path(scratch) / EXPORT_FILES[fmt]
        expected = predict_in_batches(lambda batch: predict_pixels(served, batch), pixels)
        exported: np.ndarray | Exception
        signature: tuple[list[TensorSignature], list[TensorSignature]] = ([], [])
        try:
            WRITERS[fmt](served, spec, written)
            predict, inputs, outputs = RUNNERS[fmt](written, spec)
            signature = (inputs, outputs)
            exported = predict_in_batches(predict, pixels)
            if exported.shape != expected.shape:
                raise ValueError(f"it gives rows of {exported.shape[1:]} values, the model {expected.shape[1:]}")
        except Exception as err:  # a converter's or runtime's own fault: the report carries it
            exported = err
        report = measure_parity(fmt, target.name, expected, exported, len(spec.class_names), signature, config)
        remove(target)  # an earlier export must not outlive a newer one that failed
        if report.passed:
            written.replace(target)
    return report


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def export_folder(
    folder: Path, fmt: ExportFormat, out: Path, config: ExportConfig, images: Path | None = None
) -> ExportReport:
    """`cnnops export`: the model of a served-model or model folder to `out`, checked on the
    folder's own parity images (its version's test images), or on the image files in `images`.
    The parity report goes beside it as `<out>.parity.json`; a failed export is refused in one
    line naming the format and both figures."""
    from cnnops.contracts.export import read_parity_images
    from cnnops.contracts.model import read_model_spec
    from cnnops.contracts.records import write_record
    from cnnops.contracts.served import MODEL_FILE

    spec = read_model_spec(folder)
    pixels = read_parity_images(folder) if images is None else decode_folder(images, spec)
    if pixels is None:
        raise CnnopsError(
            f"{folder} keeps no test images to check the export on (evaluation keeps them); pass --images with a "
            "folder of the model's test images."
        )
    if not (folder / MODEL_FILE).is_file():
        raise CnnopsError(f"{folder} holds no {MODEL_FILE}; give a model folder or a served-model folder.")
    model = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    report = export_model(model, spec, pixels, fmt, out, config)
    write_record(out.with_name(out.name + ".parity.json"), report)
    if not report.passed:
        raise CnnopsError(f"export refused: {report.verdict()}")
    return report


def decode_folder(images: Path, spec: ModelSpec) -> np.ndarray:
    """The image files under `images`, decoded as the model takes them; unreadable ones skipped."""
    from cnnops.core.errors import ImageDecodeError
    from cnnops.data.images import decode_image

    if not images.is_dir():
        raise CnnopsError(f"{images} is not a folder of images.")
    pixels = []
    for path in sorted(p for p in images.rglob("*") if p.is_file()):
        try:
            pixels.append(decode_image(path.read_bytes(), spec.mode, spec.size).pixels)
        except (ImageDecodeError, OSError):
            continue
    if not pixels:
        raise CnnopsError(f"{images} holds no image cnnops can decode.")
    return np.stack(pixels)
