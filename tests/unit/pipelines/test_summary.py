"""The summary a run ends with: the decision, both scores, where things are, what to do next."""

from pathlib import Path

from cnnops.contracts.gate import GateDecision
from cnnops.pipelines.summary import RunSummary, format_summary


def summary(**decided):
    facts = {
        "registered_model": "cnnops-animals",
        "metric": "macro_f1",
        "margin": 0.005,
        "floor": 0.0,
        "forced": False,
        "test": "paired",
        "confidence": 0.95,
        "candidate_score": 0.81234,
        "n_test": 40,
        "chance_score": 0.25,
        "min_over_chance": 0.05,
        "best_baseline": "random-forest",
        "best_baseline_score": 0.5,
        "champion_version": 3,
        "champion_score": 0.9,
        "decided_at": "2026-01-01T00:00:00+00:00",
        "alias": "challenger",
        "reason": "The candidate is not shown better than the champion.",
    }
    return RunSummary(
        decision=GateDecision(**{**facts, **decided}),
        version=4,
        report=Path("/s/validate/validated/report.html"),
        evaluation=Path("/s/evaluate/evaluation"),
        run_id="abc",
        run_url="http://127.0.0.1:5000/#/experiments/1/runs/abc",
        log=Path("/s/logs/run.log"),
        seconds=125.0,
    )


def test_a_challenger_against_its_champion():
    assert format_summary(summary()) == [
        "cnnops: pipeline finished in 2m 05s",
        "  decision    cnnops-animals v4 is challenger: The candidate is not shown better than the champion.",
        "  macro f1    candidate 0.8123, champion v3 0.9000",
        "  dataset     /s/validate/validated/report.html",
        "  evaluation  /s/evaluate/evaluation",
        "  MLflow run  abc: http://127.0.0.1:5000/#/experiments/1/runs/abc",
        "  log         /s/logs/run.log",
        "  next        make serve (the champion on http://127.0.0.1:3000), make ui (the MLflow UI)",
    ]


def test_without_a_champion_the_floors_are_the_other_score():
    lines = format_summary(summary(alias="champion", champion_version=None, champion_score=None))
    assert lines[2] == "  macro f1    candidate 0.8123, no champion; chance 0.2500, best baseline random-forest 0.5000"
    shown = format_summary(summary(champion_version=None, champion_score=None, best_baseline=None))
    assert shown[2] == "  macro f1    candidate 0.8123, no champion; chance 0.2500"
    assert shown[-1] == "  next        make ui (the MLflow UI); there is no champion to serve yet"


def test_a_champion_that_could_not_be_compared_says_so():
    assert ", champion v3 not compared; chance 0.2500" in format_summary(summary(champion_score=None))[2]
