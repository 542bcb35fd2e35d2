"""Bring your own model: a `.keras` file or a legacy Keras 2 `.h5` becomes a cnnops model folder
(uint8 images in, preprocessing inside the model, class names and input spec beside it), is
evaluated on a test set, and goes through the same gate and registration as a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
from keras import layers

from cnnops.contracts.dataset import DatasetInfo, read_dataset_info
from cnnops.contracts.model import ModelSpec, RunRecord, read_model_spec
from cnnops.contracts.registry import Registration
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.modeling.builders import backbone_input
from cnnops.promotion.registration import Validator, gate_and_register
from cnnops.settings.config import Config, flatten_config
from cnnops.tracking.provenance import provenance_tags
from cnnops.tracking.stores import open_model_experiment

# How an imported model expects its pixels, as a backbone input mode (cnnops.modeling.builders.backbone_input)
# or a plain rescale: raw 0-255 values, /255, [-1, 1] (MobileNet, Inception), caffe (VGG, ResNet).
SCALES = ("raw", "unit", "minus1_1", "caffe")


@dataclass(frozen=True)
class ImportSpec:
    """What the file may not carry: its class names in output order, and how it scales pixels."""

    class_names: list[str] | None = None
    scale: str | None = None
    logits: bool = False  # the model ends without a softmax: one is added


def import_model(
    file: Path, test_dir: Path, work_dir: Path, config: Config, given: ImportSpec, validate: Validator
) -> Registration:
    """Load, wrap, log, evaluate, gate, infra-validate (`validate`, when it earns champion) and
    register an outside model; returns the registration."""
    from cnnops.evaluation.evaluate import evaluate_model

    loaded = load_model_file(file)
    spec_beside = file.with_name("model_spec.json")
    known = read_model_spec(file.parent) if spec_beside.is_file() else None
    class_names = given.class_names or (known.class_names if known else None)
    if class_names is None:
        raise CnnopsError(f"{file.name} does not say its class names; pass them in output order with --classes.")
    scale = given.scale or ("raw" if loaded.inputs[0].dtype == "uint8" else None)
    if scale is None:
        raise CnnopsError(
            f"{file.name} takes float pixels and does not say how they are scaled; pass --scale ({', '.join(SCALES)})."
        )
    model, spec = wrap_for_cnnops(loaded, class_names, scale, file, given.logits)
    check_test_set(test_dir, spec)
    log_imported(model, spec, file, scale, config, read_dataset_info(test_dir), work_dir / "model")
    evaluate_model(work_dir / "model", test_dir, work_dir / "evaluation")
    return gate_and_register(work_dir / "model", test_dir, work_dir / "evaluation", config, None, validate)


def prepare_test_set(test: Path, work_dir: Path, config: Config) -> Path:
    """A dataset folder as is (a split's test folder), or a class-folder tree ingested into one."""
    if (test / "manifest.parquet").is_file():
        return test
    from cnnops.data.ingest import ingest_source

    source = config.model_copy(update={"data": config.data.model_copy(update={"source": str(test)})})
    ingest_source(source, work_dir / "test")
    return work_dir / "test"


def load_model_file(file: Path) -> keras.Model:
    """A `.keras` file through Keras; a `.h5` through the legacy loader; anything else refused."""
    if not file.is_file():
        raise CnnopsError(f"{file} does not exist; pass a .keras or .h5 model file.")
    if file.suffix == ".keras":
        try:
            return keras.saving.load_model(file, compile=False)
        except Exception as err:  # noqa: BLE001 - Keras raises many types for a bad archive
            raise CnnopsError(
                f"{file} is not a loadable .keras model ({type(err).__name__}: {str(err).splitlines()[0][:200]})."
            ) from None
    if file.suffix in (".h5", ".hdf5", ".model"):
        from cnnops.modeling.legacy import load_legacy_h5

        return load_legacy_h5(file)
    raise CnnopsError(f"{file.name}: cnnops imports .keras files and Keras 2 .h5 files, not {file.suffix or 'this'}.")


def wrap_for_cnnops(
    model: keras.Model, class_names: list[str], scale: str, file: Path, logits: bool = False
) -> tuple[keras.Model, ModelSpec]:
    """The model behind uint8 input and its own scaling (and a softmax, for a logits model), so
    serving, the gate and distillation feed and read it like any cnnops model."""
    if scale not in SCALES:
        raise CnnopsError(f"--scale {scale}: choose one of {', '.join(SCALES)}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CnnopsError(
            f"{file.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; cnnops "
            "imports image classifiers with one image input and one class output."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or None in shape or shape[-1] not in (1, 3):
        raise CnnopsError(
            f"{file.name} takes input of shape {shape}; cnnops serves fixed-size images with 1 or 3 "
            "channels, (height, width, channels)."
        )
    outputs = model.outputs[0].shape[-1]
    if outputs != len(class_names):
        raise CnnopsError(
            f"{file.name} has {outputs} outputs but {len(class_names)} class names were given "
            f"({', '.join(class_names)})."
        )
    inputs = keras.Input(shape=shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)  # uint8 to float, values kept
    if scale == "unit":
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    elif scale in ("minus1_1", "caffe"):
        x = backbone_input(x, "tf" if scale == "minus1_1" else "caffe")
    outputs = model(x)
    if logits:
        outputs = layers.Softmax(name="probabilities")(outputs)
    wrapped = keras.Model(inputs, outputs, name=f"imported_{model.name}")
    check_probabilities(wrapped, shape, file)
    spec = ModelSpec(
        class_names=list(class_names),
        height=int(shape[0]),
        width=int(shape[1]),
        mode="L" if shape[-1] == 1 else "RGB",
        architecture=f"imported:{file.name}",
    )
    return wrapped, spec


def check_probabilities(model: keras.Model, shape: tuple[int, ...], file: Path) -> None:
    """Scores, teachers and the web page read class probabilities: refuse a model that gives logits."""
    probe = np.random.default_rng(0).integers(0, 256, size=(2, *shape), dtype=np.uint8)
    rows = np.asarray(model.predict_on_batch(probe), dtype=np.float64)
    if (rows < -1e-6).any() or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        raise CnnopsError(
            f"{file.name}'s outputs are not class probabilities (they do not sum to 1); if it ends "
            "without a softmax, pass --logits."
        )


def check_test_set(test_dir: Path, spec: ModelSpec) -> None:
    """Every test label must be one of the model's classes, or the scores would be meaningless."""
    classes = set(read_dataset_info(test_dir).classes)
    unknown = sorted(classes - set(spec.class_names))
    if unknown:
        raise CnnopsError(
            f"the test set has classes the model does not predict ({', '.join(unknown)}); its "
            f"classes are {', '.join(spec.class_names)}. Name the test folders after them."
        )


def log_imported(
    model: keras.Model,
    spec: ModelSpec,
    file: Path,
    scale: str,
    config: Config,
    test_info: DatasetInfo,
    out_dir: Path,
) -> RunRecord:
    """One MLflow run for the import, in the registered model's experiment, and the model folder."""
    from cnnops.training.train import save_model_folder

    name, experiment_id = open_model_experiment(config, test_info.source)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"import {file.name}") as run:
        mlflow.set_tags(
            {
                "cnnops.imported_from": str(file.resolve()),
                **provenance_tags(test_info, config, name),
            }
        )
        mlflow.log_params(
            {
                **flatten_config(config),
                "import.file": file.name,
                "import.scale": scale,
                "import.classes": ",".join(spec.class_names),
                "n_params": model.count_params(),
            }
        )
        record = save_model_folder(out_dir, model, spec, config, {}, run.info.run_id, experiment_id, name, None)
    say(
        f"import: {file.name} as {spec.height}x{spec.width} {spec.mode}, classes {', '.join(spec.class_names)}, "
        f"run {record.run_id}"
    )
    return record
