"""Train: build the configured CNN, fit it on the train split with early stopping on the val split,
and record everything in one MLflow run (params, resolved config, per-epoch metrics tagged by
phase, the model with its signature and input spec, provenance tags). Writes a model folder for
the next steps.

A backbone trains in up to two phases (head, then fine-tune) inside that one run. Every epoch is
checkpointed, so an interrupted run goes on where it stopped: the one `resume` names, or, by
default, the newest interrupted run that trained exactly this (same config, same splits).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking.fluent import ActiveRun

from cnnops.contracts.dataset import (
    SOURCE_LABELS_FILE,
    TRAIN_HASHES_ARTIFACT,
    DatasetInfo,
    read_dataset_info,
    read_manifest,
)
from cnnops.contracts.model import (
    EarlyStoppingState,
    ModelSpec,
    PhaseSummary,
    RunRecord,
    TrainingState,
    write_model_folder,
)
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.core.retries import STORE_RETRIES
from cnnops.modeling.builders import (
    ModelOptions,
    augmentation_strengths,
    build_model,
    compiles_with_xla,
    find_backbone,
    freeze,
    is_backbone,
    precision_policy,
)
from cnnops.modeling.inputs import input_errors_as_user_errors, make_dataset, make_deterministic
from cnnops.settings.config import Config, TrainConfig, flatten_config
from cnnops.tracking.provenance import provenance_tags
from cnnops.tracking.stores import log_dataset, lookup, open_model_experiment, store_faults, use_tracking_store
from cnnops.training.batchnorm import RECALIBRATION_IMAGES, RecalibrateBatchNorm
from cnnops.training.checkpoints import (
    MODEL_FILE,
    CheckpointBusy,
    ResumableEarlyStopping,
    ResumablePlateau,
    check_resumable,
    checkpoint_dir,
    locked_checkpoint,
    matching_checkpoints,
    read_best_weights,
    read_progress,
    write_checkpoint,
)
from cnnops.training.distill import (
    distillation_objective,
    load_teacher,
    log_distillation,
    resolve_teacher,
    teacher_targets,
)
from cnnops.training.progress import StepProgress
from cnnops.training.recipe import Recipe, describe_recipe, plan_recipe

# A val-loss gain smaller than this is noise: it neither resets early stopping nor delays an LR cut.
MIN_DELTA = 1e-3


@dataclass(frozen=True)
class Phase:
    """One stretch of training with its own optimizer: a scratch net has one; a backbone has its
    head phase and, when asked, a fine-tune phase with the backbone (partly) unfrozen."""

    name: str  # "train", "head" or "fine_tune": the prefix of this phase's metrics in MLflow
    epochs: int
    learning_rate: float
    unfreeze: int | None = None  # fine_tune: the backbone's last N layers (None: all)


def train_model(
    train_dir: Path,
    val_dir: Path,
    out_dir: Path,
    config: Config,
    pipeline_run: str = "manual",
    *,
    resume: str | None = None,
    fresh: bool = False,
) -> RunRecord:
    """Fit a model and write the model folder; returns the run record (run id, model URI).

    `resume` names an interrupted run to continue from its last checkpoint. Without it, the newest
    interrupted run of this state folder that trained exactly this (config equal but for the
    checkpoints' RERUN_FIELDS, same train and val splits, its MLflow run in this store and not
    FINISHED) is resumed under its own MLflow run, so a killed pipeline's rerun loses at most an
    epoch; `fresh` starts a new run instead. A sweep candidate's config names its parent run
    (`sweep.parent_run`); `distill.teacher` names a model to distil from.
    """
    if resume is not None and fresh:
        raise CnnopsError("--resume continues an interrupted run and --fresh starts a new one: give one of them.")
    info = read_dataset_info(train_dir)
    spec = ModelSpec(
        class_names=list(info.classes),
        height=info.height,
        width=info.width,
        mode=info.mode,
        architecture=config.train.architecture,
    )
    recipe = plan_recipe(info.n_images, config.train, own_batchnorm=not is_backbone(config.train.architecture))
    phases = plan_phases(config)
    # Both splits: a resumed run's early-stopping counters only mean something on the same val images.
    fingerprint = f"{info.fingerprint}+{read_dataset_info(val_dir).fingerprint}"
    progress = None
    if resume is not None:
        progress = read_progress(resume)
        check_resumable(progress, config.model_dump(mode="json"), fingerprint)
    xla = config.train.jit_compile and compiles_with_xla(configured_augmentation(config.train))
    if config.train.jit_compile and not xla:
        say("train: XLA is off: the rotation, zoom and translation augmentation layers do not compile with it")
    make_deterministic(config.seed, exact_kernels=not xla)
    with ExitStack() as held:  # the checkpoint lock of the run this process trains, until it ends
        use_tracking_store()
        if resume is not None:
            held.enter_context(locked_checkpoint(resume))
            progress = read_progress(resume)  # again: its trainer may have written an epoch since
            say(f"train: resuming run {resume} after epoch {progress.epoch}")
        elif fresh:
            retire_interrupted(config.model_dump(mode="json"), fingerprint)
        else:
            progress = claim_interrupted(config.model_dump(mode="json"), fingerprint, held)
            if progress is not None:
                say(
                    f"train: resuming run {progress.run_id} after epoch {progress.epoch} "
                    "(an earlier run was interrupted); pass --fresh to start over"
                )
        with precision_policy(config.train.precision), distribution_scope() as replicas:
            teacher = load_teacher(resolve_teacher(config.distill.teacher), spec) if config.distill.teacher else None
            job = TrainingJob(
                spec, info, config, phases, recipe, teacher=teacher, replicas=replicas, xla=xla, fingerprint=fingerprint
            )
            return job.run(train_dir, val_dir, out_dir, pipeline_run, progress, held)


def run_status(run_id: str) -> str | None:
    """The run's MLflow status in the current store, or None when this store has no such run."""
    run = lookup(lambda: mlflow.MlflowClient().get_run(run_id))
    return None if run is None else run.info.status


