"""Infra-validation for real: a candidate's Bento served by `bentoml serve` on loopback, checked
against its evaluation's canaries, before registration may move `champion`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support.stores import champion_copy
from support.training import train_candidate

from cnnops.contracts.infra import read_infra_validation
from cnnops.promotion.gate import decide_promotion
from cnnops.promotion.registration import register_model
from cnnops.serving.infra import validate_bento_archive
from cnnops.settings.config import build_config

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def test_a_healthy_champion_passed_in_a_real_server_and_its_run_keeps_the_evidence(champion, tmp_path):
    validation = champion["validation"]
    strong = champion["strong"]
    assert validation.passed, validation.reason
    assert validation.run_id == strong["run_id"] and validation.ready_seconds is not None
    # Every class of the test split was served, each answered 200 with the evaluated probabilities.
    assert {c.label for c in validation.canaries} == set(strong["metrics"]["class_names"])
    assert all(c.status == 200 and c.served == c.expected for c in validation.canaries)
    assert max(c.max_difference for c in validation.canaries) <= 1e-5
    assert 400 <= validation.garbage_status < 500
    with champion_copy(champion, tmp_path / "copy"):
        client = MlflowClient()
        assert client.get_run(strong["run_id"]).data.tags["cnnops.infra_validation"] == "passed"
        kept = {f.path for f in client.list_artifacts(strong["run_id"], "infra_validation")}
        assert kept == {"infra_validation/infra_validation.json", "infra_validation/server.log"}


def test_a_bento_of_another_version_is_refused_and_the_champion_stays(champion, tmp_path):
    """A candidate the gate would crown (forced), whose Bento serves the champion's model instead
    of its own: the canaries' probabilities differ, so it is registered as challenger with the
    reason and the server's log, and `champion` does not move."""
    from cnnops.serving.bento import package_version

    with champion_copy(champion, tmp_path / "copy") as copy:
        name = copy["strong"]["registered_model"]
        other = train_candidate(
            tmp_path / "other", copy["source"], **{"train.epochs": 2, "seed": 7, "gate.force_promote": True}
        )
        decision = decide_promotion(other["model"], other["test"], other["evaluation"], other["config"])
        assert decision.alias == "champion"
        wrong = package_version(name, "1", export_to=tmp_path / "wrong.bento")  # the champion's own Bento
        validation = validate_bento_archive(
            Path(str(wrong.archive)), wrong.bento, other["evaluation"], other["config"], tmp_path / "outcome"
        )
        assert not validation.passed
        assert "served probabilities differ" in validation.reason or "was served as" in validation.reason
        assert read_infra_validation(tmp_path / "outcome") == validation
        assert validation.log_tail, "the server's last log lines are kept"

        inputs = (other["model"], other["test"], other["evaluation"], other["config"])
        result = register_model(*inputs, decision, None, validation)
        client = MlflowClient()
        assert result.alias == "challenger"
        assert result.reason.startswith(f"infra validation failed: {validation.reason}")
        assert int(client.get_model_version_by_alias(name, "champion").version) == 1
        tags = client.get_model_version(name, str(result.version)).tags
        assert tags["cnnops.decision"] == "challenger" and tags["cnnops.reason"] == result.reason
        assert client.get_run(other["run_id"]).data.tags["cnnops.infra_validation"] == "failed"
        log = Path(client.download_artifacts(other["run_id"], "infra_validation/server.log", str(tmp_path)))
        assert log.read_text().strip()
        record = json.loads(
            Path(
                client.download_artifacts(other["run_id"], "infra_validation/infra_validation.json", str(tmp_path))
            ).read_text()
        )
        assert record["passed"] is False and record["bento"] == wrong.bento


def test_a_champion_without_infra_validation_is_registered_as_challenger(champion, tmp_path):
    with champion_copy(champion, tmp_path / "copy") as copy:
        strong = copy["strong"]
        forcing = build_config(overrides={"gate.force_promote": True})
        forced = decide_promotion(strong["model"], strong["test"], strong["evaluation"], forcing)
        assert forced.alias == "champion"
        result = register_model(strong["model"], strong["test"], strong["evaluation"], forcing, forced, None, None)
        assert result.alias == "challenger"
        assert result.reason.startswith("infra validation failed: the candidate's Bento was not infra-validated")
        assert int(MlflowClient().get_model_version_by_alias(strong["registered_model"], "champion").version) == 1
