"""Shared fixtures (the sandbox world: docs/sandbox.md, syncd_sandbox/testing.py) and the
two tiers: a test that starts a process is ``slow``; ``pytest -m "not slow"`` is the
fast tier, and a fast test that starts a process fails, so the marker cannot be
forgotten."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from syncd_sandbox.testing import (  # noqa: F401  (pytest finds fixtures and hooks by name)
    make_world,
    pytest_configure,
    rate_limited_pds,
    rate_limited_pds_process,
    rate_limited_world,
    sandbox_mongo,
    sandbox_mongo_client,
    sandbox_pds,
    sandbox_pds_process,
    short_window_pds,
    world,
)

# No test fails on a timing: Hypothesis's per-example deadline (200 ms) would, on a
# loaded 2-core machine (scripts/test.sh runs the fast tier beside the npm build).
settings.register_profile("syncd", deadline=None)
settings.load_profile("syncd")

#: Fixtures that start processes (the PDS, the MongoDB sandbox, syncd): a test using
#: one is slow whatever its module says.
PROCESS_FIXTURES = frozenset(
    {
        "make_world",
        "world",
        "rate_limited_world",
        "sandbox_pds_process",
        "sandbox_pds",
        "rate_limited_pds_process",
        "rate_limited_pds",
        "short_window_pds",
        "sandbox_mongo",
        "sandbox_mongo_client",
        "sandbox_process",
        "backend",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_process_in_the_fast_tier(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if request.node.get_closest_marker("slow") is None:
        import _posixsubprocess
        import os
        import subprocess

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(
                f"{request.node.nodeid} starts a process: mark it slow (pytest.mark.slow)"
            )

        # Every way a process starts here: subprocess (its own reference to fork_exec,
        # or posix_spawn), multiprocessing's spawn, and a bare fork.
        monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse)
        monkeypatch.setattr(subprocess, "_fork_exec", refuse, raising=False)
        monkeypatch.setattr(subprocess, "_USE_POSIX_SPAWN", False, raising=False)
        monkeypatch.setattr(os, "fork", refuse)
    yield
