from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test_data: Input[Dataset],
    val_data: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    analysis: Output[HTML],
) -> float:
    """Score the candidate on the test split; returns its test accuracy. `analysis` is the error
    analysis page (top losses, mistakes per class, activation maps) for the KFP UI. The drift
    reference kept beside the evaluation is of the val and test images."""
    import shutil
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.evaluation.evaluate import evaluate_model

    with exit_on_user_error():
        scores = evaluate_model(Path(model.path), Path(test_data.path), Path(evaluation.path), Path(val_data.path))
    metrics.log_metric("test_accuracy", scores.accuracy)
    metrics.log_metric("test_macro_f1", scores.macro_f1)
    metrics.log_metric("n_test", scores.n_test)
    classification.log_confusion_matrix(scores.class_names, scores.confusion_matrix)
    Path(analysis.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(evaluation.path) / "analysis" / "analysis.html", analysis.path)
    return scores.accuracy
