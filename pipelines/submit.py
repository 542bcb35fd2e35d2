"""Submit the pipeline to a Kubeflow Pipelines cluster."""

from typing import Any

import kfp

from pipelines.pipeline import build_pipeline


def submit_pipeline(host: str, config: dict[str, Any], experiment: str = "cnnops", gpu: bool = False) -> str:
    """Create a run on the cluster at `host`; returns its run id.

    The cluster's tasks need the project image, `MLFLOW_TRACKING_URI` pointing at a shared MLflow
    server, and the data source on a volume every task can read.
    """
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(
        build_pipeline(gpu=gpu), arguments={"config": config}, experiment_name=experiment
    )
    return run.run_id
