"""The drift test: does a window of served traffic look like the data the model was evaluated on?

No label arrives with served images, so the test compares what the model itself saw and said:
its penultimate-layer embeddings (projected on the reference's principal components, one KS test
per component, Benjamini-Hochberg over them), its predicted-class frequencies (chi-square) and
its confidence (KS). The three families are joined with a Bonferroni bound, so one verdict keeps
its false-alarm rate at `alpha` or under.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA

from cnnops.contracts.drift import (
    ComponentTest,
    ConfidenceTest,
    DriftStatus,
    DriftVerdict,
    FrequencyTest,
    PairedHistogram,
)
from cnnops.settings.config import DriftConfig

FAMILIES = 3  # embedding components, class frequencies, confidence
HISTOGRAM_COMPONENTS = 3
HISTOGRAM_BINS = 24


@dataclass(frozen=True)
class Observations:
    """Per image, what the drift test compares: the model's embedding, its top class and its
    confidence in it. A reference and a window are both this."""

    embeddings: np.ndarray  # (n, d) float32
    predicted: np.ndarray  # (n,) int, indices into the model's class names
    confidence: np.ndarray  # (n,) float, the top class's probability
    classes: int  # how many classes the model has, predicted or not

    def __len__(self) -> int:
        return int(self.predicted.shape[0])


@dataclass(frozen=True)
class Projection:
    """The reference's leading principal components, as the KS tests and the report use them."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), orthonormal rows
    explained_variance: np.ndarray  # (k,), each component's share of the reference's variance

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        return (embeddings.astype(np.float64) - self.mean) @ self.components.T


@dataclass(frozen=True)
class Baseline:
    """A reference made ready to judge windows against: its projection is fitted once, and its own
    scores on the components computed once, however many windows are judged."""

    reference: Observations
    projection: Projection | None  # None when the reference's embeddings have no variance
    scores: np.ndarray  # (n, k) the reference projected

    @property
    def width(self) -> int:
        return int(self.reference.embeddings.shape[1])


def prepare_baseline(reference: Observations, config: DriftConfig) -> Baseline:
    """Fit the projection of a reference. A reference with a non-finite value or no image cannot
    be judged against: that is an error in how it was made, said here, not a NaN p-value later."""
    if len(reference) == 0:
        raise ValueError("the drift reference holds no image")
    if not (np.isfinite(reference.embeddings).all() and np.isfinite(reference.confidence).all()):
        raise ValueError("the drift reference holds non-finite embeddings or confidences")
    projection = fit_projection(reference.embeddings, config)
    scores = np.zeros((len(reference), 0)) if projection is None else projection.project(reference.embeddings)
    return Baseline(reference=reference, projection=projection, scores=scores)


def judge_drift(baseline: Baseline | None, window: Observations, config: DriftConfig) -> DriftVerdict:
    """Compare a window with the baseline's reference, or say why no verdict can be given."""
    if baseline is None:
        return unjudged("no-reference", "this model has no drift reference", 0, window, config)
    reference = baseline.reference
    if len(window) < config.min_window:
        reason = f"{len(window)} requests in the window, fewer than the {config.min_window} a verdict needs"
        return unjudged("too-few", reason, len(reference), window, config)
    components = compare_components(baseline, window.embeddings)
    classes = compare_frequencies(reference.predicted, window.predicted, reference.classes)
    confidence = compare_confidence(reference.confidence, window.confidence)
    family = [min(c.adjusted_p for c in components) if components else 1.0, classes.p_value, confidence.p_value]
    family = [1.0 if np.isnan(p) else p for p in family]  # a test with nothing to compare says nothing
    p_value = min(1.0, min(family) * FAMILIES)
    drift = p_value < config.alpha
    return DriftVerdict(
        status="drift" if drift else "no-drift",
        drift=drift,
        reason=describe(drift, p_value, family, config.alpha),
        reference_size=len(reference),
        p_value=p_value,
        components=components,
        classes=classes,
        confidence=confidence,
        histograms=pair_histograms(baseline, window),
        window_size=len(window),
        min_window=config.min_window,
        alpha=config.alpha,
    )


def unjudged(
    status: DriftStatus, reason: str, reference_size: int, window: Observations, config: DriftConfig
) -> DriftVerdict:
    return DriftVerdict(
        status=status,
        drift=None,
        reason=reason,
        window_size=len(window),
        reference_size=reference_size,
        min_window=config.min_window,
        alpha=config.alpha,
    )


