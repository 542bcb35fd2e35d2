from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    config: dict,
    model: Input[Model],
    test_data: Input[Dataset],
    evaluation: Input[Artifact],
    baselines: Input[Artifact],
    decision: Input[Artifact],
    validation: Input[Artifact] = None,
) -> int:
    """Register the candidate as a new version under the alias the gate decided (gating again, on
    the same inputs, if another run moved the champion meanwhile); returns the version. Only a
    passed infra-validation (`validation`) lets it be champion."""
    from pathlib import Path

    from cnnops.contracts.gate import read_decision
    from cnnops.contracts.infra import read_infra_validation
    from cnnops.core.errors import exit_on_user_error
    from cnnops.promotion.registration import register_model
    from cnnops.settings.config import validate_config

    with exit_on_user_error():
        result = register_model(
            Path(model.path),
            Path(test_data.path),
            Path(evaluation.path),
            validate_config(config),
            read_decision(Path(decision.path)),
            Path(baselines.path),
            None if validation is None else read_infra_validation(Path(validation.path)),
        )
    return result.version
