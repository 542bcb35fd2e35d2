"""The suite's configuration: its fixtures come from `support.fixtures`; its helpers are imported
by name from the `support` modules. The hook below keeps the shared champion out of the fast loop
and the Docker tests on one xdist worker."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["support.fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared champion trains for 12 epochs: a test that uses it is marked slow (or server or
    browser), so that `make test-fast` never pays for it. Tests that need the Docker daemon share
    one xdist group: under `--dist loadgroup` they run one after another on one worker, so two
    image builds never compete for the daemon and its cache."""
    unmarked = [
        item.nodeid
        for item in items
        if "champion" in getattr(item, "fixturenames", ())
        and not any(item.get_closest_marker(name) for name in ("slow", "server", "browser"))
    ]
    if unmarked:
        raise pytest.UsageError("mark these slow, they use the shared champion: " + ", ".join(unmarked))
    for item in items:
        if item.get_closest_marker("containers"):
            item.add_marker(pytest.mark.xdist_group("docker"))
