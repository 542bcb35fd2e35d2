from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def baselines(
    config: dict,
    train_data: Input[Dataset],
    test_data: Input[Dataset],
    scores: Output[Artifact],
    metrics: Output[Metrics],
):
    """scikit-learn floors on the same splits as the CNN, logged to the same MLflow experiment;
    `scores` is what the gate holds the candidate to."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.evaluation.baselines import train_baselines
    from cnnops.settings.config import validate_config

    with exit_on_user_error():
        result = train_baselines(
            Path(train_data.path), Path(test_data.path), validate_config(config), Path(scores.path)
        )
    for name, values in result.scores.items():
        for key, value in values.items():
            metrics.log_metric(f"{name}.test_{key}", value)
