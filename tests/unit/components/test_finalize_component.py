"""components.finalize through `.python_func`: after a failed pipeline run it ends that run's
MLflow runs still RUNNING as FAILED, and touches no run of another pipeline run, nor a finished one."""

from kfp.dsl import PipelineTaskFinalStatus
from mlflow.tracking import MlflowClient

from cnnops.components.finalize import finalize
from cnnops.tracking.stores import use_tracking_store
from cnnops.training.sweep import ENDED_BY_TAG


def final_status(state):
    return PipelineTaskFinalStatus(state, "local-pipeline-exit-handler-1", "exit-handler-1", None, None)


def test_a_failed_run_ends_only_its_own_open_runs(state_home):
    use_tracking_store()
    client = MlflowClient()
    experiment = client.create_experiment("cnnops-test")
    runs = {
        name: client.create_run(experiment, tags={"cnnops.pipeline_run": pipeline_run}).info.run_id
        for name, pipeline_run in (
            ("parent", "cnnops-train-1"),
            ("candidate", "cnnops-train-1"),
            ("done", "cnnops-train-1"),
            ("other", "cnnops-train-2"),  # another run's training, maybe to be resumed
        )
    }
    client.set_terminated(runs["done"], "FINISHED")
    assert finalize.python_func(status=final_status("SUCCEEDED"), pipeline_run="cnnops-train-1") == 0
    assert client.get_run(runs["parent"]).info.status == "RUNNING"  # a run that succeeded is left alone

    assert finalize.python_func(status=final_status("FAILED"), pipeline_run="cnnops-train-1") == 2
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"parent": "FAILED", "candidate": "FAILED", "done": "FINISHED", "other": "RUNNING"}
    assert client.get_run(runs["parent"]).data.tags[ENDED_BY_TAG] == "pipeline failure"
    assert ENDED_BY_TAG not in client.get_run(runs["done"]).data.tags
    # Run again (a retried exit task): nothing is left to end.
    assert finalize.python_func(status=final_status("FAILED"), pipeline_run="cnnops-train-1") == 0
