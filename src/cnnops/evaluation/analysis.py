"""Error analysis of an evaluated model: the test images it gets most wrong, its mistakes per class,
its architecture, and what its first convolutions respond to, as PNGs, a CSV and one
self-contained HTML page (the KFP UI renders it; MLflow keeps it with the run).

Bounded on large test sets: the predictions are the evaluation's own, and only the images shown
are decoded again (with the one decode function, so they are the pixels the model saw).
"""

from __future__ import annotations

import base64
import html
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from cnnops.contracts.model import ModelSpec
from cnnops.data.images import decode_image
from cnnops.evaluation.plots import DPI, plot_activation_maps, plot_misclassified, plot_top_losses

# Keras' own epsilon: a probability of exactly 0 gives this loss instead of infinity.
EPSILON = 1e-7
TOP_LOSSES_COLUMNS = ["path", "label", "predicted", "probability", "true_probability", "loss"]
# Layers that may sit between a convolution and its activation without changing what it detects.
_NORMALISATIONS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)
_ACTIVATIONS = (
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)


@dataclass(frozen=True)
class AnalysisSummary:
    """What an error analysis wrote: the misclassified count per class, the activation layers
    shown, and why there is no model diagram (None when there is one)."""

    misclassified: dict[str, int]
    activation_layers: list[str]
    no_diagram: str | None


def write_analysis(
    model: keras.Model,
    spec: ModelSpec,
    manifest: pd.DataFrame,
    probabilities: np.ndarray,
    out_dir: Path,
    top_n: int = 16,
    per_class: int = 6,
    activation_images: int = 3,
    max_classes: int = 40,
) -> AnalysisSummary:
    """Write the whole error analysis of `probabilities` (the model's, in manifest order) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = rank_losses(manifest, probabilities, spec.class_names)
    top = ranked.head(top_n)
    top[TOP_LOSSES_COLUMNS].to_csv(out_dir / "top_losses.csv", index=False)
    shown = select_misclassified(ranked, spec.class_names, per_class, max_classes)
    pixels = load_pixels(pd.concat([top["path"], *(rows["path"] for rows in shown.values())]).unique(), spec)
    plot_top_losses(top, pixels, out_dir / "top_losses.png")
    plot_misclassified(shown, ranked, pixels, out_dir / "misclassified.png", len(spec.class_names))
    samples = [(path, pixels[path]) for path in top["path"].head(activation_images)]
    activations = compute_activations(model, np.stack([image for _, image in samples]), 3) if samples else []
    plot_activation_maps(samples, activations, out_dir / "activation_maps.png")
    layers = [name for name, _ in activations]
    diagram = draw_model_diagram(model, out_dir / "model.png")
    write_model_summary(model, diagram, layers, out_dir / "model_summary.txt")
    misclassified = {name: int(((ranked["label"] == name) & ~ranked["correct"]).sum()) for name in spec.class_names}
    write_html(out_dir, top, misclassified)
    return AnalysisSummary(misclassified=misclassified, activation_layers=layers, no_diagram=diagram)


def rank_losses(manifest: pd.DataFrame, probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per test image with its prediction and cross-entropy loss, the highest loss first
    (ties keep manifest order, so the ranking is reproducible)."""
    index = {name: i for i, name in enumerate(class_names)}
    true = np.array([index[label] for label in manifest["label"]], dtype=int)
    predicted = probabilities.argmax(axis=1)
    rows = np.arange(len(true))
    true_probability = probabilities[rows, true].astype(float)
    table = pd.DataFrame(
        {
            "path": manifest["path"].astype(str).to_numpy(),
            "label": manifest["label"].astype(str).to_numpy(),
            "predicted": np.array(class_names, dtype=object)[predicted],
            "probability": probabilities[rows, predicted].astype(float),
            "true_probability": true_probability,
            "loss": -np.log(np.clip(true_probability, EPSILON, 1.0)),
        }
    )
    table["correct"] = table["label"] == table["predicted"]
    return table.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def select_misclassified(
    ranked: pd.DataFrame, class_names: list[str], per_class: int, max_classes: int = 40
) -> dict[str, pd.DataFrame]:
    """Per true class, its `per_class` highest-loss mistakes (an empty table when it has none).

    With more than `max_classes` classes only those with the most mistakes get a row, so the
    figure stays readable (and quick to draw) for a hundred classes.
    """
    wrong = ranked[~ranked["correct"]]
    if len(class_names) > max_classes:
        counts = wrong["label"].value_counts()
        keep = set(sorted(class_names, key=lambda name: -counts.get(name, 0))[:max_classes])
        class_names = [name for name in class_names if name in keep]
    return {name: wrong[wrong["label"] == name].head(per_class) for name in class_names}


def load_pixels(paths: Iterable[str], spec: ModelSpec) -> dict[str, np.ndarray]:
    """The uint8 pixels the model saw for each path: the one decode function, at the model's input."""
    return {str(path): decode_image(Path(path).read_bytes(), spec.mode, spec.size).pixels for path in paths}


