"""Locks that keep two cnnops runs from stepping on each other: two per registered model, in the
registry itself (one around promotion, one around a whole retrain), and one per embedded sqlite
store around a whole run.

The promotion lock is a registered model named `<model>.promotion-lock`. MLflow's registry has no
compare-and-set on aliases, and a client may reach the store only over HTTP (a tracking server on
PostgreSQL), so a database advisory lock is out of its reach. What every store does enforce is the
unique key on a registered model's name: `create_registered_model` succeeds for exactly one
creator and answers RESOURCE_ALREADY_EXISTS to every other, in sqlite, in PostgreSQL reached
directly, and through a server alike. The lock is created with its tags in the same insert: the
holder (`host:pid:token`) and the lease's expiry. It carries no `cnnops.managed` tag, so
`cnnops status` never lists it. Releasing deletes it, in `finally`. The retrain lock,
`<model>.retrain-lock`, works the same way; its holder renews the lease while it trains.

A lock is stale when its lease has expired, or when its holder ran on this host and that process
is gone (a SIGKILLed run; the next run on the same machine need not wait out the lease). A waiter
takes a stale lock over through a second unique name, `<lock>.takeover-<holder token>`: only one
waiter can create that ticket for a given stale holder, and it deletes the lock only after reading
it again and finding the same holder, so two waiters never both delete and recreate it.

Limits, which the lease length keeps out of reach in practice:
- a holder that is alive but slower than its lease (`LEASE_SECONDS`, renewed before each write)
  can be taken over while it still works; `check_held` before every registry write narrows this
  to the moment between the check and the write;
- expiry compares the holder's clock with the waiter's: clocks must agree to well within a lease;
- a waiter that crashes while holding a takeover ticket leaves it until the ticket itself is a
  lease old.

The run lock is an advisory `flock` on a file beside an sqlite store: the second `cnnops run` on
the same store stops at once with one line naming the run that holds it, instead of meeting
sqlite's "database is locked" in the middle of a task.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cnnops.contracts.records import Frozen
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.tracking.stores import lookup, store_faults

HOLDER_TAG = "cnnops.lock.holder"
EXPIRES_TAG = "cnnops.lock.expires"
# A promotion under the lock re-checks the champion, may score it on the test images, and writes a
# version: seconds on small data, a few minutes on large. The lease is renewed before each write.
LEASE_SECONDS = 600.0
WAIT_SECONDS = 900.0  # longer than a lease, so that a crashed holder's lock is taken over in time
POLL_SECONDS = 1.0
# What a store answers a creator who lost the race: the name is taken, or it was released between
# the failed insert and the store's read of the existing one.
CONTENDED = frozenset({"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"})


class LockKind(Frozen):
    """What a registry lock guards: its name's suffix, the step that says so, and what it is called."""

    suffix: str
    step: str
    called: str
    held_while: str


PROMOTION = LockKind(
    suffix=".promotion-lock", step="register", called="promotion lock", held_while="a version is registered"
)
RETRAIN = LockKind(suffix=".retrain-lock", step="retrain", called="retrain lock", held_while="the model is retrained")


class Lease(Frozen):
    """A registry lock this process holds: the lock's name, its holder token and lease length."""

    lock: str
    holder: str
    lease_seconds: float
    kind: LockKind = PROMOTION


def lock_name(model: str, kind: LockKind = PROMOTION) -> str:
    return f"{model}{kind.suffix}"


@contextmanager
def promotion_lock(
    client: MlflowClient,
    model: str,
    lease_seconds: float = LEASE_SECONDS,
    wait_seconds: float = WAIT_SECONDS,
    poll_seconds: float = POLL_SECONDS,
    kind: LockKind = PROMOTION,
) -> Iterator[Lease]:
    """Hold the registered model's promotion lock (or another `kind`) for the block; released however
    the block ends. Waits at most `wait_seconds` (and a bounded number of tries), then stops with
    one line naming the holder."""
    lease = acquire_lock(client, model, lease_seconds, wait_seconds, poll_seconds, kind)
    try:
        yield lease
    finally:
        release_lock(client, lease)


def acquire_lock(
    client: MlflowClient,
    model: str,
    lease_seconds: float,
    wait_seconds: float,
    poll_seconds: float,
    kind: LockKind = PROMOTION,
) -> Lease:
    """Create the lock, or wait for it (taking over a stale one) within the bounds."""
    name = lock_name(model, kind)
    lease = Lease(lock=name, holder=new_holder(), lease_seconds=lease_seconds, kind=kind)
    deadline = time.monotonic() + wait_seconds
    tries = int(wait_seconds / poll_seconds) + 2
    announced = False
    for _ in range(tries):
        if attempt_lock(client, lease):
            return lease
        if time.monotonic() >= deadline:
            break
        current = lookup(lambda: client.get_registered_model(name))
        if current is not None and not announced:
            say(f"{kind.step}: waiting for {model}'s {kind.called}, held by {describe_holder(current)}")
            announced = True
        time.sleep(poll_seconds * random.uniform(0.5, 1.5))
    current = lookup(lambda: client.get_registered_model(name))
    held_by = "another run" if current is None else describe_holder(current)
    raise CnnopsError(
        f"{model}'s {kind.called} is still held by {held_by} after {wait_seconds:.0f} s; try again once "
        f"that run is done (if none is running, delete the registered model '{name}')."
    )


