"""The retrain decision against a real MLflow store: versions whose runs logged the data they were
trained on (the dataset input and the per-class record training logs), and the source as it is
now, ingested for real. No model is trained: the decision reads only what the runs logged."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.stores import register_trained_on as register_version

from cnnops.core.errors import CnnopsError
from cnnops.promotion.retrain import LAST_RETRAIN_TAG, DriftReport, compare_labels, decide_retrain, mark_retrain_started
from cnnops.settings.config import build_config

NAME = "retrain-test"


def config_for(source: Path, **sets: object):
    return build_config(overrides={"data.source": str(source), "registry.model_name": NAME, **sets})


def register_trained_on(source: Path, work: Path, alias: str | None, **logged: bool) -> int:
    return register_version(config_for(source), work, alias, **logged)


def test_compare_labels_counts_added_removed_and_relabelled_images_per_class():
    before = pd.DataFrame({"sha256": ["a", "b", "c", "d"], "label": ["cat", "cat", "dog", "dog"]})
    now = pd.DataFrame({"sha256": ["a", "c", "d", "e", "f"], "label": ["cat", "cat", "dog", "dog", "cow"]})
    change = compare_labels(before, now)
    rows = {c.label: (c.before, c.now, c.added, c.removed) for c in change.classes}
    assert rows == {"cat": (2, 2, 0, 1), "cow": (0, 1, 1, 0), "dog": (2, 2, 1, 0)}
    assert [(r.before, r.now, r.count) for r in change.relabelled] == [("dog", "cat", 1)]
    assert change.describe() == "+1 in cow, +1 in dog, -1 in cat, 1 relabelled dog -> cat"
    assert change.emptied() == []
    assert compare_labels(before, before).describe() == "no image added, removed or relabelled"


def test_a_retrain_trains_without_a_champion_and_skips_unchanged_data(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=6)
    decided = decide_retrain(config_for(source), tmp_path / "d")
    assert (decided.train, decided.reason) == (True, "no-champion")
    assert decided.detail == f"{NAME} has no champion yet"

    version = register_trained_on(source, tmp_path, "champion")
    decided = decide_retrain(config_for(source), tmp_path / "d")
    assert (decided.train, decided.reason, decided.champion_version) == (False, "unchanged", version)
    assert decided.detail == f"unchanged since v{version} (champion)"
    assert decided.fingerprint.startswith(decided.champion_fingerprint or "-")

    forced = decide_retrain(config_for(source), tmp_path / "d", force=True)
    assert (forced.train, forced.reason) == (True, "forced")


def test_images_added_to_a_class_retrain_with_the_change_per_class_unless_in_the_cooldown(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=6)
    version = register_trained_on(source, tmp_path, "champion")
    write_images(tmp_path / "more", per_class=3, classes=("disc",), seed=7)
    for image in (tmp_path / "more" / "disc").iterdir():
        shutil.copy(image, source / "disc" / f"new_{image.name}")

    decided = decide_retrain(config_for(source), tmp_path / "d")
    assert (decided.train, decided.reason) == (True, "data-changed")
    assert decided.detail == "+3 in disc"
    assert decided.change is not None
    assert {c.label: (c.before, c.now) for c in decided.change.classes}["disc"] == (6, 9)

    mark_retrain_started(NAME)
    cooled = decide_retrain(config_for(source), tmp_path / "d")
    assert (cooled.train, cooled.reason) == (False, "cooldown")
    assert cooled.detail.startswith(f"+3 in disc; but {NAME} was retrained 0 min ago, within retrain.cooldown_minutes")
    later = decide_retrain(config_for(source), tmp_path / "d", now=time.time() + 3601)
    assert later.train and later.reason == "data-changed"
    off = decide_retrain(config_for(source, **{"retrain.cooldown_minutes": 0}), tmp_path / "d")
    assert off.train
    assert MlflowClient().get_registered_model(NAME).tags[LAST_RETRAIN_TAG]
    assert version == 1


URL = "http://127.0.0.1:3000"


def drift_report(status: str) -> DriftReport:
    p_value = {"drift": 1e-6, "no-drift": 0.4}.get(status)
    return DriftReport(
        url="http://127.0.0.1:3000", status=status, reason=f"{status} said", p_value=p_value, window_size=300
    )


def test_with_a_drift_report_only_drift_on_new_data_retrains_and_the_cooldown_still_holds(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=6)
    version = register_trained_on(source, tmp_path, "champion")
    for status in ("no-drift", "too-few", "no-reference"):
        quiet = decide_retrain(config_for(source), tmp_path / "d", drift=drift_report(status))
        assert (quiet.train, quiet.reason) == (False, "no-drift")
        assert quiet.detail == f"{URL} reports {status}: {status} said"
    # drift, on the very data the newest version was trained on: the same images, the same model
    same = decide_retrain(config_for(source), tmp_path / "d", drift=drift_report("drift"))
    assert (same.train, same.reason) == (False, "drift-same-data")
    assert same.detail.startswith(f"{URL} reports drift (drift said); but v{version} was trained on exactly this")
    assert same.drift is not None and same.drift.p_value == 1e-6

    write_images(tmp_path / "more", per_class=2, classes=("cross",), seed=8)
    for image in (tmp_path / "more" / "cross").iterdir():
        shutil.copy(image, source / "cross" / f"new_{image.name}")
    # changed data: the report still decides; a quiet service is no retrain, a drifted one trains
    assert decide_retrain(config_for(source), tmp_path / "d", drift=drift_report("no-drift")).train is False
    drifted = decide_retrain(config_for(source), tmp_path / "d", drift=drift_report("drift"))
    assert (drifted.train, drifted.reason, drifted.detail) == (
        True,
        "drift",
        f"{URL} reports drift (drift said); +2 in cross",
    )
    mark_retrain_started(NAME)
    cooled = decide_retrain(config_for(source), tmp_path / "d", drift=drift_report("drift"))
    assert (cooled.train, cooled.reason) == (False, "cooldown")
    assert "(drift said); +2 in cross; but" in cooled.detail
    forced = decide_retrain(config_for(source), tmp_path / "d", force=True, drift=drift_report("no-drift"))
    assert (forced.train, forced.reason) == (True, "forced")


def test_a_version_kept_as_challenger_on_this_data_is_not_trained_again(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=6)
    register_trained_on(source, tmp_path, "champion")
    (source / "cross" / "cross_000.png").unlink()
    challenger = register_trained_on(source, tmp_path, "challenger")

    decided = decide_retrain(config_for(source), tmp_path / "d")
    assert (decided.train, decided.reason) == (False, "unchanged")
    assert decided.detail == f"unchanged since v{challenger} (challenger)"
    assert decided.change is not None and decided.change.describe() == "-1 in cross"


def test_a_champion_with_no_data_on_record_or_an_emptied_class_is_one_line(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=6)
    register_trained_on(source, tmp_path, "champion", digest=False)
    (source / "disc" / "disc_000.png").unlink()
    with pytest.raises(CnnopsError, match=r"^champion v1 of retrain-test has no dataset digest on its training run"):
        decide_retrain(config_for(source), tmp_path / "d")
    assert decide_retrain(config_for(source), tmp_path / "d", force=True).reason == "forced"

    register_trained_on(source, tmp_path, "champion")
    for image in (source / "stripes").iterdir():
        image.unlink()
    with pytest.raises(CnnopsError, match=r"^class stripes of champion v2 has no image in .* now; restore its images"):
        decide_retrain(config_for(source), tmp_path / "d")


def test_a_vanished_source_is_one_line(state_home, tmp_path):
    with pytest.raises(CnnopsError):
        decide_retrain(config_for(tmp_path / "gone"), tmp_path / "d")


def test_the_report_answers_did_it_train_why_is_it_better_and_where_to_look(state_home, tmp_path, monkeypatch):
    from cnnops.contracts.gate import GateDecision, PairedEvidence
    from cnnops.promotion.retrain import ClassChange, DataChange, Relabel, RetrainDecision
    from cnnops.promotion.retrain_report import RetrainOutcome, publish_outcome

    evidence = PairedEvidence(
        n_images=40, only_candidate_right=9, only_champion_right=1, candidate_score=0.9, champion_score=0.7,
        difference=0.2, interval_low=0.08, interval_high=0.33, confidence=0.95, p_value=0.021,
    )  # fmt: skip
    gate = GateDecision(
        registered_model=NAME, metric="accuracy", margin=0.005, floor=0.5, forced=False, test="paired",
        confidence=0.95, candidate_score=0.9, n_test=40, chance_score=0.35, min_over_chance=0.05,
        baselines={"logistic": {"accuracy": 0.6, "macro_f1": 0.58}}, best_baseline="logistic",
        best_baseline_score=0.6, champion_version=1, champion_score=0.7, candidate_score_compared=0.9,
        compared_on=40, champion_train_overlap=0, evidence=evidence, decided_at="2026-12-02T00:00:00+00:00",
        alias="champion", reason="Better than champion v1 with 95% confidence.",
    )  # fmt: skip
    change = DataChange(
        classes=[ClassChange(label="cat", before=10, now=22, added=12, removed=0)],
        relabelled=[Relabel(before="dog", now="cat", count=2)],
    )
    decision = RetrainDecision(
        model=NAME, source="/data/pets", train=True, reason="data-changed", detail=change.describe(),
        fingerprint="ab" * 32, n_images=22, class_counts={"cat": 22}, champion_version=1, change=change,
        decided_at="2026-12-02T00:00:00+00:00",
    )  # fmt: skip
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    outcome = RetrainOutcome(
        status="promoted", model=NAME, decision=decision, version=2, gate=gate, accuracy=0.9,
        links={"MLflow run": "[r1](http://127.0.0.1:5000/#/experiments/1/runs/r1)"}, seconds=61.0,
    )  # fmt: skip
    report = publish_outcome(outcome)

    text = summary.read_text()
    assert text.startswith("earlier step\n## cnnops retrain: retrain-test: trained v2, promoted to champion\n")
    assert "**Trained:** yes. **Why:** +12 in cat, 2 relabelled dog -> cat." in text
    assert "| cat | 10 | 22 | +12 | -0 |" in text
    assert "| candidate v2 | 0.9000 |" in text and "| champion v1 | 0.7000 |" in text
    assert "9 images only the candidate got right and 1 only the champion (McNemar p = 0.021)" in text
    assert "| logistic | 0.6000 | 0.5800 |" in text
    assert "**champion**: Better than champion v1 with 95% confidence." in text
    assert "- MLflow run: [r1](http://127.0.0.1:5000/#/experiments/1/runs/r1)" in text
    assert report.read_text() == text.removeprefix("earlier step\n")
    assert (report.parent / "report.md").read_text() == report.read_text()
    lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert lines == {
        "trained": "true", "decision": "promoted", "reason": "data-changed",
        "detail": "+12 in cat, 2 relabelled dog -> cat", "model": NAME, "version": "2", "accuracy": "0.9000",
        "report": str(report),
    }  # fmt: skip
