"""components.baselines through `.python_func`, on the splits of a copy of the session's champion."""

import pytest
from kfp.dsl import Artifact, Dataset, Metrics
from support.stores import champion_copy

from cnnops.components.baselines import baselines

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def test_baselines_log_a_floor_per_model_on_the_same_splits(champion, tmp_path):
    with champion_copy(champion, tmp_path / "copy") as copy:
        strong = copy["strong"]
        scores, metrics = Artifact(uri=str(tmp_path / "scores")), Metrics(uri=str(tmp_path / "metrics"))
        baselines.python_func(
            config={},
            train_data=Dataset(uri=str(copy["work"] / "strong" / "train")),
            test_data=Dataset(uri=str(strong["test"])),
            scores=scores,
            metrics=metrics,
        )
    logged = metrics.metadata
    assert {key.rsplit(".", 1)[0] for key in logged} == {"logistic-regression", "random-forest"}
    for name in ("logistic-regression", "random-forest"):
        # The shapes are easy: a pixel-level floor still beats chance (1/3) by a margin.
        assert logged[f"{name}.test_accuracy"] > 0.5, logged
    assert any(path.is_file() for path in (tmp_path / "scores").rglob("*"))
