"""The suite's configuration: its fixtures come from `support.fixtures`; its helpers are imported
by name from the `support` modules. The hook below keeps the shared champion out of the fast loop
and the Docker tests on one xdist worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["support.fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared champion trains for 12 epochs: a test that uses it is marked slow (or server or
    browser), so that `make test-fast` never pays for it. Nothing under tests/unit is marked heavy:
    unit tests train for a few steps at most and start no server. Tests that need the Docker daemon
    share one xdist group: under `--dist loadgroup` they run one after another on one worker, so
    two image builds never compete for the daemon and its cache."""
    unmarked = [
        item.nodeid
        for item in items
        if "champion" in getattr(item, "fixturenames", ())
        and not any(item.get_closest_marker(name) for name in ("slow", "server", "browser"))
    ]
    if unmarked:
        raise pytest.UsageError("mark these slow, they use the shared champion: " + ", ".join(unmarked))
    heavy = ("slow", "pipeline", "containers", "browser", "server")
    unit = Path(__file__).parent / "unit"
    misplaced = [
        item.nodeid
        for item in items
        if item.path.is_relative_to(unit) and any(item.get_closest_marker(name) for name in heavy)
    ]
    if misplaced:
        raise pytest.UsageError("tests/unit trains briefly and starts no server; move these: " + ", ".join(misplaced))
    for item in items:
        if item.get_closest_marker("containers"):
            item.add_marker(pytest.mark.xdist_group("docker"))