def claim_interrupted(config_raw: dict[str, Any], fingerprint: str, held: ExitStack) -> TrainingState | None:
    """The newest interrupted run that trained exactly this, locked into `held`, or None. A run
    another process is training is passed over; the checkpoint of a run its store has FINISHED is
    deleted on the way (a kill came between the run's end and the checkpoint's removal)."""
    for found in matching_checkpoints(config_raw, fingerprint):
        with ExitStack() as claim:
            try:
                folder = claim.enter_context(locked_checkpoint(found.run_id))
            except CheckpointBusy:
                continue
            status = run_status(found.run_id)
            if status is None:  # a run of another store, kept for it
                continue
            if status == "FINISHED":
                shutil.rmtree(folder, ignore_errors=True)
                continue
            held.enter_context(claim.pop_all())
            return read_progress(found.run_id)  # again, now that no trainer can write it
    return None


def retire_interrupted(config_raw: dict[str, Any], fingerprint: str) -> None:
    """For a fresh start: end the interrupted runs that trained exactly this as KILLED and delete
    their checkpoints. Kept, they would still match, and the next plain rerun would resume the run
    that was given up rather than the fresh one."""
    for found in matching_checkpoints(config_raw, fingerprint):
        try:
            with locked_checkpoint(found.run_id) as folder:
                status = run_status(found.run_id)
                if status is None:  # a run of another store, kept for it
                    continue
                if status != "FINISHED":
                    with store_faults():
                        mlflow.MlflowClient().set_terminated(found.run_id, "KILLED")
                    say(
                        f"train: starting over: run {found.run_id}, interrupted after epoch {found.epoch}, "
                        "is ended as KILLED and its checkpoint deleted"
                    )
                shutil.rmtree(folder, ignore_errors=True)
        except CheckpointBusy:
            continue


def plan_phases(config: Config) -> list[Phase]:
    """The training phases the config asks for; a fine-tune phase needs a backbone to unfreeze."""
    train = config.train
    if not is_backbone(train.architecture):
        if train.fine_tune_epochs:
            raise CnnopsError(
                f"{train.architecture} is trained whole from the start, so it has no backbone to "
                "fine-tune; set train.fine_tune_epochs to 0 or choose a backbone architecture."
            )
        return [Phase("train", train.epochs, train.learning_rate)]
    phases = [Phase("head", train.epochs, train.learning_rate)]
    if train.fine_tune_epochs:
        phases.append(
            Phase(
                "fine_tune",
                train.fine_tune_epochs,
                train.learning_rate * train.fine_tune_lr_factor,
                train.fine_tune_layers,
            )
        )
    return phases


