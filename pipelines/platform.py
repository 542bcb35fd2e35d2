"""The cluster settings of every task (kfp-kubernetes and kfp's own task settings): the data volume,
the MLflow secret, resources, the GPU, retries and caching. They land in the compiled IR's platform
spec; kfp.local ignores the Kubernetes ones and the resources, so a local run takes the same tasks.

Retries and environment variables are the settings kfp.local obeys: a user's mistake (exit 2) would
be retried like a crash, and a task's variable would override the user's own. So a local run builds
the pipeline with LOCAL, where tasks inherit the retry policy the CLI bound (cnnops.core.retries).
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import kubernetes
from kfp.dsl import PipelineTask

from cnnops.core.retries import STORE_RETRIES

# Where the data volume is mounted in every task that reads image files; data.source names a
# path under it (data.source=/data/flowers).
DATA_MOUNT = "/data"
# The Secret's keys and the variables MLflow reads them from. Only the URI is required; a server
# without authentication needs no username, password or token.
MLFLOW_SECRET_KEYS = {
    "MLFLOW_TRACKING_URI": ("MLFLOW_TRACKING_URI", False),
    "MLFLOW_TRACKING_USERNAME": ("MLFLOW_TRACKING_USERNAME", True),
    "MLFLOW_TRACKING_PASSWORD": ("MLFLOW_TRACKING_PASSWORD", True),
    "MLFLOW_TRACKING_TOKEN": ("MLFLOW_TRACKING_TOKEN", True),
}
# The tasks that open image files named by the manifests (the rest read manifests, records and
# the registry only): ingest decodes, validate hashes and samples, train, evaluate, baselines,
# gate and register score or fit on pixels, infra-validate uploads canary test images.
IMAGE_READERS = frozenset(
    {"ingest", "validate", "train", "evaluate", "baselines", "gate", "infra-validate", "register"}
)


@dataclass(frozen=True)
class Resources:
    """A task's CPU and memory, requested and capped."""

    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str


LIGHT = Resources(cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="1Gi")
DATA = Resources(cpu="1", memory="2Gi", cpu_limit="2", memory_limit="4Gi")
MODEL = Resources(cpu="1", memory="4Gi", cpu_limit="2", memory_limit="8Gi")
TRAIN = Resources(cpu="4", memory="8Gi", cpu_limit="8", memory_limit="16Gi")
# What each task needs: configure and finalize import no TensorFlow; train fits the model.
RESOURCES = {
    "configure": LIGHT,
    "finalize": LIGHT,
    "plan-sweep": LIGHT,
    "ingest": DATA,
    "validate": DATA,
    "split": DATA,
    "baselines": DATA,
    "select": MODEL,
    "evaluate": MODEL,
    "gate": MODEL,
    "register": MODEL,
    "package": MODEL,
    "infra-validate": MODEL,
    "release": MODEL,
    "train": TRAIN,
}
# Tasks whose outputs depend only on their inputs, so a cluster may reuse them. Never cached:
# ingest (the volume's files can change under the same parameters), anything with a Metrics
# output (evaluate, baselines), anything that opens, ends or reads MLflow runs or the registry
# (plan-sweep's parent run, train's run, select's ranking, gate, register, package, finalize).
CACHED = frozenset({"configure", "validate", "split"})
# A retry must do no harm: register is never retried (it rolls back a failed registration; a
# version left without a decision by a kill is resolved by the next register, not by a retry).
# A retried train resumes its run from its last checkpoint where the state folder outlives the pod.
NOT_RETRIED = frozenset({"register"})


@dataclass(frozen=True)
class Platform:
    """The cluster settings a compiled pipeline carries."""

    gpu: bool = False
    data_volume: str = "cnnops-data"
    mlflow_secret: str = "cnnops-mlflow"
    retries: int = 2
    store_retries: bool = True  # set cnnops.core.retries' MLflow HTTP policy on every task
    parallelism: int = 2


LOCAL = Platform(retries=0, store_retries=False)


def configure_task(task: PipelineTask, step: str, platform: Platform) -> PipelineTask:
    """Apply `platform` to one task; `step` names it in the tables above."""
    resources = RESOURCES[step]
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory_limit)
    task.set_caching_options(step in CACHED)
    if platform.retries and step not in NOT_RETRIED:
        task.set_retry(num_retries=platform.retries, backoff_duration="30s", backoff_factor=2)
    if platform.store_retries:
        for name, value in STORE_RETRIES.items():
            task.set_env_variable(name, value)
    for key, (variable, optional) in MLFLOW_SECRET_KEYS.items():
        kubernetes.use_secret_as_env(
            task, secret_name=platform.mlflow_secret, secret_key_to_env={key: variable}, optional=optional
        )
    if step in IMAGE_READERS:
        kubernetes.mount_pvc(task, pvc_name=platform.data_volume, mount_path=DATA_MOUNT)
    if step == "train" and platform.gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    return task
