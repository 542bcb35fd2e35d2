"""Small data and the gate, for real: the default recipe on 60 images per class, and a gate that
holds every candidate to chance, to the baselines on the same split, and to paired evidence
against the champion (a real sqlite store and registry)."""

import json
import os
import subprocess

import mlflow
import pytest
from support.commands import CNNOPS
from support.images import write_images
from support.stores import own_store
from support.training import train_candidate

from cnnops.contracts.gate import GateDecision
from cnnops.contracts.registry import Registration
from cnnops.evaluation.baselines import train_baselines
from cnnops.promotion.gate import decide_promotion
from cnnops.promotion.registration import register_model
from cnnops.promotion.status import describe_registry
from cnnops.settings.config import build_config

NAME = "gate-test"


# 60 images per class, 3 classes: 108 train, 18 val, 54 test images.
SMALL = {"split.train": 0.6, "split.val": 0.1, "split.test": 0.3, "registry.model_name": NAME}


# The default recipe: none of the batch size and patience the other tests' helper pins.
DEFAULTS = {"train.batch_size": None, "train.patience": None}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    work = tmp_path_factory.mktemp("gate")
    with own_store(work):
        source = write_images(work / "images", per_class=60, seed=5)
        default = train_candidate(work / "default", source, **SMALL, **DEFAULTS)
        # A learning rate of 1e-7: the weights barely move, so it answers at chance.
        chance = train_candidate(
            work / "chance", source, **SMALL, **DEFAULTS, **{"train.learning_rate": 1e-7, "train.epochs": 2}
        )
        # One epoch at 3e-5: it learns something, but less than pixels-in-a-logistic-regression.
        weak = train_candidate(
            work / "weak", source, **SMALL, **DEFAULTS, **{"train.learning_rate": 3e-5, "train.epochs": 1}
        )
        floors = work / "baselines"
        train_baselines(work / "default" / "train", work / "default" / "test", default["config"], floors)
        yield {"work": work, "default": default, "chance": chance, "weak": weak, "baselines": floors}


def gate(candidate: dict, floors, **overrides) -> GateDecision:
    config = build_config(overrides={**SMALL, **overrides})
    return decide_promotion(candidate["model"], candidate["test"], candidate["evaluation"], config, floors)


def register(candidate: dict, decision: GateDecision, floors, **overrides) -> Registration:
    """Register with the inputs and rules the candidate was gated with, as the pipeline does: a
    champion's Bento infra-validated in a real server first."""
    from cnnops.serving.infra import validate_candidate

    config = build_config(overrides={**SMALL, **overrides})
    inputs = (candidate["model"], candidate["test"], candidate["evaluation"], config)
    validation = (
        validate_candidate(candidate["model"], candidate["evaluation"], config)
        if decision.alias == "champion"
        else None
    )
    return register_model(*inputs, decision, floors, validation)


@pytest.mark.slow
def test_the_default_recipe_learns_sixty_images_per_class(small):
    default = small["default"]
    assert default["metrics"]["n_test"] == 54
    assert default["metrics"]["accuracy"] >= 0.9  # chance is 0.33
    params = mlflow.get_run(default["run_id"]).data.params
    # 108 images: batches of 8 give 14 steps an epoch, too few for moving batchnorm averages.
    assert (params["recipe.batch_size"], params["recipe.steps_per_epoch"]) == ("8", "14")
    assert (params["recipe.patience"], params["recipe.min_epochs"]) == ("4", "8")
    assert params["recipe.recalibrate_batchnorm"] == "True"
    assert params["train.batch_size"] == "None"  # the config said "size it for me"


@pytest.mark.slow
def test_the_gate_holds_candidates_to_chance_the_baselines_and_evidence(small):
    default, chance, floors = small["default"], small["chance"], small["baselines"]

    # No champion yet, and a candidate at chance: it stays challenger, and the reason says why.
    first = gate(chance, floors)
    assert chance["metrics"]["accuracy"] < 0.38
    assert first.alias == "challenger" and first.champion_version is None
    assert "does not beat chance" in first.reason and "0.3333" in first.reason
    assert register(chance, first, floors).alias == "challenger"

    # Above chance and the floor, but below the baselines on the same split: not worth serving.
    weak = small["weak"]
    below = gate(weak, floors)
    best, best_score = below.best_baseline, below.best_baseline_score
    assert best in {"logistic-regression", "random-forest"}
    assert 0.5 <= weak["metrics"]["accuracy"] < best_score
    assert below.alias == "challenger"
    assert f"below the {best} baseline's {best_score:.4f} on the same 54 test images" in below.reason

    # The weak model, crowned on purpose with the baseline rule off ...
    crowned_weak = gate(weak, floors, **{"gate.must_beat_baselines": False})
    assert crowned_weak.alias == "champion"
    weak_version = register(weak, crowned_weak, floors, **{"gate.must_beat_baselines": False}).version

    # ... is replaced by a clearly better candidate, on paired evidence over the same 54 images.
    better = gate(default, floors)
    evidence = better.evidence
    assert better.alias == "champion", better.reason
    assert better.reason.startswith(f"Better than champion v{weak_version} with 95% confidence")
    assert evidence.n_images == 54 and evidence.only_candidate_right > 12 > evidence.only_champion_right
    assert evidence.p_value < 1e-3 and evidence.interval_low > 0.1
    crowned = register(default, better, floors).version

    # With a real champion in place, a chance-level candidate still never takes its place.
    again = gate(chance, floors)
    assert again.alias == "challenger" and again.champion_version == crowned
    assert "does not beat chance" in again.reason

    # The evidence is on the version, and `cnnops status` shows it.
    (model,) = describe_registry(NAME).models
    assert model.champion.version == crowned
    assert model.champion.evidence.only_candidate_right == evidence.only_candidate_right
    assert model.champion.best_baseline == best
    status = subprocess.run(
        [str(CNNOPS), "status", "--model-name", NAME],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=True,
    )
    line = next(text for text in status.stdout.splitlines() if f"vs v{weak_version} on 54 images" in text)
    assert f"only this right {evidence.only_candidate_right}" in line and "McNemar p" in line
    assert f"best baseline {best} {best_score:.4f}" in status.stdout
    recorded = json.loads(mlflow.artifacts.load_text(f"runs:/{default['run_id']}/gate/decision-v{crowned}.json"))
    assert recorded["outcome"] == "complete" and recorded["version"] == crowned
    assert recorded["gate"]["evidence"] == evidence.model_dump() and recorded["gate"]["chance_score"] == pytest.approx(
        1 / 3
    )
