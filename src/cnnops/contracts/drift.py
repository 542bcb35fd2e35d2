"""Drift's records: the verdict of one window against the model's reference, each test behind it
with its figures, and what the service's `GET /drift` answers (`ServedDrift`)."""

from __future__ import annotations

from typing import Literal

from cnnops.contracts.records import Frozen

DriftStatus = Literal["drift", "no-drift", "too-few", "no-reference"]


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


class PairedHistogram(Frozen):
    """One quantity's distribution in the reference and in the window, over the same bins, each
    as shares of its own sample (so they compare whatever the sample sizes): what a report draws."""

    name: str
    edges: list[float]
    reference: list[float]
    window: list[float]


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
    histograms: list[PairedHistogram] = []


class ImageStats(Frozen):
    """Simple statistics of images: how many, their median size, modes and mean brightness."""

    count: int
    median_width: float | None
    median_height: float | None
    median_brightness: float | None
    modes: dict[str, int]


class ServedDrift(Frozen):
    """What `GET /drift` answers: the verdict on the window, whose model it judges, and the
    window's images beside the reference's."""

    registered_model: str
    version: int | None
    run_id: str | None
    class_names: list[str]
    verdict: DriftVerdict
    window_images: ImageStats
    reference_images: ImageStats | None
    # How long before now (a service) or before the newest request (a window file) the oldest came.
    oldest_age_s: float | None
