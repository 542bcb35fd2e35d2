"""Tiny learnable image folders the tests train on, and a snapshot that proves a step left a
user's folder untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLASSES = ("disc", "cross", "stripes")


def draw(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """One noisy RGB image of a shape class; the classes are easy for a CNN, hard for chance."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
    if kind == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 4) ** 2
    elif kind == "cross":
        mask = (np.abs(yy - cy) <= 1) | (np.abs(xx - cx) <= 1)
    else:
        mask = (xx + rng.integers(0, 4)) % 4 < 2
    pixels = rng.integers(0, 60, size=(size, size, 3))
    pixels[mask] = rng.integers(190, 256, size=(int(mask.sum()), 3))
    return pixels.astype(np.uint8)


def write_images(root: Path, per_class: int = 20, classes: tuple[str, ...] = TINY_CLASSES, seed: int = 0) -> Path:
    """Write a class-folder dataset of `draw` images under `root`."""
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(draw(label, rng)).save(root / label / f"{label}_{index:03d}.png")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """Every file's size and mtime under a folder: proof that a step left the source untouched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(root.rglob("*"))}


# The error analysis's figures (`cnnops.evaluation.analysis`).
PNGS = ("top_losses.png", "misclassified.png", "activation_maps.png")


def assert_png(path: Path) -> None:
    """`path` is a whole PNG image."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
