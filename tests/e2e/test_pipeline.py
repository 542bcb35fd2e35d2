"""The pipeline: compiled IR parses and matches the checked-in file; kfp.local really runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnops
from cnnops.components import BASE_IMAGE
from cnnops.pipelines.compile import compile_pipeline, load_pipeline_spec, read_ir_documents
from cnnops.pipelines.platform import Platform
from cnnops.pipelines.run import run_locally
from cnnops.promotion.status import describe_registry
from cnnops.settings.config import build_config, to_pipeline_parameter
from cnnops.settings.naming import model_name_for
from cnnops.settings.parameters import plan_run

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "pipelines" / "cnnops-train.yaml"
CNNOPS = Path(sys.executable).parent / "cnnops"


def test_compiles_to_a_pipeline_spec_with_the_gate_branch(tmp_path):
    spec = load_pipeline_spec(compile_pipeline(tmp_path / "p.yaml"))
    assert spec.pipeline_info.name == "cnnops-train"
    # Every step runs inside the exit handler, whose finalize task runs however the steps end.
    assert set(spec.root.dag.tasks) == {"exit-handler-1", "finalize"}
    tasks = spec.components[spec.root.dag.tasks["exit-handler-1"].component_ref.name].dag.tasks
    assert tasks["ingest"].inputs.parameters["config"].task_output_parameter.producer_task == "configure"
    assert {"ingest", "validate", "split", "plan-sweep", "select-model", "baselines", "evaluate", "gate"} <= set(tasks)
    assert tasks["split"].inputs.artifacts["dataset"].task_output_artifact.producer_task == "validate"
    # Training fans out over the sweep's candidates and fans back in at select.
    loop = next(task for key, task in tasks.items() if key.startswith("for-loop"))
    assert loop.parameter_iterator.items.input_parameter.endswith("plan-sweep-Output")
    assert loop.iterator_policy.parallelism_limit == 2
    assert tasks["evaluate"].inputs.artifacts["model"].task_output_artifact.producer_task == "select-model"
    nested = [task for component in spec.components.values() for task in component.dag.tasks.values()]
    conditions = {
        task.task_info.name: task.trigger_policy.condition for task in nested if task.trigger_policy.condition
    }
    assert "'champion'" in conditions["promote"] and conditions["keep-champion"].startswith("!(")
    assert "train" in {task.task_info.name for task in nested}
    registers = {task.task_info.name for task in nested if task.component_ref.name.startswith("comp-register")}
    assert registers == {"register-champion", "register-challenger"}
    # In the champion branch: package the candidate, infra-validate its Bento, and only then
    # register; release builds the registered version's Bento from the validated one.
    by_name = {
        task.task_info.name: (key, task)
        for component in spec.components.values()
        for key, task in component.dag.tasks.items()
    }

    def producer(task: str, artifact: str) -> str:
        return by_name[task][1].inputs.artifacts[artifact].task_output_artifact.producer_task

    assert producer("infra-validate", "bento") == by_name["package"][0]
    assert producer("register-champion", "validation") == by_name["infra-validate"][0]
    assert "validation" not in by_name["register-challenger"][1].inputs.artifacts
    assert producer("release", "candidate") == by_name["package"][0]
    version = by_name["release"][1].inputs.parameters["version"].task_output_parameter
    assert version.producer_task == by_name["register-champion"][0]
    train = spec.deployment_spec["executors"]["exec-train"]["container"]
    assert train["image"] == BASE_IMAGE == f"cnnops:{cnnops.__version__}"  # the image `make image` tags


def test_compiling_for_a_registry_names_the_pushed_image_in_every_task(tmp_path):
    pushed = f"registry.example/ml/{BASE_IMAGE}"
    spec = load_pipeline_spec(compile_pipeline(tmp_path / "p.yaml", image=pushed))
    images = {executor["container"]["image"] for executor in spec.deployment_spec["executors"].values()}
    assert images == {pushed}
    assert len(spec.deployment_spec["executors"]) >= 10


def test_gpu_variant_requests_a_gpu(tmp_path):
    text = compile_pipeline(tmp_path / "gpu.yaml", Platform(gpu=True)).read_text()
    assert "nvidia.com/gpu" in text


def test_checked_in_yaml_is_current(tmp_path):
    fresh = read_ir_documents(compile_pipeline(tmp_path / "p.yaml"))
    assert fresh == read_ir_documents(CHECKED_IN), "run `make compile` and commit the result"


@pytest.mark.pipeline
def test_a_sweep_crowns_its_best_candidate_then_a_weaker_run_keeps_it(make_images, state_home):
    from mlflow.tracking import MlflowClient

    from cnnops.tracking.stores import use_tracking_store

    source = make_images(per_class=30)
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

    # A deliberately weaker candidate, through the real command line.
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
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
    )
    assert weaker.returncode == 0, weaker.stderr[-3000:]
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
