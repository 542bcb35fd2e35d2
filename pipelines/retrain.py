"""`cnnops retrain`, the command CI calls: under the model's retrain lock, decide whether its data
changed since its champion's (cnnops.promotion.retrain), and when it did, run the pipeline through the same
code as `cnnops run` (or submit it to a cluster), then say how it ended (cnnops.promotion.retrain_report).

The lock covers the decision and the run, so a second trigger for the same data waits, then finds
the first one's version trained on it and skips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from cnnops.contracts.evaluation import read_evaluation
from cnnops.core.console import say
from cnnops.core.paths import state_home, tracking_uri
from cnnops.core.runlog import RunLog
from cnnops.pipelines.pipeline import pipeline_arguments
from cnnops.pipelines.run import run_locally
from cnnops.pipelines.summary import RunSummary, summarize_run
from cnnops.promotion.retrain import DriftReport, RetrainDecision, decide_retrain, mark_retrain_started
from cnnops.promotion.retrain_report import RetrainOutcome
from cnnops.settings.naming import CHAMPION, model_name_for, slug
from cnnops.settings.parameters import RunPlan
from cnnops.tracking.locks import retrain_lock
from cnnops.tracking.registry import find_alias
from cnnops.tracking.stores import store_faults, use_tracking_store


@dataclass(frozen=True)
class RetrainRequest:
    """A checked retrain: the run's plan (its config preflighted) and how to run it."""

    plan: RunPlan
    log: RunLog
    force: bool = False
    runner: str = "subprocess"
    submit: str | None = None
    experiment: str = "cnnops"
    fresh: bool = False
    drift: DriftReport | None = None


def retrain(request: RetrainRequest) -> RetrainOutcome:
    """Decide and, when the decision says so, train; a user error or a failed task propagates (the
    caller reports it), a skip or a finished run is the outcome."""
    started = time.monotonic()
    config = request.plan.config
    name = model_name_for(config)
    with retrain_lock(tracking_uri(), name, config.retrain.wait_minutes * 60):
        dataset = state_home() / "retrain" / slug(name) / "dataset"
        decision = decide_retrain(config, dataset, request.force, drift=request.drift)
        say(f"retrain: {'training' if decision.train else 'skipped'}: {decision.detail}")
        if not decision.train:
            return RetrainOutcome(status="skipped", model=name, decision=decision, seconds=time.monotonic() - started)
        mark_retrain_started(name)
        if request.submit is not None:
            from cnnops.pipelines.submit import submit_pipeline

            arguments = pipeline_arguments(request.plan.overlay, request.plan.parameters, request.fresh)
            made = submit_pipeline(request.submit, arguments, request.experiment)
            return RetrainOutcome(
                status="submitted",
                model=name,
                decision=decision,
                submitted=f"{made.kind} {made.id} to {request.submit} (experiment {made.experiment})",
                seconds=time.monotonic() - started,
            )
        finished = run_locally(request.plan, runner=request.runner, log=request.log, fresh=request.fresh)
        return trained_outcome(name, decision, summarize_run(finished), time.monotonic() - started)


def trained_outcome(name: str, decision: RetrainDecision, summary: RunSummary, seconds: float) -> RetrainOutcome:
    """The finished run's outcome; the alias is read from the registry, which has the last word
    (registration gates again when the champion moved during the run)."""
    use_tracking_store()
    with store_faults():
        champion = find_alias(MlflowClient(), name, CHAMPION)
    promoted = champion is not None and summary.version is not None and int(champion.version) == summary.version
    links = {"MLflow run": f"[{summary.run_id}]({summary.run_url})", "run log": f"`{summary.log}`"}
    if summary.report is not None:
        links["dataset report"] = f"`{summary.report}`"
    if summary.evaluation is not None:
        links["evaluation"] = f"`{summary.evaluation}`"
    return RetrainOutcome(
        status="promoted" if promoted else "challenger",
        model=name,
        decision=decision,
        version=summary.version,
        gate=summary.decision,
        accuracy=None if summary.evaluation is None else read_evaluation(summary.evaluation).accuracy,
        links=links,
        seconds=seconds,
    )
