"""``syncd run`` as a real child process: started, SIGKILLed, restarted, stopped.

Chaos tests need the daemon in its own process (a ``SIGKILL`` must not take the
test with it, and nothing in memory may survive a kill). Every run appends to
one log file, so a test can scan everything the daemon ever wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


class SyncdProcess:
    """One ``python -m syncd run --config PATH``; restartable any number of times."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("syncd is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> SyncdProcess:
        if self.running:
            raise RuntimeError("syncd is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        env = dict(os.environ if self.env is None else self.env)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.starts += 1
        return self

    def kill(self) -> None:
        """SIGKILL, right now (no-op if it already exited)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.kills += 1
        self.proc.wait(10)
        self._reap()

    def kill_now(self) -> bool:
        """SIGKILL without waiting (safe to call from another thread); True if sent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._reap()
                raise RuntimeError(f"syncd did not stop within {timeout}s of SIGTERM") from None
        code = int(self.proc.returncode)
        self._reap()
        return code

    def wait_exit(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def exited_unexpectedly(self) -> int | None:
        """The exit code if the process ended on its own, else None."""
        if self.proc is None:
            return None
        return self.proc.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            if not self.running:
                return False
            time.sleep(0.05)
        return False
