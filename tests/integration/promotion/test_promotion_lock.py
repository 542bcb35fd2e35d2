"""The promotion lock in a real store (sqlite, PostgreSQL reached directly, and a tracking server on
it), and registration under it: a killed registration resolved by the next reader, and a stale
gate decision decided again against the champion another run crowned."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support.images import write_images
from support.stores import own_store
from support.training import train_candidate

from cnnops.contracts.gate import write_decision
from cnnops.contracts.infra import write_infra_validation
from cnnops.core.errors import CnnopsError
from cnnops.promotion.gate import decide_promotion
from cnnops.promotion.registration import register_model
from cnnops.promotion.status import describe_registry
from cnnops.serving.infra import validate_candidate
from cnnops.settings.config import to_pipeline_parameter
from cnnops.tracking.locks import EXPIRES_TAG, HOLDER_TAG, lock_name, promotion_lock

NAME = "lock-test"


def contend(uri: str, model: str, threads: int = 4, rounds: int = 3) -> dict:
    """`threads` clients, each taking the lock `rounds` times: how many held it at once, at most,
    and how many times it was held in all."""
    state = {"inside": 0, "most": 0, "held": 0, "errors": []}
    guard = threading.Lock()

    def work() -> None:
        client = MlflowClient(tracking_uri=uri)
        try:
            for _ in range(rounds):
                with promotion_lock(client, model, lease_seconds=60, wait_seconds=90, poll_seconds=0.05):
                    with guard:
                        state["inside"] += 1
                        state["most"] = max(state["most"], state["inside"])
                    time.sleep(0.05)
                    with guard:
                        state["inside"] -= 1
                        state["held"] += 1
        except Exception as err:  # noqa: BLE001 - reported by the test
            state["errors"].append(repr(err))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert not any(worker.is_alive() for worker in workers), "a contender never finished"
    return state


def plant_lock(client: MlflowClient, model: str, holder: str, expires_in: float) -> None:
    """A lock as another process leaves it: its holder and its lease's expiry."""
    tags = {HOLDER_TAG: holder, EXPIRES_TAG: f"{time.time() + expires_in:.3f}"}
    client.create_registered_model(lock_name(model), tags=tags)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


@pytest.mark.server
def test_the_lock_admits_one_holder_in_every_store(shared_server, state_home):
    from cnnops.core.paths import tracking_uri

    sqlite = tracking_uri()
    MlflowClient(tracking_uri=sqlite).search_registered_models()  # creates the store's tables
    # The server has migrated the database; a client may also reach it directly.
    stores = {"sqlite": sqlite, "postgresql": shared_server["postgres"].uri, "http": shared_server["uri"]}
    for kind, uri in stores.items():
        client = MlflowClient(tracking_uri=uri)
        free = contend(uri, f"{kind}-free")
        assert (free["most"], free["held"], free["errors"]) == (1, 12, []), kind

        # A lease that expired, held by another machine: taken over by exactly one waiter at a time.
        plant_lock(client, f"{kind}-stale", "elsewhere:1:expired", expires_in=-1)
        stale = contend(uri, f"{kind}-stale")
        assert (stale["most"], stale["held"], stale["errors"]) == (1, 12, []), kind

        # A holder on this host that is gone (a SIGKILLed run): no need to wait out its lease.
        plant_lock(client, f"{kind}-killed", f"{socket.gethostname()}:{dead_pid()}:killed", expires_in=3600)
        started = time.monotonic()
        with promotion_lock(client, f"{kind}-killed", wait_seconds=30, poll_seconds=0.1):
            assert time.monotonic() - started < 30

        # A live holder: the waiter stops within its bound, with one line naming the holder.
        with promotion_lock(client, f"{kind}-held") as lease:
            refused_by = f"still held by {lease.holder} since .* after 1 s"
            with (
                pytest.raises(CnnopsError, match=refused_by) as refused,
                promotion_lock(client, f"{kind}-held", wait_seconds=1, poll_seconds=0.2),
            ):
                pass
            assert "\n" not in str(refused.value)
        # Released: every lock and takeover ticket is gone, and none was ever a cnnops model.
        assert [m.name for m in client.search_registered_models()] == [], kind


