"""Run the pipeline on this machine with kfp.local: every task a subprocess of this venv, or every
task a container of the project image."""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kfp import local

from cnnops.errors import ERROR_FILE_ENV, CnnopsError
from cnnops.paths import STATE_ENV, keep_tool_state_inside, pipeline_root, state_home, tracking_uri
from components import BASE_IMAGE
from pipelines.pipeline import PIPELINE_NAME, build_pipeline

RUNNERS = ("subprocess", "docker")
EXECUTOR_OUTPUT = "executor_output.json"


def run_locally(config: dict[str, Any], runner: str = "subprocess") -> None:
    """Run the pipeline with kfp.local.

    A task that stops on a user error, or one that wrote no outputs, raises CnnopsError with that
    task's one-line reason; any other task failure is kfp's RuntimeError.
    """
    # Tasks are separate processes: pin the state folder so they all agree on it.
    os.environ[STATE_ENV] = str(state_home())
    keep_tool_state_inside()
    root = pipeline_root()
    root.mkdir(parents=True, exist_ok=True)
    errors = root / ".errors" / f"{secrets.token_hex(6)}.txt"
    errors.parent.mkdir(exist_ok=True)
    errors.touch()
    try:
        with task_runner(runner, config, root, errors) as chosen:
            local.init(runner=chosen, pipeline_root=str(root))
            run_pipeline(config, root, errors)
    finally:
        errors.unlink(missing_ok=True)


@contextmanager
def task_runner(runner: str, config: dict[str, Any], root: Path, errors: Path) -> Iterator[Any]:
    if runner == "subprocess":
        from cnnops.config import validate_config
        from cnnops.naming import model_name_for
        from cnnops.tracking_server import proxied_artifacts_reachable

        os.environ[ERROR_FILE_ENV] = str(errors)
        try:
            # A model first trained in containers logs through a server; so do these tasks then.
            with proxied_artifacts_reachable(model_name_for(validate_config(config))):
                yield local.SubprocessRunner(use_venv=False)
        finally:
            os.environ.pop(ERROR_FILE_ENV, None)
    elif runner == "docker":
        from cnnops.config import validate_config
        from cnnops.ingest import open_source
        from pipelines.docker import check_docker, docker_runner

        check_docker(BASE_IMAGE)  # the daemon and the image, before any server starts
        with tracking_server_for_containers(config) as uri:
            errors.chmod(0o666)  # the tasks' user appends its reasons here
            yield docker_runner(open_source(validate_config(config)), root, BASE_IMAGE, uri, errors)
    else:
        raise CnnopsError(f"unknown runner {runner!r}; choose one of: {', '.join(RUNNERS)}")


@contextmanager
def tracking_server_for_containers(config: dict[str, Any]) -> Iterator[str]:
    """The tracking server the containers log to: `$MLFLOW_TRACKING_URI` when it names one, else the
    project's own on a free loopback port, stopped by PID when the run ends."""
    from cnnops.processes import free_port
    from cnnops.tracking_server import answers, is_server_uri, running_server, server_log

    if os.environ.get("MLFLOW_TRACKING_URI"):
        uri = tracking_uri()
        if not is_server_uri(uri):
            raise CnnopsError(
                f"MLFLOW_TRACKING_URI is {uri}, a store that containers cannot reach; point it at an "
                "MLflow tracking server (http://...) or unset it to let cnnops start its own"
            )
        if not answers(uri):
            raise CnnopsError(
                f"no MLflow tracking server answers at {uri} (MLFLOW_TRACKING_URI): start it, or unset "
                "MLFLOW_TRACKING_URI to let cnnops start its own"
            )
        check_artifacts_reachable(uri, config)
        yield uri
        return
    with running_server(free_port(), server_log()) as uri:
        check_artifacts_reachable(uri, config)
        yield uri


def check_artifacts_reachable(uri: str, config: dict[str, Any]) -> None:
    """An experiment made against a local store keeps its artifacts in a host folder, which no
    container can write to; say so before any task runs."""
    from mlflow.tracking import MlflowClient

    from cnnops.config import validate_config
    from cnnops.naming import model_name_for

    name = model_name_for(validate_config(config))
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    if experiment is not None and experiment.artifact_location.startswith(("file:", "/")):
        raise CnnopsError(
            f"experiment {name} keeps its artifacts in a host folder ({experiment.artifact_location}), "
            "which containers cannot reach: pass another --model-name for container runs, or use the "
            "subprocess runner for this model"
        )


def run_pipeline(config: dict[str, Any], root: Path, errors: Path) -> None:
    """Run the pipeline, then make sure every task really finished; a failure is reported as the
    first task's one-line reason."""
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    try:
        with warnings.catch_warnings():
            # The subprocess runner ignores the image and the resource settings by design; both are
            # for clusters.
            warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
            build_pipeline()(config=config)
    except Exception as err:
        # A task that failed silently can make a later one fail inside kfp with any error; the
        # first reason is the cause.
        reason = describe_failure(root, before, errors)
        if reason:
            raise CnnopsError(reason) from None
        raise err from None
    reason = describe_failure(root, before, errors)
    if reason:
        raise CnnopsError(reason)


def describe_failure(root: Path, before: set[Path], errors: Path) -> str | None:
    """The first failure of this run, or None when every task finished.

    kfp.local can report a container that exited fast as SUCCESS with no outputs
    (kubeflow/pipelines#13332); every cnnops task writes an executor output, so one without it failed.
    """
    reasons = errors.read_text().splitlines()
    runs = sorted(set(root.glob(f"{PIPELINE_NAME}-*")) - before)
    tasks = [] if not runs else task_folders(runs[-1])
    failed = [task.name for task in tasks if not (task / EXECUTOR_OUTPUT).is_file()]
    if not reasons and not failed:
        return None
    reason = reasons[0] if reasons else f"task {failed[0]} failed without writing its outputs; see its log above"
    registered = any(task.name.startswith("register") and (task / EXECUTOR_OUTPUT).is_file() for task in tasks)
    return f"{reason} ({'the candidate was registered before the failure' if registered else 'nothing was registered'})"


def task_folders(run: Path) -> list[Path]:
    """A run's task folders in the order they were made; a ParallelFor's iterations nest theirs."""
    tasks = []
    for folder in (path for path in run.iterdir() if path.is_dir()):
        if folder.name.startswith("for-loop-"):
            tasks.extend(path for path in folder.iterdir() if path.is_dir())
        else:
            tasks.append(folder)
    return sorted(tasks, key=lambda task: task.stat().st_mtime)
