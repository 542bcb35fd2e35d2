from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(config: dict, dataset: Input[Dataset], validated: Output[Dataset], report: Output[HTML]) -> str:
    """Image checks before the split: near-duplicate groups, balance, quarantine share; returns the
    verdict (pass or warn; a fail stops the run with the report as the reason)."""
    import shutil
    from pathlib import Path

    from cnnops.core.errors import exit_on_user_error
    from cnnops.data.validate import validate_dataset
    from cnnops.settings.config import validate_config

    with exit_on_user_error():
        result = validate_dataset(Path(dataset.path), Path(validated.path), validate_config(config))
    shutil.copyfile(Path(validated.path) / "report.html", report.path)
    validated.metadata.update({"verdict": result.verdict, "near_duplicate_groups": len(result.near_duplicate_groups)})
    return result.verdict
