from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def release(candidate: Input[Artifact], version: int, bento: Output[Artifact]) -> str:
    """Build the Bento of the version just registered, from the model its validated candidate
    Bento served, when that version holds `champion`; returns its tag, or "" when registration
    made it a challenger (the champion moved, or the validation failed)."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.serving.bento import release_champion

    with exit_on_user_error():
        built = release_champion(
            candidate.metadata["registered_model"],
            version,
            Path(candidate.path) / "cnnops.bento",
            Path(bento.path) / "cnnops.bento",
        )
    if built is None:
        return ""
    bento.metadata.update({"bento": built.bento, "registered_model": built.registered_model, "version": version})
    return built.bento