@contextmanager
def lock_if_free(client: MlflowClient, model: str, lease_seconds: float = LEASE_SECONDS) -> Iterator[Lease | None]:
    """The promotion lock for the block if it is free (or stale) right now, else None: for a reader
    that writes only when no registration is under way."""
    lease = Lease(lock=lock_name(model), holder=new_holder(), lease_seconds=lease_seconds)
    if not attempt_lock(client, lease):
        yield None
        return
    try:
        yield lease
    finally:
        release_lock(client, lease)


def attempt_lock(client: MlflowClient, lease: Lease) -> bool:
    """One try: create the lock, or take a stale one over and create it then."""
    if try_create(client, lease):
        return True
    current = lookup(lambda: client.get_registered_model(lease.lock))
    return (
        current is not None
        and is_stale(current)
        and take_over(client, current, lease.lease_seconds, lease.kind)
        and (try_create(client, lease))
    )


def try_create(client: MlflowClient, lease: Lease) -> bool:
    """Create the lock with its holder and expiry in one insert; False when another creator won."""
    try:
        client.create_registered_model(
            lease.lock,
            tags=lease_tags(lease),
            description=f"cnnops {lease.kind.called}: held while {lease.kind.held_while}. Safe to delete "
            "only when no cnnops run holds it.",
        )
    except MlflowException as err:
        if err.error_code in CONTENDED:
            return False
        raise
    return True


def lease_tags(lease: Lease) -> dict[str, str]:
    return {HOLDER_TAG: lease.holder, EXPIRES_TAG: f"{time.time() + lease.lease_seconds:.3f}"}


def renew_lease(client: MlflowClient, lease: Lease) -> None:
    """Push the lease's expiry on, after checking the lock is still this holder's."""
    check_held(client, lease)
    client.set_registered_model_tag(lease.lock, EXPIRES_TAG, lease_tags(lease)[EXPIRES_TAG])


def check_held(client: MlflowClient, lease: Lease) -> None:
    """Stop before a registry write if the lock was taken over (this holder outlived its lease)."""
    current = lookup(lambda: client.get_registered_model(lease.lock))
    if current is None or current.tags.get(HOLDER_TAG) != lease.holder:
        held_by = "nobody" if current is None else describe_holder(current)
        raise CnnopsError(
            f"lost the {lease.kind.called} {lease.lock} (held by {held_by} now): this {lease.kind.step} outlived its "
            f"{lease.lease_seconds:.0f} s lease; nothing more was written, register again."
        )


def release_lock(client: MlflowClient, lease: Lease) -> None:
    """Delete the lock if it is still this holder's; a failure is said, never raised over the
    error that ended the block (a lock left behind goes stale and is taken over)."""
    try:
        current = lookup(lambda: client.get_registered_model(lease.lock))
        if current is not None and current.tags.get(HOLDER_TAG) == lease.holder:
            client.delete_registered_model(lease.lock)
    except Exception as err:  # noqa: BLE001 - the block's own error matters more
        say(f"{lease.kind.step}: warning: could not release the {lease.kind.called} {lease.lock}: {err}")


def is_stale(lock: RegisteredModel, now: float | None = None) -> bool:
    """The lease has expired, or the holder ran on this host and its process is gone."""
    now = time.time() if now is None else now
    expires = lock.tags.get(EXPIRES_TAG)
    expiry = float(expires) if expires else lock.creation_timestamp / 1000 + LEASE_SECONDS
    if expiry < now:
        return True
    host, pid = holder_process(lock.tags.get(HOLDER_TAG, ""))
    return host == socket.gethostname() and pid is not None and not process_alive(pid)


