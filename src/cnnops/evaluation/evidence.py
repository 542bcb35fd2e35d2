"""The gate's statistics: what a score must beat to mean anything, and whether one model is better
than another on the same images.

On a 20-image test split one image is 5 points of accuracy, so a raw difference is no evidence.
Two models scored on the same images are compared paired: an exact McNemar test on the images only
one of them got right, and a bootstrap interval of the metric's difference over resampled images.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom
from sklearn.metrics import f1_score

from cnnops.contracts.gate import PairedEvidence

# Paired resamples of the test images behind each interval.
BOOTSTRAP_ROUNDS = 2000


def chance_score(metric: str, y_true: np.ndarray, labels: list[str] | None = None) -> float:
    """The metric of always answering the test split's most common class: what a model that learned
    nothing scores."""
    values, counts = np.unique(y_true, return_counts=True)
    majority = np.full_like(y_true, values[np.argmax(counts)])
    return metric_score(metric, y_true, majority, labels)


def metric_score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str] | None = None) -> float:
    """Accuracy, or macro F1 over `labels` (the model's classes, as evaluation counts them; a class
    absent from these images counts as 0), by default the classes present."""
    if metric == "accuracy":
        return float(np.mean(y_true == y_pred))
    labels = list(np.unique(y_true)) if labels is None else labels
    return float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "equally good", the images only one model got right
    fall to either side like fair coin tosses."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), n, 0.5)))


def bootstrap_difference(
    metric: str,
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    confidence: float,
    seed: int,
    rounds: int = BOOTSTRAP_ROUNDS,
    labels: list[str] | None = None,
) -> tuple[float, float]:
    """Percentile interval of metric(candidate) - metric(champion) over images resampled with
    replacement, the same draw for both models (paired)."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    draws = rng.integers(0, n, size=(rounds, n))
    if metric == "accuracy":
        gain = (candidate == y_true).astype(float) - (champion == y_true).astype(float)
        differences = gain[draws].mean(axis=1)
    else:
        differences = np.array(
            [
                metric_score(metric, y_true[d], candidate[d], labels)
                - metric_score(metric, y_true[d], champion[d], labels)
                for d in draws
            ]
        )
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    return float(low), float(high)


def compare_paired(
    metric: str,
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    confidence: float,
    seed: int,
    labels: list[str] | None = None,
) -> PairedEvidence:
    """All the evidence on whether `candidate`'s predictions beat `champion`'s on the same images
    (`labels`: the classes a macro F1 counts)."""
    y_true, candidate, champion = (np.asarray(a) for a in (y_true, candidate, champion))
    cand_right, champ_right = candidate == y_true, champion == y_true
    only_candidate, only_champion = int(np.sum(cand_right & ~champ_right)), int(np.sum(champ_right & ~cand_right))
    cand_score = metric_score(metric, y_true, candidate, labels)
    champ_score = metric_score(metric, y_true, champion, labels)
    low, high = bootstrap_difference(metric, y_true, candidate, champion, confidence, seed, labels=labels)
    return PairedEvidence(
        n_images=len(y_true),
        only_candidate_right=only_candidate,
        only_champion_right=only_champion,
        candidate_score=cand_score,
        champion_score=champ_score,
        difference=cand_score - champ_score,
        interval_low=low,
        interval_high=high,
        confidence=confidence,
        p_value=mcnemar_exact(only_candidate, only_champion),
    )
