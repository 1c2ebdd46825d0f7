"""Thumbnails off the event loop: :class:`ThumbnailPool` runs
:func:`~syncd.images.render.make_thumbnail` in boxed worker processes
(:mod:`syncd.images.worker`), and :func:`limits_of` reads the structural limits
from ``[images]``. The thumbnail itself (what it looks like) is ``render.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

from syncd.images.render import INPUT_FORMATS, Thumbnail, make_thumbnail
from syncd.images.settings import LEXICON_THUMBNAIL_MAX_BYTES, ImageSettings
from syncd.images.structure import PLATFORM_THUMBNAIL_SIDE, StructureLimits
from syncd.images.worker import Payload, WorkerPool


def limits_of(settings: ImageSettings) -> StructureLimits:
    """The structural limits configured in ``[images]``."""
    return StructureLimits(
        max_pixels=settings.max_pixels,
        max_chunks=settings.max_chunks,
        max_frames=settings.max_frames,
        gif_max_blocks=settings.gif_max_blocks,
        jpeg_max_markers=settings.jpeg_max_markers,
        jpeg_max_scans=settings.jpeg_max_scans,
    )


class LoopSemaphore:
    """An ``asyncio.Semaphore`` per event loop, so one object can serve several loops
    in turn (``asyncio.run`` twice, test fixtures) without "bound to a different loop"."""

    def __init__(self, value: int) -> None:
        self.value = value
        self._by_loop: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._by_loop.get(loop)
        if sem is None:
            self._by_loop = {lp: s for lp, s in self._by_loop.items() if not lp.is_closed()}
            sem = self._by_loop[loop] = asyncio.Semaphore(self.value)
        return sem

    async def __aenter__(self) -> None:
        await self._get().acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._get().release()


class ThumbnailPool:
    """Makes thumbnails in boxed worker processes (:class:`~syncd.images.worker.WorkerPool`).

    Each worker is a separate process (forkserver, never a fork of the daemon)
    with an address-space limit of ``memory_mb`` and a CPU-time limit of
    ``cpu_seconds`` per image; one that overruns is killed and replaced, and the
    image fails with ``image_memory_limit`` / ``image_cpu_limit``. Images travel
    to a worker through a pipe, a megabyte at a time.

    ``admit()`` bounds the images in preparation (being fetched, or fetched and
    waiting for a worker) to ``max_jobs`` (default 4 per worker).
    """

    def __init__(
        self,
        workers: int = 0,
        *,
        side: int = PLATFORM_THUMBNAIL_SIDE,
        max_bytes: int = LEXICON_THUMBNAIL_MAX_BYTES,
        limits: StructureLimits | None = None,
        memory_mb: int = 512,
        cpu_seconds: float = 5.0,
        max_jobs: int = 0,
        wall_seconds: float | None = None,
    ) -> None:
        self._workers = WorkerPool(
            workers, memory_mb=memory_mb, cpu_seconds=cpu_seconds, wall_seconds=wall_seconds
        )
        self.workers = self._workers.size
        self.max_jobs = max_jobs or 4 * self.workers
        self._jobs = LoopSemaphore(self.max_jobs)
        self.side = side
        self.max_bytes = max_bytes
        self.limits = limits or StructureLimits()

    @classmethod
    def from_settings(cls, settings: ImageSettings) -> ThumbnailPool:
        return cls(
            settings.workers,
            max_bytes=settings.thumbnail_max_bytes,
            limits=limits_of(settings),
            memory_mb=settings.worker_memory_mb,
            cpu_seconds=settings.worker_cpu_seconds,
        )

    @property
    def worker_pool(self) -> WorkerPool:
        return self._workers

    def admit(self) -> LoopSemaphore:
        """``async with pool.admit():`` around fetching and shrinking one image."""
        return self._jobs

    async def make(
        self,
        data: bytes | Payload,
        *,
        side: int | None = None,
        max_bytes: int | None = None,
        limits: StructureLimits | None = None,
    ) -> Thumbnail:
        """:func:`make_thumbnail` in a worker process; limits default to the pool's.

        ``data`` is bytes or a :class:`~syncd.images.worker.Payload` (a fetched
        body), which this call closes once the worker has it.
        """
        result = await self._workers.run(
            make_thumbnail,
            data,
            side=side or self.side,
            max_bytes=max_bytes or self.max_bytes,
            limits=limits or self.limits,
        )
        assert isinstance(result, Thumbnail)
        return result

    def make_many(self, datas: Iterable[bytes]) -> list[Thumbnail]:
        """Synchronous :meth:`make` for each of ``datas``, in order (bench, tools)."""

        async def all_of() -> list[Thumbnail]:
            return list(await asyncio.gather(*(self.make(d) for d in datas)))

        return asyncio.run(all_of())

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting work and stop the workers (``wait``: let running jobs finish)."""
        self._workers.close(wait=wait)

    def __enter__(self) -> ThumbnailPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "INPUT_FORMATS",
    "LoopSemaphore",
    "StructureLimits",
    "Thumbnail",
    "ThumbnailPool",
    "limits_of",
    "make_thumbnail",
]
