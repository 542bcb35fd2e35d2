from typing import List  # noqa: UP035 - kfp reads this annotation

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_sweep(config: dict, train_data: Input[Dataset], pipeline_run: str = "manual") -> list:
    """The candidate configs to train in parallel; with several, each names the MLflow parent run
    it logs under."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.settings.config import validate_config
    from cnnops.training.sweep import start_sweep

    with exit_on_user_error():
        return start_sweep(validate_config(config), Path(train_data.path), pipeline_run)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_model(config: dict, models: Input[List[Model]], best: Output[Model]) -> str:  # noqa: UP006
    """Fan-in: the candidate with the best val score goes on; returns its MLflow run id."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.settings.config import validate_config
    from cnnops.training.sweep import select_best

    with exit_on_user_error():
        chosen = select_best([Path(model.path) for model in models], validate_config(config), Path(best.path))
    best.metadata.update(chosen.model_dump(include={"run_id", "architecture", "val_accuracy", "val_loss"}))
    return chosen.run_id
