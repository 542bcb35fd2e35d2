from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def package(model: Input[Model], version: int, bento: Output[Artifact]) -> str:
    """Build the Bento for the version just registered as champion; returns its tag. The archive
    is the task's output, so a cluster run keeps the Bento after the pod is gone."""
    from pathlib import Path

    from cnnops.artifacts import read_run_record
    from cnnops.errors import exit_on_user_error
    from serving.bento import package_version

    with exit_on_user_error():
        name = read_run_record(Path(model.path)).registered_model
        built = package_version(name, str(version), export_to=Path(bento.path) / "cnnops.bento")
    bento.metadata.update({"bento": built.bento, "registered_model": built.registered_model, "version": built.version})
    return built.bento
