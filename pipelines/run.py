"""Run the pipeline on this machine with kfp.local: every task a subprocess of this venv, or every
task a container of the project image.

A run changes the environment only for its own length, and keeps everything its tasks and kfp print
in a log file of its own (cnnops.core.runlog), so the terminal shows a line per task and cnnops's own.
"""

from __future__ import annotations

import os
import secrets
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import local

from cnnops.components import BASE_IMAGE
from cnnops.core.errors import ERROR_FILE_ENV, CnnopsError
from cnnops.core.paths import (
    STATE_ENV,
    environment_restored,
    keep_tool_state_inside,
    new_run_log,
    pipeline_root,
    state_home,
    tracking_uri,
)
from cnnops.core.runlog import ANSI, RunLog, TaskFailure, announce, captured
from cnnops.pipelines.pipeline import PIPELINE_NAME, build_pipeline, pipeline_arguments
from cnnops.pipelines.platform import LOCAL
from cnnops.settings.config import Config
from cnnops.settings.naming import model_name_for
from cnnops.settings.parameters import RunPlan
from cnnops.tracking.locks import sqlite_run_lock

RUNNERS = ("subprocess", "docker")
EXECUTOR_OUTPUT = "executor_output.json"


@dataclass(frozen=True)
class PipelineRun:
    """A finished local run: its folder under the pipeline root, its log file and its length."""

    folder: Path
    log: Path
    seconds: float


def run_locally(
    plan: RunPlan, runner: str = "subprocess", log: RunLog | None = None, fresh: bool = False
) -> PipelineRun:
    """Run the pipeline with kfp.local on a resolved plan (`fresh`: train from scratch rather than
    resume), its output kept in `log` (a new one in the state folder by default); every variable
    it sets for its tasks is restored after.

    A task that stops on a user error raises CnnopsError with that task's one-line reason; a task
    that fails otherwise (a bug, a crash, no outputs written) raises TaskFailure, one line naming
    the task, its last error line and the log.
    """
    log = log or RunLog(new_run_log())
    announce(log, f"run: full log in {log.path}" + ("" if log.verbose else " (--verbose shows it here)"))
    started = time.monotonic()
    try:
        with sqlite_run_lock(tracking_uri(), str(log.path)), environment_restored():
            # Tasks are separate processes: pin the state folder so they all agree on it.
            os.environ[STATE_ENV] = str(state_home())
            keep_tool_state_inside()
            root = pipeline_root()
            root.mkdir(parents=True, exist_ok=True)
            errors = root / ".errors" / f"{secrets.token_hex(6)}.txt"
            errors.parent.mkdir(exist_ok=True)
            errors.touch()
            try:
                with captured(log), task_runner(runner, plan.config, root, errors) as chosen:
                    local.init(runner=chosen, pipeline_root=str(root))
                    arguments = pipeline_arguments(plan.overlay, plan.parameters, fresh)
                    folder = run_pipeline(arguments, root, errors, log)
            finally:
                errors.unlink(missing_ok=True)
    except CnnopsError:
        announce(log, f"run: stopped; full log in {log.path}")
        raise
    return PipelineRun(folder, log.path, time.monotonic() - started)


@contextmanager
def task_runner(runner: str, config: Config, root: Path, errors: Path) -> Iterator[Any]:
    if runner == "subprocess":
        from cnnops.tracking.server import proxied_artifacts_reachable

        with environment_restored():
            os.environ[ERROR_FILE_ENV] = str(errors)
            # A model first trained in containers logs through a server; so do these tasks then.
            with proxied_artifacts_reachable(model_name_for(config)):
                yield local.SubprocessRunner(use_venv=False)
    elif runner == "docker":
        from cnnops.data.ingest import open_source
        from cnnops.pipelines.docker import check_docker, docker_runner

        check_docker(BASE_IMAGE)  # the daemon and the image, before any server starts
        with tracking_server_for_containers(config) as uri:
            errors.chmod(0o666)  # the tasks' user appends its reasons here
            yield docker_runner(open_source(config), root, BASE_IMAGE, uri, errors)
    else:
        raise CnnopsError(f"unknown runner {runner!r}; choose one of: {', '.join(RUNNERS)}")


