"""The inside of an image worker process (``python -I -m syncd.images.workerproc FD ...``).

Started by :class:`syncd.images.worker.WorkerPool`, never imported by the daemon
for its own use. It sets ``sys.path`` to the parent's, loads Pillow, boxes
itself (address-space limit, no core files, SIGINT ignored), says ``"ready"``,
then serves jobs on the socket ``FD`` until the socket closes:

    parent -> worker: (size, pickle of (fn, kwargs)), then ``size`` bytes in chunks
    worker -> parent: (status, value, exiting)  # "ok" + result, or "error" + ImageError

Before each job the CPU-time soft limit is set to the CPU used so far plus the
per-job allowance; the kernel kills the worker (SIGXCPU) if the job overruns it.
A ``MemoryError`` (the address-space limit) is answered as
``image_memory_limit``, and the worker exits: its heap is not trusted after it.
"""

from __future__ import annotations

import math
import pickle
import resource
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from syncd.images.errors import ImageError, ImageWorkerError


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arm_cpu(seconds: float) -> None:
    """SIGXCPU (default action: terminate) once this job has used ``seconds`` of CPU.
    Only the soft limit moves, so it can be raised again for the next job."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(_cpu_used() + seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def disarm_cpu() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


def _receive(conn: Connection, size: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = conn.recv_bytes()
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def box(memory_bytes: int) -> None:
    """Limit this process: address space, no core files, SIGINT ignored (the daemon
    handles Ctrl-C, then stops its workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGXCPU kill leaves no core file
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def serve(conn: Connection, memory_bytes: int, cpu_seconds: float) -> None:
    """Answer jobs on ``conn`` until it closes (the process is boxed already)."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        size, blob = job
        reply: tuple[str, Any, bool]
        try:
            data = _receive(conn, size)
            try:
                fn, kwargs = pickle.loads(blob)
            except Exception as exc:  # a job this worker cannot import: say so, carry on
                raise ImageWorkerError(
                    f"cannot load the job: {type(exc).__name__}: {exc}"[:500],
                    reason="image_worker_error",
                ) from None
            arm_cpu(cpu_seconds)
            try:
                reply = ("ok", fn(data, **kwargs), False)
            finally:
                disarm_cpu()
                del data
        except MemoryError:
            reply = (
                "error",
                ImageWorkerError(
                    f"the image needs more than the worker's {memory_bytes >> 20} MB",
                    reason="image_memory_limit",
                ),
                True,
            )
        except ImageError as exc:
            reply = ("error", exc, False)
        except Exception as exc:  # a bug or an unexpected library error: say what it was
            reply = (
                "error",
                ImageWorkerError(f"{type(exc).__name__}: {exc}"[:500], reason="image_worker_error"),
                False,
            )
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
        if reply[2]:
            return


def main(argv: list[str] | None = None) -> None:
    fd, memory_bytes, cpu_seconds = (argv or sys.argv[1:])[:3]
    conn = Connection(int(fd))
    paths = conn.recv()  # the parent's sys.path: jobs name functions it can import
    sys.path[:] = [p for p in paths if isinstance(p, str)]
    from syncd.images import render  # noqa: F401  (load Pillow before the first job)

    box(int(memory_bytes))
    conn.send("ready")
    serve(conn, int(memory_bytes), float(cpu_seconds))


if __name__ == "__main__":
    main()
