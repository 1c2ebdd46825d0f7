"""Boxed worker processes for image work the daemon must not do itself.

Parsing and decoding untrusted images can cost gigabytes and minutes (a 25 MB
GIF of one-byte comment blocks took the daemon from 68 MB to 1.27 GB; a 2.5 MB
progressive JPEG held a thread for 90 s). :class:`WorkerPool` runs such work in
child processes, each in a box:

* an address-space limit (``RLIMIT_AS``, ``memory_mb``): an allocation past it
  fails inside the worker, which answers ``image_memory_limit`` and exits;
* a CPU-time limit per job (``RLIMIT_CPU`` re-armed before each job to the
  CPU used so far + ``cpu_seconds``): the kernel kills a worker that overruns
  (SIGXCPU) and the job fails with ``image_cpu_limit``;
* a wall-clock limit in the parent (``wall_seconds``): a worker that does not
  answer in time (a stopped process, an overloaded host) is killed, and the job
  fails as transient (``image_worker_timeout``).

A dead worker is replaced by a fresh one on its next job; the others carry on
(unlike ``ProcessPoolExecutor``, where one dead worker breaks every pending
future). A job whose worker died without saying why (or ran out of memory after
earlier jobs) is tried once more on a fresh worker before it fails.

Each worker is a fresh interpreter (``python -I -m syncd.images.workerproc``,
spawned: the daemon, which has threads, is never forked), with an environment
of its own (nothing secret is passed) and one end of a socket pair. It is used
by one thread of the pool at a time; data reach it a megabyte at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

from syncd.images.errors import ImageError, ImageWorkerError, TransientImageError

#: Bytes per message on the pipe to a worker, and what a fetched body keeps in memory
#: before it spills into an anonymous temporary file.
CHUNK_BYTES = 1 << 20
#: A worker is retired after this many jobs (a long-lived allocator fragments).
JOBS_PER_WORKER = 500
#: How long a new worker may take to load Pillow and say it is ready.
STARTUP_SECONDS = 30.0
#: What a worker inherits of the daemon's environment (secrets stay behind).
_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT")


class Payload:
    """Bytes on their way to a worker: in memory up to ``spool_bytes``, then in an
    anonymous temporary file (gone when closed or when the process dies). The
    daemon writes a fetched body here instead of holding it whole."""

    def __init__(self, spool_bytes: int = CHUNK_BYTES) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=spool_bytes)
        self.size = 0
        self._head = b""

    def write(self, chunk: bytes) -> None:
        if len(self._head) < 16:
            self._head = (self._head + chunk[:16])[:16]
        self._file.write(chunk)
        self.size += len(chunk)

    @property
    def head(self) -> bytes:
        """The first (up to) 16 bytes, for a magic-number check."""
        return self._head

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(size):
            yield chunk

    def getvalue(self) -> bytes:
        return b"".join(self.chunks())

    @property
    def closed(self) -> bool:
        return bool(self._file.closed)

    def close(self) -> None:
        self._file.close()


def _chunks(data: bytes | Payload) -> Iterator[bytes | memoryview]:
    if isinstance(data, Payload):
        yield from data.chunks()
        return
    view = memoryview(data)
    for start in range(0, len(view), CHUNK_BYTES):
        yield view[start : start + CHUNK_BYTES]


# -- the parent's side -----------------------------------------------------------


class _Worker:
    """One worker process and its socket; used by one thread at a time."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.jobs = 0

    def ensure_started(self) -> Connection:
        if self.process is None or self.conn is None or self.jobs >= JOBS_PER_WORKER:
            self.stop(graceful=True)
            pool = self.pool
            try:
                ours, theirs = socket.socketpair()
            except OSError as exc:
                raise TransientImageError(
                    f"cannot start an image worker: {exc}", reason="image_worker_unavailable"
                ) from None
            with ours, theirs:
                process = self._spawn(theirs)
                conn = Connection(ours.detach())
            self.process, self.conn, self.jobs = process, conn, 0
            pool.started += 1
            try:
                conn.send(list(sys.path))
                ready = conn.poll(STARTUP_SECONDS) and conn.recv() == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                # Not the image's fault (an environment that cannot start Python with
                # Pillow, a host out of processes): transient, the painting is retried.
                code = self.stop(exited=True)
                raise TransientImageError(
                    f"an image worker did not start (exit code {code})",
                    reason="image_worker_unavailable",
                )
        assert self.conn is not None
        return self.conn

    def _spawn(self, theirs: socket.socket) -> subprocess.Popen[bytes]:
        pool = self.pool
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "syncd.images.workerproc",
                    str(theirs.fileno()),
                    str(pool.memory_bytes),
                    repr(pool.cpu_seconds),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k in _ENV_KEYS},
                close_fds=True,
            )
        except OSError as exc:  # out of processes, memory or file descriptors
            raise TransientImageError(
                f"cannot start an image worker: {exc}", reason="image_worker_unavailable"
            ) from None

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def stop(self, *, graceful: bool = False, exited: bool = False) -> int | None:
        """Stop the process (asking it to exit first when ``graceful``; giving it a
        moment to be reaped when it has ``exited``); its exit code (negative: the
        signal that killed it)."""
        process, conn = self.process, self.conn
        self.process = self.conn = None
        if process is None:
            return None
        if graceful and conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        if graceful or exited:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(2)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = process.wait()
        if conn is not None:
            conn.close()
        return code


