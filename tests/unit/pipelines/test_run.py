"""The local runner: it leaves the environment as it found it, and tells a user's error from a
task that crashed."""

import os

import pytest

from cnnops.core.errors import CnnopsError
from cnnops.core.runlog import RunLog, TaskFailure
from cnnops.pipelines.run import check_finished, run_locally
from cnnops.settings.config import build_config, to_pipeline_parameter
from cnnops.settings.parameters import plan_run


def test_a_run_stopped_before_any_task_restores_the_environment(state_home):
    before = dict(os.environ)
    with pytest.raises(CnnopsError, match="unknown runner 'nope'"):
        run_locally(plan_run(to_pipeline_parameter(build_config())), runner="nope")
    with pytest.raises(CnnopsError, match="invalid config"):
        plan_run({"train": {"epoch": 3}})  # resolved once, before the run
    assert dict(os.environ) == before
    assert "KERAS_HOME" not in os.environ  # set for the run's tasks, and only for them


def task_folders(root, *names, written=()):
    run = root / "cnnops-train-2026-01-01-00-00-00-000000"
    for name in names:
        (run / name).mkdir(parents=True)
        if name in written:
            (run / name / "executor_output.json").write_text("{}")
    return run


def test_a_crashed_task_is_one_line_with_its_last_line_and_the_log(tmp_path):
    root, errors = tmp_path / "root", tmp_path / "errors.txt"
    errors.write_text("")
    task_folders(root, "ingest", "train", written=("ingest",))
    log = RunLog(tmp_path / "run.log")
    for line in (
        "00:00:00.000 - INFO - Executing task 'ingest'",
        "00:00:01.000 - INFO - Task 'ingest' finished with status SUCCESS",
        "00:00:01.000 - INFO - Executing task 'train'",
        "    Traceback (most recent call last):",
        "    ValueError: a bug",
    ):
        log.sort_line(line)
    with pytest.raises(TaskFailure) as failed:
        check_finished(root, set(), errors, log, stopped=True)
    assert str(failed.value) == (
        f"task train failed: ValueError: a bug (nothing was registered); full log in {tmp_path / 'run.log'}"
    )


def test_a_users_error_wins_over_the_crash_it_caused(tmp_path):
    root, errors = tmp_path / "root", tmp_path / "errors.txt"
    errors.write_text("validate: each class needs 50 images\n")
    task_folders(root, "validate", "register-challenger", written=("register-challenger",))
    with pytest.raises(CnnopsError) as stopped:
        check_finished(root, set(), errors, RunLog(tmp_path / "run.log"))
    assert str(stopped.value) == (
        "validate: each class needs 50 images (the candidate was registered before the failure)"
    )


def test_a_task_without_outputs_failed_even_when_kfp_said_success(tmp_path):
    root, errors = tmp_path / "root", tmp_path / "errors.txt"
    errors.write_text("")
    task_folders(root, "ingest", "validate", written=("ingest",))
    with pytest.raises(TaskFailure, match="task validate failed without writing its outputs"):
        check_finished(root, set(), errors, RunLog(tmp_path / "run.log"))
    finished = task_folders(tmp_path / "other", "ingest", written=("ingest",))
    assert check_finished(tmp_path / "other", set(), errors, RunLog(tmp_path / "run.log")) == finished
