"""The drift report: one self-contained HTML page for one drift verdict, so whoever gets a drift
alert can see which test fired and how the window's distributions moved from the reference's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

from cnnops.contracts.drift import ComponentTest, ConfidenceTest, DriftVerdict, FrequencyTest, PairedHistogram
from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError
from cnnops.data.report import COLOURS, STYLE, bar_rects, binned_chart

REFERENCE_FILL, WINDOW_FILL = "#2463eb", "#e8590c"
HEADLINES = {"drift": ("drift", "fail"), "no-drift": ("no drift", "pass")}


def write_drift_report(path: Path, verdict: DriftVerdict, class_names: list[str], source: str) -> Path:
    """Write the page for `verdict` on the window from `source` and return its path; a reader
    finds the previous page or the whole new one, never half of it."""
    page = render_page(verdict, class_names, source)
    replace_atomically(path, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return path


def render_page(verdict: DriftVerdict, class_names: list[str], source: str) -> str:
    sections = [headline(verdict, source)]
    if verdict.classes is not None and verdict.confidence is not None:
        check_class_names(verdict.classes, class_names)
        sections += [
            components_section(verdict.components),
            classes_section(verdict.classes, class_names),
            confidence_section(verdict.confidence),
            "<h2>Distributions</h2>" + " ".join(paired_chart(h) for h in verdict.histograms),
        ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cnnops drift report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def check_class_names(classes: FrequencyTest, class_names: list[str]) -> None:
    if len(class_names) < len(classes.reference):
        raise CnnopsError(
            f"the drift verdict counts {len(classes.reference)} classes but only {len(class_names)} "
            "class names were given; pass the model's class names"
        )


def number(value: float | None, spec: str = ".3g") -> str:
    """A number as the page shows it; a missing or non-finite one (a NaN p-value) is n/a."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def headline(verdict: DriftVerdict, source: str) -> str:
    word, colour = HEADLINES.get(verdict.status, ("no verdict", "warn"))
    joint = (
        f"Joint p-value {number(verdict.p_value)} against alpha {number(verdict.alpha)}. "
        if verdict.p_value is not None
        else ""
    )
    return (
        f"<h1>Drift report <span class='verdict' style='background:{COLOURS[colour]}'>{word}</span></h1>"
        f"<p class='reason'>{escape(verdict.reason)}</p>"
        f"<p>{joint}{verdict.window_size} requests in the window (a verdict needs {verdict.min_window}), "
        f"{verdict.reference_size} images in the reference.</p>"
        f"<p class='muted'>Window from {escape(source)}</p>"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def components_section(components: list[ComponentTest]) -> str:
    if not components:
        return "<h2>Embeddings</h2><p>Every reference embedding is the same: no component to test.</p>"
    rows = [
        [
            str(c.component + 1),
            number(c.explained_variance, ".1%"),
            number(c.statistic),
            number(c.p_value),
            number(c.adjusted_p),
        ]
        for c in components
    ]
    header = ["component", "explained variance", "KS statistic", "p", "BH-adjusted p"]
    return "<h2>Embeddings: a KS test per principal component</h2>" + table(header, rows)


def classes_section(classes: FrequencyTest, class_names: list[str]) -> str:
    names = class_names[: len(classes.reference)]
    rows = [
        [escape(name), number(ref, ".1%"), number(now, ".1%")]
        for name, ref, now in zip(names, classes.reference, classes.window, strict=True)
    ]
    return (
        "<h2>Predicted classes</h2>"
        f"<p>Chi-square {number(classes.statistic)}, p {number(classes.p_value)}, "
        f"Cramér's V {number(classes.cramers_v)}.</p>"
        + table(["class", "reference share", "window share"], rows)
        + paired_bars("predicted-class share", names, classes.reference, classes.window, names[0], names[-1])
    )


def confidence_section(confidence: ConfidenceTest) -> str:
    return (
        "<h2>Confidence</h2>"
        f"<p>KS statistic {number(confidence.statistic)}, p {number(confidence.p_value)}; median "
        f"{number(confidence.reference_median)} in the reference, {number(confidence.window_median)} "
        "in the window.</p>"
    )


def paired_chart(histogram: PairedHistogram) -> str:
    edges = histogram.edges
    bins = [f"{number(low)} to {number(high)}" for low, high in zip(edges, edges[1:], strict=False)]
    left, right = (number(edges[0]), number(edges[-1])) if edges else ("", "")
    return paired_bars(histogram.name, bins, histogram.reference, histogram.window, left, right)


def paired_bars(
    label: str, bins: Sequence[str], reference: Sequence[float], window: Sequence[float], left: str, right: str
) -> str:
    """Reference and window shares over the same bins, overlaid in two colours with a legend."""
    width, height = 360, 170
    shares = [[v if math.isfinite(v) else 0.0 for v in sample] for sample in (reference, window)]
    top = max((v for sample in shares for v in sample), default=0.0) or 1.0
    bars = "".join(
        bar_rects(
            sample,
            [f"{name} {b}: {number(v, '.1%')}" for b, v in zip(bins, raw, strict=True)],
            top,
            width,
            height,
            fill,
            " fill-opacity='0.55'",
        )
        for name, sample, raw, fill in (
            ("reference", shares[0], reference, REFERENCE_FILL),
            ("window", shares[1], window, WINDOW_FILL),
        )
    )
    key = (
        f"<rect x='{width - 150}' y='2' width='10' height='10' fill='{REFERENCE_FILL}'/>"
        f"<text x='{width - 136}' y='11' font-size='10'>reference</text>"
        f"<rect x='{width - 70}' y='2' width='10' height='10' fill='{WINDOW_FILL}'/>"
        f"<text x='{width - 56}' y='11' font-size='10'>window</text>"
    )
    return binned_chart(bars + key, label, left, right, width, height)
