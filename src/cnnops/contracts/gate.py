"""The gate's records: the paired evidence, the facts the gate gathered, and its decision
(`GateDecision`), written by `write_decision` and read by `read_decision`: the gate step's output
and the register step's input."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cnnops.contracts.records import Frozen, Record, read_record, write_record
from cnnops.settings.naming import Alias


class PairedEvidence(Frozen):
    """Candidate against champion on the same images; recorded on the version and in the decision."""

    n_images: int
    only_candidate_right: int
    only_champion_right: int
    candidate_score: float
    champion_score: float
    difference: float  # candidate minus champion, in the gate's metric
    interval_low: float
    interval_high: float
    confidence: float
    p_value: float  # exact McNemar, two-sided

    def shows_better(self, margin: float) -> bool:
        """Better with the confidence asked for, and by the margin: more images only the candidate
        got right than only the champion did, McNemar's p below 1 - confidence, the interval above
        zero, and the observed difference at least the margin."""
        alpha = 1.0 - self.confidence
        return (
            self.only_candidate_right > self.only_champion_right
            and self.p_value < alpha
            and self.interval_low > 0
            and self.difference >= margin - 1e-12
        )


GATE_STEP = "the gate (`cnnops gate`)"


class ChampionScores(Frozen):
    """The champion scored on the test images it did not train on, paired with the candidate.
    `champion_train_overlap` is None when the champion's training images are not on record."""

    champion_score: float | None = None
    candidate_score_compared: float | None = None
    compared_on: int | None = None
    champion_train_overlap: int | None = None
    evidence: PairedEvidence | None = None


class ChampionComparison(Frozen):
    """What comparing with the champion gave: the scores, or why it could not be compared."""

    scores: ChampionScores = ChampionScores()
    why_not: str | None = None


class GateFacts(ChampionScores):
    """What the gate gathered about a candidate, before it judged: the rules, its scores, chance,
    the baselines and the champion comparison (`ChampionScores`)."""

    registered_model: str
    metric: Literal["accuracy", "macro_f1"]
    margin: float
    floor: float
    forced: bool
    test: Literal["paired", "none"]
    confidence: float
    candidate_score: float
    n_test: int
    chance_score: float
    min_over_chance: float
    baselines: dict[str, dict[str, float]] | None = None
    best_baseline: str | None = None
    best_baseline_score: float | None = None
    champion_version: int | None = None
    decided_at: str


class GateDecision(GateFacts, Record):
    """The facts and the alias the candidate earned, with the one sentence that says why."""

    alias: Alias
    reason: str


def write_decision(path: Path, decision: GateDecision) -> None:
    write_record(path, decision)


def read_decision(path: Path) -> GateDecision:
    return read_record(path, GateDecision, GATE_STEP)
