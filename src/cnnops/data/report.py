"""The dataset report: one self-contained HTML file (SVG charts and PNG thumbnails inlined),
readable in a browser, the MLflow UI and the Kubeflow UI alike."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from pathlib import Path

import pandas as pd
from PIL import Image

from cnnops.contracts.dataset import Check, NearDuplicateGroup, ValidationReport
from cnnops.core.errors import ImageDecodeError
from cnnops.data.images import decode_image

THUMB = 64
SAMPLES_PER_CLASS = 8
MAX_CLASSES_SHOWN = 30
MAX_GROUPS_SHOWN = 30
MAX_ROWS_SHOWN = 200
COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}


def write_report(
    path: Path,
    validation: ValidationReport,
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    duplicates: pd.DataFrame,
) -> Path:
    """Write the report and return its path."""
    verdict = validation.verdict
    sections = [
        f"<h1>Dataset report <span class='verdict' style='background:{COLOURS[verdict]}'>{verdict}</span></h1>",
        f"<p class='muted'>{escape(validation.source)} · {validation.n_images} images in "
        f"{len(validation.class_counts)} classes · fingerprint {validation.fingerprint[:12]}</p>",
        checks_table(validation.checks),
        "<h2>Class balance</h2>" + bar_chart(validation.class_counts),
        "<h2>Samples</h2>" + samples(manifest),
        "<h2>Image sizes</h2>" + size_histograms(manifest) + size_summary(validation),
        "<h2>Quarantined files</h2>" + quarantine_table(quarantine),
        "<h2>Exact duplicates (dropped)</h2>" + duplicate_groups(duplicates),
        "<h2>Near-duplicate groups (kept in one split)</h2>"
        + moved_note(validation)
        + near_groups(validation.near_duplicate_groups),
    ]
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cnnops dataset report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;color:#1b1f24;max-width:1100px;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d5dae0;padding-bottom:.3rem}
.verdict{color:#fff;border-radius:4px;padding:.1rem .5rem;font-size:1rem;vertical-align:middle}
.muted{color:#5b6570}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eaeef2;
padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;align-items:center}.thumbs img{width:64px;height:64px;
object-fit:contain;image-rendering:pixelated;border:1px solid #d5dae0;background:#fff}
.row{margin:.4rem 0}.label{display:inline-block;min-width:8rem;font-weight:600}
"""


def checks_table(checks: list[Check]) -> str:
    rows = "".join(
        f"<tr><td>{escape(c.name)}</td><td style='color:{COLOURS[c.status]};font-weight:600'>"
        f"{c.status}</td><td>{escape(c.detail)}</td></tr>"
        for c in checks
    )
    return f"<table><tr><th>check</th><th>status</th><th>detail</th></tr>{rows}</table>"


def bar_chart(counts: dict[str, int], width: int = 720, height: int = 220) -> str:
    """Images per class as an inline SVG bar chart (no plotting library, no external file)."""
    shown = list(counts.items())[:80]
    top = max((n for _, n in shown), default=1) or 1
    step = width / max(len(shown), 1)
    bars = []
    for i, (label, n) in enumerate(shown):
        h = (height - 60) * n / top
        x = i * step
        bars.append(
            f"<rect x='{x + 2:.1f}' y='{height - 50 - h:.1f}' width='{max(step - 4, 1):.1f}' "
            f"height='{h:.1f}' fill='#2463eb'><title>{escape(str(label))}: {n}</title></rect>"
            f"<text x='{x + step / 2:.1f}' y='{height - 36}' font-size='10' text-anchor='end' "
            f"transform='rotate(-45 {x + step / 2:.1f} {height - 36})'>{escape(str(label)[:18])}</text>"
        )
    return (
        f"<svg role='img' aria-label='images per class' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'><text x='0' y='12' font-size='11'>max {top}</text>{''.join(bars)}</svg>"
    )


def histogram(values: pd.Series, label: str, bins: int = 30, width: int = 340, height: int = 160) -> str:
    """A histogram as an inline SVG."""
    import numpy as np

    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if high == low:
        low, high = low - 0.5, high + 0.5
    counts, _ = np.histogram(finite, bins=bins, range=(low, high))
    bars = bar_rects(counts.tolist(), [str(c) for c in counts], max(int(counts.max()), 1), width, height, "#7c3aed")
    return binned_chart(bars, label, f"{low:.3g}", f"{high:.3g}", width, height)


def bar_rects(
    values: Sequence[float], titles: Sequence[str], top: float, width: float, height: float, fill: str, extra: str = ""
) -> str:
    """One SVG bar per bin, scaled so `top` reaches the plot's top; shared by every binned chart so
    they all read alike. The plot leaves 15px above the bars and 30px below for the labels."""
    step = width / max(len(values), 1)
    return "".join(
        f"<rect x='{i * step:.1f}' y='{height - 30 - (height - 45) * v / top:.1f}' "
        f"width='{max(step - 1, 1):.1f}' height='{(height - 45) * v / top:.1f}' fill='{fill}'{extra}>"
        f"<title>{escape(t)}</title></rect>"
        for i, (v, t) in enumerate(zip(values, titles, strict=True))
    )


