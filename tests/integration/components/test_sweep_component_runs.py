"""components.sweep's plan_sweep and select_model through `.python_func`: the fan-out plan with
its MLflow parent run, and the fan-in that keeps the best trained candidate."""

import json
from pathlib import Path

import pytest
from kfp.dsl import Model
from support.training import component_config, component_splits

from cnnops.components.sweep import plan_sweep, select_model
from cnnops.components.train import train

SWEEP = {"sweep.learning_rate": [0.003, 0.00001], "train.epochs": 2, "train.batch_size": 16}


@pytest.mark.slow
def test_select_model_keeps_the_best_candidate(make_images, state_home, tmp_path):
    config = component_config(make_images(per_class=10), **SWEEP)
    splits = component_splits(config, tmp_path)
    candidates = plan_sweep.python_func(config=config, train_data=splits["train"])
    models = [Model(uri=str(tmp_path / f"candidate-{index}")) for index in range(len(candidates))]
    for candidate, model in zip(candidates, models, strict=True):
        train.python_func(config=candidate, train_data=splits["train"], val_data=splits["val"], model=model)
    best = Model(uri=str(tmp_path / "best"))
    run_id = select_model.python_func(config=config, models=models, best=best)
    ranked = sorted(models, key=lambda m: (-m.metadata["val_accuracy"], m.metadata["val_loss"]))
    assert run_id == best.metadata["run_id"] == ranked[0].metadata["run_id"]
    assert best.metadata["val_accuracy"] == ranked[0].metadata["val_accuracy"]
    assert (Path(best.path) / "model.keras").is_file()
    ranking = json.loads((Path(best.path) / "sweep.json").read_text())["ranking"]
    assert [row["run_id"] for row in ranking] == [m.metadata["run_id"] for m in ranked]
