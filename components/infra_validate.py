from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def infra_validate(
    config: dict, bento: Input[Artifact], evaluation: Input[Artifact], validation: Output[Artifact]
) -> bool:
    """Serve the candidate's Bento in a real server and check that it answers the canary test
    images as the evaluation did and refuses garbage; returns whether it passed. A failure is an
    outcome, not an error: registration makes the version a challenger with the reason."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.serving.infra import validate_bento_archive
    from cnnops.settings.config import validate_config

    with exit_on_user_error():
        outcome = validate_bento_archive(
            Path(bento.path) / "cnnops.bento",
            bento.metadata.get("bento", "the candidate's Bento"),
            Path(evaluation.path),
            validate_config(config),
            Path(validation.path),
        )
    validation.metadata.update({"passed": outcome.passed, "reason": outcome.reason})
    return outcome.passed
