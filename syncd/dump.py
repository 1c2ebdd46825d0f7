"""What a running daemon is waiting on, on request: ``kill -USR1 <pid>``.

A daemon that does not stop, or stops making progress, is asked rather than
guessed at: SIGUSR1 logs one ``tasks_dump`` event naming every asyncio task and
the line each one waits at (from the event loop, so only while the loop turns),
and SIGUSR2 makes :mod:`faulthandler` write every thread's Python stack to
stderr straight from the signal handler (answers even with the loop blocked;
systemd's journal and the tests' log file both keep stderr).
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys

import structlog

log = structlog.get_logger("syncd.dump")

#: Frames logged per task: the innermost ones of its await chain (where it waits).
FRAMES = 8


def await_chain(task: asyncio.Task[object]) -> list[str]:
    """``file:line function`` of every coroutine ``task`` is suspended in, outermost
    first, followed down ``cr_await`` (``Task.get_stack`` stops at the task's own
    coroutine, which says only that it awaits something)."""
    lines: list[str] = []
    node: object = task.get_coro()
    while node is not None and len(lines) < 64:
        frame = getattr(node, "cr_frame", None) or getattr(node, "gi_frame", None)
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        node = getattr(node, "cr_await", None) or getattr(node, "gi_yieldfrom", None)
    return lines


def task_stacks() -> list[dict[str, object]]:
    """Every task of the running loop: its name and the innermost lines it waits at."""
    out: list[dict[str, object]] = []
    for task in asyncio.all_tasks():
        chain = await_chain(task)
        out.append({"task": task.get_name(), "at": chain[-FRAMES:]})
    return sorted(out, key=lambda t: str(t["task"]))


def log_tasks() -> None:
    log.warning("tasks_dump", tasks=task_stacks())


def install(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1: the tasks' stacks as a log event; SIGUSR2: every thread's stack."""
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    loop.remove_signal_handler(signal.SIGUSR1)
    faulthandler.unregister(signal.SIGUSR2)
