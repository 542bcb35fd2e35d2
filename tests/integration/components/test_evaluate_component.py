"""components.evaluate through `.python_func`, on a copy of the session's champion: the returned
score, the KFP metrics and confusion matrix, and the analysis page."""

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model
from support.stores import champion_copy

from cnnops.components.evaluate import evaluate
from cnnops.contracts.dataset import read_manifest
from cnnops.monitoring.reference import read_reference

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def test_evaluate_scores_the_test_split_for_the_kfp_ui(champion, tmp_path):
    with champion_copy(champion, tmp_path / "copy") as copy:
        strong = copy["strong"]
        metrics, classification = (
            Metrics(uri=str(tmp_path / "metrics")),
            ClassificationMetrics(uri=str(tmp_path / "cm")),
        )
        accuracy = evaluate.python_func(
            model=Model(uri=str(strong["model"])),
            test_data=Dataset(uri=str(strong["test"])),
            val_data=Dataset(uri=str(strong["model"].parent / "val")),
            evaluation=Artifact(uri=str(tmp_path / "evaluation")),
            metrics=metrics,
            classification=classification,
            analysis=HTML(uri=str(tmp_path / "page" / "analysis.html")),
        )
    scores = strong["metrics"]
    assert accuracy == metrics.metadata["test_accuracy"] == scores["accuracy"] >= 0.8
    assert metrics.metadata["n_test"] == scores["n_test"] and metrics.metadata["test_macro_f1"] == scores["macro_f1"]
    matrix = classification.metadata["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == ["cross", "disc", "stripes"]
    assert [row["row"] for row in matrix["rows"]] == scores["confusion_matrix"]
    reference = read_reference(tmp_path / "evaluation")
    expected = len(read_manifest(strong["test"])) + len(read_manifest(strong["model"].parent / "val"))
    assert reference is not None and len(reference.observations) == expected  # val and test images
    page = (tmp_path / "page" / "analysis.html").read_text()
    assert page == (tmp_path / "evaluation" / "analysis" / "analysis.html").read_text() and "<html" in page.lower()