class TrainingJob:
    """Everything one training run needs, so that a resumed run rebuilds exactly the same thing."""

    def __init__(
        self,
        spec: ModelSpec,
        info: DatasetInfo,
        config: Config,
        phases: list[Phase],
        recipe: Recipe,
        *,
        fingerprint: str,
        teacher: keras.Model | None = None,
        replicas: int = 1,
        xla: bool = False,
    ) -> None:
        self.spec, self.info, self.config, self.phases, self.recipe = spec, info, config, phases, recipe
        self.fingerprint, self.teacher, self.replicas, self.xla = fingerprint, teacher, replicas, xla

    def run(
        self,
        train_dir: Path,
        val_dir: Path,
        out_dir: Path,
        pipeline_run: str,
        progress: TrainingState | None,
        held: ExitStack,
    ) -> RunRecord:
        """Build (or reload), fit every phase and save, inside one MLflow run; a new run's
        checkpoint lock goes into `held` (a resumed run's is there already)."""
        config, spec, info = self.config, self.spec, self.info
        train_manifest, val_manifest = read_manifest(train_dir), read_manifest(val_dir)
        train_ds = self.dataset(train_manifest, shuffle=True)
        val_ds = self.dataset(val_manifest)
        self.calibration = (
            calibration_batches(train_manifest, spec, self.recipe.batch_size, config.seed)
            if self.recipe.recalibrate_batchnorm
            else None
        )
        if progress is None:
            model = build_model(spec, self.model_options())
        else:
            model = keras.saving.load_model(checkpoint_dir(progress.run_id) / MODEL_FILE)
            model.jit_compile = self.xla
        with store_faults():
            name, experiment_id = open_model_experiment(config, info.source)
            parent = config.sweep.parent_run
            opened = (
                mlflow.start_run(
                    experiment_id=experiment_id,
                    run_name=candidate_label(config),
                    tags={"mlflow.parentRunId": parent} if parent else None,
                )
                if progress is None
                else reopen_run(progress.run_id)
            )
        with ended_with_block(opened) as run:
            if progress is None:
                held.enter_context(locked_checkpoint(run.info.run_id))
                self.log_start(model, train_manifest, train_dir, val_manifest, pipeline_run, name)
            else:
                mark_resumed(run.info.run_id, progress, config, pipeline_run)
                backfill_metrics(run.info.run_id, progress, self.phases)
            say(
                f"train: {spec.architecture} on {info.n_images} images of {spec.height}x{spec.width} "
                f"{spec.mode}, {len(spec.class_names)} classes, up to {sum(p.epochs for p in self.phases)} epochs; "
                f"run {run.info.run_id} (resume with --resume {run.info.run_id})"
            )
            say(f"train: recipe: {describe_recipe(self.recipe)}")
            started = time.monotonic()
            with input_errors_as_user_errors():
                state = self.fit_phases(model, train_ds, val_ds, run.info.run_id, progress)
            seconds = time.monotonic() - started
            history = state.history
            best_epoch = state.phases[-1].best_epoch
            epochs_run = len(history["loss"])
            resumed_at = 0 if progress is None else progress.epoch
            mlflow.log_metrics(
                {
                    "train_seconds": seconds,
                    "epochs_run": epochs_run,
                    "best_epoch": best_epoch,
                    "train_images_per_second": info.n_images * (epochs_run - resumed_at) / seconds,
                }
            )
            mlflow.set_tag("cnnops.phases", json.dumps([phase.model_dump() for phase in state.phases]))
            if self.teacher is not None:
                log_distillation(self.teacher, model, self.spec, val_manifest, self.config)
            record = save_model_folder(
                out_dir, model, spec, config, history, run.info.run_id, experiment_id, name, best_epoch
            )
        shutil.rmtree(checkpoint_dir(run.info.run_id), ignore_errors=True)  # finished: nothing to resume
        say(f"train: {epochs_run} epochs in {seconds:.0f}s, best epoch {best_epoch}, run {record.run_id}")
        return record

    def model_options(self) -> ModelOptions:
        train = self.config.train
        return ModelOptions(
            weights=train.weights,
            trainable_layers=train.trainable_layers,
            working_size=train.working_size,
            augment=configured_augmentation(train),
        )

    def dataset(self, manifest: pd.DataFrame, shuffle: bool = False) -> Any:
        """Batches of (image, label), or of (image, label + teacher probabilities) when distilling."""
        targets = None if self.teacher is None else teacher_targets(self.teacher, self.spec, manifest)
        return make_dataset(
            manifest, self.spec, self.recipe.batch_size, shuffle=shuffle, seed=self.config.seed, targets=targets
        )

    def log_start(
        self,
        model: keras.Model,
        train_manifest: pd.DataFrame,
        train_dir: Path,
        val_manifest: pd.DataFrame,
        pipeline_run: str,
        name: str,
    ) -> None:
        """Params, config, provenance tags and the dataset: what a reader of the run needs first."""
        info, config = self.info, self.config
        mlflow.set_tags(
            {
                **provenance_tags(info, config, name, pipeline_run),
                "cnnops.devices": ",".join(d.device_type for d in _devices()),
                "cnnops.replicas": str(self.replicas),
                "cnnops.distilled": str(self.teacher is not None).lower(),
            }
        )
        mlflow.log_params(
            {
                **flatten_config(config),
                **self.recipe.as_params(),
                "n_train": info.n_images,
                "n_val": len(val_manifest),
                "n_params": model.count_params(),
            }
        )
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        mlflow.log_text("\n".join(sorted(train_manifest["sha256"])) + "\n", TRAIN_HASHES_ARTIFACT)
        if (train_dir / SOURCE_LABELS_FILE).is_file():  # a split's train folder (`cnnops split`, the pipeline)
            mlflow.log_artifact(str(train_dir / SOURCE_LABELS_FILE), "data")
        log_dataset(train_manifest, info, train_dir, context="training")

    def fit_phases(
        self, model: keras.Model, train_ds: Any, val_ds: Any, run_id: str, progress: TrainingState | None
    ) -> TrainingState:
        """Fit each phase from where `progress` left off, checkpointing after every epoch."""
        folder = checkpoint_dir(run_id)
        state = progress or TrainingState(
            run_id=run_id, config=self.config.model_dump(mode="json"), fingerprint=self.fingerprint
        )
        total = sum(p.epochs for p in self.phases)
        for index in range(state.phase, len(self.phases)):
            phase = self.phases[index]
            mid_phase = progress is not None and index == progress.phase and state.epoch > state.phase_start
            if not mid_phase:
                self.prepare_phase(model, phase)
            train = self.config.train
            stopping, best_weights = (state.early_stopping, read_best_weights(folder)) if mid_phase else (None, None)
            if not mid_phase and state.phases:
                # A later phase must beat the earlier phases' best, or their best weights stay.
                best_epoch = state.phases[-1].best_epoch
                stopping = EarlyStoppingState(
                    wait=0, best=state.history["val_loss"][best_epoch - 1], best_epoch=best_epoch - 1, stopped=False
                )
                best_weights = model.get_weights()
            recipe = self.recipe
            early = ResumableEarlyStopping(
                stopping,
                best_weights,
                monitor="val_loss",
                patience=recipe.patience,
                min_epochs=state.phase_start + recipe.min_epochs,
                min_delta=MIN_DELTA,
                restore_best_weights=True,
            )
            plateau = (
                [
                    ResumablePlateau(
                        state.plateau if mid_phase else None,
                        monitor="val_loss",
                        factor=0.5,
                        min_delta=MIN_DELTA,
                        patience=recipe.plateau_patience,
                    )
                ]
                if train.lr_schedule == "plateau"
                else []
            )
            # First in the list: the statistics are recomputed before validation reads them.
            calibrate = [RecalibrateBatchNorm(self.calibration)] if recipe.recalibrate_batchnorm else []
            # A phase that had stopped early before the kill trains no further epoch (only its best
            # weights are restored).
            end = state.epoch if stopping and stopping.stopped else state.phase_start + phase.epochs
            checkpointer = Checkpointer(folder, state, early, plateau)
            model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=state.epoch,
                epochs=end,
                verbose=0,
                shuffle=False,
                callbacks=[
                    *calibrate,
                    early,
                    *plateau,
                    checkpointer,
                    PhaseMetrics(phase.name),
                    EpochLine(total),
                    StepProgress(total),
                ],
            )
            state = checkpointer.state
            finished = PhaseSummary(
                name=phase.name,
                first_epoch=state.phase_start + 1,
                last_epoch=state.epoch,
                best_epoch=early.best_epoch + 1,
                learning_rate=phase.learning_rate,
                trainable_weights=len(model.trainable_weights),
            )
            state = state.model_copy(
                update={
                    "phases": [*state.phases, finished],
                    "phase": index + 1,
                    "phase_start": state.epoch,
                    "early_stopping": None,
                    "plateau": None,
                }
            )
            write_checkpoint(folder, model, state, None)
        return state

    def prepare_phase(self, model: keras.Model, phase: Phase) -> None:
        """Unfreeze for fine-tuning, then compile with the phase's own optimizer and rate."""
        if phase.name == "fine_tune":
            backbone = find_backbone(model)
            freeze(backbone, phase.unfreeze if phase.unfreeze is not None else len(backbone.layers))
        loss, metrics = (
            distillation_objective(self.config.distill)
            if self.teacher is not None
            else ("sparse_categorical_crossentropy", ["accuracy"])
        )
        rate = learning_rate(
            self.config.train.lr_schedule, phase.learning_rate, phase.epochs * self.recipe.steps_per_epoch
        )
        model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=metrics, jit_compile=self.xla)
        mlflow.set_tag("cnnops.xla", str(bool(model.jit_compile)).lower())  # Keras falls back when it must
        say(
            f"train: phase {phase.name}: {phase.epochs} epochs at learning rate {phase.learning_rate:g}, "
            f"{sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} trainable parameters"
        )


