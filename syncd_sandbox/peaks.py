"""Peak memory of a process and of its children, sampled from /proc (Linux; dev/test only).

``VmHWM`` is a process's own peak resident set over its life, so one sample just
before a process ends is enough -- but a child that comes and goes between two
samples is missed, hence a short interval. Children are found through
``/proc/PID/task/*/children`` (every thread's), recursively.

    with ProcessPeaks(syncd_pid) as peaks:
        ...
    peaks.peak_kb(syncd_pid), peaks.children()  # {pid: (command, peak kB)}
"""

from __future__ import annotations

import threading
from pathlib import Path


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/PID/status (``VmHWM``, ``VmRSS``), or None when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


class ProcessPeaks:
    """Samples ``VmHWM`` of ``pid`` and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self._peaks: dict[int, int] = {}
        self._commands: dict[int, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        todo, seen = [self.pid], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            hwm = status_kb(pid, "VmHWM")
            if hwm is None:
                continue
            with self._lock:
                if pid not in self._commands:
                    self._commands[pid] = command_of(pid)
                self._peaks[pid] = max(self._peaks.get(pid, 0), hwm)
            todo.extend(children_of(pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> ProcessPeaks:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="peaks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sample()

    def peak_kb(self, pid: int | None = None) -> int:
        with self._lock:
            return self._peaks.get(self.pid if pid is None else pid, 0)

    def children(self) -> dict[int, tuple[str, int]]:
        """Every descendant seen: pid -> (command line, peak kB)."""
        with self._lock:
            return {p: (self._commands[p], kb) for p, kb in self._peaks.items() if p != self.pid}

    def __enter__(self) -> ProcessPeaks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
