"""Every task in the project image, through kfp.local's DockerRunner.

A task sees only what is mounted into it: the pipeline root (read-write, at the same path, as
DockerRunner does), the data source and the demo-data cache (read-only, at the same paths), and a
tmpfs at /tmp. Its root filesystem is read-only, and it reaches MLflow over HTTP only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnops.core.containers import find_image, image_user, open_docker
from cnnops.core.errors import ERROR_FILE_ENV, CnnopsError
from cnnops.core.paths import DATA_CACHE_ENV, data_cache
from cnnops.data.sources import DEMO_PREFIX, Source

# Host networking: a tracking server on the host's loopback is the container's loopback too.
NETWORK = "host"
# Variables a task takes from the host when they are set: how to reach and log in to MLflow.
PASSED_THROUGH = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_INSECURE_TLS",
    # How long a task rides out a server that does not answer (cnnops.core.retries).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "TF_CPP_MIN_LOG_LEVEL",
    "KERAS_BACKEND",
)
PROBE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    urllib.request.urlopen(sys.argv[1].rstrip('/') + '/health', timeout=5)\n"
    "except Exception as err:\n"
    "    sys.exit(f'{type(err).__name__}: {err}')\n"
)


def data_mounts(source: Source) -> list[Path]:
    """Host paths a task must read: the source as given (a folder, table folder or file), and the
    cache where demo sets, archives and arrays were written out as image files."""
    paths = [] if source.spec.startswith(DEMO_PREFIX) else [Path(source.spec).resolve()]
    if source.table is not None:
        paths.append(source.table.parent.resolve())
    if data_cache().is_dir():
        paths.append(data_cache().resolve())
    return sorted(set(paths))


def check_readable(paths: list[Path], uid: int) -> None:
    """Each mounted folder must let the tasks' user in: it is mounted as it is on the host."""
    for path in paths:
        stat = path.stat()
        needed = 0o005 if path.is_dir() else 0o004
        if stat.st_uid != uid and stat.st_mode & needed != needed:
            raise CnnopsError(
                f"the pipeline's tasks run as uid {uid} and cannot read {path} (mode "
                f"{stat.st_mode & 0o777:o}): make it readable, for example `chmod -R o+rX {path}`"
            )


def task_owner(image: Any, root: Path) -> str | None:
    """Who a task runs as, and the pipeline root made writable for it.

    As root on the host, the root folder is handed to the image's uid and tasks run as that user.
    Otherwise the host user cannot give a folder away, so tasks run as the host user's (non-root)
    uid instead; returns that `uid:gid`, or None for the image's own user.
    """
    uid, gid = image_user(image)
    if os.geteuid() == 0:
        os.chown(root, uid, gid)
        return None
    return f"{os.getuid()}:{os.getgid()}"


def task_environment(tracking_uri: str, error_file: Path) -> dict[str, str]:
    """What a task needs from the host, named explicitly: DockerRunner passes nothing through."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        ERROR_FILE_ENV: str(error_file),
        DATA_CACHE_ENV: str(data_cache().resolve()),
        "HOME": "/tmp/cnnops",
    }
    env.update({name: os.environ[name] for name in PASSED_THROUGH if os.environ.get(name)})
    return env


def check_server_from_container(client: Any, image: str, tracking_uri: str) -> None:
    """Ask the tracking server's health check from inside a container, on the tasks' network."""
    import docker

    try:
        client.containers.run(
            image, ["python3", "-c", PROBE, tracking_uri], network_mode=NETWORK, remove=True, stdout=False, stderr=True
        )
    except docker.errors.ContainerError as err:
        reason = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        raise CnnopsError(
            f"no MLflow tracking server is reachable from the containers at {tracking_uri} "
            f"({reason[-1] if reason else 'no answer'}): start one (`make ui`) or unset "
            "MLFLOW_TRACKING_URI to let cnnops start its own"
        ) from None


def check_docker(image_name: str) -> None:
    """A daemon answers and holds the project image."""
    client = open_docker()
    try:
        find_image(client, image_name)
    finally:
        client.close()


def docker_runner(source: Source, root: Path, image_name: str, tracking_uri: str, error_file: Path) -> Any:
    """kfp.local's DockerRunner with the project's mounts, environment, user and read-only root."""
    from docker.types import Mount
    from kfp import local

    client = open_docker()
    try:
        image = find_image(client, image_name)
        user = task_owner(image, root)
        check_readable(data_mounts(source), int(user.split(":")[0]) if user else image_user(image)[0])
        check_server_from_container(client, image_name, tracking_uri)
    finally:
        client.close()
    mounts = [Mount(target=str(path), source=str(path), type="bind", read_only=True) for path in data_mounts(source)]
    extra = {} if user is None else {"user": user}
    return local.DockerRunner(
        environment=task_environment(tracking_uri, error_file),
        network_mode=NETWORK,
        mounts=mounts,
        read_only=True,
        tmpfs={"/tmp": "rw,exec,mode=1777"},
        **extra,
    )
