"""Sweeps: every combination of the sweep section's lists (architecture x learning rate x
augmentation) is a candidate config. Each candidate trains as an MLflow child run under one parent
run, and the candidate with the best val-split score goes on to evaluation and the gate.

With a single candidate there is no sweep: no parent run, and the one model goes straight through.
"""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from cnnops.contracts.dataset import read_dataset_info
from cnnops.contracts.model import (
    RankedCandidate,
    SweepRanking,
    read_model_config,
    read_run_record,
    write_sweep_ranking,
)
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.settings.config import Config, to_pipeline_parameter
from cnnops.tracking.provenance import provenance_tags
from cnnops.tracking.stores import open_model_experiment, store_faults, use_tracking_store

WINNER_TAG = "cnnops.sweep.winner"
# On a run the pipeline's exit handler ended: why it is FAILED.
ENDED_BY_TAG = "cnnops.ended_by"


def plan_candidates(config: Config) -> list[Config]:
    """One config per combination; an empty list in the sweep section keeps the train value."""
    sweep, train = config.sweep, config.train
    grid = itertools.product(
        sweep.architecture or [train.architecture],
        sweep.learning_rate or [train.learning_rate],
        sweep.augmentation or [train.augmentation],
    )
    return [
        config.model_copy(
            update={
                "train": train.model_copy(
                    update={"architecture": architecture, "learning_rate": rate, "augmentation": augmentation}
                )
            }
        )
        for architecture, rate, augmentation in grid
    ]


def check_candidates(config: Config) -> list[Config]:
    """Every candidate, each checked the way its train task will check it, so that a sweep that
    cannot train fails before anything runs (and never leaves a parent run open)."""
    from cnnops.modeling.builders import check_weights_fit
    from cnnops.training.train import plan_phases

    candidates = plan_candidates(config)
    for candidate in candidates:
        plan_phases(candidate)
        check_weights_fit(candidate.train.architecture, candidate.train.weights)
    return candidates


def start_sweep(config: Config, train_dir: Path, pipeline_run: str = "manual") -> list[dict[str, Any]]:
    """The candidates as pipeline parameters, each naming the parent run it logs under (none for
    a single candidate)."""
    candidates = check_candidates(config)
    if len(candidates) == 1:
        return [to_pipeline_parameter(candidates[0])]
    info = read_dataset_info(train_dir)
    name, experiment_id = open_model_experiment(config, info.source)
    client = MlflowClient()
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep of {len(candidates)}",
        tags={"cnnops.sweep": "parent", **provenance_tags(info, config, name, pipeline_run)},
    )
    run_id = parent.info.run_id
    client.log_batch(
        run_id, params=[Param("sweep.candidates", str(len(candidates))), Param("sweep.metric", config.sweep.metric)]
    )
    client.log_dict(run_id, config.model_dump(mode="json"), "config.json")
    say(f"sweep: {len(candidates)} candidates under run {run_id}, best by {config.sweep.metric}")
    return [
        to_pipeline_parameter(
            candidate.model_copy(update={"sweep": candidate.sweep.model_copy(update={"parent_run": run_id})})
        )
        for candidate in candidates
    ]


def rank_candidate(folder: Path) -> RankedCandidate:
    run, cfg = read_run_record(folder), read_model_config(folder)
    return RankedCandidate(
        run_id=run.run_id,
        architecture=cfg.train.architecture,
        learning_rate=cfg.train.learning_rate,
        augmentation=cfg.train.augmentation,
        best_epoch=run.best_epoch,
        val_accuracy=math.nan if run.val_accuracy is None else run.val_accuracy,
        val_loss=math.nan if run.val_loss is None else run.val_loss,
        folder=str(folder),
    )


def select_best(model_dirs: list[Path], config: Config, out_dir: Path) -> RankedCandidate:
    """Copy the best candidate's model folder to `out_dir`; record the ranking on the parent run."""
    if not model_dirs:
        raise CnnopsError("the sweep produced no trained candidate; nothing to select.")
    metric = config.sweep.metric
    parent_run_id = read_model_config(model_dirs[0]).sweep.parent_run
    rows = [rank_candidate(folder) for folder in model_dirs]

    # Best first: higher accuracy or lower loss by the chosen metric, then the other as a tie-break;
    # a diverged candidate (NaN or infinite scores) ranks last whatever the metric.
    def rank(row: RankedCandidate) -> tuple[bool, float, float]:
        accuracy, loss = row.val_accuracy, row.val_loss
        broken = not (math.isfinite(accuracy) and math.isfinite(loss))
        return (broken, -accuracy, loss) if metric == "val_accuracy" else (broken, loss, -accuracy)

    rows.sort(key=rank)
    best = rows[0]
    if rank(best)[0]:
        raise CnnopsError(
            f"every one of the {len(rows)} sweep candidates diverged (NaN or infinite val scores); "
            "lower the learning rates."
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(best.folder, out_dir)
    write_sweep_ranking(out_dir, SweepRanking(metric=metric, parent_run_id=parent_run_id, ranking=rows))
    if parent_run_id:
        record_ranking(parent_run_id, rows, metric)
    say(
        f"sweep: best of {len(rows)} is {best.architecture} lr={best.learning_rate:g} "
        f"aug={best.augmentation} ({metric} {best.score(metric):.4f}, run {best.run_id})"
    )
    return best


def record_ranking(parent_run_id: str, rows: list[RankedCandidate], metric: str) -> None:
    """The ranking table and the winner on the parent run, the winner's tag on its child run."""
    use_tracking_store()
    client = MlflowClient()
    best = rows[0]
    table = [row.model_dump(exclude={"folder"}) for row in rows]
    client.log_table(parent_run_id, {key: [row[key] for row in table] for key in table[0]}, "sweep/ranking.json")
    client.log_metric(parent_run_id, f"best_{metric}", best.score(metric))
    client.set_tag(parent_run_id, "cnnops.sweep.best_run", best.run_id)
    client.set_tag(best.run_id, WINNER_TAG, "true")
    client.set_terminated(parent_run_id, "FINISHED")


def fail_open_runs(pipeline_run: str, pipeline_failed: bool) -> list[str]:
    """When the pipeline run `pipeline_run` failed, end its MLflow runs still RUNNING (a sweep's
    parent, a candidate whose task died) as FAILED; returns their ids.

    Only runs tagged with this pipeline run are touched, and only after it failed: a run of another
    pipeline run (one still training, or one a kill left for `cnnops run` to resume) is not this
    run's to end, and a FINISHED run stays finished. A FAILED run keeps its checkpoint, so training
    can still resume it.
    """
    if not pipeline_failed:
        return []
    use_tracking_store()
    client = MlflowClient()
    query = f"tags.`cnnops.pipeline_run` = '{pipeline_run}' and attributes.status = 'RUNNING'"
    with store_faults():
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        open_runs = client.search_runs(experiments, query) if experiments else []
        for run in open_runs:
            client.set_tag(run.info.run_id, ENDED_BY_TAG, "pipeline failure")
            client.set_terminated(run.info.run_id, "FAILED")
    ended = [run.info.run_id for run in open_runs]
    if ended:
        say(f"finalize: the pipeline failed; ended {len(ended)} open MLflow run(s) as FAILED: {', '.join(ended)}")
    return ended
