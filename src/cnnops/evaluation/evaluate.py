"""Evaluate: score a model on a test manifest (accuracy, macro F1, per-class report, confusion
matrix, learning curves), analyse its errors (`cnnops.evaluation.analysis`, in `analysis/`) and log it all to
the model's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from cnnops.contracts.dataset import manifest_fingerprint, read_manifest
from cnnops.contracts.evaluation import ClassScore, EvaluationScores, write_evaluation, write_predictions
from cnnops.contracts.export import ONNX_FILE, ExportReport, write_export_report, write_parity_images
from cnnops.contracts.infra import write_canaries
from cnnops.contracts.model import ModelSpec, read_history, read_model_config, read_model_spec, read_run_record
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.evaluation.analysis import write_analysis
from cnnops.evaluation.canaries import pick_canaries
from cnnops.evaluation.plots import plot_confusion_matrix, plot_learning_curves
from cnnops.modeling.convert import export_model
from cnnops.modeling.inputs import (
    EVAL_BATCH,
    input_errors_as_user_errors,
    load_sample,
    make_dataset,
    predict_manifest,
)
from cnnops.modeling.predict import with_embedding
from cnnops.monitoring.reference import DriftReference, build_reference, write_reference
from cnnops.settings.config import ExportConfig
from cnnops.tracking.stores import use_tracking_store


def evaluate_model(model_dir: Path, test_dir: Path, out_dir: Path, val_dir: Path | None = None) -> EvaluationScores:
    """Score the model folder's model on the test folder; write and log the evaluation.

    The scores name the model's run and the test set's fingerprint, so the gate and registration
    can refuse an evaluation of another model or of other images. The error analysis reuses the
    same predictions, so the test images are scored once, and so do the canaries whose
    probabilities infra-validation asks the served model to repeat (as many as the model's
    config says) and the drift reference (the same pass's embeddings) the service judges its
    traffic against. The reference also takes the val images when a val folder is given: more of
    the model's own kind of image, which it was not trained on either.
    """
    spec = read_model_spec(model_dir)
    run = read_run_record(model_dir)
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    manifest = read_manifest(test_dir)
    check_known_classes(spec, manifest)
    embedded = embed_manifest(model, spec, manifest)
    probabilities = predict_manifest(model, spec, manifest) if embedded is None else embedded[0]
    scores = score_probabilities(probabilities, spec, manifest).model_copy(update={"run_id": run.run_id})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_evaluation(out_dir, scores)
    write_predictions(out_dir, manifest, [spec.class_names[i] for i in probabilities.argmax(axis=1)])
    config = read_model_config(model_dir)
    write_canaries(out_dir, pick_canaries(manifest, probabilities, spec, run.run_id, config.infra_validation.canaries))
    export_for_serving(model, spec, manifest, out_dir, config.export)
    if embedded is not None:
        write_reference(out_dir, reference_of(model, spec, run.run_id, manifest, embedded, val_dir))
    else:
        say("evaluate: no drift reference: the model's last layer is not a dense head over a flat vector")
    pd.DataFrame([row.model_dump(by_alias=True) for row in scores.per_class]).to_csv(
        out_dir / "per_class.csv", index=False
    )
    plot_confusion_matrix(np.array(scores.confusion_matrix), spec.class_names, out_dir / "confusion_matrix.png")
    plot_learning_curves(read_history(model_dir), out_dir / "learning_curves.png")
    write_analysis(model, spec, manifest, probabilities, out_dir / "analysis")

    use_tracking_store()
    with mlflow.start_run(run_id=run.run_id):
        mlflow.log_metrics({"test_accuracy": scores.accuracy, "test_macro_f1": scores.macro_f1})
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
    say(f"evaluate: test accuracy {scores.accuracy:.4f}, macro F1 {scores.macro_f1:.4f} on {scores.n_test} images")
    return scores


def export_for_serving(
    model: keras.Model, spec: ModelSpec, manifest: pd.DataFrame, out_dir: Path, config: ExportConfig
) -> ExportReport | None:
    """The ONNX export the service runs, checked on a sample of the test images that is kept
    beside it; an export that fails its parity is reported, not written, and the service then
    runs Keras (or, with `serve.runtime: onnx`, the version stays challenger). None, saying why,
    for a model that cannot be exported at all."""
    pixels = load_sample(manifest, spec, config.parity_images)
    write_parity_images(out_dir, pixels)
    try:
        report = export_model(model, spec, pixels, "onnx", out_dir / ONNX_FILE, config)
    except CnnopsError as err:
        say(f"evaluate: no ONNX export: {err}")
        return None
    write_export_report(out_dir, report)
    say(f"evaluate: {report.verdict()}")
    return report


def reference_of(
    model: keras.Model,
    spec: ModelSpec,
    run_id: str,
    test: pd.DataFrame,
    embedded: tuple[np.ndarray, ...],
    val_dir: Path | None,
) -> DriftReference:
    """The drift reference of the test images (already embedded) and the val images, if any."""
    if val_dir is None:
        return build_reference(run_id, spec, test, *embedded)
    val = read_manifest(val_dir)
    check_known_classes(spec, val)
    more = embed_manifest(model, spec, val)
    if more is None:  # the same model embedded the test images
        raise AssertionError("a model that embedded the test images gave no embedding of the val images")
    both = pd.concat([val, test], ignore_index=True)
    return build_reference(run_id, spec, both, *(np.concatenate(pair) for pair in zip(more, embedded, strict=True)))


def score_model(model: keras.Model, spec: ModelSpec, manifest: pd.DataFrame) -> EvaluationScores:
    """Metrics of `model` on `manifest`, whose labels must be among the model's classes."""
    check_known_classes(spec, manifest)
    return score_probabilities(predict_manifest(model, spec, manifest), spec, manifest)


def check_known_classes(spec: ModelSpec, manifest: pd.DataFrame) -> None:
    """Refuse, before any image is scored, a test set with classes the model cannot predict."""
    unknown = sorted(set(manifest["label"]) - set(spec.class_names))
    if unknown:
        raise CnnopsError(
            f"the test images include classes the model was not trained on ({', '.join(unknown)}); "
            "evaluate on the test split of the dataset the model was trained with."
        )


def score_probabilities(probabilities: np.ndarray, spec: ModelSpec, manifest: pd.DataFrame) -> EvaluationScores:
    """Metrics of the class probabilities `predict_manifest` gave for `manifest` (no run named)."""
    index = spec.class_index
    y_true = np.array([index[label] for label in manifest["label"]])
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(len(spec.class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return EvaluationScores(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        n_test=len(manifest),
        class_names=spec.class_names,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        per_class=[
            ClassScore(class_name=name, precision=float(p), recall=float(r), f1=float(f), support=int(s))
            for name, p, r, f, s in zip(spec.class_names, precision, recall, f1, support, strict=True)
        ],
        test_fingerprint=manifest_fingerprint(manifest),
    )


def embed_manifest(model: keras.Model, spec: ModelSpec, manifest: pd.DataFrame) -> tuple[np.ndarray, ...] | None:
    """Probabilities, embeddings and mean brightness (0 to 1) of every image, in manifest order;
    None for a model `with_embedding` cannot take an embedding from."""
    both = with_embedding(model)
    if both is None:
        return None
    batches = make_dataset(manifest, spec, EVAL_BATCH).map(lambda image, label: image)
    probabilities, embeddings, brightness = [], [], []
    with input_errors_as_user_errors():
        for batch in batches:
            p, e = both(batch, training=False)
            probabilities.append(np.asarray(p))
            embeddings.append(np.asarray(e, dtype=np.float32))
            brightness.append(np.asarray(batch, dtype=np.float64).mean(axis=(1, 2, 3)) / 255.0)
    return np.concatenate(probabilities), np.concatenate(embeddings), np.concatenate(brightness)
