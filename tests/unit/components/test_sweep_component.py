"""components.sweep's plan_sweep and select_model through `.python_func`: the fan-out plan with
its MLflow parent run, and the fan-in that keeps the best trained candidate."""

from mlflow.tracking import MlflowClient
from support.training import component_config, component_splits

from cnnops.components.sweep import plan_sweep

SWEEP = {"sweep.learning_rate": [0.003, 0.00001], "train.epochs": 2, "train.batch_size": 16}


def test_plan_sweep_names_one_parent_run_for_every_candidate(make_images, state_home, tmp_path):
    config = component_config(make_images(per_class=10), **SWEEP)
    splits = component_splits(config, tmp_path)
    candidates = plan_sweep.python_func(config=config, train_data=splits["train"], pipeline_run="run-7")
    assert [c["train"]["learning_rate"] for c in candidates] == [0.003, 0.00001]
    parents = {c["sweep"]["parent_run"] for c in candidates}
    assert len(parents) == 1 and "" not in parents
    parent = MlflowClient().get_run(parents.pop())
    assert parent.data.tags["cnnops.sweep"] == "parent" and parent.data.tags["cnnops.pipeline_run"] == "run-7"
    assert parent.data.params["sweep.candidates"] == "2"


def test_a_single_candidate_is_no_sweep(make_images, state_home, tmp_path):
    config = component_config(make_images(per_class=10))
    splits = component_splits(config, tmp_path)
    (candidate,) = plan_sweep.python_func(config=config, train_data=splits["train"])
    assert candidate == config and candidate["sweep"]["parent_run"] == ""
