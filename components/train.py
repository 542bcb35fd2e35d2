from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    config: dict,
    train_data: Input[Dataset],
    val_data: Input[Dataset],
    model: Output[Model],
    pipeline_run: str = "manual",
    fresh: bool = False,
) -> str:
    """Fit the configured CNN, tracked in MLflow; returns the MLflow run id. An interrupted run
    that trained exactly this is resumed unless `fresh`."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.settings.config import validate_config
    from cnnops.training.train import train_model

    with exit_on_user_error():
        record = train_model(
            Path(train_data.path),
            Path(val_data.path),
            Path(model.path),
            validate_config(config),
            pipeline_run=pipeline_run,
            fresh=fresh,
        )
    model.metadata.update(record.model_dump(exclude_none=True))
    return record.run_id
