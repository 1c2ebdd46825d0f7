from collections.abc import Iterator

import pytest

from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.testing import SandboxWorld


@pytest.fixture
def syncd(world: SandboxWorld) -> Iterator[SyncdProcess]:
    """The real daemon for this world (not started: call ``.start()``); stopped at the end."""
    world.write_config({"mongo": {"max_await_ms": 100}})
    proc = SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log")
    try:
        yield proc
    finally:
        if proc.alive:
            proc.kill()