KILLED_REGISTER = """
import json, os, signal, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
from cnnops.settings.config import validate_config
from cnnops.contracts.gate import read_decision
from cnnops.contracts.infra import read_infra_validation
from cnnops.promotion.registration import register_model

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # what a lost machine does between version and alias

MlflowClient.set_registered_model_alias = killed
model, test, evaluation, config, decision, validation = sys.argv[1:]
register_model(Path(model), Path(test), Path(evaluation), validate_config(json.loads(config)),
               read_decision(Path(decision)), None, read_infra_validation(Path(validation)))
"""


def register_killed(candidate: dict, decision_file: Path, validation: Path) -> None:
    """Run the real register in a process that SIGKILLs itself as it is about to set the alias."""
    args = [str(candidate[key]) for key in ("model", "test", "evaluation")]
    config = json.dumps(to_pipeline_parameter(candidate["config"]))
    done = subprocess.run(
        [sys.executable, "-c", KILLED_REGISTER, *args, config, str(decision_file), str(validation)],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def version_state(client: MlflowClient, number: int) -> tuple[str | None, str | None, list[str]]:
    version = client.get_model_version(NAME, str(number))
    return version.tags.get("cnnops.registration"), version.tags.get("cnnops.decision"), version.aliases


@pytest.mark.slow
def test_a_killed_registration_is_resolved_and_a_stale_decision_is_gated_again(tmp_path):
    with own_store(tmp_path):
        source = write_images(tmp_path / "images", per_class=20, seed=3)
        rules = {"registry.model_name": NAME, "train.epochs": 2, "gate.floor": 0.0, "gate.min_over_chance": 0.0}
        first = train_candidate(tmp_path / "a", source, **rules)
        second = train_candidate(tmp_path / "b", source, **rules, seed=11)
        client = MlflowClient()
        # Both gated before either registered: each was told there is no champion.
        decisions, validations = {}, {}
        for key, candidate in (("a", first), ("b", second)):
            decisions[key] = decide_promotion(
                candidate["model"], candidate["test"], candidate["evaluation"], candidate["config"]
            )
            write_decision(tmp_path / f"{key}.json", decisions[key])
            validations[key] = validate_candidate(candidate["model"], candidate["evaluation"], candidate["config"])
            write_infra_validation(tmp_path / f"validation-{key}", validations[key])
        assert decisions["a"].alias == decisions["b"].alias == "champion"

        # Killed between the version and its alias: v1 pending, no alias, the lock left behind.
        register_killed(first, tmp_path / "a.json", tmp_path / "validation-a")
        assert version_state(client, 1) == ("pending", "champion", [])
        assert client.get_registered_model(lock_name(NAME)).tags[HOLDER_TAG].startswith(socket.gethostname())
        # A version registered before the mark existed carries neither tag, and is left alone.
        legacy = client.create_model_version(
            NAME, source=first["model_uri"], run_id=first["run_id"], tags={"cnnops.decision": "challenger"}
        )
        # While a registration holds the lock, status shows v1 as registering, not interrupted.
        with promotion_lock(client, NAME, wait_seconds=30):
            (busy,) = describe_registry(NAME).models
            assert [(v.version, v.registration) for v in busy.versions] == [(1, "pending"), (2, None)]
        # Once the lock is free, status resolves it: challenger, "interrupted", champion untouched.
        (model,) = describe_registry(NAME).models
        interrupted = model.versions[0]
        assert (interrupted.decision, interrupted.registration, interrupted.aliases) == (
            "challenger",
            "interrupted",
            [],
        )
        assert interrupted.reason.startswith("interrupted: ") and "the gate had said champion" in interrupted.reason
        assert model.champion is None and model.versions[1].registration is None
        assert client.get_model_version(NAME, legacy.version).tags == {"cnnops.decision": "challenger"}

        # Killed again; this time the next register resolves it before it registers its own.
        register_killed(second, tmp_path / "b.json", tmp_path / "validation-b")
        assert version_state(client, 3) == ("pending", "champion", [])
        crowned = register_model(
            first["model"], first["test"], first["evaluation"], first["config"], decisions["a"], None, validations["a"]
        )
        assert crowned.version == 4 and crowned.alias == "champion"
        assert version_state(client, 3) == ("interrupted", "challenger", [])
        assert version_state(client, 4) == ("complete", "champion", ["champion"])

        # The second candidate's decision was made when there was no champion; v4 is one now, so
        # registration gates it again against v4 and registers what the gate says of that.
        late = register_model(
            second["model"],
            second["test"],
            second["evaluation"],
            second["config"],
            decisions["b"],
            None,
            validations["b"],
        )
        expected = decide_promotion(second["model"], second["test"], second["evaluation"], second["config"])
        assert expected.champion_version == 4 and late.version == 5
        assert (late.alias, late.reason) == (expected.alias, expected.reason)
        tags = client.get_model_version(NAME, "5").tags
        assert (tags["cnnops.compared_with_version"], tags["cnnops.registration"]) == ("4", "complete")
        assert int(client.get_model_version_by_alias(NAME, "champion").version) == (
            5 if late.alias == "champion" else 4
        )
        assert [m.name for m in client.search_registered_models()] == [NAME]  # no lock left


@pytest.mark.server
def test_the_retrain_lock_admits_one_retrain_and_renews_its_lease(shared_server, state_home, monkeypatch):
    """The retrain lock as both stores hold it: a file lock beside sqlite, a registry lock on a
    server. The second retrain waits for the first, within its bound; a holder's lease is renewed
    while it works, so a retrain longer than one lease keeps its lock."""
    from cnnops.core.paths import tracking_uri
    from cnnops.tracking import locks
    from cnnops.tracking.locks import RETRAIN, retrain_lock

    for uri in (tracking_uri(), shared_server["uri"]):
        order: list[str] = []
        first_in = threading.Event()

        def first(uri: str = uri, order: list[str] = order, first_in: threading.Event = first_in) -> None:
            with retrain_lock(uri, "pets", wait_seconds=60, poll_seconds=0.1):
                order.append("first in")
                first_in.set()
                time.sleep(1.0)
                order.append("first out")

        holder = threading.Thread(target=first)
        holder.start()
        assert first_in.wait(timeout=60)
        with retrain_lock(uri, "pets", wait_seconds=60, poll_seconds=0.1):
            order.append("second in")
        holder.join(timeout=60)
        assert order == ["first in", "first out", "second in"], uri
        # A retrain that waits past its bound stops with one line (flock is per open file, so this
        # process can contend with itself).
        refusal = "still hold|still held"
        with (
            retrain_lock(uri, "pets", wait_seconds=60),
            pytest.raises(CnnopsError, match=refusal) as refused,
            retrain_lock(uri, "pets", wait_seconds=0.5, poll_seconds=0.1),
        ):
            pass
        assert "\n" not in str(refused.value)

    client = MlflowClient(tracking_uri=shared_server["uri"])
    monkeypatch.setattr(locks, "LEASE_SECONDS", 2.0)  # renewed every 0.5 s
    with retrain_lock(shared_server["uri"], "pets", wait_seconds=10):
        name = lock_name("pets", RETRAIN)
        first_expiry = float(client.get_registered_model(name).tags[EXPIRES_TAG])
        time.sleep(3.0)  # longer than the lease: only renewal keeps it in the future
        lock = client.get_registered_model(name)
        assert float(lock.tags[EXPIRES_TAG]) > first_expiry
        assert float(lock.tags[EXPIRES_TAG]) > time.time()
    assert [m.name for m in client.search_registered_models()] == []
