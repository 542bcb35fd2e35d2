from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split(
    config: dict,
    dataset: Input[Dataset],
    train_data: Output[Dataset],
    val_data: Output[Dataset],
    test_data: Output[Dataset],
):
    """Stratified, seeded train/val/test manifests; the test manifest is what the gate compares on."""
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.data.split import split_dataset
    from cnnops.settings.config import validate_config

    outputs = {"train": train_data, "val": val_data, "test": test_data}
    with exit_on_user_error():
        counts = split_dataset(
            Path(dataset.path), {name: Path(a.path) for name, a in outputs.items()}, validate_config(config)
        )
    for name, artifact in outputs.items():
        artifact.metadata["n_images"] = counts[name]
