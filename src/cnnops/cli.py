"""The `cnnops` command. Each step command calls the same library function the pipeline component
calls; `run`, `compile` and `submit` reach the kfp pipeline, imported only inside those commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnops.core.errors import CnnopsError, SystemFault, exit_on_user_error
from cnnops.core.paths import keep_tool_state_inside
from cnnops.core.retries import bound_store_retries
from cnnops.settings.config import Config, build_config, parse_overrides, to_pipeline_parameter
from cnnops.settings.parameters import PipelineParameters, RunPlan

if TYPE_CHECKING:
    from cnnops.contracts.drift import ServedDrift
    from cnnops.core.runlog import RunLog
    from cnnops.promotion.retrain import DriftReport
    from cnnops.promotion.retrain_report import RetrainOutcome

app = typer.Typer(
    name="cnnops",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train, gate and register image-classification CNNs: kfp pipeline, MLflow tracking and registry.",
)


@app.callback()
def main() -> None:
    """Train, gate and register image-classification CNNs: kfp pipeline, MLflow tracking and registry."""
    keep_tool_state_inside()
    bound_store_retries()


TrustPickle = Annotated[
    bool | None,
    typer.Option("--trust-pickle", help="Read a .pkl DataFrame source; unpickling runs whatever code the file holds."),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file of config sections.")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")]
Precision = Annotated[
    str | None, typer.Option(help="float32, mixed_float16 or mixed_bfloat16 (16-bit compute, float32 weights).")
]
Xla = Annotated[bool | None, typer.Option("--xla", help="Compile the train step with XLA.")]
Data = Annotated[
    str | None,
    typer.Option("--data", help="Class-folder path, or demo:animals (default), demo:digits, demo:faces, demo:fashion."),
]


def resolve_config(config: Path | None, sets: list[str] | None, **flags: Any) -> Config:
    """Defaults, then the file, then --set, then the named flags that were given."""
    overrides = parse_overrides(sets or [])
    overrides.update({key: value for key, value in flags.items() if value is not None})
    return build_config(config, overrides)


# The pipeline's typed parameters (cnnops.settings.parameters), shared by `run` and `submit`.
Epochs = Annotated[int | None, typer.Option(min=1, help="Maximum training epochs.")]
ModelNameFlag = Annotated[str | None, typer.Option(help="Registered model name.")]
ArchitectureFlag = Annotated[
    str | None, typer.Option(help="simple-cnn, deep-cnn, mobilenet_v2, vgg16, resnet50 or efficientnet_b0.")
]
LearningRate = Annotated[float | None, typer.Option(help="The optimizer's starting rate (above 0).")]
BatchSize = Annotated[int | None, typer.Option(min=1, help="Training batch size (default: sized to the data).")]
Seed = Annotated[int | None, typer.Option(min=0, help="Seeds the split, training and the baselines.")]
GateMetric = Annotated[str | None, typer.Option(help="The score the gate compares: accuracy or macro_f1.")]
ForcePromote = Annotated[
    bool | None,
    typer.Option(
        "--force-promote",
        help="Promote past the champion comparison (chance, the floor and the baselines still apply).",
    ),
]
Fresh = Annotated[
    bool,
    typer.Option(
        "--fresh", help="Train from scratch, even when an interrupted run of this config and data could resume."
    ),
]


def pipeline_parameters(**flags: Any) -> PipelineParameters:
    """The typed pipeline parameters from the flags that were given."""
    rate = flags.get("learning_rate")
    if rate is not None and rate <= 0:
        raise CnnopsError(f"--learning-rate must be above 0, got {rate:g}.")
    return PipelineParameters(**{name: value for name, value in flags.items() if value is not None})


@app.command()
def run(
    data: Data = None,
    trust_pickle: TrustPickle = None,
    config: ConfigFile = None,
    sets: Sets = None,
    epochs: Epochs = None,
    model_name: ModelNameFlag = None,
    architecture: ArchitectureFlag = None,
    learning_rate: LearningRate = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    gate_metric: GateMetric = None,
    precision: Precision = None,
    xla: Xla = None,
    force_promote: ForcePromote = None,
    fresh: Fresh = False,
    runner: Annotated[
        str,
        typer.Option(
            help="subprocess: every task in this venv; docker: every task in the project image (`make image`), "
            "logging to an MLflow server."
        ),
    ] = "subprocess",
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Stream the run's whole log (kfp, TensorFlow, every task) here too.")
    ] = False,
) -> None:
    """Run the whole pipeline with kfp.local: ingest, split, train, evaluate, gate and register.
    Shows a line per task and cnnops's progress, and ends with a summary; the rest is in the run's log.
    The named flags are the pipeline's typed parameters; --config and --set make its config overlay."""
    from cnnops.core.paths import new_run_log
    from cnnops.core.runlog import RunLog, TaskFailure, append_to_log

    log = RunLog(new_run_log(), verbose)
    with exit_on_user_error():
        plan = prepare_local_run(
            log,
            resolve_config(
                config,
                sets,
                **{"data.trust_pickle": trust_pickle, "train.precision": precision, "train.jit_compile": xla},
            ),
            data_source=data,
            model_name=model_name,
            architecture=architecture,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            seed=seed,
            gate_metric=gate_metric,
            force_promote=force_promote,
        )
        from cnnops.pipelines.run import run_locally
        from cnnops.pipelines.summary import format_summary, summarize_run

        try:
            finished = run_locally(plan, runner=runner, log=log, fresh=fresh)
        except TaskFailure as err:  # not the user's doing: one line, the log has the rest
            typer.echo(f"cnnops: {err}", err=True)
            append_to_log(err.log, [f"cnnops: {err}"])
            raise typer.Exit(1) from None
        lines = format_summary(summarize_run(finished))
        append_to_log(finished.log, lines)
        typer.echo("\n".join(lines))


