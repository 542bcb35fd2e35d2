"""The local runner: it leaves the environment as it found it, and tells a user's error from a
task that crashed."""

import os

import pytest

from cnnops.core.errors import CnnopsError
from cnnops.pipelines.run import run_locally
from cnnops.settings.config import build_config, to_pipeline_parameter
from cnnops.settings.parameters import plan_run

# What a run sets for its tasks; the state_home fixture unsets them so that the run must.
SET_BY_A_RUN = ("CNNOPS_HOME", "KERAS_HOME", "MPLCONFIGDIR", "BENTOML_HOME", "CNNOPS_ERROR_FILE")


@pytest.mark.pipeline
def test_a_run_on_a_bad_source_restores_the_environment_and_logs_the_task(state_home, tmp_path, monkeypatch):
    monkeypatch.delenv("CNNOPS_HOME")  # the run pins the state folder for its tasks, and unpins it after
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    with pytest.raises(CnnopsError, match="does not exist") as stopped:
        run_locally(plan_run(to_pipeline_parameter(build_config(overrides={"data.source": str(tmp_path / "nope")}))))
    assert "nothing was registered" in str(stopped.value)
    assert dict(os.environ) == before
    assert not any(name in os.environ for name in SET_BY_A_RUN)
    (log,) = (tmp_path / ".cnnops" / "logs").glob("run-*.log")
    text = log.read_text()
    assert "cnnops: ingest: started" in text and "Got executor_input:" in text
