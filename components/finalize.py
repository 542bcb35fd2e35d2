from kfp import dsl
from kfp.dsl import PipelineTaskFinalStatus

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finalize(status: PipelineTaskFinalStatus, pipeline_run: str = "manual") -> int:
    """The pipeline's exit handler: when the run did not succeed (it failed or was cancelled), end
    its MLflow runs still RUNNING (a sweep's parent, a candidate whose task died) as FAILED;
    returns how many it ended."""
    from cnnops.core.errors import exit_on_user_error
    from cnnops.training.sweep import fail_open_runs

    with exit_on_user_error():
        return len(fail_open_runs(pipeline_run, pipeline_failed=status.state != "SUCCEEDED"))
