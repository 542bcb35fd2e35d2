"""The drift test on seeded synthetic embeddings: quiet on samples of the reference's own
distribution, loud on each kind of shift, and no verdict without a reference or enough traffic."""

from __future__ import annotations

import numpy as np
import pytest

from cnnops.contracts.drift import DriftVerdict
from cnnops.monitoring.drift import Observations, fit_projection, judge_drift, prepare_baseline
from cnnops.settings.config import DriftConfig

CLASSES = 4
WIDTH = 32
CONFIG = DriftConfig()


def sample(rng: np.random.Generator, n: int, shift: float = 0.0, class_p: list[float] | None = None) -> Observations:
    """Embeddings with a few strong directions, as a trained CNN's penultimate layer has; `shift`
    moves every image along those directions, in units of their spread. (A shift orthogonal to
    every retained component is not what this test sees.)"""
    basis = np.random.default_rng(0).normal(size=(6, WIDTH))
    scales = np.array([4, 3, 2, 1.5, 1, 0.5])
    latent = (rng.normal(size=(n, 6)) + shift) * scales
    embeddings = (latent @ basis + rng.normal(scale=0.3, size=(n, WIDTH))).astype(np.float32)
    return Observations(
        embeddings=embeddings,
        predicted=rng.choice(CLASSES, size=n, p=class_p or [0.25] * CLASSES),
        confidence=rng.beta(8, 1, size=n),
        classes=CLASSES,
    )


def judge(reference: Observations, window: Observations, config: DriftConfig = CONFIG) -> DriftVerdict:
    return judge_drift(prepare_baseline(reference, config), window, config)


def test_samples_of_the_reference_distribution_rarely_alarm() -> None:
    rng = np.random.default_rng(20261203)
    reference = sample(rng, 600)
    alarms = [judge(reference, sample(rng, 300)).drift for _ in range(40)]
    assert None not in alarms
    # alpha is 0.01 and the families are joined with Bonferroni: 40 windows expect under 0.4 alarms
    assert sum(alarms) <= 2


def test_a_shifted_embedding_is_drift_below_alpha() -> None:
    rng = np.random.default_rng(1)
    verdict = judge(sample(rng, 600), sample(rng, 300, shift=0.5))
    assert verdict.status == "drift" and verdict.drift is True
    assert verdict.p_value is not None and verdict.p_value < 0.01
    assert "embeddings" in verdict.reason
    assert min(c.adjusted_p for c in verdict.components) < 0.01
    assert all(c.adjusted_p >= c.p_value for c in verdict.components)


def test_a_changed_class_mix_alone_is_drift() -> None:
    rng = np.random.default_rng(2)
    verdict = judge(sample(rng, 600), sample(rng, 300, class_p=[0.7, 0.1, 0.1, 0.1]))
    assert verdict.drift is True
    assert verdict.classes is not None and verdict.classes.p_value < 0.01
    assert verdict.classes.cramers_v > 0.2
    assert verdict.classes.window[0] > 0.6


def test_falling_confidence_alone_is_drift() -> None:
    rng = np.random.default_rng(3)
    reference = sample(rng, 600)
    live = sample(rng, 300)
    unsure = Observations(live.embeddings, live.predicted, rng.beta(3, 2, size=300), CLASSES)
    verdict = judge(reference, unsure)
    assert verdict.drift is True
    assert verdict.confidence is not None and verdict.confidence.window_median < verdict.confidence.reference_median


def test_the_class_test_counts_the_references_own_sampling_error() -> None:
    """Ten classes, a reference of 300: a one-sample test against the reference's frequencies
    alarms on about a fifth of same-distribution windows; the two-sample test stays near alpha."""
    rng = np.random.default_rng(9)
    from cnnops.monitoring.drift import compare_frequencies

    alarms = sum(
        compare_frequencies(rng.integers(0, 10, 300), rng.integers(0, 10, 300), 10).p_value < 0.01 for _ in range(200)
    )
    assert alarms <= 6  # 2 expected at alpha 0.01


def test_a_class_the_reference_never_predicted_is_finite_drift() -> None:
    rng = np.random.default_rng(4)
    reference = sample(rng, 600, class_p=[0.5, 0.5, 0.0, 0.0])
    verdict = judge(reference, sample(rng, 300))
    assert verdict.drift is True
    assert verdict.classes is not None and np.isfinite(verdict.classes.statistic)


def test_a_small_window_gets_a_count_and_no_verdict() -> None:
    rng = np.random.default_rng(5)
    verdict = judge(sample(rng, 600), sample(rng, CONFIG.min_window - 1, shift=5))
    assert (verdict.status, verdict.drift, verdict.p_value) == ("too-few", None, None)
    assert verdict.window_size == CONFIG.min_window - 1
    assert f"fewer than the {CONFIG.min_window}" in verdict.reason


def test_no_reference_says_so() -> None:
    verdict = judge_drift(None, sample(np.random.default_rng(6), 300), CONFIG)
    assert (verdict.status, verdict.drift) == ("no-reference", None)
    assert verdict.reason == "this model has no drift reference"


@pytest.mark.parametrize("explained, most", [(0.5, 10), (0.999, 3)])
def test_components_are_kept_by_variance_then_capped(explained: float, most: int) -> None:
    rng = np.random.default_rng(7)
    config = DriftConfig(explained_variance=explained, max_components=most)
    verdict = judge(sample(rng, 600), sample(rng, 300), config)
    kept = len(verdict.components)
    assert 1 <= kept <= most
    if explained == 0.5:
        # the strongest direction alone carries about half the variance of these embeddings
        assert kept <= 2
    else:
        assert kept == most


def test_the_verdict_is_the_same_on_every_call() -> None:
    rng = np.random.default_rng(8)
    reference, live = sample(rng, 600), sample(rng, 300, shift=0.2)
    assert judge(reference, live) == judge(reference, live)


def test_the_projection_is_the_references_principal_components() -> None:
    from sklearn.decomposition import PCA

    embeddings = sample(np.random.default_rng(10), 400).embeddings
    projection = fit_projection(embeddings, CONFIG)
    assert projection is not None
    k = projection.components.shape[0]
    expected = PCA(n_components=k, svd_solver="full").fit_transform(embeddings.astype(np.float64))
    np.testing.assert_allclose(np.abs(projection.project(embeddings)), np.abs(expected), atol=1e-6)
    assert np.all(np.diff(projection.explained_variance) <= 0)


def test_identical_embeddings_leave_only_the_class_and_confidence_tests() -> None:
    rng = np.random.default_rng(11)
    flat = Observations(np.ones((300, WIDTH), np.float32), rng.choice(CLASSES, 300), rng.beta(8, 1, 300), CLASSES)
    verdict = judge(flat, sample(rng, 300))
    assert verdict.components == [] and verdict.status in ("drift", "no-drift")


@pytest.mark.parametrize("broken", ["nan", "empty"])
def test_a_reference_that_cannot_be_judged_against_is_refused(broken: str) -> None:
    reference = sample(np.random.default_rng(12), 300)
    if broken == "nan":
        reference.embeddings[3, 0] = np.nan
    else:
        reference = Observations(reference.embeddings[:0], reference.predicted[:0], reference.confidence[:0], CLASSES)
    with pytest.raises(ValueError, match="non-finite" if broken == "nan" else "no image"):
        prepare_baseline(reference, CONFIG)
