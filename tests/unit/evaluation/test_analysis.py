"""Error analysis on tiny real models: the files evaluate writes and logs, the top-losses ranking,
the misclassified grid, the model summary and activation maps (from inside a nested backbone)."""

import csv

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from PIL import Image
from support.images import PNGS, assert_png
from support.stores import own_store

from cnnops.contracts.model import ModelSpec
from cnnops.evaluation import analysis
from cnnops.evaluation.analysis import (
    EPSILON,
    TOP_LOSSES_COLUMNS,
    compute_activations,
    find_feature_layers,
    rank_losses,
    write_analysis,
)
from cnnops.modeling.builders import ModelOptions, build_model
from cnnops.modeling.inputs import predict_manifest
from cnnops.tracking.stores import use_tracking_store


def test_evaluate_writes_and_logs_the_analysis(trained):
    folder = trained["evaluation"] / "analysis"
    for name in PNGS:
        assert_png(folder / name)
    with (folder / "top_losses.csv").open() as handle:
        assert next(csv.reader(handle)) == TOP_LOSSES_COLUMNS
    page = (folder / "analysis.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert page.count("src='data:image/png;base64,") >= len(PNGS) and "<table>" in page
    assert "<img" in page and "src='top_losses.png'" not in page  # self-contained: nothing linked
    summary = (folder / "model_summary.txt").read_text()
    assert 'Model: "simple_cnn"' in summary and "probabilities" in summary
    assert ("model.png: the layer diagram" in summary) == (folder / "model.png").is_file()

    with own_store(trained["work"]):
        use_tracking_store()
        logged = {a.path for a in MlflowClient().list_artifacts(trained["run_id"], "evaluation/analysis")}
    expected = {
        f"evaluation/analysis/{name}" for name in (*PNGS, "top_losses.csv", "model_summary.txt", "analysis.html")
    }
    assert expected <= logged


def test_top_losses_are_the_highest_cross_entropies(trained):
    table = pd.read_csv(trained["evaluation"] / "analysis" / "top_losses.csv")
    manifest = trained["manifest"]
    assert len(table) == min(16, len(manifest))
    assert table["loss"].is_monotonic_decreasing
    probabilities = predict_manifest(trained["keras"], trained["spec"], manifest)
    names = trained["spec"].class_names
    true = np.array([names.index(label) for label in manifest["label"]])
    p_true = probabilities[np.arange(len(true)), true]
    losses = -np.log(np.clip(p_true, EPSILON, 1.0))
    by_path = dict(zip(manifest["path"], range(len(manifest)), strict=True))
    rows = [by_path[path] for path in table["path"]]
    np.testing.assert_allclose(table["loss"], -np.log(np.clip(table["true_probability"], EPSILON, 1)), rtol=1e-6)
    np.testing.assert_allclose(table["true_probability"], p_true[rows], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["probability"], probabilities[rows].max(axis=1), rtol=1e-4, atol=1e-6)
    assert list(table["predicted"]) == [names[i] for i in probabilities[rows].argmax(axis=1)]
    assert list(table["label"]) == list(manifest["label"].iloc[rows])
    # The table holds the largest losses of the whole test split, not just some of them.
    np.testing.assert_allclose(table["loss"], np.sort(losses)[::-1][: len(table)], rtol=1e-4, atol=1e-6)


def test_misclassified_grid_rows_and_empty_class(trained, tmp_path):
    """Crafted probabilities: 'cross' is always right, the others wrong in a known number of images."""
    spec, manifest = trained["spec"], trained["manifest"]
    names = spec.class_names
    rng = np.random.default_rng(0)
    probabilities = np.zeros((len(manifest), len(names)), dtype=np.float32)
    for row, label in enumerate(manifest["label"]):
        true = names.index(label)
        guess = true if label == "cross" or row % 3 == 0 else (true + 1) % len(names)
        probabilities[row] = rng.uniform(0.0, 0.2, len(names))
        probabilities[row, guess] = 1.0
        probabilities[row] /= probabilities[row].sum()
    summary = write_analysis(trained["keras"], spec, manifest, probabilities, tmp_path, top_n=5, per_class=2)
    ranked = rank_losses(manifest, probabilities, names)
    expected = {name: int(((ranked["label"] == name) & ~ranked["correct"]).sum()) for name in names}
    assert summary.misclassified == expected and expected["cross"] == 0
    assert expected["disc"] >= 2 and expected["stripes"] >= 2
    shown = analysis.select_misclassified(ranked, names, per_class=2)
    assert [len(rows) for rows in shown.values()] == [min(2, expected[name]) for name in names]
    assert all((rows["label"] == name).all() and (rows["predicted"] != name).all() for name, rows in shown.items())
    assert all(rows["loss"].is_monotonic_decreasing for rows in shown.values())
    assert len(pd.read_csv(tmp_path / "top_losses.csv")) == 5
    for name in PNGS:
        assert_png(tmp_path / name)
    # Too many classes for one figure: the ones with the most mistakes keep their rows.
    assert list(analysis.select_misclassified(ranked, names, per_class=2, max_classes=2)) == ["disc", "stripes"]


def test_without_graphviz_the_summary_says_why(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(analysis.shutil, "which", lambda name: None)
    (tmp_path / "model.png").write_bytes(b"stale")
    assert analysis.draw_model_diagram(trained["keras"], tmp_path / "model.png") == (
        "graphviz's `dot` is not installed (apt-get install graphviz)"
    )
    assert not (tmp_path / "model.png").exists()
    analysis.write_model_summary(
        trained["keras"], "graphviz's `dot` is not installed", ["re_lu"], tmp_path / "model_summary.txt"
    )
    text = (tmp_path / "model_summary.txt").read_text()
    assert "no model.png: graphviz's `dot` is not installed" in text and "activation maps of: re_lu" in text


def test_activation_maps_of_a_scratch_network(trained):
    model = trained["keras"]
    chain, shown = find_feature_layers(model)
    assert chain == [model]
    assert [type(layer).__name__ for layer in shown] == ["ReLU"] * 3  # each conv's own activation
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    maps = compute_activations(model, images)
    assert [values.shape for _, values in maps] == [(2, 16, 16, 32), (2, 16, 16, 32), (2, 8, 8, 64)]


def test_grey_images_and_an_untrained_model(tmp_path):
    spec = ModelSpec(["a", "b"], 12, 12, "L", "simple-cnn")
    model = build_model(spec)
    rows = []
    for i in range(5):
        path = tmp_path / f"grey_{i}.png"
        Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8), "L").save(path)
        rows.append({"path": str(path), "label": "ab"[i % 2]})
    manifest = pd.DataFrame(rows)
    pixels = np.stack([np.asarray(Image.open(r["path"]).resize((12, 12)))[:, :, None] for r in rows])
    probabilities = np.asarray(model(pixels, training=False))
    summary = write_analysis(model, spec, manifest, probabilities, tmp_path / "out")
    assert sum(summary.misclassified.values()) == int((probabilities.argmax(1) != [0, 1, 0, 1, 0]).sum())
    assert len(summary.activation_layers) == 3
    for name in PNGS:
        assert_png(tmp_path / "out" / name)


