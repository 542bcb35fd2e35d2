"""The project's MLflow tracking server: the state folder's store, or a shared one (PostgreSQL),
served over HTTP with proxied artifacts, so a client needs only the URI (a container, a second
machine's pipeline, a teammate).

`make ui` runs it on the embedded store and `make mlflow-server` on a shared store, both in the
foreground; the Docker runner starts one for a run and stops it by PID. The store URI reaches
`mlflow server` through its environment (MLFLOW_BACKEND_STORE_URI), never its command line, so a
password in it stays out of the process list.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnops.core.errors import CnnopsError
from cnnops.core.paths import artifact_root, default_tracking_uri, state_home, tracking_uri
from cnnops.core.processes import LOOPBACK, free_port, running_process

HOST = LOOPBACK
READY_SECONDS = 90


def server_command(port: int, host: str = HOST, artifacts: str | None = None) -> list[str]:
    """`mlflow server` with one worker and the artifacts it proxies (under `artifacts`, a folder or
    an object-store URI; the state folder's by default). The store comes from `server_environment`.

    Experiments created through it keep artifacts as `mlflow-artifacts:` URIs under the artifact
    destination; clients upload and download them over HTTP and need only the server's URI.
    """
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--artifacts-destination",
        artifacts or str(artifact_root()),
    ]


def server_environment(store: str | None = None) -> dict[str, str]:
    """The store (the embedded one by default) as MLflow's own variable, out of the process list;
    no background job runner: two processes and about 540 MB instead of four workers and 3.4 GB."""
    return {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": store or default_tracking_uri(),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def serve_forever(port: int, host: str = HOST, store: str | None = None, artifacts: str | None = None) -> None:
    """Run the server in the foreground (`make ui`, `make mlflow-server`, a pod) until it is stopped:
    on the embedded store by default, or on `store` with its artifacts under `artifacts`."""
    if store is None:
        artifact_root().mkdir(parents=True, exist_ok=True)
    else:
        if not artifacts:
            raise CnnopsError(
                "a shared store needs an artifact destination: pass --artifacts (or set "
                "MLFLOW_ARTIFACTS_DESTINATION) to a folder or object-store URI the server writes to"
            )
        check_store(store)
        if is_local_path(artifacts):
            Path(artifacts).mkdir(parents=True, exist_ok=True)
    os.execve(sys.executable, server_command(port, host, artifacts), server_environment(store))


def check_store(store: str, timeout: int = 10) -> None:
    """Connect to a database store once before serving it, so a wrong or unreachable URI is one
    line here rather than a server that starts and fails every request."""
    import sqlalchemy
    import sqlalchemy.exc

    from cnnops.tracking.stores import shown_uri

    connect_args = {"connect_timeout": timeout} if store.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(store, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        raise CnnopsError(
            f"cannot open the MLflow backend store {shown_uri(store)} ({first_line(err)}): check the "
            "URI (postgresql+psycopg2://USER@HOST:PORT/DATABASE, the password in PGPASSWORD) and that "
            "the database is up and reachable"
        ) from None


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def is_local_path(location: str) -> bool:
    """A folder on this machine, not an object-store URI (s3://, gs://, ...)."""
    return "://" not in location or location.startswith("file://")


@contextmanager
def running_server(port: int, log: Path, store: str | None = None, artifacts: Path | None = None) -> Iterator[str]:
    """Start a server for the duration of a block (the project's, or one on `store` with `artifacts`),
    wait until it answers, and stop it, with everything it spawned, by its PID afterwards. Yields its URI."""
    (artifacts or artifact_root()).mkdir(parents=True, exist_ok=True)
    command = server_command(port, artifacts=None if artifacts is None else str(artifacts))
    uri = f"http://{HOST}:{port}"
    env = server_environment(store)
    with running_process(command, log, lambda: answers(uri), READY_SECONDS, env, what="the MLflow server") as started:
        if started.problem is not None:
            raise CnnopsError(f"{started.problem} at {uri}; see {log}")
        yield uri


def answers(uri: str, timeout: float = 2.0) -> bool:
    """Whether an MLflow server answers its health check at `uri`."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_log() -> Path:
    return state_home() / "logs" / "mlflow-server.log"


@contextmanager
def proxied_artifacts_reachable(experiment: str) -> Iterator[None]:
    """Artifacts logged through the project's server are `mlflow-artifacts:` URIs, which only a
    server resolves. When the embedded store holds such an experiment, serve the store for the
    block and point this process (and the tasks it starts) at it; otherwise do nothing."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if tracking_uri() != default_tracking_uri():
        yield
        return
    found = MlflowClient(tracking_uri=default_tracking_uri()).get_experiment_by_name(experiment)
    if found is None or not found.artifact_location.startswith("mlflow-artifacts:"):
        yield
        return
    with running_server(free_port(), server_log()) as uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            mlflow.set_tracking_uri(default_tracking_uri())
