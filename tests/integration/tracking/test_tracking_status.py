"""Faults are not absences: a store that is unreachable, locked or not a database is one line that
names it and says it is a fault of the store, never "no such model"; only MLflow's "not found"
reads as absent. Real stores throughout: a port nothing listens on, a sqlite file another process
holds locked, a file that is not a database."""

from __future__ import annotations

import sqlite3

import pytest
from support.stores import assert_store_fault

from cnnops.core.errors import CnnopsError
from cnnops.promotion.status import describe_registry
from cnnops.tracking.stores import use_tracking_store


@pytest.mark.slow
def test_a_locked_store_is_a_fault_and_a_missing_model_is_not(state_home):
    """The embedded store, held by another process's exclusive lock: MLflow waits out its busy
    timeout (20 s), then the read is a fault. Unlocked, the same read finds no such model."""
    uri = use_tracking_store()
    with pytest.raises(CnnopsError, match=r"^no registered model named 'cnnops-animals' in sqlite:///"):
        describe_registry("cnnops-animals")  # creates the store's tables; the model is absent
    holder = sqlite3.connect(uri.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(CnnopsError) as raised:
            describe_registry("cnnops-animals")
        assert_store_fault(raised, uri)
        assert "database is locked" in str(raised.value)
    finally:
        holder.close()
    assert describe_registry().models == []