def binned_chart(body: str, label: str, left: str, right: str, width: int, height: int) -> str:
    """The frame around bars: the axis's two ends and its label under them."""
    return (
        f"<svg role='img' aria-label='{escape(label, quote=True)}' width='{width}' height='{height}'>{body}"
        f"<text x='0' y='{height - 12}' font-size='10'>{escape(left)}</text><text x='{width}' y='{height - 12}' "
        f"font-size='10' text-anchor='end'>{escape(right)}</text><text x='{width / 2}' y='{height}' font-size='11' "
        f"text-anchor='middle'>{escape(label)}</text></svg>"
    )


def size_histograms(manifest: pd.DataFrame) -> str:
    return (
        histogram(manifest["width"] * manifest["height"] / 1e6, "megapixels")
        + " "
        + histogram(manifest["width"] / manifest["height"], "aspect ratio (width / height)")
    )


def size_summary(validation: ValidationReport) -> str:
    sizes, channels = validation.sizes, validation.channels
    common = ", ".join(f"{s.size} ({s.count})" for s in sizes.most_common)
    stats = ", ".join(f"{name} {channels.mean[name]:.3f} ± {channels.std[name]:.3f}" for name in channels.mean)
    return (
        f"<p>Most common sizes: {escape(common)}. Width {sizes.width.min:.0f}–{sizes.width.max:.0f}, "
        f"height {sizes.height.min:.0f}–{sizes.height.max:.0f}. Channel mean ± std in [0, 1], from "
        f"{channels.sampled_images} images: {escape(stats)}.</p>"
    )


def thumbnail(path: str) -> str:
    """An inline PNG thumbnail, or a note when the file cannot be shown."""
    try:
        pixels = decode_image(Path(path).read_bytes()).pixels
    except (OSError, ImageDecodeError):
        return "<span class='muted'>(cannot show)</span>"
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return (
        f"<img title='{escape(path, quote=True)}' alt='{escape(Path(path).name, quote=True)}' "
        f"src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
    )


def samples(manifest: pd.DataFrame) -> str:
    rows = []
    for label, part in list(manifest.groupby("label", sort=True))[:MAX_CLASSES_SHOWN]:
        thumbs = "".join(thumbnail(p) for p in part["path"].head(SAMPLES_PER_CLASS))
        rows.append(f"<div class='row thumbs'><span class='label'>{escape(str(label))}</span>{thumbs}</div>")
    return "".join(rows)


def quarantine_table(quarantine: pd.DataFrame) -> str:
    if quarantine.empty:
        return "<p>None.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(r.path))}</td><td>{escape(str(r.label))}</td><td>{escape(str(r.reason))}</td></tr>"
        for r in quarantine.head(MAX_ROWS_SHOWN).itertuples()
    )
    more = (
        f"<p class='muted'>… and {len(quarantine) - MAX_ROWS_SHOWN} more.</p>"
        if len(quarantine) > MAX_ROWS_SHOWN
        else ""
    )
    return f"<table><tr><th>file</th><th>label</th><th>reason</th></tr>{rows}</table>{more}"


def duplicate_groups(duplicates: pd.DataFrame) -> str:
    if duplicates.empty:
        return "<p>None.</p>"
    rows = []
    for kept, part in list(duplicates.groupby("duplicate_of", sort=True))[:MAX_GROUPS_SHOWN]:
        rows.append(
            f"<div class='row thumbs'>{thumbnail(kept)}<span class='muted'>{escape(str(kept))} kept; "
            f"{len(part)} cop{'y' if len(part) == 1 else 'ies'} dropped</span></div>"
        )
    return "".join(rows)


def moved_note(validation: ValidationReport) -> str:
    moved = validation.near_duplicate_groups_moved
    if moved is None:
        return ""
    return (
        f"<p>{len(validation.near_duplicate_groups)} groups; {moved} straddled train/val/test and are "
        "moved whole into one split.</p>"
    )


def near_groups(groups: list[NearDuplicateGroup]) -> str:
    if not groups:
        return "<p>None.</p>"
    rows = [
        f"<div class='row thumbs'><span class='label'>{escape(', '.join(g.labels))}</span>"
        + "".join(thumbnail(p) for p in g.paths[:10])
        + "</div>"
        for g in groups[:MAX_GROUPS_SHOWN]
    ]
    more = (
        f"<p class='muted'>… and {len(groups) - MAX_GROUPS_SHOWN} more groups.</p>"
        if len(groups) > MAX_GROUPS_SHOWN
        else ""
    )
    return "".join(rows) + more
