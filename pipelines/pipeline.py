"""The pipeline factory. It wires the thin components and knows nothing of the runner:
kfp.local, the compiler and a Kubeflow cluster all take the same function.
"""

from collections.abc import Callable

from kfp import dsl

from components.baselines import baselines
from components.evaluate import evaluate
from components.gate import gate
from components.ingest import ingest
from components.package import package
from components.register import register
from components.split import split
from components.sweep import plan_sweep, select_model
from components.train import train
from components.validate import validate

PIPELINE_NAME = "cnnops-train"


def build_pipeline(gpu: bool = False, parallelism: int = 2) -> Callable[..., object]:
    """ingest -> validate -> split -> plan-sweep -> ParallelFor(train) -> select -> evaluate, beside
    baselines -> gate -> dsl.If(champion) register + package / else register.

    Without a sweep in the config the fan-out has one candidate. `gpu` asks the cluster for one
    NVIDIA GPU per train task; `parallelism` bounds how many candidates train at once. kfp.local
    ignores resources.
    """

    @dsl.pipeline(name=PIPELINE_NAME, description="Ingest, split, train, evaluate and gate an image CNN.")
    def cnnops_train(config: dict = {}) -> None:  # noqa: B006 - kfp parameters need a literal default
        ingested = ingest(config=config).set_display_name("ingest")
        validated = validate(config=config, dataset=ingested.outputs["dataset"]).set_display_name("validate")
        splits = split(config=config, dataset=validated.outputs["validated"]).set_display_name("split")
        sweep = plan_sweep(
            config=config, train_data=splits.outputs["train_data"], pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER
        ).set_display_name("plan-sweep")
        with dsl.ParallelFor(sweep.output, parallelism=parallelism, name="candidates") as candidate:
            candidate_model = train(
                config=candidate,
                train_data=splits.outputs["train_data"],
                val_data=splits.outputs["val_data"],
                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            ).set_display_name("train")
            candidate_model.set_cpu_request("2").set_memory_request("4G")
            if gpu:
                candidate_model.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        selected = select_model(config=config, models=dsl.Collected(candidate_model.outputs["model"])).set_display_name(
            "select"
        )
        floors = baselines(
            config=config, train_data=splits.outputs["train_data"], test_data=splits.outputs["test_data"]
        ).set_display_name("baselines")
        evaluated = evaluate(model=selected.outputs["best"], test_data=splits.outputs["test_data"]).set_display_name(
            "evaluate"
        )
        decided = gate(
            config=config,
            model=selected.outputs["best"],
            test_data=splits.outputs["test_data"],
            evaluation=evaluated.outputs["evaluation"],
            baselines=floors.outputs["scores"],
        ).set_display_name("gate")
        registration = {
            "model": selected.outputs["best"],
            "evaluation": evaluated.outputs["evaluation"],
            "decision": decided.outputs["decision"],
        }
        with dsl.If(decided.outputs["Output"] == "champion", name="promote"):
            registered = register(**registration).set_display_name("register-champion")
            package(model=selected.outputs["best"], version=registered.output).set_display_name("package")
        with dsl.Else(name="keep-champion"):
            register(**registration).set_display_name("register-challenger")

    return cnnops_train
