"""The few lines a finished local run ends with: the gate's decision and both scores, where the
dataset report, the evaluation and the MLflow run are, and what to do next.

Every fact is read from the run's task outputs under the pipeline root: the gate's decision
(cnnops.contracts.gate's record), the register task's returned version, the selected model's run record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cnnops.contracts.gate import GateDecision, read_decision
from cnnops.contracts.model import read_run_record
from cnnops.core.errors import CnnopsError
from cnnops.core.paths import tracking_uri
from cnnops.core.runlog import format_seconds
from cnnops.pipelines.run import EXECUTOR_OUTPUT, PipelineRun, task_folders

# What `make ui` and `make serve` listen on unless MLFLOW_PORT or PORT say otherwise.
UI_PORT, SERVE_PORT = 5000, 3000


@dataclass(frozen=True)
class RunSummary:
    """What one finished run decided and where its outputs are."""

    decision: GateDecision
    version: int | None
    report: Path | None
    evaluation: Path | None
    run_id: str
    run_url: str
    log: Path
    seconds: float


def summarize_run(run: PipelineRun) -> RunSummary:
    """Read the run's outputs into a summary; a missing or damaged output is a one-line error."""
    tasks = {task.name: task for task in task_folders(run.folder)}
    for needed in ("gate", "select-model"):
        if needed not in tasks:
            raise CnnopsError(f"{run.folder} has no {needed} output; the run ended before it")
    record = read_run_record(tasks["select-model"] / "best")
    # Either branch's register task; kfp.local names its folder after the component.
    registered = next((task for name, task in tasks.items() if name.startswith("register")), None)
    report = run.folder / "validate" / "validated" / "report.html"
    evaluation = run.folder / "evaluate" / "evaluation"
    return RunSummary(
        decision=read_decision(tasks["gate"] / "decision"),
        version=None if registered is None else read_output(registered),
        report=report if report.is_file() else None,
        evaluation=evaluation if evaluation.is_dir() else None,
        run_id=record.run_id,
        run_url=f"{ui_address()}/#/experiments/{record.experiment_id}/runs/{record.run_id}",
        log=run.log,
        seconds=run.seconds,
    )


def read_output(task: Path) -> int | None:
    """A task's returned value (the register task's version), from its executor output."""
    path = task / EXECUTOR_OUTPUT
    try:
        value = json.loads(path.read_text()).get("parameterValues", {}).get("Output")
    except (OSError, json.JSONDecodeError) as err:
        raise CnnopsError(f"{path} cannot be read ({err}); run the pipeline again") from None
    return None if value is None else int(value)


def ui_address() -> str:
    """Where the MLflow UI shows this store: the tracking server when MLFLOW_TRACKING_URI names one,
    else the address `make ui` serves."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT') or UI_PORT}"


def format_summary(summary: RunSummary) -> list[str]:
    """The summary as the terminal shows it, a fact a line."""
    decision = summary.decision
    if decision.champion_score is not None:
        against = f"champion v{decision.champion_version} {decision.champion_score:.4f}"
    else:
        champion = decision.champion_version
        held = "no champion" if champion is None else f"champion v{champion} not compared"
        against = f"{held}; chance {decision.chance_score:.4f}"
        if decision.best_baseline is not None and decision.best_baseline_score is not None:
            against += f", best baseline {decision.best_baseline} {decision.best_baseline_score:.4f}"
    version = "" if summary.version is None else f" v{summary.version}"
    lines = [
        f"cnnops: pipeline finished in {format_seconds(summary.seconds)}",
        f"  decision    {decision.registered_model}{version} is {decision.alias}: {decision.reason}",
        f"  {decision.metric.replace('_', ' '):<11} candidate {decision.candidate_score:.4f}, {against}",
        f"  dataset     {summary.report or 'no report written'}",
        f"  evaluation  {summary.evaluation or 'no evaluation written'}",
        f"  MLflow run  {summary.run_id}: {summary.run_url}",
        f"  log         {summary.log}",
    ]
    serve = os.environ.get("PORT") or SERVE_PORT
    if decision.alias == "champion" or decision.champion_version is not None:
        lines.append(f"  next        make serve (the champion on http://127.0.0.1:{serve}), make ui (the MLflow UI)")
    else:
        lines.append("  next        make ui (the MLflow UI); there is no champion to serve yet")
    return lines
