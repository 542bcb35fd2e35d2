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
    unit tests train for a few steps at most and start no server.

    `make test` runs with `--dist loadfile`: each file's tests run together, in order, on one xdist
    worker, so a module-scoped fixture (a trained model, a running server) is built once; every
    test that needs the Docker daemon is in tests/e2e/test_containers.py, so two image builds never
    compete for it."""
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
    docker = Path(__file__).parent / "e2e" / "test_containers.py"
    scattered = [item.nodeid for item in items if item.get_closest_marker("containers") and item.path != docker]
    if scattered:
        raise pytest.UsageError(
            f"tests that need the Docker daemon share one xdist worker in {docker.name}: " + ", ".join(scattered)
        )