@contextmanager
def tracking_server_for_containers(config: Config) -> Iterator[str]:
    """The tracking server the containers log to: `$MLFLOW_TRACKING_URI` when it names one, else the
    project's own on a free loopback port, stopped by PID when the run ends."""
    from cnnops.core.processes import free_port
    from cnnops.tracking.server import answers, is_server_uri, running_server, server_log

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


def check_artifacts_reachable(uri: str, config: Config) -> None:
    """An experiment made against a local store keeps its artifacts in a host folder, which no
    container can write to; say so before any task runs."""
    from mlflow.tracking import MlflowClient

    name = model_name_for(config)
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    if experiment is not None and experiment.artifact_location.startswith(("file:", "/")):
        raise CnnopsError(
            f"experiment {name} keeps its artifacts in a host folder ({experiment.artifact_location}), "
            "which containers cannot reach: pass another --model-name for container runs, or use the "
            "subprocess runner for this model"
        )


def run_pipeline(arguments: dict[str, Any], root: Path, errors: Path, log: RunLog) -> Path:
    """Run the pipeline on `arguments`, then make sure every task really finished; returns the
    run's folder."""
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    try:
        with warnings.catch_warnings():
            # The subprocess runner ignores the image and the resource settings by design; both are
            # for clusters.
            warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
            build_pipeline(LOCAL)(**arguments)
    except Exception as err:
        # A task that failed silently can make a later one fail inside kfp with any error; the
        # first failure is the cause.
        check_finished(root, before, errors, log, stopped=True)
        raise TaskFailure(f"the pipeline failed: {one_line(err)}", log.path) from None
    return check_finished(root, before, errors, log)


def check_finished(root: Path, before: set[Path], errors: Path, log: RunLog, stopped: bool = False) -> Path:
    """The run's folder when every task finished; else the first failure: CnnopsError for a user
    error a task reported, TaskFailure for any other. `stopped`: kfp raised, at a failed task.

    kfp.local can report a container that exited fast as SUCCESS with no outputs
    (kubeflow/pipelines#13332); every cnnops task writes an executor output, so one without it failed.
    """
    reasons = errors.read_text().splitlines()
    runs = sorted(set(root.glob(f"{PIPELINE_NAME}-*")) - before)
    tasks = [] if not runs else task_folders(runs[-1])
    registered = any(task.name.startswith("register") and (task / EXECUTOR_OUTPUT).is_file() for task in tasks)
    outcome = "the candidate was registered before the failure" if registered else "nothing was registered"
    if reasons:
        raise CnnopsError(f"{reasons[0]} ({outcome})")
    crashed = log.failed_task(stopped)
    if crashed is not None:
        last = crashed.last_line or "it printed nothing"
        raise TaskFailure(f"task {crashed.name} failed: {last} ({outcome})", log.path)
    silent = [task.name for task in tasks if not (task / EXECUTOR_OUTPUT).is_file()]
    if silent:
        raise TaskFailure(f"task {silent[0]} failed without writing its outputs ({outcome})", log.path)
    if not runs:
        raise TaskFailure(f"the pipeline left no run folder under {root}", log.path)
    return runs[-1]


def one_line(err: BaseException) -> str:
    """An exception as one line without kfp's colours: its type and its message's last line."""
    lines = ANSI.sub("", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1]}" if lines else type(err).__name__


def task_folders(run: Path) -> list[Path]:
    """A run's task folders in the order they were made; a ParallelFor's iterations nest theirs."""
    tasks: list[Path] = []
    for folder in (path for path in run.iterdir() if path.is_dir()):
        if folder.name.startswith("for-loop-"):
            tasks.extend(path for path in folder.iterdir() if path.is_dir())
        else:
            tasks.append(folder)
    return sorted(tasks, key=lambda task: task.stat().st_mtime)
