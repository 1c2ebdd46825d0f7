"""Run processes and measure them: wall time, CPU, peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procstat import status_kb


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    output: str


def run_measured(args: list[str], log_path: Path, timeout: float = 3600.0) -> Measured:
    """Run ``python -m ...args`` to completion: wall time, CPU (``wait4``), peak RSS (VmHWM)."""
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
        hwm_kb = 0
        while True:
            # Peak RSS from the child's own VmHWM, sampled while it runs: wait4's
            # ru_maxrss is not usable, because a child created by fork/vfork inherits
            # the parent's high-water mark (a 300 MB parent makes `python -c pass`
            # report 311 MB), and this harness holds the data sets in memory.
            hwm_kb = max(hwm_kb, status_kb(proc.pid, "VmHWM") or 0)
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
        peak_rss_mb=hwm_kb / 1024.0,
        output=log_path.read_text(errors="replace"),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    return env
