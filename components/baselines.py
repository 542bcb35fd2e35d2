from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def baselines(config: dict, train_data: Input[Dataset], test_data: Input[Dataset], metrics: Output[Metrics]):
    """scikit-learn floors on the same splits as the CNN, logged to the same MLflow experiment."""
    from pathlib import Path

    from cnnops.baselines import train_baselines
    from cnnops.config import validate_config
    from cnnops.errors import exit_on_user_error

    with exit_on_user_error():
        scores = train_baselines(Path(train_data.path), Path(test_data.path), validate_config(config))
    for name, values in scores.items():
        for key, value in values.items():
            metrics.log_metric(f"{name}.{key}", value)
