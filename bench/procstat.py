"""Per-process CPU time and memory from /proc (Linux), for the benchmark report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (threads included), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/PID/status (``VmHWM``, ``VmRSS``), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


@dataclass
class CpuMeter:
    """CPU seconds each named process used between ``start()`` and ``stop()``."""

    pids: dict[str, int]

    def __post_init__(self) -> None:
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._start = {n: cpu_seconds(p) or 0.0 for n, p in self.pids.items()}
        return self

    def add(self, name: str, pid: int) -> None:
        """Track a process that starts after ``start()`` (counted from zero)."""
        self.pids[name] = pid
        self._start[name] = 0.0

    def sample(self) -> dict[str, float]:
        out = {}
        for n, p in self.pids.items():
            now = cpu_seconds(p)
            if now is not None:
                out[n] = now - self._start.get(n, 0.0)
                self.used[n] = out[n]
        return out

    def stop(self, extra: dict[str, float] | None = None) -> dict[str, float]:
        self.sample()
        self.wall = time.monotonic() - self._t0
        if extra:
            self.used.update(extra)
        return dict(self.used)

    def report(self) -> dict[str, object]:
        """CPU seconds and share of one core per process over the wall time."""
        wall = self.wall or 1e-9
        return {
            "wall_s": round(self.wall, 2),
            "cpu_s": {n: round(v, 2) for n, v in sorted(self.used.items())},
            "cores": {n: round(v / wall, 2) for n, v in sorted(self.used.items())},
        }
