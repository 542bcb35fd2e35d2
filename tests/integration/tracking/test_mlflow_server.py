"""`make mlflow-server` (`cnnops ui` on a shared store): a real MLflow server on a real PostgreSQL
15 with proxied artifacts, its password kept out of the process list, and one line for a store it
cannot open."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.commands import CNNOPS

from cnnops.core.processes import free_port, running_process
from cnnops.tracking.server import answers

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "not-in-ps-7f3a"  # trust authentication on loopback ignores it; it must still not leak


def with_password(uri: str) -> str:
    return uri.replace("cnnops@", f"cnnops:{PASSWORD}@", 1)


def group_command_lines(leader: int) -> list[str]:
    """The command lines of every process in `leader`'s process group (the server and its workers)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != leader:
                continue
            lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return lines


@pytest.mark.server
def test_make_mlflow_server_serves_postgres_with_proxied_artifacts(postgres, tmp_path):
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    artifacts, log, port = tmp_path / "artifacts", tmp_path / "server.log", free_port()
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": with_password(postgres.uri),
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "CNNOPS_HOME": str(tmp_path / "state"),
    }
    uri = f"http://127.0.0.1:{port}"
    command = ["make", "--no-print-directory", "mlflow-server", f"MLFLOW_PORT={port}"]
    with running_process(command, log, lambda: answers(uri), 120, env, ROOT, "make mlflow-server") as started:
        assert started.problem is None, f"{started.problem}:\n{log.read_text()[-3000:]}"
        proc = started.proc
        command_lines = group_command_lines(proc.pid)
        assert any("mlflow server" in line and "--workers 1" in line for line in command_lines), command_lines
        assert not [line for line in command_lines if PASSWORD in line or "postgresql" in line]
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("shared-store-check")
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "hello", "notes/hello.txt")
        assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
    # The run is a row in PostgreSQL, its artifact a file in the server's destination.
    engine = sqlalchemy.create_engine(postgres.uri)
    with engine.connect() as db:
        names = db.execute(sqlalchemy.text("SELECT name FROM experiments")).scalars().all()
    engine.dispose()
    assert "shared-store-check" in names
    (note,) = artifacts.rglob("notes/hello.txt")
    assert note.read_text() == "hello"
    assert PASSWORD not in log.read_text()


def test_make_mlflow_server_without_a_store_names_the_variables():
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    done = subprocess.run(
        ["make", "--no-print-directory", "mlflow-server"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://" in done.stderr
    assert "MLFLOW_ARTIFACTS_DESTINATION" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store", "artifacts", "expected"),
    [
        (
            f"postgresql+psycopg2://cnnops:{PASSWORD}@127.0.0.1:{free_port()}/mlflow",
            "artifacts",
            "cannot open the MLflow backend store postgresql+psycopg2://***@127.0.0.1:",
        ),
        ("nosuchdb://somewhere/mlflow", "artifacts", "cannot open the MLflow backend store nosuchdb://somewhere"),
        ("postgresql+psycopg2://cnnops@127.0.0.1:5432/mlflow", None, "needs an artifact destination"),
    ],
    # Named, not derived from the values: the first holds a free port, and xdist workers must
    # collect the same test ids.
    ids=["postgres-not-answering", "unknown-store-scheme", "no-artifact-destination"],
)
def test_a_store_the_server_cannot_use_is_one_line(store, artifacts, expected, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update({"CNNOPS_HOME": str(tmp_path / "state"), "MLFLOW_BACKEND_STORE_URI": store})
    args = [str(CNNOPS), "ui", "--port", str(free_port())]
    if artifacts:
        args += ["--artifacts", str(tmp_path / artifacts)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("cnnops: error:")]
    assert expected in line, line


def test_the_store_password_comes_from_pgpassword_not_the_uri(tmp_path, monkeypatch):
    """What the Kubernetes base relies on: a password-protected PostgreSQL, a store URI without the
    password, and libpq taking it from PGPASSWORD; a wrong one is one line without it."""
    import shutil
    import tempfile

    from support import postgres as pg

    from cnnops.core.errors import CnnopsError
    from cnnops.tracking.server import check_store

    folder = Path(tempfile.mkdtemp(prefix="cnnops-pgpw-"))  # outside tmp_path: see the postgres fixture
    server = pg.Postgres(folder, free_port())
    password = folder / "password"
    password.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(password, "postgres", "postgres")
    initdb = [str(pg.BIN / "initdb"), "-D", str(server.data), "-U", pg.USER, "-A", "scram-sha-256"]
    subprocess.run(server.as_owner(*initdb, "--pwfile", str(password), "--no-sync"), check=True, capture_output=True)
    server.start()
    try:
        uri = f"postgresql+psycopg2://{pg.USER}@127.0.0.1:{server.port}/postgres"
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        check_store(uri)
        monkeypatch.setenv("PGPASSWORD", "wrong")
        with pytest.raises(CnnopsError, match="password authentication failed") as refused:
            check_store(uri)
        assert "\n" not in str(refused.value) and PASSWORD not in str(refused.value)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.server
def test_runs_that_log_the_same_dataset_and_experiment_at_once_all_succeed(shared_server, monkeypatch, tmp_path):
    """Two pipeline runs on one source create the same experiment and log the same dataset at the
    same moment; the store checks, then inserts, so one of two inserts can fail on the key. Every
    run must get its experiment and its dataset input all the same."""
    import threading

    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from cnnops.contracts.dataset import DatasetInfo
    from cnnops.tracking.stores import ensure_experiment, log_dataset

    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_server["uri"])
    mlflow.set_tracking_uri(shared_server["uri"])
    manifest = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"], "sha256": ["1" * 64, "2" * 64]})
    info = DatasetInfo(
        source="/data/same", origin="folders", classes=["x", "y"], class_counts={"x": 1, "y": 1},
        mode="L", height=8, width=8, n_images=2, fingerprint="f" * 64,
    )  # fmt: skip
    workers, rounds = 6, 3
    errors: list[BaseException] = []
    run_ids: list[str] = []
    for round_number in range(rounds):
        start = threading.Barrier(workers)

        def log_once(experiment: str, start: threading.Barrier = start) -> None:
            try:
                start.wait(timeout=30)
                with mlflow.start_run(experiment_id=ensure_experiment(experiment)) as run:
                    log_dataset(manifest, info, tmp_path, context="training")
                run_ids.append(run.info.run_id)
            except BaseException as err:  # noqa: BLE001 - collected and asserted below
                errors.append(err)

        threads = [threading.Thread(target=log_once, args=(f"same-{round_number}",)) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, [str(err)[:300] for err in errors]
    client = MlflowClient()
    assert len(run_ids) == workers * rounds
    digests = {client.get_run(r).inputs.dataset_inputs[0].dataset.digest for r in run_ids}
    assert digests == {"f" * 32}
