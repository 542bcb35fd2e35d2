"""The drift test: does a window of served traffic look like the data the model was evaluated on?

No label arrives with served images, so the test compares what the model itself saw and said:
its penultimate-layer embeddings (projected on the reference's principal components, one KS test
per component, Benjamini-Hochberg over them), its predicted-class frequencies (chi-square) and
its confidence (KS). The three families are joined with a Bonferroni bound, so one verdict keeps
its false-alarm rate at `alpha` or under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA

from cnnops.artifacts import Frozen
from cnnops.config import DriftConfig

DriftStatus = Literal["drift", "no-drift", "too-few", "no-reference"]
FAMILIES = 3  # embedding components, class frequencies, confidence


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


class ComponentTest(Frozen):
    """A two-sample KS test of one principal component of the embeddings."""

    component: int
    explained_variance: float
    statistic: float
    p_value: float
    adjusted_p: float


class FrequencyTest(Frozen):
    """Chi-square of the window's predicted classes against the reference's frequencies;
    `cramers_v` is its effect size, 0 for the same frequencies and 1 at most."""

    statistic: float
    p_value: float
    cramers_v: float
    reference: list[float]
    window: list[float]


class ConfidenceTest(Frozen):
    """A two-sample KS test of the top class's probability; the statistic is the effect size."""

    statistic: float
    p_value: float
    reference_median: float
    window_median: float


class DriftVerdict(Frozen):
    """One answer for one window. `p_value` is the smallest family p-value after Bonferroni over
    the three families; drift is `p_value < alpha`. Without a verdict the tests are absent and
    `reason` says why."""

    status: DriftStatus
    drift: bool | None
    reason: str
    window_size: int
    reference_size: int
    min_window: int
    alpha: float
    p_value: float | None = None
    components: list[ComponentTest] = []
    classes: FrequencyTest | None = None
    confidence: ConfidenceTest | None = None


def judge_drift(reference: Observations | None, window: Observations, config: DriftConfig) -> DriftVerdict:
    """Compare a window with the reference, or say why no verdict can be given."""
    if reference is None:
        return unjudged("no-reference", "this model has no drift reference", 0, window, config)
    if len(window) < config.min_window:
        reason = f"{len(window)} requests in the window, fewer than the {config.min_window} a verdict needs"
        return unjudged("too-few", reason, len(reference), window, config)
    components = compare_components(reference.embeddings, window.embeddings, config)
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


def fit_projection(embeddings: np.ndarray, config: DriftConfig) -> PCA:
    """The reference's leading components: enough to explain `explained_variance` of its variance,
    at most `max_components`. `svd_solver="full"` makes the fit the same on every call."""
    limit = max(1, min(config.max_components, embeddings.shape[0] - 1, embeddings.shape[1]))
    pca = PCA(n_components=limit, svd_solver="full").fit(embeddings.astype(np.float64))
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    keep = int(np.searchsorted(cumulative, config.explained_variance) + 1)
    pca.components_ = pca.components_[: min(keep, limit)]
    pca.explained_variance_ratio_ = pca.explained_variance_ratio_[: min(keep, limit)]
    pca.n_components_ = pca.components_.shape[0]
    return pca


def compare_components(reference: np.ndarray, window: np.ndarray, config: DriftConfig) -> list[ComponentTest]:
    """KS per retained component, Benjamini-Hochberg over them. A reference with no variance
    (every embedding the same) leaves nothing to test."""
    if reference.shape[0] < 2 or not np.any(np.ptp(reference, axis=0) > 0):
        return []
    pca = fit_projection(reference, config)
    ref = pca.transform(reference.astype(np.float64))
    live = pca.transform(window.astype(np.float64))
    results = [stats.ks_2samp(ref[:, i], live[:, i]) for i in range(ref.shape[1])]
    p_values = np.array([r.pvalue for r in results])
    adjusted = stats.false_discovery_control(p_values, method="bh")
    return [
        ComponentTest(
            component=i,
            explained_variance=float(pca.explained_variance_ratio_[i]),
            statistic=float(r.statistic),
            p_value=float(r.pvalue),
            adjusted_p=float(adjusted[i]),
        )
        for i, r in enumerate(results)
    ]


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
