from kfp import dsl
from kfp.dsl import Dataset, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(config: dict, dataset: Output[Dataset]) -> int:
    """Read the source once, quarantine bad files, drop exact duplicates; returns the image count."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.data.ingest import ingest_source
    from cnnops.settings.config import validate_config

    with exit_on_user_error():
        info = ingest_source(validate_config(config), Path(dataset.path))
    dataset.metadata.update(
        info.model_dump(include={"fingerprint", "n_images", "n_quarantined", "n_duplicates", "classes", "mode"})
    )
    return info.n_images
