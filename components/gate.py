from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def gate(
    config: dict,
    model: Input[Model],
    test_data: Input[Dataset],
    evaluation: Input[Artifact],
    baselines: Input[Artifact],
    decision: Output[Artifact],
) -> str:
    """Hold the candidate to chance and the baselines, and compare it paired with the current
    champion on the same test images; returns the alias it has earned ("champion" or
    "challenger"). Writes nothing to the registry.
    """
    from pathlib import Path

    from cnnops.contracts.gate import write_decision
    from cnnops.core.errors import exit_on_user_error
    from cnnops.promotion.gate import decide_promotion
    from cnnops.settings.config import validate_config

    with exit_on_user_error():
        verdict = decide_promotion(
            Path(model.path), Path(test_data.path), Path(evaluation.path), validate_config(config), Path(baselines.path)
        )
    write_decision(Path(decision.path), verdict)
    decision.metadata.update(
        {"alias": verdict.alias, "reason": verdict.reason, "candidate_score": verdict.candidate_score}
    )
    return verdict.alias
