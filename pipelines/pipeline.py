"""The pipeline factory. It wires the thin components and knows nothing of the runner:
kfp.local, the compiler and a Kubeflow cluster all take the same function.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from cnnops.components.baselines import baselines
from cnnops.components.configure import configure
from cnnops.components.evaluate import evaluate
from cnnops.components.finalize import finalize
from cnnops.components.gate import gate
from cnnops.components.infra_validate import infra_validate
from cnnops.components.ingest import ingest
from cnnops.components.package import package
from cnnops.components.register import register
from cnnops.components.release import release
from cnnops.components.split import split
from cnnops.components.sweep import plan_sweep, select_model
from cnnops.components.train import train
from cnnops.components.validate import validate
from cnnops.pipelines.platform import Platform, configure_task
from cnnops.settings.parameters import UNSET_SEED, PipelineParameters

PIPELINE_NAME = "cnnops-train"


def build_pipeline(platform: Platform = Platform()) -> Callable[..., object]:  # noqa: B008 - frozen, never mutated
    """configure -> ingest -> validate -> split -> plan-sweep -> ParallelFor(train) -> select ->
    evaluate, beside baselines -> gate -> dsl.If(champion) package -> infra-validate -> register ->
    release / else register, all inside an exit handler whose finalize task ends this run's open
    MLflow runs as FAILED when the pipeline fails. Infra-validation serves the candidate's Bento
    before the alias can move; release builds the champion's own Bento from the model it served.

    The typed parameters are resolved over the `config` overlay once, by configure, and every later
    task takes its output. Without a sweep in the config the fan-out has one candidate. `platform`
    holds the cluster settings (pipelines.platform); kfp.local ignores all but its retries.
    """

    @dsl.pipeline(name=PIPELINE_NAME, description="Ingest, split, train, evaluate and gate an image CNN.")
    def cnnops_train(
        data_source: str = "",
        model_name: str = "",
        architecture: str = "",
        epochs: int = 0,
        learning_rate: float = 0.0,
        batch_size: int = 0,
        seed: int = UNSET_SEED,
        gate_metric: str = "",
        force_promote: bool = False,
        fresh: bool = False,
        config: dict = {},  # noqa: B006 - kfp parameters need a literal default
    ) -> None:
        """Typed parameters left at "", 0, -1 or false keep the `config` overlay's value, else the default."""

        def place(task: dsl.PipelineTask, name: str, step: str = "") -> dsl.PipelineTask:
            """Name the task and give it its cluster settings (`step`: its row there, if not `name`)."""
            return configure_task(task.set_display_name(name), step or name, platform)

        cleanup = place(finalize(pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), "finalize")
        with dsl.ExitHandler(cleanup, name="cnnops"):
            configured = place(
                configure(
                    config=config,
                    data_source=data_source,
                    model_name=model_name,
                    architecture=architecture,
                    epochs=epochs,
                    learning_rate=learning_rate,
                    batch_size=batch_size,
                    seed=seed,
                    gate_metric=gate_metric,
                    force_promote=force_promote,
                ),
                "configure",
            )
            resolved = configured.output
            ingested = place(ingest(config=resolved), "ingest")
            validated = place(validate(config=resolved, dataset=ingested.outputs["dataset"]), "validate")
            splits = place(split(config=resolved, dataset=validated.outputs["validated"]), "split")
            sweep = place(
                plan_sweep(
                    config=resolved,
                    train_data=splits.outputs["train_data"],
                    pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                ),
                "plan-sweep",
            )
            with dsl.ParallelFor(sweep.output, parallelism=platform.parallelism, name="candidates") as candidate:
                candidate_model = place(
                    train(
                        config=candidate,
                        train_data=splits.outputs["train_data"],
                        val_data=splits.outputs["val_data"],
                        pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                        fresh=fresh,
                    ),
                    "train",
                )
            selected = place(
                select_model(config=resolved, models=dsl.Collected(candidate_model.outputs["model"])), "select"
            )
            floors = place(
                baselines(
                    config=resolved, train_data=splits.outputs["train_data"], test_data=splits.outputs["test_data"]
                ),
                "baselines",
            )
            evaluated = place(
                evaluate(
                    model=selected.outputs["best"],
                    test_data=splits.outputs["test_data"],
                    val_data=splits.outputs["val_data"],
                ),
                "evaluate",
            )
            decided = place(
                gate(
                    config=resolved,
                    model=selected.outputs["best"],
                    test_data=splits.outputs["test_data"],
                    evaluation=evaluated.outputs["evaluation"],
                    baselines=floors.outputs["scores"],
                ),
                "gate",
            )
            registration = {
                "config": resolved,
                "model": selected.outputs["best"],
                "test_data": splits.outputs["test_data"],
                "evaluation": evaluated.outputs["evaluation"],
                "baselines": floors.outputs["scores"],
                "decision": decided.outputs["decision"],
            }
            with dsl.If(decided.outputs["Output"] == "champion", name="promote"):
                packaged = place(
                    package(model=selected.outputs["best"], evaluation=evaluated.outputs["evaluation"]), "package"
                )
                validated = place(
                    infra_validate(
                        config=resolved,
                        bento=packaged.outputs["bento"],
                        evaluation=evaluated.outputs["evaluation"],
                    ),
                    "infra-validate",
                )
                registered = place(
                    register(**registration, validation=validated.outputs["validation"]),
                    "register-champion",
                    "register",
                )
                place(release(candidate=packaged.outputs["bento"], version=registered.output), "release")
            with dsl.Else(name="keep-champion"):
                place(register(**registration), "register-challenger", "register")

    return cnnops_train


def pipeline_arguments(overlay: dict[str, Any], parameters: PipelineParameters, fresh: bool = False) -> dict[str, Any]:
    """The pipeline's arguments, for kfp.local and for a cluster run alike."""
    return {**parameters.model_dump(), "fresh": fresh, "config": overlay}
