from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def package(model: Input[Model], evaluation: Input[Artifact], bento: Output[Artifact]) -> str:
    """Build the Bento of the candidate the gate would crown, before it is registered, so that
    infra-validation can serve it; returns its tag. The archive is the task's output."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.serving.bento import package_candidate

    with exit_on_user_error():
        built = package_candidate(Path(model.path), Path(evaluation.path), Path(bento.path) / "cnnops.bento")
    bento.metadata.update({"bento": built.bento, "registered_model": built.registered_model})
    return built.bento
