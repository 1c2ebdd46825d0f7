"""Run processes and measure them: wall time, CPU, peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    output: str


def run_measured(args: list[str], log_path: Path, timeout: float = 3600.0) -> Measured:
    """Run ``python -m ...args`` to completion; peak RSS and CPU from ``wait4``'s rusage."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", *args]
    profile_dir = os.environ.get("BENCH_PYSPY")
    if profile_dir:
        # Profiling run (figures then include py-spy's own process, not the child's RSS).
        out = Path(profile_dir) / f"{log_path.stem}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = ["py-spy", "record", "--format", "raw", "--rate", "200", "-o", str(out), "--", *argv]
        argv[0] = str(Path(sys.executable).with_name("py-spy"))
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env())
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{args} did not finish within {timeout}s")
            time.sleep(0.02)
        wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024.0,
        output=log_path.read_text(errors="replace"),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    return env