def calibration_batches(manifest: pd.DataFrame, spec: ModelSpec, batch_size: int, seed: int) -> Any:
    """Full training-sized batches of training images, without labels, for batchnorm recalibration:
    a seeded sample of up to RECALIBRATION_IMAGES, mixed across classes as training batches are
    (the manifest itself is in class order)."""
    count = max(batch_size, min(len(manifest), RECALIBRATION_IMAGES) // batch_size * batch_size)
    sample = manifest.sample(n=min(count, len(manifest)), random_state=seed)
    return make_dataset(sample, spec, batch_size).map(lambda image, label: image)


def reopen_run(run_id: str) -> Any:
    """The interrupted run, in the store it was started in, or one line saying it is not there."""
    try:
        return mlflow.start_run(run_id=run_id)
    except MlflowException as err:
        raise CnnopsError(
            f"cannot resume run {run_id}: the MLflow store at {mlflow.get_tracking_uri()} does not "
            f"have it open ({err.error_code}); resume against the store the run started in."
        ) from None


@contextmanager
def ended_with_block(opened: ActiveRun) -> Iterator[ActiveRun]:
    """The run for the block, ended FINISHED or FAILED with it; a store that fails inside is one
    line naming it (store_faults). A failed run's end is tried once, without retries: when the store
    is what failed, it has just outlasted the whole retry budget, and waiting it out again would
    double the time to that line. A run left RUNNING so is resumed by the next training, as after a kill."""
    try:
        with store_faults():
            yield opened
    except BaseException:
        with no_store_retries(), suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    with store_faults():
        mlflow.end_run()


@contextmanager
def no_store_retries() -> Iterator[None]:
    """MLflow's HTTP calls inside the block try once, with a short timeout."""
    saved = {name: os.environ.get(name) for name in STORE_RETRIES}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def mark_resumed(run_id: str, progress: TrainingState, config: Config, pipeline_run: str) -> None:
    """Tags saying where the run went on: the pipeline run that resumed it and after which epoch.
    A sweep candidate moves under its own pipeline run's sweep parent, which ranks it."""
    tags = {"cnnops.pipeline_run": pipeline_run, "cnnops.resumed_after_epoch": str(progress.epoch)}
    parent = config.sweep.parent_run
    if parent:
        tags["mlflow.parentRunId"] = parent
    mlflow.set_tags(tags)


def backfill_metrics(run_id: str, progress: TrainingState, phases: list[Phase]) -> None:
    """Log the checkpointed epochs a kill kept from reaching MLflow (the checkpoint is written
    before an epoch's metrics are logged), so the resumed run's curves have every epoch once."""
    client = mlflow.MlflowClient()
    logged = {metric.step for metric in client.get_metric_history(run_id, "loss")}
    bounds = [(p.first_epoch - 1, p.last_epoch, p.name) for p in progress.phases]
    bounds.append((progress.phase_start, progress.epoch, phases[min(progress.phase, len(phases) - 1)].name))
    now = int(time.time() * 1000)
    missing = [
        Metric(metric_key, value, now, step)
        for first, last, name in bounds
        for step in range(first, last)
        if step not in logged
        for key, series in progress.history.items()
        for metric_key, value in ((key, series[step]), (f"{name}.{key}", series[step]))
    ]
    if missing:
        client.log_batch(run_id, metrics=missing)  # one request; the client splits past the batch limit


def configured_augmentation(train: TrainConfig) -> tuple[tuple[str, float], ...]:
    """The augmentation layers and strengths the train config asks for."""
    return augmentation_strengths(train.augmentation, dict(train.augment.items()))


def candidate_label(config: Config) -> str:
    """A run name that tells sweep candidates apart in the MLflow UI."""
    train = config.train
    return f"{train.architecture} lr={train.learning_rate:g} aug={train.augmentation}"


def learning_rate(schedule: str, rate: float, steps: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The rate itself, or a cosine decay from it to zero over `steps` (one phase's every step)."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, steps))
    return rate


@contextmanager
def distribution_scope() -> Iterator[int]:
    """MirroredStrategy across the GPUs when TensorFlow sees more than one; yields the replica count."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_logical_devices("GPU")) > 1:
            strategy = tf.distribute.MirroredStrategy()
            with strategy.scope():
                yield strategy.num_replicas_in_sync
            return
    yield 1


def save_model_folder(
    out_dir: Path,
    model: keras.Model,
    spec: ModelSpec,
    config: Config,
    history: dict[str, list[float]],
    run_id: str,
    experiment_id: str,
    registered_model: str,
    best_epoch: int | None,
) -> RunRecord:
    """Log the model to the active MLflow run, then write the model folder with its run record."""
    example = np.zeros((1, spec.height, spec.width, spec.channels), dtype=np.uint8)
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    logged = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        pip_requirements=model_requirements(),
    )
    # best_epoch is None for an imported model: it has no training history.
    record = RunRecord(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=logged.model_uri,
        model_id=logged.model_id,
        registered_model=registered_model,
        best_epoch=best_epoch,
        val_loss=None if best_epoch is None else float(history["val_loss"][best_epoch - 1]),
        val_accuracy=None if best_epoch is None else float(history["val_accuracy"][best_epoch - 1]),
    )
    write_model_folder(out_dir, model, spec, config, history, record)
    mlflow.log_artifact(str(out_dir / "model_spec.json"))
    mlflow.log_artifact(str(out_dir / "history.json"))
    return record


def model_requirements() -> list[str]:
    """Pin what loading the model needs; spares MLflow its slow import-capture inference."""
    from importlib.metadata import version

    backend = keras.backend.backend()
    return [f"keras=={version('keras')}", f"{backend}=={version(backend)}"]


class Checkpointer(keras.callbacks.Callback):
    """After every epoch: the history, the early-stopping and plateau counters and the model with its
    optimizer state, so a killed run loses at most the epoch it was in."""

    def __init__(
        self, folder: Path, state: TrainingState, early: ResumableEarlyStopping, plateau: list[ResumablePlateau]
    ) -> None:
        super().__init__()
        self.folder, self.state, self.early, self.plateau = folder, state, early, plateau

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        history = dict(self.state.history)
        for key, value in (logs or {}).items():
            history[key] = [*history.get(key, []), float(value)]
        self.state = self.state.model_copy(
            update={
                "history": history,
                "epoch": epoch + 1,
                "early_stopping": self.early.state(),
                "plateau": self.plateau[0].state() if self.plateau else None,
            }
        )
        improved = self.early.best_epoch == epoch
        write_checkpoint(self.folder, self.model, self.state, self.early.best_weights if improved else None)


class PhaseMetrics(keras.callbacks.Callback):
    """Each epoch's metrics to the active MLflow run at the run-wide epoch: once plain, as one curve
    across phases, and once under the phase's name (`head.val_loss`, `fine_tune.val_loss`)."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items()}
        mlflow.log_metrics({**values, **{f"{self.phase}.{key}": value for key, value in values.items()}}, step=epoch)


class EpochLine(keras.callbacks.Callback):
    """One progress line per epoch, readable in a terminal and in kfp logs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._start = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        say(
            f"train: epoch {epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.4f} "
            f"acc {logs.get('accuracy', float('nan')):.4f} val_loss {logs.get('val_loss', float('nan')):.4f} "
            f"val_acc {logs.get('val_accuracy', float('nan')):.4f} ({time.monotonic() - self._start:.1f}s)"
        )


def _devices() -> list[Any]:
    import tensorflow as tf

    return tf.config.list_logical_devices()