def test_caffe_backbone_skips_the_colour_flip_conv():
    model = build_model(ModelSpec(["a", "b"], 32, 32, "RGB", "vgg16"), ModelOptions(working_size=32))
    chain, shown = find_feature_layers(model)
    assert chain[0] is model and chain[1].name == "vgg16" and len(chain) == 2
    assert [layer.name for layer in shown] == ["block1_conv1", "block1_conv2", "block2_conv1"]


def test_evaluate_component_publishes_the_page_as_html(trained, tmp_path):
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

    from cnnops.components.evaluate import evaluate

    page = HTML(uri=str(tmp_path / "outputs" / "analysis"))
    with own_store(trained["work"]):  # the evaluation logs to the model's run
        accuracy = evaluate.python_func(
            model=Model(uri=str(trained["model"])),
            test_data=Dataset(uri=str(trained["test"])),
            val_data=Dataset(uri=str(trained["model"].parent / "val")),
            evaluation=Artifact(uri=str(tmp_path / "evaluation")),
            metrics=Metrics(uri=str(tmp_path / "metrics")),
            classification=ClassificationMetrics(uri=str(tmp_path / "classification")),
            analysis=page,
        )
    assert accuracy == trained["metrics"]["accuracy"]
    assert (tmp_path / "outputs" / "analysis").read_text() == (
        tmp_path / "evaluation" / "analysis" / "analysis.html"
    ).read_text()


def test_with_graphviz_the_diagram_is_drawn(trained, tmp_path):
    """`make test` installs Debian's graphviz, so the diagram path runs for real here."""
    assert analysis.shutil.which("dot"), "Graphviz's dot is missing: run the suite through `make test`"
    assert analysis.draw_model_diagram(trained["keras"], tmp_path / "model.png") is None
    assert_png(tmp_path / "model.png")
