"""components.gate through `.python_func`, on a copy of the session's champion: the champion
gated against itself has no evidence of being better, so it stays a challenger."""

import json
from pathlib import Path

import pytest
from support.stores import champion_copy
from support.training import gate_the_champion_against_itself

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def test_gate_returns_the_alias_and_records_the_decision(champion, tmp_path):
    with champion_copy(champion, tmp_path / "copy") as copy:
        alias, decision = gate_the_champion_against_itself(copy, tmp_path, {})
    assert alias == decision.metadata["alias"] == "challenger"
    assert decision.metadata["candidate_score"] == copy["strong"]["metrics"]["accuracy"]
    assert "0 images only the candidate got right" in decision.metadata["reason"]
    recorded = json.loads(Path(decision.path).read_text())
    assert recorded["alias"] == "challenger" and recorded["reason"] == decision.metadata["reason"]
    assert recorded["champion_version"] == 1 and recorded["evidence"]["p_value"] == 1.0
    assert set(recorded["baselines"]) == {"logistic-regression", "random-forest"}
