"""Every figure cnnops draws, on matplotlib's file-only backend: the evaluation's confusion matrix
and learning curves, and the error analysis's top losses, mistakes per class and activation maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

DPI = 80  # the error analysis's tiles
EVALUATION_DPI = 100


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path) -> None:
    plt = pyplot()
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(
            col, row, str(value), ha="center", va="center", color="white" if value > threshold else "black", fontsize=8
        )
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=EVALUATION_DPI)
    plt.close(fig)


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch; nothing for a model with no training history (an import)."""
    if not history.get("loss"):
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix in ("", "val_"):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=prefix + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=EVALUATION_DPI)
    plt.close(fig)


def plot_top_losses(top: pd.DataFrame, pixels: dict[str, np.ndarray], path: Path, columns: int = 4) -> None:
    """A tile per image: what it is, what the model said, and how sure it was of each."""
    plt = pyplot()
    rows = max(1, -(-len(top) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.1 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), top.itertuples(), strict=False):
        show_image(ax, pixels[row.path])
        ax.set_title(
            f"true {row.label} ({row.true_probability:.2f})\npred {row.predicted} ({row.probability:.2f})"
            f"\nloss {row.loss:.2f}",
            fontsize=8,
            color="tab:green" if row.correct else "tab:red",
        )
    if top.empty:
        axes[0, 0].text(0, 0.5, "no test images", fontsize=10)
    fig.suptitle(f"Top {len(top)} losses (test split)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_misclassified(
    shown: dict[str, pd.DataFrame], ranked: pd.DataFrame, pixels: dict[str, np.ndarray], path: Path, n_classes: int
) -> None:
    """One row per true class with its highest-loss mistakes, titled with what the model said."""
    plt = pyplot()
    columns = max([1, *(len(rows) for rows in shown.values())])
    fig, axes = plt.subplots(
        len(shown), columns + 1, figsize=(1.9 * (columns + 1), 2.1 * len(shown)), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for axes_row, (name, rows) in zip(axes, shown.items(), strict=True):
        total = int((ranked["label"] == name).sum())
        wrong = int(((ranked["label"] == name) & ~ranked["correct"]).sum())
        axes_row[0].text(0.0, 0.5, f"{name}\n{wrong} of {total} wrong", fontsize=9, va="center")
        if rows.empty:
            axes_row[1].text(0.0, 0.5, "no misclassified images", fontsize=8, va="center", color="tab:green")
        for ax, row in zip(axes_row[1:], rows.itertuples(), strict=False):
            show_image(ax, pixels[row.path])
            ax.set_title(f"pred {row.predicted}\n({row.probability:.2f})", fontsize=8, color="tab:red")
    kept = "" if len(shown) == n_classes else f" ({len(shown)} of {n_classes} classes: the most mistaken)"
    fig.suptitle(f"Misclassified test images per true class{kept}")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_activation_maps(
    samples: list[tuple[str, np.ndarray]], activations: list[tuple[str, np.ndarray]], path: Path, channels: int = 8
) -> None:
    """For each sample image, the first `channels` maps of each layer's `activations` (one array per
    layer, a row per sample) side by side, each map scaled to its own range."""
    plt = pyplot()
    rows = max(1, len(samples) * len(activations))
    # One strip of maps per row rather than an axes per map: the figure draws in a fraction of the time.
    fig, axes = plt.subplots(
        rows,
        2,
        figsize=(1.4 * (channels + 1), 1.6 * rows),
        squeeze=False,
        width_ratios=[1, channels],
        layout="constrained",
    )
    for ax in axes.ravel():
        ax.axis("off")
    if not activations:
        axes[0, 0].text(0.0, 0.5, "no Conv2D layers or no test images: nothing to show", fontsize=9)
    for i, (sample_path, pixels) in enumerate(samples if activations else []):
        show_image(axes[i * len(activations), 0], pixels)
        axes[i * len(activations), 0].set_title(Path(sample_path).name, fontsize=7)
        for j, (name, values) in enumerate(activations):
            ax = axes[i * len(activations) + j, 1]
            ax.imshow(tile_channels(values[i], channels), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"{name} {values.shape[1]}x{values.shape[2]}x{values.shape[3]}", fontsize=7, loc="left")
    fig.suptitle("Activation maps of the first conv blocks (first channels)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def tile_channels(maps: np.ndarray, channels: int) -> np.ndarray:
    """HxWxC activations to one HxN strip of the first `channels` maps, each scaled to [0, 1] on its
    own (a dead channel stays 0) and a blank (NaN) column between neighbours."""
    height = maps.shape[0]
    strips = []
    for c in range(min(channels, maps.shape[-1])):
        values = maps[:, :, c].astype(np.float32)
        low, span = float(values.min()), float(values.max() - values.min())
        strips += [(values - low) / span if span > 0 else np.zeros_like(values), np.full((height, 1), np.nan)]
    return np.concatenate(strips[:-1], axis=1)


def show_image(ax: Any, pixels: np.ndarray) -> None:
    """Draw uint8 pixels as the model saw them: grey images in grey, not in a colour map."""
    if pixels.shape[-1] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(pixels)
    ax.axis("off")


def pyplot() -> Any:
    """pyplot on the file-only backend: no display is needed, and none is touched at import time."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