def prepare_local_run(log: RunLog, resolved: Config, **flags: Any) -> RunPlan:
    """The run's plan from the config and the flags, resolved once and checked before any task
    (preflight): what `cnnops run` and `cnnops retrain` both start the pipeline with."""
    from cnnops.settings.parameters import plan_run

    return preflight_plan(log, plan_run(to_pipeline_parameter(resolved), pipeline_parameters(**flags)))


def preflight_plan(log: RunLog, plan: RunPlan) -> RunPlan:
    """The plan with its config preflighted; a data path made absolute is passed to every task."""
    from dataclasses import replace

    from cnnops.core.runlog import captured

    with captured(log):  # TensorFlow's start-up notices, from the checks that build models
        checked = preflight(plan.config)
    parameters = plan.parameters
    if checked.data.source != plan.config.data.source:
        parameters = parameters.model_copy(update={"data_source": checked.data.source})
    return replace(plan, parameters=parameters, config=checked)


@app.command()
def retrain(
    data: Data = None,
    trust_pickle: TrustPickle = None,
    config: ConfigFile = None,
    sets: Sets = None,
    model_name: ModelNameFlag = None,
    epochs: Epochs = None,
    architecture: ArchitectureFlag = None,
    force: Annotated[
        bool, typer.Option("--force", help="Train whatever the data, the champion and the cooldown say.")
    ] = False,
    runner: Annotated[
        str, typer.Option(help="subprocess (this venv) or docker (the project image), as for `cnnops run`.")
    ] = "subprocess",
    submit_to: Annotated[
        str | None,
        typer.Option("--submit", help="Submit the run to this Kubeflow Pipelines API instead of running it here."),
    ] = None,
    experiment: Annotated[str, typer.Option(help="The KFP experiment, with --submit.")] = "cnnops",
    cluster_data: Annotated[
        str | None,
        typer.Option(help="With --submit: data.source as the cluster's tasks see it (default: --data)."),
    ] = None,
    require_promotion: Annotated[
        bool, typer.Option("--require-promotion", help="Exit 1 when the new version is kept as challenger.")
    ] = False,
    if_drift: Annotated[
        str | None,
        typer.Option("--if-drift", help="Retrain only when the cnnops service at this URL reports drift."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Stream the run's whole log here too.")] = False,
) -> None:
    """Retrain when the data changed since the champion's (or there is none, or --force), or with
    --if-drift when the serving champion reports drift; one retrain of a model at a time. Writes a
    Markdown report (state folder, $GITHUB_STEP_SUMMARY) and key=value lines ($GITHUB_OUTPUT).
    Exit 0: trained or skipped; 1: the pipeline, the store or the service failed; 2: bad input."""
    from cnnops.core.paths import new_run_log
    from cnnops.core.runlog import RunLog, TaskFailure, append_to_log
    from cnnops.promotion.retrain_report import check_workflow_files, publish_outcome

    started = time.monotonic()
    log = RunLog(new_run_log(), verbose)
    name: str | None = None
    code, said = 0, ""
    try:
        from cnnops.pipelines.run import RUNNERS

        if runner not in RUNNERS:
            raise CnnopsError(f"--runner {runner} is not one of {', '.join(RUNNERS)}.")
        check_workflow_files()
        from dataclasses import replace

        from cnnops.settings.naming import model_name_for
        from cnnops.settings.parameters import plan_run

        resolved = resolve_config(config, sets, **{"data.trust_pickle": trust_pickle})
        flags = {"data_source": data, "model_name": model_name, "epochs": epochs, "architecture": architecture}
        plan = plan_run(to_pipeline_parameter(resolved), pipeline_parameters(**flags))
        name = model_name_for(plan.config)
        plan = preflight_plan(log, plan)
        from cnnops.pipelines.retrain import RetrainRequest
        from cnnops.pipelines.retrain import retrain as run_retrain

        if cluster_data is not None:
            if submit_to is None:
                raise CnnopsError("--cluster-data names the data a submitted run reads; give --submit too.")
            plan = replace(plan, parameters=plan.parameters.model_copy(update={"data_source": cluster_data}))
        drift = None if if_drift is None or force else ask_drift(if_drift)  # --force: whatever it says
        request = RetrainRequest(plan, log, force, runner, submit_to, experiment, drift=drift)
        outcome = run_retrain(request)
    except CnnopsError as err:  # bad input (2), or a store that failed (1: the system's fault)
        code = 1 if isinstance(err, SystemFault) else 2
        outcome, said = failed_outcome(name, err, started), f"cnnops: error: {err}"
    except TaskFailure as err:
        outcome, code, said = failed_outcome(name, err, started), 1, f"cnnops: {err}"
        append_to_log(err.log, [said])
    try:
        report = publish_outcome(outcome)
    except CnnopsError as err:  # the report could not reach the workflow's files
        said = said or f"cnnops: error: {err}"
        code = code or 2
        typer.echo(said, err=True)
        raise typer.Exit(code) from None
    if code:
        typer.echo(f"{said} (report {report})", err=True)
        raise typer.Exit(code)
    typer.echo(f"cnnops: retrain {describe_outcome(outcome)}; report {report}")
    if require_promotion and outcome.status == "challenger":
        typer.echo(f"cnnops: v{outcome.version} was kept as challenger and --require-promotion was given", err=True)
        raise typer.Exit(1)
    raise typer.Exit(code)


def ask_drift(url: str) -> DriftReport:
    """The service's verdict on its traffic, as the retrain decision takes it."""
    from cnnops.inference.service_client import fetch_drift
    from cnnops.promotion.retrain import DriftReport

    verdict = fetch_drift(url).verdict
    return DriftReport(
        url=url, status=verdict.status, reason=verdict.reason, p_value=verdict.p_value, window_size=verdict.window_size
    )


def failed_outcome(name: str | None, err: Exception, started: float) -> RetrainOutcome:
    from cnnops.promotion.retrain_report import RetrainOutcome

    return RetrainOutcome(status="failed", model=name, error=str(err), seconds=time.monotonic() - started)


def describe_outcome(outcome: RetrainOutcome) -> str:
    from cnnops.promotion.retrain_report import headline

    detail = outcome.decision.detail if outcome.decision is not None else outcome.error
    return f"{headline(outcome)}: {detail}"


@app.command()
def ingest(
    out: Annotated[Path, typer.Option(help="Dataset folder to write.")],
    data: Data = None,
    config: ConfigFile = None,
    sets: Sets = None,
    trust_pickle: TrustPickle = None,
) -> None:
    """Read a source into a manifest, quarantining bad files and dropping exact duplicates."""
    from cnnops.data.ingest import ingest_source

    with exit_on_user_error():
        ingest_source(resolve_config(config, sets, **{"data.source": data, "data.trust_pickle": trust_pickle}), out)


@app.command("validate")
def validate_(
    dataset: Annotated[Path, typer.Option(help="Folder written by `cnnops ingest`.")],
    out: Annotated[Path, typer.Option(help="Folder to write the checked dataset, validation.json and report.html.")],
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Check an ingested dataset (balance, quarantine, near-duplicates) and write the report; exits 2 on a fail."""
    from cnnops.data.validate import validate_dataset

    with exit_on_user_error():
        validate_dataset(dataset, out, resolve_config(config, sets))


data_app = typer.Typer(name="data", no_args_is_help=True, help="Look at a data source without training.")
app.add_typer(data_app)


@data_app.command("report")
def data_report(
    source: Annotated[str, typer.Argument(help="Any --data source: a folder, a table, an archive, demo:NAME.")],
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path("dataset-report.html"),
    config: ConfigFile = None,
    sets: Sets = None,
    trust_pickle: TrustPickle = None,
) -> None:
    """Ingest and validate SOURCE into a scratch folder and write its HTML report; nothing is trained.
    Exits 2 when the verdict is fail (the report is written all the same)."""
    import shutil
    import tempfile

    from cnnops.data.ingest import ingest_source
    from cnnops.data.validate import validate_dataset

    with exit_on_user_error(), tempfile.TemporaryDirectory(prefix="cnnops-report-") as scratch:
        cfg = resolve_config(config, sets, **{"data.source": source, "data.trust_pickle": trust_pickle})
        ingest_source(cfg, Path(scratch) / "dataset")
        try:
            validate_dataset(Path(scratch) / "dataset", Path(scratch) / "validated", cfg, track=False)
        finally:
            if (Path(scratch) / "validated" / "report.html").is_file():
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(scratch) / "validated" / "report.html", out)
                typer.echo(f"cnnops: wrote {out}", err=True)


@app.command()
def split(
    dataset: Annotated[Path, typer.Option(help="Folder written by `cnnops validate` (or `cnnops ingest`).")],
    out: Annotated[Path, typer.Option(help="Folder to write train/, val/ and test/ into.")],
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Split a dataset into stratified, seeded train/val/test folders."""
    from cnnops.data.split import SPLITS, split_dataset

    with exit_on_user_error():
        split_dataset(dataset, {name: out / name for name in SPLITS}, resolve_config(config, sets))


@app.command()
def train(
    splits: Annotated[Path, typer.Option(help="Folder written by `cnnops split`.")],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    config: ConfigFile = None,
    sets: Sets = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum training epochs.")] = None,
    precision: Precision = None,
    xla: Xla = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue this interrupted run (its id) from its last checkpoint; the config must be the same."
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start a new run even when an interrupted run of this config and data could be resumed "
            "(that run is ended as KILLED and its checkpoint deleted).",
        ),
    ] = False,
    distill_from: Annotated[
        str | None, typer.Option(help="Teacher to distil from: a model folder, NAME@ALIAS or NAME:VERSION.")
    ] = None,
) -> None:
    """Train a model on the train split, early-stopped on val, tracked in MLflow."""
    from cnnops.training.train import train_model

    with exit_on_user_error():
        cfg = resolve_config(
            config,
            sets,
            **{
                "train.epochs": epochs,
                "train.precision": precision,
                "train.jit_compile": xla,
                "distill.teacher": distill_from,
            },
        )
        train_model(splits / "train", splits / "val", out, cfg, resume=resume, fresh=fresh)


@app.command("baselines")
def baselines_(
    splits: Annotated[Path, typer.Option(help="Folder written by `cnnops split`.")],
    out: Annotated[Path | None, typer.Option(help="Folder to write the scores to, for `register --baselines`.")] = None,
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Fit a logistic regression and a random forest on downscaled pixels, as floors for the CNN."""
    from cnnops.evaluation.baselines import train_baselines

    with exit_on_user_error():
        train_baselines(splits / "train", splits / "test", resolve_config(config, sets), out)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Folder written by `cnnops train`.")],
    test: Annotated[Path, typer.Option(help="Test split folder.")],
    out: Annotated[Path, typer.Option(help="Evaluation folder to write.")],
    val: Annotated[
        Path | None, typer.Option(help="Val split folder: its images join the test images in the drift reference.")
    ] = None,
) -> None:
    """Score a model on the test split and log the evaluation to its MLflow run."""
    from cnnops.evaluation.evaluate import evaluate_model

    with exit_on_user_error():
        evaluate_model(model, test, out, val)


@app.command()
def register(
    model: Annotated[Path, typer.Option(help="Folder written by `cnnops train`.")],
    test: Annotated[Path, typer.Option(help="Test split folder the model was evaluated on.")],
    evaluation: Annotated[Path, typer.Option(help="Folder written by `cnnops evaluate`.")],
    baselines: Annotated[
        Path | None,
        typer.Option(help="Folder written by `cnnops baselines --out`: the candidate must not score below them."),
    ] = None,
    config: ConfigFile = None,
    sets: Sets = None,
    force_promote: Annotated[bool | None, typer.Option("--force-promote")] = None,
) -> None:
    """Gate the model (chance, baselines, the champion on the same images) and register it as
    champion or challenger; a champion's Bento is infra-validated in a real server first."""
    from cnnops.promotion.registration import gate_and_register
    from cnnops.serving.infra import validate_candidate

    with exit_on_user_error():
        cfg = resolve_config(config, sets, **{"gate.force_promote": force_promote})
        gate_and_register(model, test, evaluation, cfg, baselines, validate_candidate)


@app.command("import-model")
def import_model_(
    file: Annotated[Path, typer.Argument(help="A .keras file, or a Keras 2 .h5 full-model file.")],
    test: Annotated[Path, typer.Option(help="Test images: a class-folder tree, or a split's test folder.")],
    classes: Annotated[
        str | None,
        typer.Option(
            help="Class names in the model's output order, comma-separated (needed unless model_spec.json is "
            "beside the file)."
        ),
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(
            help="How the model expects pixels: raw (0-255), unit (/255), minus1_1 (MobileNet) or caffe "
            "(VGG/ResNet). Needed for a float-input model."
        ),
    ] = None,
    logits: Annotated[bool, typer.Option("--logits", help="The model ends without a softmax: add one.")] = False,
    model_name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Evaluate an outside model on a test set and register it through the same gate and the same
    infra-validation."""
    from cnnops.core.paths import state_home
    from cnnops.promotion.importer import ImportSpec, import_model, prepare_test_set
    from cnnops.serving.infra import validate_candidate

    with exit_on_user_error():
        cfg = resolve_config(config, sets, **{"registry.model_name": model_name})
        work = state_home() / "imports" / f"{file.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        names = [name.strip() for name in classes.split(",") if name.strip()] if classes else None
        given = ImportSpec(names, scale, logits)
        result = import_model(file, prepare_test_set(test, work, cfg), work, cfg, given, validate_candidate)
    typer.echo(
        f"cnnops: imported {file.name} as {result.registered_model} v{result.version} @{result.alias}: {result.reason}"
    )


@app.command("export-backbone")
def export_backbone_(
    file: Annotated[Path, typer.Argument(help="A .keras or Keras 2 .h5 full-model file holding the backbone.")],
    architecture: Annotated[
        str, typer.Option(help="The backbone to export: mobilenet_v2, vgg16, resnet50 or efficientnet_b0.")
    ],
    out: Annotated[Path, typer.Option(help="Weights file to write; its name must end in .weights.h5.")],
) -> None:
    """Export a backbone's weights from a model file, for train.weights (pretrained weights offline)."""
    from cnnops.modeling.backbones import export_backbone

    with exit_on_user_error():
        result = export_backbone(file, architecture, out)
    typer.echo(
        f"cnnops: exported the {result['architecture']} backbone of {file.name} ({result['layers']} layers, "
        f"{result['weights']} weights) to {result['out']}; use it as train.weights={result['out']}"
    )


Gpu = Annotated[bool, typer.Option("--gpu", help="One NVIDIA GPU (and its NoSchedule toleration) for train.")]
Image = Annotated[
    str | None,
    typer.Option(help="The project image every task runs, as the cluster pulls it (REGISTRY/cnnops:TAG)."),
]
DataVolume = Annotated[
    str, typer.Option(help="The PVC holding the images, mounted at /data in every task that reads them.")
]
MlflowSecret = Annotated[
    str,
    typer.Option(
        help="The Secret with MLFLOW_TRACKING_URI (and optional MLFLOW_TRACKING_USERNAME, _PASSWORD, _TOKEN)."
    ),
]


@app.command("compile")
def compile_(
    out: Annotated[Path, typer.Option(help="Where to write the IR YAML.")] = Path("cnnops-pipeline.yaml"),
    gpu: Gpu = False,
    image: Image = None,
    data_volume: DataVolume = "cnnops-data",
    mlflow_secret: MlflowSecret = "cnnops-mlflow",
) -> None:
    """Compile the pipeline to Kubeflow Pipelines IR YAML, with its platform spec (volume, secret,
    resources, GPU, retries, caching)."""
    from cnnops.pipelines.compile import compile_pipeline
    from cnnops.pipelines.platform import Platform

    platform = Platform(gpu=gpu, data_volume=data_volume, mlflow_secret=mlflow_secret)
    typer.echo(f"cnnops: wrote {compile_pipeline(out, platform, image=image)}")


@app.command()
def submit(
    host: Annotated[str, typer.Option(help="The Kubeflow Pipelines API, e.g. http://ml-pipeline-ui.kubeflow:80.")],
    experiment: Annotated[str, typer.Option(help="The KFP experiment the run belongs to.")] = "cnnops",
    schedule: Annotated[
        str | None,
        typer.Option(help="A cron expression (seconds first, as KFP reads it): a recurring run instead of one run."),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="data.source as the tasks see it, e.g. /data/flowers on the volume.")
    ] = None,
    config: ConfigFile = None,
    sets: Sets = None,
    epochs: Epochs = None,
    model_name: ModelNameFlag = None,
    architecture: ArchitectureFlag = None,
    learning_rate: LearningRate = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    gate_metric: GateMetric = None,
    force_promote: ForcePromote = None,
    fresh: Fresh = False,
    gpu: Gpu = False,
    image: Image = None,
    data_volume: DataVolume = "cnnops-data",
    mlflow_secret: MlflowSecret = "cnnops-mlflow",
) -> None:
    """Submit the pipeline to a Kubeflow Pipelines cluster with the typed parameters and the config
    overlay, once or on a schedule. The config is checked here first; the data is not (it is on
    the cluster's volume)."""
    from cnnops.pipelines.pipeline import pipeline_arguments
    from cnnops.pipelines.platform import Platform
    from cnnops.pipelines.submit import submit_pipeline
    from cnnops.settings.parameters import plan_run

    with exit_on_user_error():
        overlay = to_pipeline_parameter(resolve_config(config, sets))
        parameters = pipeline_parameters(
            data_source=data,
            model_name=model_name,
            architecture=architecture,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            seed=seed,
            gate_metric=gate_metric,
            force_promote=force_promote,
        )
        plan_run(overlay, parameters)  # a bad setting is one line here, not a failed run there
        platform = Platform(gpu=gpu, data_volume=data_volume, mlflow_secret=mlflow_secret)
        made = submit_pipeline(
            host, pipeline_arguments(overlay, parameters, fresh), experiment, platform, image, schedule
        )
    typer.echo(f"cnnops: submitted {made.kind} {made.id} to {host} (experiment {made.experiment})")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="TCP port.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean to expose it.")] = "127.0.0.1",
    store_uri: Annotated[
        str | None,
        typer.Option(
            "--store-uri",
            envvar="MLFLOW_BACKEND_STORE_URI",
            help="A shared store (postgresql+psycopg2://USER@HOST:PORT/DB; the password in PGPASSWORD) instead "
            "of the state folder's; prefer the variable, which keeps it out of the process list.",
        ),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_ARTIFACTS_DESTINATION",
            help="Where a shared store's server keeps the artifacts it proxies: a folder or object-store URI.",
        ),
    ] = None,
) -> None:
    """The MLflow UI and tracking server, one light worker with proxied artifacts: the state folder's
    store by default, or a shared one (docs/guide/shared-store.md)."""
    from cnnops.tracking.server import serve_forever

    with exit_on_user_error():
        serve_forever(port, host, store_uri, artifacts)