def take_over(client: MlflowClient, stale: RegisteredModel, lease_seconds: float, kind: LockKind = PROMOTION) -> bool:
    """Remove a stale lock, one waiter at a time: the waiter that creates the takeover ticket for
    this holder deletes the lock, if it still has that holder; every other waiter goes on waiting.
    True when the stale lock is gone."""
    holder = stale.tags.get(HOLDER_TAG, f"created-{stale.creation_timestamp}")
    ticket = Lease(
        lock=f"{stale.name}.takeover-{holder.rsplit(':', 1)[-1]}",
        holder=new_holder(),
        lease_seconds=lease_seconds,
        kind=kind,
    )
    if not try_create(client, ticket):
        existing = lookup(lambda: client.get_registered_model(ticket.lock))
        if existing is not None and existing.creation_timestamp / 1000 + lease_seconds < time.time():
            lookup(lambda: client.delete_registered_model(ticket.lock))  # its waiter crashed mid-takeover
        return False
    try:
        again = lookup(lambda: client.get_registered_model(stale.name))
        if again is None or again.tags.get(HOLDER_TAG) != stale.tags.get(HOLDER_TAG):
            return again is None
        say(f"{kind.step}: taking over the stale {kind.called} {stale.name} of {describe_holder(stale)}")
        lookup(lambda: client.delete_registered_model(stale.name))
        return True
    finally:
        lookup(lambda: client.delete_registered_model(ticket.lock))


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_process(holder: str) -> tuple[str | None, int | None]:
    parts = holder.split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return None, None
    return parts[0], int(parts[1])


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(lock: RegisteredModel) -> str:
    holder = lock.tags.get(HOLDER_TAG, "an unknown holder")
    since = datetime.fromtimestamp(lock.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
    return f"{holder} since {since}"


@contextmanager
def sqlite_run_lock(uri: str, run: str) -> Iterator[None]:
    """A whole run's hold on its store, when that store is an sqlite file; other stores take
    several runs at once and need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with store_run_lock(Path(uri.removeprefix("sqlite:///")), run):
        yield


@contextmanager
def store_run_lock(store: Path, run: str) -> Iterator[None]:
    """Hold the run lock of an sqlite store file for the block, or stop at once with one line
    naming the run that holds it. The kernel drops the lock when its process ends, kill included."""
    path = store.with_name(store.name + ".run-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CnnopsError(
                f"another cnnops run ({read_holder(handle)}) is using the sqlite store {store}; sqlite takes one "
                "run at a time: wait for it, or point MLFLOW_TRACKING_URI at a tracking server to run several."
            ) from None
        with holding(handle, {"run": run}):
            yield


@contextmanager
def holding(handle: IO[str], holder: dict[str, str]) -> Iterator[None]:
    """For a file lock just taken: say who holds it (pid, start, `holder`) for waiters to read,
    and on the way out clear that and release it."""
    handle.seek(0)
    handle.truncate()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    handle.write(json.dumps({**holder, "pid": os.getpid(), "started": started}))
    handle.flush()
    try:
        yield
    finally:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)


def read_holder(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        holder = {}
    if not holder:
        return "a run that is starting"
    log = f", log {holder['run']}" if holder.get("run") else ""
    return f"pid {holder.get('pid')}, started {holder.get('started')}{log}"


@contextmanager
def retrain_lock(uri: str, model: str, wait_seconds: float, poll_seconds: float = 5.0) -> Iterator[None]:
    """One retrain of `model` at a time, from its decision to its end: a file lock beside an sqlite
    store (whose single writer the registry lock's polling would contend with), else the
    registry's retrain lock, its lease renewed while the retrain trains. Waits at most
    `wait_seconds`, then stops with one line naming the holder."""
    if uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
        with waited_file_lock(store.with_name(f"{store.name}.retrain-{model}.lock"), model, wait_seconds, poll_seconds):
            yield
        return
    client = MlflowClient(tracking_uri=uri)
    with store_faults():
        lease = acquire_lock(client, model, LEASE_SECONDS, wait_seconds, poll_seconds, RETRAIN)
    try:
        with lease_renewed(lease, uri):
            yield
    finally:
        release_lock(client, lease)


@contextmanager
def lease_renewed(lease: Lease, uri: str) -> Iterator[None]:
    """Renew the lease every quarter lease while the block runs, so a retrain that trains for hours
    keeps its lock; a renewal that fails is said and tried again at the next beat."""
    stop = threading.Event()

    def renew() -> None:
        client = MlflowClient(tracking_uri=uri)
        while not stop.wait(lease.lease_seconds / 4):
            try:
                renew_lease(client, lease)
            except Exception as err:  # noqa: BLE001 - the retrain goes on; the lease has time left
                say(f"{lease.kind.step}: warning: could not renew the {lease.kind.called}: {err}")

    beat = threading.Thread(target=renew, name="cnnops-lease", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=30)


@contextmanager
def waited_file_lock(path: Path, model: str, wait_seconds: float, poll_seconds: float) -> Iterator[None]:
    """Hold a file lock for the block, waiting for it within the bound; the kernel drops it when
    its process ends, kill included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    with path.open("a+") as handle:
        announced = False
        for _ in range(int(wait_seconds / poll_seconds) + 2):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CnnopsError(
                        f"another retrain of {model} ({read_holder(handle)}) still holds {path} after "
                        f"{wait_seconds:.0f} s; try again once it has finished."
                    ) from None
                if not announced:
                    say(f"retrain: waiting for another retrain of {model} ({read_holder(handle)})")
                    announced = True
                time.sleep(poll_seconds)
        else:
            raise CnnopsError(f"could not take {path} within {wait_seconds:.0f} s; try again.")
        with holding(handle, {}):
            yield
