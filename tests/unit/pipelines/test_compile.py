"""The compiled IR as a cluster reads it: typed parameters in the PipelineSpec, and in the
PlatformSpec the data volume, the MLflow secret, the GPU toleration; resources, retries and caching
on every task."""

from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
from kfp.pipeline_spec import pipeline_spec_pb2

from cnnops.core.retries import STORE_RETRIES
from cnnops.pipelines.compile import compile_pipeline, load_pipeline_spec, load_platform_spec
from cnnops.pipelines.platform import IMAGE_READERS, LOCAL, Platform

STRING = pipeline_spec_pb2.ParameterType.STRING
INTEGER = pipeline_spec_pb2.ParameterType.NUMBER_INTEGER
DOUBLE = pipeline_spec_pb2.ParameterType.NUMBER_DOUBLE
BOOLEAN = pipeline_spec_pb2.ParameterType.BOOLEAN
STRUCT = pipeline_spec_pb2.ParameterType.STRUCT


def compiled(tmp_path, platform):
    path = compile_pipeline(tmp_path / "p.yaml", platform)
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


def test_the_ir_takes_typed_parameters_with_unset_defaults(tmp_path):
    spec, _, _ = compiled(tmp_path, Platform())
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


def test_platform_spec_mounts_the_volume_reads_the_secret_and_sizes_every_task(tmp_path):
    spec, executors, tasks = compiled(tmp_path, Platform(gpu=True, data_volume="images", mlflow_secret="mlflow-creds"))
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


def test_caching_only_where_outputs_depend_on_inputs_and_retries_where_safe(tmp_path):
    _, _, tasks = compiled(tmp_path, Platform())
    cached = {name for name, (task, _) in tasks.items() if task.caching_options.enable_cache}
    # Metrics outputs (evaluate, baselines), MLflow runs (plan-sweep, train, select, finalize), the
    # registry (gate, register, package) and the volume's files (ingest) are never reused.
    assert cached == {"configure", "validate", "split"}
    retried = {name for name, (task, _) in tasks.items() if task.retry_policy.max_retry_count}
    assert retried == set(tasks) - {"register-champion", "register-challenger"}
    assert tasks["train"][0].retry_policy.max_retry_count == 2
    assert tasks["train"][0].retry_policy.backoff_duration.seconds == 30


def test_a_cpu_cluster_gets_no_gpu_and_kfp_local_gets_no_retries(tmp_path):
    spec, executors, tasks = compiled(tmp_path, Platform())
    train = json_format.MessageToDict(spec.deployment_spec)["executors"][tasks["train"][1]]["container"]["resources"]
    assert "accelerator" not in train and not executors[tasks["train"][1]].tolerations
    local_spec, _, local_tasks = compiled(tmp_path, LOCAL)
    assert not any(task.retry_policy.max_retry_count for task, _ in local_tasks.values())
    # Locally the tasks inherit the CLI's retry policy, which a user's own value overrides.
    executors = json_format.MessageToDict(local_spec.deployment_spec)["executors"]
    containers = [executor["container"] for executor in executors.values()]
    assert not any(item["name"] in STORE_RETRIES for container in containers for item in container.get("env", []))