@app.command()
def status(
    model_name: Annotated[str | None, typer.Option(help="One registered model (default: all of cnnops').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (docs/guide/gate.md).")] = False,
) -> None:
    """Show registered models, their champion and challenger, and each version's test metrics."""
    from cnnops.promotion.status import describe_registry, format_status

    with exit_on_user_error():
        described = describe_registry(model_name)
    typer.echo(described.model_dump_json(indent=2) if as_json else format_status(described))


ModelName = Annotated[
    str | None,
    typer.Option("--model-name", help="Registered model (default: the one the config's data source trains)."),
]
Version = Annotated[str, typer.Option("--version", help="Alias or version number to use.")]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 3000,
    model_name: ModelName = None,
    version: Version = "champion",
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Serve a registered model (the champion by default) over HTTP with BentoML: web page at /,
    API at /classify, /classify_base64 and /classify_batch, OpenAPI page at /docs."""
    import os
    import sys

    from cnnops.inference.export import export_registered
    from cnnops.settings.naming import model_name_for

    with exit_on_user_error():
        cfg = resolve_config(config, sets, **{"registry.model_name": model_name})
        served = export_registered(model_name_for(cfg), version)
    typer.echo(
        f"cnnops: serving {served.info.registered_model} v{served.info.version} on http://{host}:{port}", err=True
    )
    env = {
        **os.environ,
        "CNNOPS_MODEL_DIR": str(served.folder),
        "CNNOPS_SERVE_CONFIG": cfg.serve.model_dump_json(),
        "CNNOPS_DRIFT_CONFIG": cfg.drift.model_dump_json(),
    }
    # exec: the server keeps this process's PID, so stopping `cnnops serve` stops the server.
    os.execve(
        sys.executable,
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "cnnops.serving.service:Classifier",
            "--host",
            host,
            "--port",
            str(port),
        ],
        env,
    )


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.")],
    model_name: ModelName = None,
    version: Version = "champion",
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Classes to show per image.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Classify image files with a registered model, by the service's own decode and model call.
    Exits 1 when any file could not be classified."""
    from cnnops.inference.export import export_registered
    from cnnops.modeling.predict import classify_files
    from cnnops.settings.naming import model_name_for

    with exit_on_user_error():
        cfg = resolve_config(config, sets, **{"registry.model_name": model_name, "serve.top_k": top_k})
        served = export_registered(model_name_for(cfg), version)
        results = classify_files(images, served, cfg.serve.top_k, cfg.serve.max_image_pixels)
    if as_json:
        answers = [result.model_dump(mode="json", exclude_none=True) for result in results]
        payload = {"model": served.info.registered_model, "version": served.info.version, "results": answers}
        typer.echo(json.dumps(payload, indent=2))
    else:
        for result in results:
            shown = (
                "  ".join(f"{p.label} {p.probability:.3f}" for p in result.predictions)
                if result.predictions
                else f"error: {result.error}"
            )
            typer.echo(f"{result.file}: {shown}")
    if any(result.error is not None for result in results):
        raise typer.Exit(1)