def find_feature_layers(model: keras.Model, count: int = 3) -> tuple[list[keras.Model], list[keras.layers.Layer]]:
    """The nested-model chain down to the first model holding Conv2D layers itself, and the outputs
    to show for its first `count` convolutions.

    A nested backbone wins over the outer model's own convolutions: those are fixed colour flips
    (`rgb_to_bgr`), while the backbone's are where the features are learnt.
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            chain, shown = find_feature_layers(layer, count)
            if shown:
                return [model, *chain], shown
    convolutions = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    return [model], [activation_after(model.layers, i) for i in convolutions[:count]]


def activation_after(layers: list[keras.layers.Layer], index: int) -> keras.layers.Layer:
    """The activation layer right after the convolution at `index` (past its normalisation), or the
    convolution itself when it has none of its own (e.g. VGG's, with the ReLU built in)."""
    for layer in layers[index + 1 :]:
        if isinstance(layer, _ACTIVATIONS):
            return layer
        if not isinstance(layer, _NORMALISATIONS):
            break
    return layers[index]


def compute_activations(model: keras.Model, images: np.ndarray, count: int = 3) -> list[tuple[str, np.ndarray]]:
    """(layer name, NxHxWxC activations) of the first convolution blocks for a uint8 image batch.

    For a nested backbone the batch goes through the outer model's own preprocessing first (up to
    where it calls the backbone), then through a feature model built on the backbone itself.
    """
    chain, shown = find_feature_layers(model, count)
    if not shown:
        return []
    x: Any = images
    for outer, inner in zip(chain, chain[1:], strict=False):
        # Layer.input is where the outer graph calls `inner` (a Functional's own `.input` is its Input).
        x = keras.Model(outer.inputs[0], keras.layers.Layer.input.fget(inner))(x, training=False)
    features = keras.Model(chain[-1].inputs[0], [layer.output for layer in shown])(x, training=False)
    if not isinstance(features, list | tuple):
        features = [features]
    return [
        (layer.name, np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32))
        for layer, value in zip(shown, features, strict=True)
    ]


def summarise_model(model: keras.Model) -> str:
    """`model.summary()` as text, nested models expanded, wide enough not to truncate names."""
    lines: list[str] = []
    model.summary(line_length=120, expand_nested=True, show_trainable=True, print_fn=lines.append)
    return "\n".join(lines)


def draw_model_diagram(model: keras.Model, path: Path) -> str | None:
    """Draw the layer diagram with plot_model; None when drawn, else why there is none (it needs
    pydot and graphviz's `dot`, and neither is required to evaluate)."""
    path.unlink(missing_ok=True)  # never leave a diagram of an earlier model beside this one's summary
    if shutil.which("dot") is None:
        return "graphviz's `dot` is not installed (apt-get install graphviz)"
    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, expand_nested=True, dpi=DPI)
    except Exception as err:  # noqa: BLE001 - plot_model raises ImportError, OSError or pydot's own errors
        path.unlink(missing_ok=True)
        return f"plot_model failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def write_model_summary(model: keras.Model, no_diagram: str | None, layers: list[str], path: Path) -> None:
    """model_summary.txt: the summary, then a line on the diagram and the activation layers shown."""
    diagram = "model.png: the layer diagram" if no_diagram is None else f"no model.png: {no_diagram}"
    shown = ", ".join(layers) or "none (no Conv2D layers)"
    path.write_text(f"{summarise_model(model)}\n\n{diagram}\nactivation maps of: {shown}\n", encoding="utf-8")


def write_html(out_dir: Path, top: pd.DataFrame, misclassified: dict[str, int]) -> Path:
    """analysis.html: every PNG of `out_dir` inlined as a data URI, the top-losses table and the
    model summary, so the one file is the whole analysis (the KFP UI shows a single HTML artifact)."""
    sections = [
        ("Top losses", "top_losses.png"),
        ("Misclassified per class", "misclassified.png"),
        ("Activation maps", "activation_maps.png"),
        ("Model diagram", "model.png"),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnops error analysis</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px}td.n{text-align:right}img{max-width:100%}</style>",
        "</head><body><h1>Error analysis (test split)</h1>",
    ]
    wrong = ", ".join(f"{html.escape(name)}: {n}" for name, n in misclassified.items())
    parts.append(f"<p>Misclassified per true class: {wrong} (total {sum(misclassified.values())}).</p>")
    for title, name in sections:
        if (out_dir / name).is_file():
            data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
            parts.append(f"<h2>{title}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
        if name == "top_losses.png":
            parts.append(top_losses_table(top))
    summary = (out_dir / "model_summary.txt").read_text(encoding="utf-8")
    parts.append(
        f"<h2>Model summary</h2><details><summary>model.summary()</summary><pre>{html.escape(summary)}"
        "</pre></details></body></html>"
    )
    path = out_dir / "analysis.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def top_losses_table(top: pd.DataFrame) -> str:
    """The top-losses rows as an HTML table, every value escaped."""
    head = "".join(f"<th>{column}</th>" for column in TOP_LOSSES_COLUMNS)
    rows = []
    for row in top.itertuples():
        cells = [
            f"<td>{html.escape(str(row.path))}</td>",
            f"<td>{html.escape(row.label)}</td>",
            f"<td>{html.escape(row.predicted)}</td>",
        ]
        cells += [f"<td class='n'>{value:.4f}</td>" for value in (row.probability, row.true_probability, row.loss)]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
