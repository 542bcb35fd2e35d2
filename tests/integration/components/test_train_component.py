"""components.train through `.python_func`: the model folder, its metadata and the MLflow run."""

from pathlib import Path

import pytest
from kfp.dsl import Model
from mlflow.tracking import MlflowClient
from support.training import component_config, component_splits

from cnnops.components.train import train


@pytest.mark.slow
def test_train_writes_the_model_and_returns_its_tracked_run(make_images, state_home, tmp_path):
    config = component_config(make_images(per_class=10), **{"train.epochs": 2, "train.batch_size": 16})
    splits = component_splits(config, tmp_path)
    model = Model(uri=str(tmp_path / "model"))
    run_id = train.python_func(
        config=config, train_data=splits["train"], val_data=splits["val"], model=model, pipeline_run="run-7"
    )
    assert model.metadata["run_id"] == run_id and model.metadata["registered_model"].startswith("cnnops-images-")
    assert (Path(model.path) / "model.keras").is_file()
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["cnnops.pipeline_run"] == "run-7"
    assert run.data.params["train.epochs"] == "2" and run.data.metrics["epochs_run"] == 2
