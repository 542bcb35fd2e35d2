"""Run a workflow of .github/workflows with nektos act on this machine, as `infra/ci/act` does
(host mode, the marketplace actions replaced by local stand-ins), and read what the run said:
the jobs' results, their step outputs and job summaries (act's JSON log), and the artifacts.

Each run gets its own folder: the event file, act's action cache and work tree copy, and the
artifacts, so two runs at once share nothing but what the workflow itself shares (the state
folder named in `variables`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnops.core.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
ACT = ROOT / "infra" / "ci" / "act"
WORKFLOWS = ROOT / ".github" / "workflows"
# Variables of the machine running the tests that would steer the workflow's steps.
HOST_VARIABLES = ("MLFLOW_TRACKING_URI", "CNNOPS_HOME", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV")


@dataclass
class ActRun:
    """A finished act run: its exit status, how long it took, and its JSON log records."""

    returncode: int
    seconds: float
    records: list[dict[str, Any]]
    artifacts: Path
    stderr: str
    lines: list[str] = field(default_factory=list)

    def result(self, job: str) -> str | None:
        """`success` or `failure` for a job that ran (act's name: `workflow/job`), else None."""
        results = [r["jobResult"] for r in self.records if r.get("jobID") == job and "jobResult" in r]
        return results[-1] if results else None

    def outputs(self, job: str) -> dict[str, str]:
        """The job's step outputs, as its steps wrote them to $GITHUB_OUTPUT."""
        return {
            r["name"]: r.get("arg", "")
            for r in self.records
            if r.get("jobID") == job and r.get("command") == "set-output"
        }

    def summary(self, job: str) -> str:
        """The job's summary: what its steps appended to $GITHUB_STEP_SUMMARY."""
        return "".join(r["content"] for r in self.records if r.get("jobID") == job and r.get("command") == "summary")

    def log(self, job: str | None = None) -> str:
        """What the steps printed (every job's, or one job's)."""
        return "".join(r["msg"] for r in self.records if r.get("raw_output") and (job is None or r.get("jobID") == job))

    def describe(self) -> str:
        """For an assertion's message: the exit status, the steps' output and act's own errors."""
        return f"act exited {self.returncode} after {self.seconds:.1f} s\n{self.log()}\n{self.stderr[-3000:]}"


def start_act(
    event: str,
    payload: dict[str, Any],
    work: Path,
    *,
    workflow: str = "retrain.yml",
    job: str | None = None,
    variables: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], Path]:
    """Start one act run of `workflow` for `event` with `payload` as the event JSON; returns the
    process and the folder its artifacts land in."""
    work.mkdir(parents=True, exist_ok=True)
    event_file = work / "event.json"
    event_file.write_text(json.dumps(payload))
    artifacts = work / "artifacts"
    command = [str(ACT), event, "-W", str(WORKFLOWS / workflow), "-e", str(event_file), "--json"]
    command += ["--action-cache-path", str(work / "act-cache")]
    if job:
        command += ["-j", job]
    for name, value in (variables or {}).items():
        command += ["--var", f"{name}={value}"]
    env = {k: v for k, v in os.environ.items() if k not in HOST_VARIABLES}
    env["CNNOPS_ACT_ARTIFACTS"] = str(artifacts)
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return proc, artifacts


def finish_act(proc: subprocess.Popen[str], artifacts: Path, started: float, timeout: float) -> ActRun:
    """Wait (at most `timeout` seconds, then stop act and its steps) and parse the run's log."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        stdout, stderr = proc.communicate()
        log = f"{stdout[-3000:]}\n{stderr[-2000:]}"
        raise AssertionError(f"act ran past {timeout:.0f} s; its log ends:\n{log}") from None
    seconds = time.monotonic() - started
    records, lines = [], []
    for line in stdout.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            lines.append(line)
    return ActRun(proc.returncode, seconds, records, artifacts, stderr, lines)


def run_act(
    event: str,
    payload: dict[str, Any],
    work: Path,
    *,
    workflow: str = "retrain.yml",
    job: str | None = None,
    variables: dict[str, str] | None = None,
    timeout: float = 120,
) -> ActRun:
    """One act run, start to finish, bounded by `timeout` seconds."""
    started = time.monotonic()
    proc, artifacts = start_act(event, payload, work, workflow=workflow, job=job, variables=variables)
    return finish_act(proc, artifacts, started, timeout)


def dispatch(**inputs: str) -> dict[str, Any]:
    """A workflow_dispatch event: GitHub sends every input as a string, as here."""
    return {"inputs": inputs}
