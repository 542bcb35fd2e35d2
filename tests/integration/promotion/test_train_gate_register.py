"""Train, evaluate, gate and register on tiny data, against a real MLflow sqlite store and registry."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.stores import champion_copy
from support.training import train_candidate

from cnnops.contracts.evaluation import EvaluationScores, write_evaluation
from cnnops.contracts.model import ModelSpec, read_model_spec
from cnnops.core.errors import CnnopsError
from cnnops.promotion.gate import decide_promotion
from cnnops.promotion.registration import register_model
from cnnops.promotion.status import describe_registry
from cnnops.settings.config import build_config
from cnnops.tracking.registry import version_spec

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


@pytest.fixture(scope="module")
def registry(champion, tmp_path_factory):
    """A copy of the session's strong first champion and its store, for this module's tests to change."""
    with champion_copy(champion, tmp_path_factory.mktemp("registry")) as copy:
        yield copy


def inputs(candidate: dict) -> tuple:
    """The model, test and evaluation folders and the config, as register_model takes them."""
    return candidate["model"], candidate["test"], candidate["evaluation"], candidate["config"]


def test_training_logs_run_with_model_and_provenance(registry):
    strong = registry["strong"]
    run = MlflowClient().get_run(strong["run_id"])
    assert run.data.tags["cnnops.dataset_fingerprint"]
    assert run.data.tags["cnnops.pipeline_run"] == "manual"
    assert run.data.params["train.epochs"] == "12"
    history = MlflowClient().get_metric_history(strong["run_id"], "val_loss")
    assert len(history) == run.data.metrics["epochs_run"]
    artifacts = {a.path for a in MlflowClient().list_artifacts(strong["run_id"], "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/learning_curves.png", "evaluation/metrics.json"} <= artifacts
    info = mlflow.models.get_model_info(strong["model_uri"])
    # The signature carries the serving contract: decoded uint8 images in, one probability a class out.
    (image,), (probabilities,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert str(image.type) == "uint8" and image.shape == (-1, 16, 16, 3)
    assert probabilities.shape == (-1, 3)
    # The input spec travels as one JSON: the model folder's file, logged with the run, and the
    # registered version's tag, all read by the one parser.
    spec = read_model_spec(strong["model"])
    assert spec.class_names == ["cross", "disc", "stripes"] and spec.schema_version == 1
    logged = mlflow.artifacts.load_text(f"runs:/{strong['run_id']}/model_spec.json")
    assert ModelSpec.from_json(logged, "the run's model_spec.json") == spec
    version = MlflowClient().get_model_version(registry["first"].registered_model, str(registry["first"].version))
    assert version_spec(version) == spec


def test_first_model_above_floor_becomes_champion(registry):
    assert registry["strong"]["metrics"]["accuracy"] >= 0.8
    assert registry["first"].alias == "champion"
    assert registry["decision"].reason.startswith("There is no champion yet")
    assert "beats chance (0.3333)" in registry["decision"].reason


def test_same_seed_gives_same_metrics(registry):
    again = train_candidate(registry["work"] / "again", registry["source"], **{"train.epochs": 12})
    assert again["metrics"]["accuracy"] == registry["strong"]["metrics"]["accuracy"]
    assert again["metrics"]["confusion_matrix"] == registry["strong"]["metrics"]["confusion_matrix"]


def test_weaker_candidate_stays_challenger(registry):
    weak = train_candidate(
        registry["work"] / "weak",
        registry["source"],
        **{"train.epochs": 1, "train.learning_rate": 1e-5, "gate.floor": 0.0, "gate.min_over_chance": 0.0},
    )
    decision = decide_promotion(weak["model"], weak["test"], weak["evaluation"], weak["config"])
    assert decision.alias == "challenger"
    assert decision.champion_version == registry["first"].version
    assert decision.champion_score == pytest.approx(registry["strong"]["metrics"]["accuracy"])
    evidence = decision.evidence
    assert evidence.only_champion_right > evidence.only_candidate_right
    assert evidence.n_images == weak["metrics"]["n_test"] and evidence.interval_high < 0
    result = register_model(weak["model"], weak["test"], weak["evaluation"], weak["config"], decision, None, None)
    status = describe_registry(registry["first"].registered_model).models[0]
    assert status.champion.version == registry["first"].version
    assert status.challenger.version == result.version
    assert status.challenger.reason.startswith("Not shown better than champion v1 with 95% confidence")
    assert status.challenger.evidence.p_value == pytest.approx(evidence.p_value, rel=1e-5)
    assert status.challenger.evidence.only_champion_right == evidence.only_champion_right
    local = MlflowClient().download_artifacts(
        weak["run_id"], f"gate/decision-v{result.version}.json", str(registry["work"])
    )
    stored = json.loads(Path(local).read_text())
    assert stored["alias"] == "challenger" and stored["version"] == result.version


def test_different_class_list_is_never_compared(registry):
    two = write_images(registry["work"] / "two-classes", per_class=20, classes=("disc", "cross"), seed=1)
    # Same registered model on purpose: a relabelled dataset for the same use case.
    name = registry["first"].registered_model
    other = train_candidate(
        registry["work"] / "other",
        two,
        **{"train.epochs": 3, "registry.model_name": name, "gate.floor": 0.0, "gate.min_over_chance": 0.0},
    )
    decision = decide_promotion(other["model"], other["test"], other["evaluation"], other["config"])
    assert decision.alias == "challenger" and decision.champion_score is None
    assert "Class list differs" in decision.reason and "--force-promote" in decision.reason
    forced = build_config(overrides={"gate.force_promote": True, "gate.floor": 0.0, "gate.min_over_chance": 0.0})
    assert decide_promotion(other["model"], other["test"], other["evaluation"], forced).alias == "champion"


def test_candidate_below_floor_is_challenger(registry):
    strong = registry["strong"]
    strict = build_config(overrides={"gate.floor": 0.9})
    # The gate reads the score the evaluate step wrote; a copy of that folder with a low score.
    scored_low = registry["work"] / "scored-low"
    shutil.copytree(strong["evaluation"], scored_low)
    write_evaluation(scored_low, EvaluationScores.model_validate({**strong["metrics"], "accuracy": 0.5}))
    decision = decide_promotion(strong["model"], strong["test"], scored_low, strict)
    assert decision.alias == "challenger" and "below the floor" in decision.reason
    # Both scores are on record even when the floor alone decides.
    assert decision.champion_score == pytest.approx(registry["strong"]["metrics"]["accuracy"])


def test_failed_registration_leaves_nothing_behind(registry, monkeypatch):
    strong = registry["strong"]
    name = registry["first"].registered_model
    client = MlflowClient()
    before = len(client.search_model_versions(f"name = '{name}'"))
    tag_before = client.get_run(strong["run_id"]).data.tags.get("cnnops.gate_decision")
    decision = registry["decision"].model_copy(update={"alias": "challenger", "reason": "test"})

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # an interrupt must roll back too, not only an Exception

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", fail)
    with pytest.raises(KeyboardInterrupt):
        register_model(*inputs(strong), decision, None, registry["validation"])
    assert len(client.search_model_versions(f"name = '{name}'")) == before
    # The run's earlier, successful registration keeps its record.
    assert tag_before == "champion"
    assert client.get_run(strong["run_id"]).data.tags["cnnops.gate_decision"] == "champion"


def test_failed_first_registration_removes_the_new_registered_model(registry, monkeypatch):
    fresh = train_candidate(
        registry["work"] / "fresh",
        registry["source"],
        **{"train.epochs": 1, "registry.model_name": "fresh-model", "gate.floor": 0.0},
    )
    decision = decide_promotion(fresh["model"], fresh["test"], fresh["evaluation"], fresh["config"])

    def fail(*args, **kwargs):
        raise RuntimeError("store went away")

    monkeypatch.setattr(MlflowClient, "log_dict", fail)
    with pytest.raises(RuntimeError, match="store went away"):
        register_model(fresh["model"], fresh["test"], fresh["evaluation"], fresh["config"], decision, None, None)
    assert describe_registry().models == [m for m in describe_registry().models if m.name != "fresh-model"]
    assert "cnnops.gate_decision" not in MlflowClient().get_run(fresh["run_id"]).data.tags


def test_first_candidate_below_the_floor_is_not_crowned(registry):
    fresh = train_candidate(
        registry["work"] / "low",
        registry["source"],
        **{
            "train.epochs": 1,
            "train.learning_rate": 1e-5,
            "registry.model_name": "low-model",
            "gate.floor": 0.99,
            "gate.min_over_chance": 0.0,
        },
    )
    decision = decide_promotion(fresh["model"], fresh["test"], fresh["evaluation"], fresh["config"])
    register_model(fresh["model"], fresh["test"], fresh["evaluation"], fresh["config"], decision, None, None)
    model = describe_registry("low-model").models[0]
    assert model.champion is None and model.challenger.version == 1
    assert "below the floor" in model.challenger.reason


def test_evaluation_of_another_model_or_test_set_is_refused(registry):
    strong, again = registry["strong"], registry["work"] / "again"
    with pytest.raises(CnnopsError, match="evaluates another model"):
        decide_promotion(strong["model"], strong["test"], again / "evaluation", strong["config"])
    with pytest.raises(CnnopsError, match="scored on other images"):
        decide_promotion(strong["model"], registry["work"] / "strong" / "val", strong["evaluation"], strong["config"])
    with pytest.raises(CnnopsError, match="evaluates another model"):
        register_model(
            strong["model"], strong["test"], again / "evaluation", strong["config"], registry["decision"], None, None
        )


def test_champion_is_scored_without_its_own_training_images(registry):
    # Another split seed puts some of the champion's training images into this test split.
    # Floor 0: this test is about the comparison, which a weak 2-epoch model must not skip.
    other = train_candidate(
        registry["work"] / "reseeded",
        registry["source"],
        **{"train.epochs": 2, "seed": 7, "gate.floor": 0.0, "gate.min_over_chance": 0.0},
    )
    decision = decide_promotion(other["model"], other["test"], other["evaluation"], other["config"])
    assert decision.champion_train_overlap > 0
    assert decision.compared_on == other["metrics"]["n_test"] - decision.champion_train_overlap
    assert f"({decision.champion_train_overlap} the champion trained on left out)" in decision.reason


def test_gate_and_register_components(registry):
    from kfp.dsl import Artifact, Dataset, Metrics, Model

    from cnnops.components.baselines import baselines
    from cnnops.components.gate import gate
    from cnnops.components.register import register

    strong = registry["strong"]
    scores = Artifact(uri=str(registry["work"] / "component-baselines"))
    baselines.python_func(
        config={},
        train_data=Dataset(uri=str(registry["work"] / "strong" / "train")),
        test_data=Dataset(uri=str(strong["test"])),
        scores=scores,
        metrics=Metrics(uri=str(registry["work"] / "baseline-metrics")),
    )
    decision = Artifact(uri=str(registry["work"] / "component-decision.json"))
    alias = gate.python_func(
        config={"gate": {"margin": 0.5}},
        model=Model(uri=str(strong["model"])),
        test_data=Dataset(uri=str(strong["test"])),
        evaluation=Artifact(uri=str(strong["evaluation"])),
        baselines=scores,
        decision=decision,
    )
    assert alias == "challenger" and decision.metadata["alias"] == "challenger"
    recorded = json.loads(Path(decision.path).read_text())
    assert set(recorded["baselines"]) == {"logistic-regression", "random-forest"}
    assert recorded["evidence"]["only_candidate_right"] == recorded["evidence"]["only_champion_right"] == 0
    version = register.python_func(
        config={"gate": {"margin": 0.5}},
        model=Model(uri=str(strong["model"])),
        test_data=Dataset(uri=str(strong["test"])),
        evaluation=Artifact(uri=str(strong["evaluation"])),
        baselines=scores,
        decision=decision,
        validation=Artifact(uri=str(registry["validation_dir"])),
    )
    assert describe_registry(registry["first"].registered_model).models[0].challenger.version == version


def test_champion_changed_during_the_run_is_gated_again_against_the_new_champion(registry):
    strong = registry["strong"]
    name = registry["first"].registered_model
    client = MlflowClient()
    # Gated against the current champion...
    decision = registry["decision"].model_copy(
        update={
            "alias": "champion",
            "reason": "test",
            "champion_version": int(client.get_model_version_by_alias(name, "champion").version),
        }
    )
    # ...but another run crowns a new champion before this one registers.
    challenger = client.get_model_version_by_alias(name, "challenger")
    client.set_registered_model_alias(name, "champion", challenger.version)
    result = register_model(*inputs(strong), decision, None, registry["validation"])
    # Registered with what the gate says against the new champion, not with the stale decision.
    expected = decide_promotion(strong["model"], strong["test"], strong["evaluation"], strong["config"])
    assert expected.champion_version == int(challenger.version)
    assert (result.alias, result.reason.split(":")[0]) == (expected.alias, expected.reason.split(":")[0])
    version = client.get_model_version(name, str(result.version))
    assert version.tags["cnnops.compared_with_version"] == str(challenger.version)
    assert version.tags["cnnops.registration"] == "complete"
    holder = result.version if result.alias == "champion" else int(challenger.version)
    assert int(client.get_model_version_by_alias(name, "champion").version) == holder


def test_same_predictions_are_never_promoted_and_force_promote_registers_champion(registry):
    # The champion against itself: the same predictions on the same images.
    strong = registry["strong"]
    name = registry["first"].registered_model
    client = MlflowClient()
    client.set_registered_model_alias(name, "champion", registry["first"].version)
    for margin in (0.0, 0.005):
        tie = decide_promotion(
            strong["model"], strong["test"], strong["evaluation"], build_config(overrides={"gate.margin": margin})
        )
        assert tie.champion_score == tie.candidate_score_compared and tie.alias == "challenger"
        assert tie.evidence.p_value == 1.0 and "0 images only the candidate got right" in tie.reason
    # The plain rule (gate.test none): a tie passes a zero margin, and no other.
    plain = build_config(overrides={"gate.margin": 0.0, "gate.test": "none"})
    assert decide_promotion(strong["model"], strong["test"], strong["evaluation"], plain).alias == "champion"
    strict = build_config(overrides={"gate.margin": 0.001, "gate.test": "none"})
    assert decide_promotion(strong["model"], strong["test"], strong["evaluation"], strict).alias == "challenger"
    forcing = build_config(overrides={"gate.margin": 0.5, "gate.force_promote": True})
    forced = decide_promotion(strong["model"], strong["test"], strong["evaluation"], forcing)
    assert forced.alias == "champion" and forced.reason.startswith("Forced by --force-promote")
    result = register_model(*inputs(strong)[:3], forcing, forced, None, registry["validation"])
    assert int(client.get_model_version_by_alias(name, "champion").version) == result.version


def test_status_of_unknown_model(registry):
    with pytest.raises(CnnopsError, match="no registered model named 'nope'"):
        describe_registry("nope")
