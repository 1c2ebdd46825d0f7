"""Jobs for the worker tests. They run inside the worker processes, which import
them by name (the pool gives its workers the test process's ``sys.path``)."""

from __future__ import annotations

import os
import re
import resource
import signal
import time
from typing import Any

from syncd.images.render import Thumbnail, make_thumbnail


def allocate(data: bytes, *, mb: int) -> int:
    block = bytearray(mb << 20)
    return len(block)


def spin(data: bytes, *, seconds: float) -> float:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass
    return time.process_time() - started


def die(data: bytes, *, signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(5)


def nap(data: bytes, *, seconds: float) -> None:
    time.sleep(seconds)


def pid(data: bytes) -> int:
    return os.getpid()


def box(data: bytes) -> dict[str, Any]:
    return {
        "address_space": resource.getrlimit(resource.RLIMIT_AS),
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "environ": dict(os.environ),
        "sigint": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "size": len(data),
        "head": data[:16],
    }


def thumbnail_and_peak(data: bytes, **kwargs: Any) -> tuple[Thumbnail, int]:
    """make_thumbnail, and the worker's peak resident memory (bytes) after it. (Not
    ``ru_maxrss``: Linux keeps the forking parent's peak in it across ``exec``.)"""
    thumb = make_thumbnail(data, **kwargs)
    with open("/proc/self/status") as f:
        found = re.search(r"VmHWM:\s+(\d+)", f.read())
    assert found is not None
    return thumb, int(found.group(1)) * 1024


def loaded(data: bytes, *, names: list[str]) -> list[str]:
    """Which of ``names`` this worker has imported."""
    import sys

    return [n for n in names if n in sys.modules]
