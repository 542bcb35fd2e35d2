from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(model: Input[Model], evaluation: Input[Artifact], decision: Input[Artifact]) -> int:
    """Register the candidate as a new version under the alias the gate decided; returns the version."""
    from pathlib import Path

    from cnnops.errors import exit_on_user_error
    from cnnops.gate import read_decision
    from cnnops.registration import register_model

    with exit_on_user_error():
        result = register_model(Path(model.path), Path(evaluation.path), read_decision(Path(decision.path)))
    return result.version