@app.command("export")
def export_(
    out: Annotated[Path, typer.Option(help="Where to write the export (a folder for savedmodel).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx, litert or savedmodel.")] = "onnx",
    model_name: ModelName = None,
    version: Version = "champion",
    model_dir: Annotated[
        Path | None, typer.Option(help="Export this model or served-model folder instead of a registered version.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Check parity on these test images instead of the version's own.")
    ] = None,
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Export the served function (uint8 images in, probabilities and embedding out), checked
    against the Keras model on the version's test images; an export that does not match is refused."""
    from cnnops.contracts.export import EXPORT_FORMATS
    from cnnops.settings.naming import model_name_for

    with exit_on_user_error():
        if fmt not in EXPORT_FORMATS:
            raise CnnopsError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}.")
        from cnnops.modeling.convert import export_folder  # TensorFlow: only once the flags are right

        cfg = resolve_config(config, sets, **{"registry.model_name": model_name})
        if model_dir is None:
            from cnnops.inference.export import export_registered

            model_dir = export_registered(model_name_for(cfg), version).folder
        report = export_folder(model_dir, fmt, out, cfg.export, images)
    typer.echo(f"cnnops: wrote {out}: {report.verdict()}; report in {out}.parity.json")


# `cnnops drift` exits with this when the window drifted (0 for no drift or no verdict).
DRIFT_EXIT = 3


