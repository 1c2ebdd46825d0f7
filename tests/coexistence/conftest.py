"""Fixtures for this suite: a rig (world + syncd child process, no fault proxy)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from syncd_sandbox.rig import Rig
from syncd_sandbox.tally import pytest_terminal_summary  # noqa: F401  (prints the counts)
from syncd_sandbox.testing import SandboxWorld


@pytest.fixture
def rig(world: SandboxWorld) -> Iterator[Rig]:
    r = Rig(world, proxy=False, overrides={"mongo": {"max_await_ms": 200}})
    try:
        yield r
    finally:
        r.close()
