"""The compiled IR parses and matches the checked-in file, and is what a cluster reads: typed
parameters and the gate branch in the PipelineSpec, and in the PlatformSpec the data volume, the
MLflow secret, the GPU toleration; resources, retries and caching on every task."""

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
from kfp.pipeline_spec import pipeline_spec_pb2

import cnnops
from cnnops.components import BASE_IMAGE
from cnnops.core.retries import STORE_RETRIES
from cnnops.pipelines.compile import compile_pipeline, load_pipeline_spec, load_platform_spec, read_ir_documents
from cnnops.pipelines.platform import IMAGE_READERS, LOCAL, Platform

ROOT = Path(__file__).resolve().parents[3]
CHECKED_IN = ROOT / "pipelines" / "cnnops-train.yaml"

STRING = pipeline_spec_pb2.ParameterType.STRING
INTEGER = pipeline_spec_pb2.ParameterType.NUMBER_INTEGER
DOUBLE = pipeline_spec_pb2.ParameterType.NUMBER_DOUBLE
BOOLEAN = pipeline_spec_pb2.ParameterType.BOOLEAN
STRUCT = pipeline_spec_pb2.ParameterType.STRUCT


@pytest.fixture(scope="module")
def compile_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`compile_once(platform, image=None)`: the IR compiled once per variant for this module (a
    compile writes tens of kB of YAML with kfp's pure-Python emitter)."""
    folder = tmp_path_factory.mktemp("ir")

    @functools.cache
    def compile_variant(platform: Platform, image: str | None = None) -> Path:
        return compile_pipeline(folder / f"p{len(list(folder.iterdir()))}.yaml", platform, image)

    return compile_variant


def compiled(compile_once, platform):
    path = compile_once(platform)
    spec, platform_spec = load_pipeline_spec(path), load_platform_spec(path)
    executors = {
        name: json_format.ParseDict(config, k8s.KubernetesExecutorConfig())
        for name, config in json_format.MessageToDict(platform_spec.platforms["kubernetes"].deployment_spec)[
            "executors"
        ].items()
    }
    # Every task by its display name, with the executor it runs.
    tasks = {}
    for component in spec.components.values():
        for task in component.dag.tasks.values():
            if not task.component_ref.name.startswith("comp-exit-handler") and task.task_info.name != "candidates":
                executor = spec.components[task.component_ref.name].executor_label
                if executor:
                    tasks[task.task_info.name] = (task, executor)
    for task in spec.root.dag.tasks.values():
        if task.task_info.name == "finalize":
            tasks["finalize"] = (task, spec.components[task.component_ref.name].executor_label)
    return spec, executors, tasks


def test_the_ir_takes_typed_parameters_with_unset_defaults(compile_once):
    spec, _, _ = compiled(compile_once, Platform())
    inputs = spec.root.input_definitions.parameters
    types = {name: inputs[name].parameter_type for name in inputs}
    assert types == {
        "data_source": STRING,
        "model_name": STRING,
        "architecture": STRING,
        "epochs": INTEGER,
        "learning_rate": DOUBLE,
        "batch_size": INTEGER,
        "seed": INTEGER,
        "gate_metric": STRING,
        "force_promote": BOOLEAN,
        "fresh": BOOLEAN,
        "config": STRUCT,
    }
    defaults = {name: json_format.MessageToDict(inputs[name].default_value) for name in inputs}
    assert defaults["epochs"] == 0 and defaults["seed"] == -1 and defaults["data_source"] == ""
    assert defaults["config"] == {} and defaults["fresh"] is False
    assert all(inputs[name].is_optional for name in inputs)  # a run may leave any of them unset


def test_platform_spec_mounts_the_volume_reads_the_secret_and_sizes_every_task(compile_once):
    spec, executors, tasks = compiled(
        compile_once, Platform(gpu=True, data_volume="images", mlflow_secret="mlflow-creds")
    )
    steps = {name.removesuffix("-champion").removesuffix("-challenger"): name for name in tasks}
    assert set(steps) == {
        "configure",
        "ingest",
        "validate",
        "split",
        "plan-sweep",
        "train",
        "select",
        "baselines",
        "evaluate",
        "gate",
        "register",
        "package",
        "infra-validate",
        "release",
        "finalize",
    }
    deployment = json_format.MessageToDict(spec.deployment_spec)["executors"]
    for name, (_, executor) in tasks.items():
        config = executors[executor]
        # The MLflow URI is required; the credentials are optional keys of the same Secret.
        secrets = {env.key_to_env[0].env_var: env for env in config.secret_as_env}
        assert set(secrets) == {
            "MLFLOW_TRACKING_URI",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
        }, name
        assert {env.secret_name_parameter.runtime_value.constant.string_value for env in secrets.values()} == {
            "mlflow-creds"
        }
        assert not secrets["MLFLOW_TRACKING_URI"].optional and secrets["MLFLOW_TRACKING_TOKEN"].optional
        # The data volume, only where image files are opened.
        mounts = [(m.pvc_name_parameter.runtime_value.constant.string_value, m.mount_path) for m in config.pvc_mount]
        step = name.removesuffix("-champion").removesuffix("-challenger")
        assert mounts == ([("images", "/data")] if step in IMAGE_READERS else []), name
        # Requests and limits on every task; the MLflow retry policy in its environment.
        container = deployment[executor]["container"]
        resources = container["resources"]
        assert {"resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"} <= set(
            resources
        ), name
        env = {item["name"]: item["value"] for item in container.get("env", [])}
        assert {key: env.get(key) for key in STORE_RETRIES} == STORE_RETRIES, name
    assert {"validate", "ingest", "train", "gate", "register"} <= IMAGE_READERS
    assert "split" not in IMAGE_READERS and "configure" not in IMAGE_READERS

    train = deployment[tasks["train"][1]]["container"]["resources"]
    configure = deployment[tasks["configure"][1]]["container"]["resources"]
    assert (train["resourceCpuLimit"], train["resourceMemoryLimit"]) == ("8", "16Gi")
    assert (configure["resourceCpuLimit"], configure["resourceMemoryLimit"]) == ("1", "1Gi")
    # The GPU and its toleration on train, and nowhere else.
    assert (train["accelerator"]["resourceType"], train["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "1")
    (toleration,) = executors[tasks["train"][1]].tolerations
    assert (toleration.key, toleration.operator, toleration.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")
    others = [name for name in tasks if name != "train"]
    assert not any("accelerator" in deployment[tasks[name][1]]["container"]["resources"] for name in others)
    assert not any(executors[tasks[name][1]].tolerations for name in others)


def test_caching_only_where_outputs_depend_on_inputs_and_retries_where_safe(compile_once):
    _, _, tasks = compiled(compile_once, Platform())
    cached = {name for name, (task, _) in tasks.items() if task.caching_options.enable_cache}
    # Metrics outputs (evaluate, baselines), MLflow runs (plan-sweep, train, select, finalize), the
    # registry (gate, register, package) and the volume's files (ingest) are never reused.
    assert cached == {"configure", "validate", "split"}
    retried = {name for name, (task, _) in tasks.items() if task.retry_policy.max_retry_count}
    assert retried == set(tasks) - {"register-champion", "register-challenger"}
    assert tasks["train"][0].retry_policy.max_retry_count == 2
    assert tasks["train"][0].retry_policy.backoff_duration.seconds == 30


def test_a_cpu_cluster_gets_no_gpu_and_kfp_local_gets_no_retries(compile_once):
    spec, executors, tasks = compiled(compile_once, Platform())
    train = json_format.MessageToDict(spec.deployment_spec)["executors"][tasks["train"][1]]["container"]["resources"]
    assert "accelerator" not in train and not executors[tasks["train"][1]].tolerations
    local_spec, _, local_tasks = compiled(compile_once, LOCAL)
    assert not any(task.retry_policy.max_retry_count for task, _ in local_tasks.values())
    # Locally the tasks inherit the CLI's retry policy, which a user's own value overrides.
    executors = json_format.MessageToDict(local_spec.deployment_spec)["executors"]
    containers = [executor["container"] for executor in executors.values()]
    assert not any(item["name"] in STORE_RETRIES for container in containers for item in container.get("env", []))


def test_compiles_to_a_pipeline_spec_with_the_gate_branch(compile_once):
    spec = load_pipeline_spec(compile_once(Platform()))
    assert spec.pipeline_info.name == "cnnops-train"
    # Every step runs inside the exit handler, whose finalize task runs however the steps end.
    assert set(spec.root.dag.tasks) == {"exit-handler-1", "finalize"}
    tasks = spec.components[spec.root.dag.tasks["exit-handler-1"].component_ref.name].dag.tasks
    assert tasks["ingest"].inputs.parameters["config"].task_output_parameter.producer_task == "configure"
    assert {"ingest", "validate", "split", "plan-sweep", "select-model", "baselines", "evaluate", "gate"} <= set(tasks)
    assert tasks["split"].inputs.artifacts["dataset"].task_output_artifact.producer_task == "validate"
    # Training fans out over the sweep's candidates and fans back in at select.
    loop = next(task for key, task in tasks.items() if key.startswith("for-loop"))
    assert loop.parameter_iterator.items.input_parameter.endswith("plan-sweep-Output")
    assert loop.iterator_policy.parallelism_limit == 2
    assert tasks["evaluate"].inputs.artifacts["model"].task_output_artifact.producer_task == "select-model"
    nested = [task for component in spec.components.values() for task in component.dag.tasks.values()]
    conditions = {
        task.task_info.name: task.trigger_policy.condition for task in nested if task.trigger_policy.condition
    }
    assert "'champion'" in conditions["promote"] and conditions["keep-champion"].startswith("!(")
    assert "train" in {task.task_info.name for task in nested}
    registers = {task.task_info.name for task in nested if task.component_ref.name.startswith("comp-register")}
    assert registers == {"register-champion", "register-challenger"}
    # In the champion branch: package the candidate, infra-validate its Bento, and only then
    # register; release builds the registered version's Bento from the validated one.
    by_name = {
        task.task_info.name: (key, task)
        for component in spec.components.values()
        for key, task in component.dag.tasks.items()
    }

    def producer(task: str, artifact: str) -> str:
        return by_name[task][1].inputs.artifacts[artifact].task_output_artifact.producer_task

    assert producer("infra-validate", "bento") == by_name["package"][0]
    assert producer("register-champion", "validation") == by_name["infra-validate"][0]
    assert "validation" not in by_name["register-challenger"][1].inputs.artifacts
    assert producer("release", "candidate") == by_name["package"][0]
    version = by_name["release"][1].inputs.parameters["version"].task_output_parameter
    assert version.producer_task == by_name["register-champion"][0]
    train = spec.deployment_spec["executors"]["exec-train"]["container"]
    assert train["image"] == BASE_IMAGE == f"cnnops:{cnnops.__version__}"  # the image `make image` tags


def test_compiling_for_a_registry_names_the_pushed_image_in_every_task(compile_once):
    pushed = f"registry.example/ml/{BASE_IMAGE}"
    spec = load_pipeline_spec(compile_once(Platform(), pushed))
    images = {executor["container"]["image"] for executor in spec.deployment_spec["executors"].values()}
    assert images == {pushed}
    assert len(spec.deployment_spec["executors"]) >= 10


def test_gpu_variant_requests_a_gpu(compile_once):
    text = compile_once(Platform(gpu=True)).read_text()
    assert "nvidia.com/gpu" in text


def test_checked_in_yaml_is_current(compile_once):
    fresh = read_ir_documents(compile_once(Platform()))
    assert fresh == read_ir_documents(CHECKED_IN), "run `make compile` and commit the result"
