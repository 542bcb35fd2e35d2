"""A sweep whose candidate fails, through kfp.local: the pipeline's exit handler ends the sweep's
MLflow parent run (and any open candidate run) as FAILED, and the run still stops with one line."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cnnops.core.errors import CnnopsError
from cnnops.pipelines.run import run_locally
from cnnops.settings.config import Config, build_config, to_pipeline_parameter
from cnnops.settings.naming import model_name_for
from cnnops.settings.parameters import PipelineParameters, plan_run
from cnnops.tracking.stores import use_tracking_store
from cnnops.training.sweep import ENDED_BY_TAG


@pytest.mark.pipeline
def test_a_failed_candidate_ends_the_sweeps_parent_run_failed(make_images, state_home):
    # mobilenet_v2 needs 32 pixels to work on: a candidate that passes the plan and fails in train.
    overlay = to_pipeline_parameter(
        build_config(
            overrides={
                "data.source": str(make_images(per_class=20)),
                "train.working_size": 16,
                "sweep.architecture": ["simple-cnn", "mobilenet_v2"],
            }
        )
    )
    typed = PipelineParameters(epochs=2, batch_size=16, seed=7)
    with pytest.raises(CnnopsError) as stopped:
        run_locally(plan_run(overlay, typed))
    assert str(stopped.value) == (
        "mobilenet_v2 needs a working size of at least 32 pixels; set train.working_size. (nothing was registered)"
    )

    use_tracking_store()
    client = MlflowClient()
    name = model_name_for(build_config(overrides={"data.source": overlay["data"]["source"]}))
    experiment = client.get_experiment_by_name(name).experiment_id
    (parent,) = client.search_runs([experiment], "tags.`cnnops.sweep` = 'parent'")
    assert parent.info.status == "FAILED"
    assert parent.data.tags[ENDED_BY_TAG] == "pipeline failure"
    pipeline_run = parent.data.tags["cnnops.pipeline_run"]
    assert pipeline_run.startswith("cnnops-train-")
    runs = client.search_runs([experiment], f"tags.`cnnops.pipeline_run` = '{pipeline_run}'")
    assert not [run.info.run_id for run in runs if run.info.status == "RUNNING"]
    # The typed parameters reached the tasks over the overlay: the parent logged the resolved config.
    logged = client.download_artifacts(parent.info.run_id, "config.json")
    resolved = Config.model_validate_json(Path(logged).read_text())
    assert (resolved.train.epochs, resolved.train.batch_size, resolved.seed) == (2, 16, 7)
    assert resolved.train.working_size == 16  # and the overlay's own settings stayed
