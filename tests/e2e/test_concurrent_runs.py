"""Two `cnnops run` at once, for real: against one tracking server on PostgreSQL they both finish
and leave exactly one champion, the one the gate's rules say; on one sqlite store the second stops
with one line."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support.commands import CNNOPS

from cnnops.core.processes import stop_process_group
from cnnops.settings.config import build_config

NAME = "concurrent"
# Tiny and cheap; floors off so that whichever registers first is crowned, and the second is then
# held to paired evidence against it.
SETTINGS = [
    "train.batch_size=16",
    "train.patience=20",
    "gate.floor=0",
    "gate.min_over_chance=0",
    "gate.must_beat_baselines=false",
]


def cnnops_run(source: Path, home: Path, epochs: int, log: Path, uri: str | None) -> subprocess.Popen:
    """`cnnops run` as a user starts it, in a state folder of its own, logging to `uri` if given."""
    env = {**os.environ, "CNNOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if uri is not None:
        env["MLFLOW_TRACKING_URI"] = uri
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    command = [str(CNNOPS), "run", "--data", str(source), "--model-name", NAME, "--epochs", str(epochs), *sets]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def shows_better(tags: dict[str, str], margin: float) -> bool:
    """The gate's rule for paired evidence (`PairedEvidence.shows_better`), on the numbers the
    version's tags recorded."""
    low = json.loads(tags["cnnops.interval"])[0]
    return (
        int(tags["cnnops.only_candidate_right"]) > int(tags["cnnops.only_champion_right"])
        and float(tags["cnnops.p_value"]) < 1 - float(tags["cnnops.confidence"])
        and low > 0
        and float(tags["cnnops.difference"]) >= margin - 1e-6
    )


@pytest.mark.pipeline
@pytest.mark.server
def test_two_runs_against_one_server_leave_exactly_one_champion_the_gate_chose(shared_server, make_images, tmp_path):
    source = make_images(per_class=24)
    runs = [
        cnnops_run(source, tmp_path / f"home-{epochs}", epochs, tmp_path / f"run-{epochs}.log", shared_server["uri"])
        for epochs in (2, 3)
    ]
    try:
        for proc in runs:
            proc.wait(timeout=900)
    finally:
        for proc in runs:
            stop_process_group(proc)
    logs = {epochs: (tmp_path / f"run-{epochs}.log").read_text() for epochs in (2, 3)}
    assert [proc.returncode for proc in runs] == [0, 0], logs

    client = MlflowClient(tracking_uri=shared_server["uri"])
    versions = sorted(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    # Both registered, each with a decision whose registration completed; nothing else in the registry.
    assert [int(v.version) for v in versions] == [1, 2]
    assert [v.tags["cnnops.registration"] for v in versions] == ["complete", "complete"]
    assert len({v.run_id for v in versions}) == 2
    assert [m.name for m in client.search_registered_models()] == [NAME]  # no promotion lock left
    aliases = client.get_registered_model(NAME).aliases
    first, second = versions
    # Registration is serialised, so v1 met no champion: the rules crown it.
    assert first.tags["cnnops.decision"] == "champion"
    assert first.tags["cnnops.reason"].startswith("There is no champion yet")
    # v2 registered after v1 was champion, so it was judged against v1 (by its gate, or again under
    # the lock if its gate had run before v1 was crowned), on paired evidence.
    assert second.tags["cnnops.compared_with_version"] == "1"
    earned = shows_better(second.tags, build_config().gate.margin)
    assert second.tags["cnnops.decision"] == ("champion" if earned else "challenger")
    # Exactly one champion, the one those rules give; the other version is the challenger.
    expected = {"champion": "2", "challenger": "1"} if earned else {"champion": "1", "challenger": "2"}
    assert aliases == expected
    regated = [epochs for epochs, text in logs.items() if "gating again" in text]
    print(f"v2 earned champion: {earned}; runs whose registration gated again: {regated}")


@pytest.mark.pipeline
def test_a_second_run_on_one_sqlite_store_stops_at_once_with_one_line(make_images, tmp_path):
    source = make_images(per_class=20)
    home = tmp_path / "home"
    lock = home / "mlflow" / "mlflow.db.run-lock"
    first = cnnops_run(source, home, 2, tmp_path / "first.log", None)
    try:
        deadline = time.monotonic() + 300
        while not (lock.is_file() and f'"pid": {first.pid}' in lock.read_text()):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first run never took the store's run lock"
            time.sleep(0.5)
        second = cnnops_run(source, home, 2, tmp_path / "second.log", None)
        second.wait(timeout=300)
        said = (tmp_path / "second.log").read_text()
        assert second.returncode != 0
        refusals = [line for line in said.splitlines() if "another cnnops run" in line]
        assert len(refusals) == 1 and f"pid {first.pid}" in refusals[0], said
        assert "sqlite takes one run at a time" in refusals[0]
        assert "Traceback" not in said and "database is locked" not in said
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the run and its tasks, as a lost machine stops them
        first.wait(timeout=30)
    # The kernel dropped the lock with the killed run: the next run would take it.
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
