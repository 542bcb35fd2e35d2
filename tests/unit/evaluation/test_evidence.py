"""The gate's statistics on constructed predictions, checked against values computed here another way."""

import math

import numpy as np
import pytest
from scipy import stats

from cnnops.evaluation.evidence import (
    BOOTSTRAP_ROUNDS,
    bootstrap_difference,
    chance_score,
    compare_paired,
    mcnemar_exact,
)


def paired(n_both: int, only_candidate: int, only_champion: int, n_neither: int, classes: int = 3):
    """Labels and two models' predictions with exactly these counts of right/wrong pairs."""
    y = np.arange(n_both + only_candidate + only_champion + n_neither) % classes
    wrong = (y + 1) % classes
    candidate = np.concatenate(
        [
            y[:n_both],
            y[n_both : n_both + only_candidate],
            wrong[n_both + only_candidate : n_both + only_candidate + only_champion],
            wrong[len(y) - n_neither :],
        ]
    )
    champion = np.concatenate(
        [
            y[:n_both],
            wrong[n_both : n_both + only_candidate],
            y[n_both + only_candidate : n_both + only_candidate + only_champion],
            wrong[len(y) - n_neither :],
        ]
    )
    return y, candidate, champion


@pytest.mark.parametrize(("only_a", "only_b"), [(8, 2), (2, 8), (5, 5), (12, 0), (0, 0), (30, 17)])
def test_mcnemar_matches_a_two_sided_binomial_test(only_a, only_b):
    expected = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_by_hand():
    # 8 against 2 discordant images: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10.
    assert mcnemar_exact(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_bootstrap_interval_matches_a_plain_loop_and_scipy():
    y, candidate, champion = paired(n_both=60, only_candidate=15, only_champion=5, n_neither=20)
    low, high = bootstrap_difference("accuracy", y, candidate, champion, confidence=0.9, seed=3)
    # The same paired resamples, recomputed one by one.
    draws = np.random.default_rng(3).integers(0, len(y), size=(BOOTSTRAP_ROUNDS, len(y)))
    diffs = [np.mean(candidate[d] == y[d]) - np.mean(champion[d] == y[d]) for d in draws]
    assert (low, high) == pytest.approx(tuple(np.percentile(diffs, [5, 95])))
    # And scipy's own paired percentile bootstrap agrees to within resampling noise.
    ref = stats.bootstrap(
        (candidate == y, champion == y),
        lambda a, b, axis=-1: a.mean(axis) - b.mean(axis),
        paired=True,
        confidence_level=0.9,
        method="percentile",
        n_resamples=4000,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)
    assert low < 0.10 < high  # the observed difference: 15 - 5 of 100 images


def test_the_macro_f1_interval_resamples_the_metric_itself():
    y, candidate, champion = paired(n_both=40, only_candidate=20, only_champion=2, n_neither=10)
    low, high = bootstrap_difference("macro_f1", y, candidate, champion, confidence=0.95, seed=0, rounds=300)
    assert 0 < low < high


def test_same_predictions_are_never_shown_better():
    y, candidate, _ = paired(n_both=500, only_candidate=0, only_champion=0, n_neither=100)
    evidence = compare_paired("accuracy", y, candidate, candidate.copy(), confidence=0.95, seed=0)
    assert (evidence.only_candidate_right, evidence.only_champion_right, evidence.p_value) == (0, 0, 1.0)
    assert evidence.difference == 0 and evidence.interval_low == 0 == evidence.interval_high
    assert not evidence.shows_better(margin=0.0)


def test_clearly_better_on_enough_images_is_shown_better():
    y, candidate, champion = paired(n_both=150, only_candidate=30, only_champion=3, n_neither=17)
    evidence = compare_paired("accuracy", y, candidate, champion, confidence=0.95, seed=0)
    assert evidence.difference == pytest.approx(27 / 200)
    assert evidence.p_value == pytest.approx(stats.binomtest(30, 33).pvalue) and evidence.p_value < 1e-5
    assert evidence.interval_low > 0
    assert evidence.shows_better(margin=0.005)
    assert not evidence.shows_better(margin=0.2)  # significant, but not by that margin


def test_a_small_gain_on_few_images_is_noise():
    # One image better on 20: the plain margin rule (gate.test: none, better by 0.005) would promote it.
    y, candidate, champion = paired(n_both=18, only_candidate=1, only_champion=0, n_neither=1)
    evidence = compare_paired("accuracy", y, candidate, champion, confidence=0.95, seed=0)
    assert evidence.difference == pytest.approx(0.05) and evidence.p_value == 1.0
    assert not evidence.shows_better(margin=0.005)


def test_chance_is_the_majority_class_rate():
    y = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    assert chance_score("accuracy", y) == pytest.approx(0.6)
    # Always "a": F1 of "a" is 2 * 0.6 / 1.6, the others 0.
    assert chance_score("macro_f1", y) == pytest.approx((2 * 0.6 / 1.6) / 3)
    assert math.isclose(chance_score("accuracy", np.array(["x", "y"])), 0.5)


def test_macro_f1_counts_every_class_of_the_model():
    y = np.array(["a", "a", "b", "b"])
    # "c" is a class of the model but not in these images: it counts as 0, as evaluation counts it.
    assert chance_score("macro_f1", y, ["a", "b", "c"]) == pytest.approx((2 * 0.5 / 1.5) / 3)
    assert chance_score("macro_f1", y) == pytest.approx((2 * 0.5 / 1.5) / 2)


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"schema_version": 1, "scores": {}}'])
def test_a_damaged_baselines_file_is_one_line(tmp_path, content):
    from cnnops.contracts.evaluation import read_baseline_scores
    from cnnops.core.errors import CnnopsError

    (tmp_path / "baselines.json").write_text(content)
    with pytest.raises(CnnopsError, match="baselines") as err:
        read_baseline_scores(tmp_path)
    assert "\n" not in str(err.value)