def fit_projection(embeddings: np.ndarray, config: DriftConfig) -> Projection | None:
    """The reference's leading components: enough to explain `explained_variance` of its variance,
    at most `max_components`; None when every embedding is the same (nothing to test).
    `svd_solver="full"` makes the fit the same on every call."""
    if embeddings.shape[0] < 2 or not np.any(np.ptp(embeddings, axis=0) > 0):
        return None
    limit = max(1, min(config.max_components, embeddings.shape[0] - 1, embeddings.shape[1]))
    pca = PCA(n_components=limit, svd_solver="full").fit(embeddings.astype(np.float64))
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    keep = min(limit, int(np.searchsorted(cumulative, config.explained_variance) + 1))
    return Projection(
        mean=pca.mean_.copy(),
        components=pca.components_[:keep].copy(),
        explained_variance=pca.explained_variance_ratio_[:keep].copy(),
    )


def compare_components(baseline: Baseline, window: np.ndarray) -> list[ComponentTest]:
    """KS per retained component, Benjamini-Hochberg over them."""
    if baseline.projection is None:
        return []
    live = baseline.projection.project(window)
    ref = baseline.scores
    results = [stats.ks_2samp(ref[:, i], live[:, i]) for i in range(ref.shape[1])]
    p_values = np.array([r.pvalue for r in results])
    adjusted = stats.false_discovery_control(p_values, method="bh")
    return [
        ComponentTest(
            component=i,
            explained_variance=float(baseline.projection.explained_variance[i]),
            statistic=float(r.statistic),
            p_value=float(r.pvalue),
            adjusted_p=float(adjusted[i]),
        )
        for i, r in enumerate(results)
    ]


def pair_histograms(baseline: Baseline, window: Observations) -> list[PairedHistogram]:
    """The leading components (at most `HISTOGRAM_COMPONENTS`) and the confidence, binned alike."""
    live = np.zeros((len(window), 0)) if baseline.projection is None else baseline.projection.project(window.embeddings)
    pairs = [
        (f"component {i + 1}", baseline.scores[:, i], live[:, i])
        for i in range(min(HISTOGRAM_COMPONENTS, baseline.scores.shape[1]))
    ]
    pairs.append(("confidence", baseline.reference.confidence, window.confidence))
    return [pair_histogram(name, ref, now) for name, ref, now in pairs]


def pair_histogram(name: str, reference: np.ndarray, window: np.ndarray) -> PairedHistogram:
    both = np.concatenate([reference, window])
    low, high = float(both.min()), float(both.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    shares = [np.histogram(sample, bins=edges)[0] / max(1, sample.size) for sample in (reference, window)]
    return PairedHistogram(
        name=name,
        edges=[float(e) for e in edges],
        reference=[float(v) for v in shares[0]],
        window=[float(v) for v in shares[1]],
    )


def compare_frequencies(reference: np.ndarray, window: np.ndarray, classes: int) -> FrequencyTest:
    """A two-sample chi-square test of the predicted-class counts (a 2 x classes table): the
    reference's frequencies are a sample too, not the truth. Classes whose expected count is
    under 5 in either sample are pooled into one column, where the approximation would not hold."""
    table = np.vstack([np.bincount(reference, minlength=classes), np.bincount(window, minlength=classes)])
    table = table.astype(np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / max(1.0, table.sum())
    small = expected.min(axis=0) < 5
    if small.any() and (~small).any():
        table = np.column_stack([table[:, ~small], table[:, small].sum(axis=1)])
    table = table[:, table.sum(axis=0) > 0]
    statistic, p_value = 0.0, 1.0
    if table.shape[1] >= 2 and (table.sum(axis=1) > 0).all():
        result = stats.chi2_contingency(table, correction=False)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    counts = [np.bincount(sample, minlength=classes) / max(1, sample.size) for sample in (reference, window)]
    return FrequencyTest(
        statistic=statistic,
        p_value=p_value,
        cramers_v=min(1.0, float(np.sqrt(statistic / max(1.0, table.sum())))),
        reference=[float(s) for s in counts[0]],
        window=[float(s) for s in counts[1]],
    )


def compare_confidence(reference: np.ndarray, window: np.ndarray) -> ConfidenceTest:
    result = stats.ks_2samp(reference, window)
    return ConfidenceTest(
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        reference_median=float(np.median(reference)),
        window_median=float(np.median(window)),
    )


def describe(drift: bool, p_value: float, family: list[float], alpha: float) -> str:
    names = ("embeddings", "predicted classes", "confidence")
    strongest = names[int(np.argmin(family))]
    if drift:
        return f"drift: p = {p_value:.2g} < {alpha}, strongest in the {strongest}"
    return f"no drift: p = {p_value:.2g} >= {alpha}"