class WorkerPool:
    """``size`` boxed worker processes (0 = one per CPU) and one thread per worker
    that talks to it. :meth:`run` (async) and :meth:`call` (blocking) run
    ``fn(data, **kwargs)`` in a worker; ``fn`` must be importable by name.

    ``memory_mb`` is each worker's address-space limit, ``cpu_seconds`` its CPU
    time per job; ``wall_seconds`` (default ``max(30, 6 x cpu_seconds)``) how long
    the parent waits for an answer before it kills the worker.
    """

    def __init__(
        self,
        size: int = 0,
        *,
        memory_mb: int = 512,
        cpu_seconds: float = 5.0,
        wall_seconds: float | None = None,
    ) -> None:
        if memory_mb < 64 or cpu_seconds <= 0:
            raise ValueError(f"invalid worker limits: {memory_mb} MB, {cpu_seconds} s")
        self.size = size or (os.cpu_count() or 1)
        self.memory_bytes = memory_mb << 20
        self.cpu_seconds = cpu_seconds
        self.wall_seconds = wall_seconds or max(30.0, 6 * cpu_seconds)
        self._workers = [_Worker(self, i) for i in range(self.size)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="image-worker")
        self._lock = threading.Lock()
        self._closed = False
        #: Workers started so far, and how each job that did not come back ended.
        self.started = 0
        self.failures: dict[str, int] = {}

    async def run(self, fn: Callable[..., Any], data: bytes | Payload, **kwargs: Any) -> Any:
        """``fn(data, **kwargs)`` in a worker, off the event loop. A :class:`Payload`
        is closed by the pool once the job is done (also when this call was
        cancelled while the job ran; cancelled before a thread took it, the file
        goes when the payload is garbage-collected)."""
        loop = asyncio.get_running_loop()
        try:
            if self._closed:
                raise RuntimeError("closed")
            future = loop.run_in_executor(self._threads, self.call, fn, data, kwargs)
        except RuntimeError:  # closed, or the executor shut down meanwhile
            if isinstance(data, Payload):
                data.close()
            raise TransientImageError(
                "the image worker pool is closed", reason="image_pool_closed"
            ) from None
        return await future

    def call(self, fn: Callable[..., Any], data: bytes | Payload, kwargs: dict[str, Any]) -> Any:
        """Blocking :meth:`run` (in the caller's thread)."""
        worker = self._idle.get()
        try:
            fresh = worker.process is None or worker.jobs == 0
            try:
                return self._attempt(worker, fn, data, kwargs)
            except ImageWorkerError as exc:
                # A crash may be the host's doing, and an allocator that served many jobs
                # may be fragmented: once more on a fresh worker (the failed one is gone).
                if exc.reason == "image_worker_crashed" or (
                    exc.reason == "image_memory_limit" and not fresh
                ):
                    return self._attempt(worker, fn, data, kwargs)
                raise
        except ImageError as exc:
            self._count(exc.reason)
            raise
        finally:
            self._idle.put(worker)
            if isinstance(data, Payload):
                data.close()

    def _count(self, reason: str) -> None:
        with self._lock:
            self.failures[reason] = self.failures.get(reason, 0) + 1

    def _attempt(
        self, worker: _Worker, fn: Callable[..., Any], data: bytes | Payload, kwargs: dict[str, Any]
    ) -> Any:
        if self._closed:
            raise TransientImageError("the image worker pool is closed", reason="image_pool_closed")
        conn = worker.ensure_started()
        size = data.size if isinstance(data, Payload) else len(data)
        job = pickle.dumps((fn, kwargs))  # unpickled apart in the worker: a bad job is an answer
        try:
            conn.send((size, job))
            for chunk in _chunks(data):
                conn.send_bytes(chunk)
        except (OSError, ValueError):
            pass  # the worker died or gave up receiving: its answer (if any) says why
        # A worker that dies closes its end of the socket: the connection turns readable.
        ready = wait_ready([conn], timeout=self.wall_seconds)
        if not ready:
            worker.kill()
            worker.stop()
            raise TransientImageError(
                f"the image worker gave no answer within {self.wall_seconds:.0f} s; killed",
                reason="image_worker_timeout",
            )
        reply: tuple[str, Any, bool] | None
        try:
            reply = conn.recv()
        except (EOFError, OSError):
            reply = None
        if reply is None:
            code = worker.stop(exited=True)  # its socket closed: it is dead or dying
            if code == -signal.SIGXCPU:
                raise ImageWorkerError(
                    f"the image took more than {self.cpu_seconds:g} s of CPU; worker killed",
                    reason="image_cpu_limit",
                )
            if self._closed:
                raise TransientImageError(
                    "the image worker pool is closed", reason="image_pool_closed"
                )
            raise ImageWorkerError(
                f"the image worker died (exit code {code}) making this image",
                reason="image_worker_crashed",
            )
        status, value, exiting = reply
        worker.jobs += 1
        if exiting:
            worker.stop(exited=True)
        if status == "ok":
            return value
        raise value

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting work; stop the workers (after running jobs, with ``wait``)."""
        if self._closed:
            return
        self._closed = True
        if wait:
            self._threads.shutdown(wait=True, cancel_futures=True)
            for w in self._workers:
                w.stop(graceful=True)
        else:
            for w in self._workers:
                w.kill()
            self._threads.shutdown(wait=False, cancel_futures=True)
            for w in self._workers:
                w.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