@app.command()
def drift(
    url: Annotated[str | None, typer.Option("--url", help="A running cnnops service: its GET /drift.")] = None,
    window: Annotated[
        Path | None, typer.Option("--window", help="A traffic window file the service saved, judged here.")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="With --window: the served-model folder whose reference to use (default: the registry's)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="The HTML report (default: <state>/drift/report.html).")] = None,
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Is the served traffic drifting from the model's own data? Writes an HTML report of the
    verdict. Exit 0: no drift, or too little traffic or no reference for a verdict; 3: drift;
    1: the service or the store failed; 2: bad input."""
    from cnnops.core.paths import state_home
    from cnnops.monitoring.report import write_drift_report

    code = 0
    with exit_on_user_error():
        try:
            if (url is None) == (window is None):
                raise CnnopsError("give one of --url (a running service) or --window (a saved window file).")
            if model_dir is not None and window is None:
                raise CnnopsError("--model-dir names the reference for a --window file; a service has its own.")
            cfg = resolve_config(config, sets)
            if url is not None:
                from cnnops.inference.service_client import fetch_drift

                found, source = fetch_drift(url), url
            else:
                assert window is not None
                found, source = judge_window_file(window, model_dir, cfg), str(window)
        except SystemFault as err:
            typer.echo(f"cnnops: error: {err}", err=True)
            raise typer.Exit(1) from None
        verdict = found.verdict
        path = out or state_home() / "drift" / "report.html"
        try:
            report = write_drift_report(path, verdict, found.class_names, source)
        except OSError as err:
            raise CnnopsError(f"cannot write the report to {path}: {err.strerror or err}.") from None
        typer.echo(f"cnnops: {found.registered_model}: {verdict.status}: {verdict.reason}; report {report}")
        code = DRIFT_EXIT if verdict.drift else 0
    raise typer.Exit(code)


def judge_window_file(window: Path, model_dir: Path | None, cfg: Config) -> ServedDrift:
    """A saved window against `model_dir`'s reference, or its run's from the registry."""
    import tempfile

    from cnnops.monitoring.monitor import judge_saved_window
    from cnnops.monitoring.window import read_window

    if model_dir is not None:
        from cnnops.contracts.served import read_served_model

        served = read_served_model(model_dir)
        return judge_saved_window(window, model_dir, cfg.drift, served.info.registered_model)
    saved = read_window(window)
    if saved is None:
        raise CnnopsError(f"there is no traffic window at {window}.")
    from mlflow.tracking import MlflowClient

    from cnnops.inference.export import download_evaluation_files
    from cnnops.monitoring.reference import REFERENCE_FILE
    from cnnops.tracking.stores import lookup, store_faults, use_tracking_store

    use_tracking_store()
    with store_faults(), tempfile.TemporaryDirectory(prefix="cnnops-drift-") as scratch:
        run_id = saved.run_id
        if not run_id.isalnum():
            raise CnnopsError(f"{window} names run {run_id!r}, which is not an MLflow run id.")
        client = MlflowClient()
        if lookup(lambda: client.get_run(run_id)) is None:
            raise CnnopsError(f"{window} is the traffic of run {run_id}, which this store does not have.")
        found = lookup(lambda: client.search_model_versions(f"run_id = '{run_id}'"))
        versions = list(found or [])
        download_evaluation_files(run_id, Path(scratch), (REFERENCE_FILE,))
        name = versions[0].name if versions else f"run {run_id}"
        return judge_saved_window(window, Path(scratch), cfg.drift, name)


@app.command()
def bento(
    model_name: ModelName = None,
    version: Version = "champion",
    out: Annotated[Path | None, typer.Option(help="Also write the Bento as one archive file here.")] = None,
    containerize: Annotated[
        bool,
        typer.Option(
            "--containerize",
            help="Also build its service image: on the ONNX serving image (`make serve-image`) when the model's "
            "export passed parity, else on the project image (`make image`).",
        ),
    ] = False,
    runtime: Annotated[
        str, typer.Option(help="With --containerize: auto, onnx (the ONNX serving image) or keras (the project image).")
    ] = "auto",
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Build a Bento pinned to one registered version (the champion by default)."""
    from cnnops.serving.bento import package_version
    from cnnops.settings.naming import model_name_for

    with exit_on_user_error():
        if runtime not in ("auto", "onnx", "keras"):
            raise CnnopsError(f"--runtime {runtime!r} is not one of auto, onnx, keras.")
        cfg = resolve_config(config, sets, **{"registry.model_name": model_name})
        built = package_version(model_name_for(cfg), version, export_to=out)
        typer.echo(
            f"cnnops: built Bento {built.bento} ({built.registered_model} v{built.version}) "
            f"at {built.path}" + (f"; archive {built.archive}" if built.archive else "")
        )
        if containerize:
            from cnnops.components import BASE_IMAGE
            from cnnops.serving.bento import containerize as build_service_image
            from cnnops.serving.bento import runtime_image

            base = runtime_image(built, runtime, BASE_IMAGE)
            tags = build_service_image(built, base)
            typer.echo(
                f"cnnops: built service image {' and '.join(tags)} on {base}; run it with "
                f"`docker run --rm -p 127.0.0.1:3000:3000 {tags[0]}`"
            )


def preflight(config: Config) -> Config:
    """Catch what needs no decoding before the pipeline starts: path, demo name, classes, counts.

    Returns the config with a path source made absolute, so every task and the MLflow params
    name the same data whatever directory they run in.
    """
    from cnnops.data.ingest import check_has_classes, open_source
    from cnnops.data.sources import list_source_files
    from cnnops.data.split import check_class_counts
    from cnnops.training.sweep import check_candidates

    check_candidates(config)  # every sweep candidate trainable, before any task runs
    source = open_source(config)
    class_files, _ = list_source_files(source)
    check_has_classes(source, class_files)
    if source.origin != "pre-split":  # a pre-split tree keeps its own split; `split` checks it
        check_class_counts({label: len(files) for label, files in class_files.items() if files}, config.split)
    if source.spec == config.data.source:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"source": source.spec})})
