"""The pipeline as kfp.local really runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.images import snapshot

from cnnops.pipelines.run import run_locally
from cnnops.promotion.status import describe_registry
from cnnops.settings.config import build_config, to_pipeline_parameter
from cnnops.settings.naming import model_name_for
from cnnops.settings.parameters import plan_run

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "pipelines" / "cnnops-train.yaml"
CNNOPS = Path(sys.executable).parent / "cnnops"


@pytest.mark.pipeline
@pytest.mark.usefixtures("state_home")  # a clean environment; the test names its own state folder
def test_a_sweep_crowns_its_best_candidate_then_a_weaker_run_keeps_it(make_images, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    from cnnops.tracking.stores import use_tracking_store

    # The state folder is the default one, `.cnnops` in the folder the command line starts from.
    work, user_home = tmp_path / "work", tmp_path / "user-home"
    state_home = work / ".cnnops"
    user_home.mkdir()
    monkeypatch.setenv("CNNOPS_HOME", str(state_home))
    source = make_images(per_class=30)
    before_source = snapshot(source)
    config = build_config(
        overrides={
            "data.source": str(source),
            "train.epochs": 12,
            "train.batch_size": 16,
            "train.patience": 20,
            "sweep.learning_rate": [0.003, 0.001, 0.00001],
        }
    )
    before = dict(os.environ)
    finished = run_locally(plan_run(to_pipeline_parameter(config)))
    assert dict(os.environ) == before  # the run set variables for its tasks, and only for them
    assert finished.log.parent == state_home / "logs" and "Got executor_input:" in finished.log.read_text()
    name = model_name_for(config)

    # Three candidates fanned out as child runs of one parent, and fanned back in at select.
    use_tracking_store()
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name).experiment_id
    (parent,) = client.search_runs([experiment], "tags.`cnnops.sweep` = 'parent'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3 and parent.info.status == "FINISHED"
    assert sorted(child.info.run_name for child in children) == [
        "simple-cnn lr=0.001 aug=none",
        "simple-cnn lr=0.003 aug=none",
        "simple-cnn lr=1e-05 aug=none",
    ]

    def best_epoch_score(child):  # val accuracy at the best epoch, ties broken by the lower val loss
        accuracy = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "val_accuracy")}
        loss = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "val_loss")}
        best = int(child.data.metrics["best_epoch"]) - 1
        return accuracy[best], -loss[best]

    winner = max(children, key=best_epoch_score)
    assert "lr=1e-05" not in winner.info.run_name  # a near-zero rate cannot learn this in 12 epochs
    assert parent.data.tags["cnnops.sweep.best_run"] == winner.info.run_id
    assert client.get_run(winner.info.run_id).data.tags["cnnops.sweep.winner"] == "true"
    # The winner, and no other candidate, went through the gate to become champion v1.
    champion = client.get_model_version_by_alias(name, "champion")
    assert (str(champion.version), champion.run_id) == ("1", winner.info.run_id)
    first = describe_registry(name).models[0].champion
    assert first is not None and first.version == 1
    assert first.test_accuracy >= 0.8
    # The baselines task ran before the gate, on the same test split, and the gate held v1 to them.
    assert first.best_baseline in {"logistic-regression", "random-forest"}
    assert first.test_accuracy >= first.best_baseline_score
    assert os.listdir(state_home / "pipeline-root")
    (report,) = (state_home / "pipeline-root").rglob("validate/report")  # the KFP HTML output
    assert "Dataset report" in report.read_text()
    # The champion branch packaged it: a Bento pinned to v1, and its archive as the task's output.
    (bento,) = (state_home / "bentoml" / "bentos" / "cnnops").glob(f"{name.lower()}-v1-*")
    assert (bento / "src" / "cnnops" / "serving" / "model" / "model.keras").is_file()
    assert list((state_home / "pipeline-root").rglob("release/bento/cnnops.bento"))
    assert list((state_home / "pipeline-root").rglob("infra-validate/validation/infra_validation.json"))

    # A deliberately weaker candidate, through the real command line as a user starts it: no
    # variables of cnnops's own, so its state folder is `.cnnops` in the working folder.
    own = {"CNNOPS_HOME", "MLFLOW_TRACKING_URI", "KERAS_HOME", "MPLCONFIGDIR", "BENTOML_HOME"}
    user_env = {key: value for key, value in os.environ.items() if key not in own}
    weaker = subprocess.run(
        [
            str(CNNOPS),
            "run",
            "--data",
            str(source),
            "--epochs",
            "1",
            "--set",
            "train.learning_rate=0.00001",
            "--set",
            "train.batch_size=16",
            "--set",
            "gate.floor=0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work,
        env={**user_env, "HOME": str(user_home)},
    )
    assert weaker.returncode == 0, weaker.stderr[-3000:]
    # It wrote only inside the state folder: nothing beside it, nothing in HOME, nothing in the data.
    assert sorted(p.name for p in work.iterdir()) == [".cnnops"]
    assert list(user_home.iterdir()) == []
    assert snapshot(source) == before_source
    # A line per task, cnnops's own lines and the summary; the rest is in the run's log.
    shown = weaker.stderr.splitlines() + weaker.stdout.splitlines()
    assert len(shown) <= 80, "\n".join(shown)
    assert "cnnops: train: started" in shown and any(line.startswith("cnnops: gate: finished in ") for line in shown)
    summary = weaker.stdout.splitlines()
    assert summary[0].startswith("cnnops: pipeline finished in ")
    assert summary[1].startswith(f"  decision    {name} v2 is challenger: ")
    assert summary[2].startswith("  accuracy    candidate ") and ", champion v1 " in summary[2]
    assert summary[3].endswith("validate/validated/report.html") and summary[4].endswith("evaluate/evaluation")
    assert summary[5].startswith("  MLflow run  ") and "http://127.0.0.1:5000/#/experiments/" in summary[5]
    assert summary[-1].startswith("  next        make serve") and "make ui" in summary[-1]
    (log_line,) = [line for line in summary if line.startswith("  log         ")]
    log = Path(log_line.split()[-1])
    assert log.parent == state_home / "logs" and f"full log in {log}" in weaker.stderr
    logged = log.read_text().splitlines()
    assert all(line in logged for line in shown)  # nothing the terminal showed is missing from the log
    assert "Got executor_input:" in "\n".join(logged) and not any("executor_input" in line for line in shown)
    status = subprocess.run(
        [str(CNNOPS), "status", "--json", "--model-name", name],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
        check=True,
    )
    model = json.loads(status.stdout)["models"][0]
    assert model["champion"]["version"] == 1
    # Infra-validated as it will be deployed: by ONNX Runtime, its export checked against Keras.
    assert model["champion"]["served_by"] == "onnx"
    assert model["champion"]["served_by_reason"].startswith("the onnx export matches the Keras model on ")
    assert model["challenger"]["version"] == 2
    assert model["challenger"]["decision"] == "challenger"
    # A near-zero rate for one epoch learns nothing: the gate says so before any comparison.
    assert "does not beat chance" in model["challenger"]["reason"]
    assert model["challenger"]["chance_score"] == pytest.approx(1 / 3)
    assert (
        model["challenger"]["evidence"]["only_champion_right"] > model["challenger"]["evidence"]["only_candidate_right"]
    )
    assert model["challenger"]["champion_score"] == pytest.approx(first.test_accuracy)
    # Only a new champion is packaged.
    assert not list((state_home / "bentoml" / "bentos" / "cnnops").glob(f"{name.lower()}-v2-*"))
