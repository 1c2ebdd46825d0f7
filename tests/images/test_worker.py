"""The boxed worker processes (syncd/images/worker.py): limits, kills, replacement."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import types
from collections.abc import Iterator

import pytest

from syncd.images.errors import ImageWorkerError, ThumbnailError, TransientImageError
from syncd.images.structure import StructureLimits
from syncd.images.thumbnail import ThumbnailPool
from syncd.images.worker import Payload, WorkerPool
from syncd_sandbox import hostile_images

from . import workerjobs
from .helpers import assert_valid_thumbnail, encode, gradient

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow

PNG = encode(gradient(300, 200))


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(1, memory_mb=256, cpu_seconds=1) as p:
        yield p


def test_a_worker_is_boxed_and_gets_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_MONGO_URI", "mongodb://user:secret@db/")
    with WorkerPool(1, memory_mb=300) as pool:
        seen = pool.call(workerjobs.box, PNG, {})
    assert seen["address_space"] == (300 << 20, 300 << 20)
    assert seen["core"] == (0, 0)
    assert seen["sigint"] is True
    assert not [k for k in seen["environ"] if k.startswith("SYNCD")]
    assert "secret" not in repr(seen["environ"])
    assert (seen["size"], seen["head"]) == (len(PNG), PNG[:16])


def test_bytes_reach_the_worker_a_chunk_at_a_time_and_payloads_are_closed(
    pool: WorkerPool,
) -> None:
    data = os.urandom(3 * (1 << 20) + 5)
    payload = Payload()
    for i in range(0, len(data), 65536):
        payload.write(data[i : i + 65536])
    seen = pool.call(workerjobs.box, payload, {})
    assert seen["size"] == len(data) and seen["head"] == data[:16]
    assert payload.closed
    assert pool.call(len, data, {}) == len(data)


def test_over_the_memory_limit_the_image_fails_and_the_worker_is_replaced(
    pool: WorkerPool,
) -> None:
    first = pool.call(workerjobs.pid, b"", {})
    with pytest.raises(ImageWorkerError) as info:
        pool.call(workerjobs.allocate, b"", {"mb": 1024})
    assert info.value.reason == "image_memory_limit" and info.value.permanent
    assert pool.call(workerjobs.pid, b"", {}) != first  # a fresh worker
    assert pool.call(workerjobs.allocate, b"", {"mb": 64}) == 64 << 20
    assert pool.failures == {"image_memory_limit": 1}


def test_a_cpu_hog_is_killed_at_its_limit(pool: WorkerPool) -> None:
    first = pool.call(workerjobs.pid, b"", {})
    started = time.monotonic()
    with pytest.raises(ImageWorkerError) as info:
        pool.call(workerjobs.spin, b"", {"seconds": 30})
    elapsed = time.monotonic() - started
    assert info.value.reason == "image_cpu_limit" and info.value.permanent
    # The kernel's SIGXCPU came at the 1 s soft limit (a second of granularity), not at 30 s.
    print(f"cpu hog killed after {elapsed:.2f} s")
    assert elapsed < 15
    assert pool.call(workerjobs.pid, b"", {}) != first
    assert pool.call(workerjobs.spin, b"", {"seconds": 0.2}) >= 0.2  # the limit is per job


def test_a_crash_is_tried_once_more_on_a_fresh_worker(pool: WorkerPool) -> None:
    pool.call(workerjobs.pid, b"", {})
    started = pool.started
    with pytest.raises(ImageWorkerError) as info:
        pool.call(workerjobs.die, b"", {"signum": signal.SIGSEGV})
    assert info.value.reason == "image_worker_crashed" and info.value.permanent
    assert "-11" in str(info.value)
    assert pool.started == started + 1  # the retry's worker (the next one starts lazily)
    assert pool.call(len, b"abc", {}) == 3


def test_a_worker_that_does_not_answer_is_killed_as_transient() -> None:
    with WorkerPool(1, wall_seconds=0.5) as pool:
        with pytest.raises(TransientImageError) as info:
            pool.call(workerjobs.nap, b"", {"seconds": 30})
        assert info.value.reason == "image_worker_timeout" and not info.value.permanent
        assert pool.call(len, b"ok", {}) == 2


async def test_a_dying_worker_takes_no_other_job_down() -> None:
    """Unlike ProcessPoolExecutor, where one dead worker breaks every pending future."""
    with WorkerPool(2, cpu_seconds=1) as pool:
        jobs = [pool.run(workerjobs.spin, b"", seconds=0.05) for _ in range(6)]
        jobs.insert(2, pool.run(workerjobs.die, b"", signum=signal.SIGKILL))
        jobs.insert(4, pool.run(workerjobs.spin, b"", seconds=30))
        results = await asyncio.gather(*jobs, return_exceptions=True)
    failed = {i: r.reason for i, r in enumerate(results) if isinstance(r, ImageWorkerError)}
    assert failed == {2: "image_worker_crashed", 4: "image_cpu_limit"}
    assert all(isinstance(r, float) for i, r in enumerate(results) if i not in failed)


def test_a_real_scan_bomb_past_the_structural_limit_is_killed_by_the_cpu_limit() -> None:
    """With the scan limit lifted, the progressive-JPEG scan bomb (90 s of CPU before)
    is stopped by the box: the worker is killed at 1 s of CPU and replaced."""
    bomb = hostile_images.progressive_scan_bomb()
    lifted = StructureLimits(jpeg_max_scans=10**7, jpeg_max_markers=10**7)
    with ThumbnailPool(1, cpu_seconds=1, limits=lifted) as pool:
        started = time.monotonic()
        with pytest.raises(ImageWorkerError) as info:
            asyncio.run(pool.make(bomb))
        elapsed = time.monotonic() - started
        print(f"scan bomb: worker killed after {elapsed:.2f} s")
        assert info.value.reason == "image_cpu_limit"
        assert elapsed < 15
        assert_valid_thumbnail(asyncio.run(pool.make(PNG)), (300, 200))
        assert pool.worker_pool.started == 2


def test_errors_keep_their_class_and_reason_across_the_boundary(pool: WorkerPool) -> None:
    with pytest.raises(ThumbnailError) as info:
        pool.call(workerjobs.thumbnail_and_peak, b"GIF89a" + b"\0" * 20, {})
    assert info.value.reason in ("image_corrupt", "not_an_image")
    with pytest.raises(ImageWorkerError) as worker_info:
        pool.call(workerjobs.allocate, b"", {"mb": "x"})  # a TypeError inside the job
    assert worker_info.value.reason == "image_worker_error"
    assert "TypeError" in str(worker_info.value)


def test_a_closed_pool_refuses_work_and_leaves_no_worker(pool: WorkerPool) -> None:
    pool.call(len, b"x", {})
    processes = [w.process for w in pool._workers if w.process is not None]
    assert processes
    pool.close()
    assert all(p.poll() is not None for p in processes)
    with pytest.raises(TransientImageError) as info:
        asyncio.run(pool.run(len, b"x"))
    assert info.value.reason == "image_pool_closed"


def test_a_job_the_worker_cannot_load_is_an_answer_not_a_death(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghost = types.ModuleType("ghost_jobs")  # exists here, not in the worker

    def job(data: bytes) -> int:
        return 1

    job.__module__, job.__qualname__ = ghost.__name__, "job"
    ghost.job = job  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    first = pool.call(workerjobs.pid, b"", {})
    with pytest.raises(ImageWorkerError) as info:
        pool.call(job, b"payload", {})
    assert info.value.reason == "image_worker_error" and "cannot load the job" in str(info.value)
    assert pool.call(workerjobs.pid, b"", {}) == first  # the same worker carries on


def test_a_worker_that_cannot_start_is_transient_not_the_images_fault(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(TransientImageError) as info:
        pool.call(len, b"abc", {})
    assert info.value.reason == "image_worker_unavailable"
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(TransientImageError) as info:
        pool.call(len, b"abc", {})
    assert info.value.reason == "image_worker_unavailable"
    monkeypatch.undo()
    assert pool.call(len, b"abc", {}) == 3


def test_a_worker_loads_pillow_not_the_daemon(pool: WorkerPool) -> None:
    names = ["PIL.Image", "syncd.images.render", "httpx", "asyncio", "pymongo", "syncd.writer"]
    assert pool.call(workerjobs.loaded, b"", {"names": names}) == [
        "PIL.Image",
        "syncd.images.render",
    ]


def test_the_package_names_load_on_first_use() -> None:
    import syncd.images as package

    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018
