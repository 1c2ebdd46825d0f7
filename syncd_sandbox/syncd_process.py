"""Run the real ``syncd`` CLI as a child process, the way systemd would (dev/test only).

The one helper for every test and benchmark that runs the daemon: start it (again
and again: chaos tests SIGKILL and restart it; every run appends to one log file,
so a test can scan everything the daemon ever wrote), send SIGTERM/SIGKILL at
chosen moments, read its JSON log lines, and scrape its ops listener
(``/metrics``, ``/healthz``, ``/readyz``; parsing in :mod:`syncd_sandbox.metrics`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from syncd.config import Config, load
from syncd_sandbox.metrics import metric_sum, parse_metrics

__all__ = ["SyncdProcess", "metric_sum", "parse_metrics", "run_cli"]


class SyncdProcess:
    """``python -m syncd <command> --config PATH``, restartable any number of times."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        log_path: str | os.PathLike[str] | None = None,
        *,
        command: Sequence[str] = ("run",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.command = list(command)
        self.log_path = Path(log_path) if log_path else self.config_path.parent / "syncd.log"
        self.env = dict(os.environ if env is None else env)
        if env is None:  # never talk to the test runner's own systemd
            self.env.pop("NOTIFY_SOCKET", None)
            self.env.pop("WATCHDOG_USEC", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._log_offset = 0

    @property
    def config(self) -> Config:
        return load(self.config_path, environ={})

    def start(self) -> SyncdProcess:
        if self.running:
            raise RuntimeError("syncd is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", *self.command, "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("syncd is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    alive = running

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took). SIGKILL and fail after ``timeout``."""
        assert self.proc is not None
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Ask it what it waits on before killing it: its tasks (SIGUSR1, a log
            # event) and its threads (SIGUSR2, faulthandler on stderr), into the log.
            for ask in (signal.SIGUSR1, signal.SIGUSR2):
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(ask)
                time.sleep(0.5)
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"syncd did not stop within {timeout}s of SIGTERM:\n{self.tail(120)}"
            ) from None
        return int(code), time.monotonic() - started

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; the exit code (0 when it was not running)."""
        if self.proc is None:
            return 0
        return self.terminate(timeout)[0]

    def kill(self) -> None:
        """SIGKILL, right now: a crash, nothing flushed (no-op if it already exited)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.kills += 1
        self.proc.wait(10)

    def kill_now(self) -> bool:
        """SIGKILL without waiting (safe to call from another thread); True if sent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills += 1
        return True

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code within ``timeout``, or None if it is still running."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def exited_unexpectedly(self) -> int | None:
        """The exit code if the process ended on its own, else None."""
        return None if self.proc is None else self.proc.poll()

    # -- observing -----------------------------------------------------------
    def log_lines(self, *, since_start: bool = False) -> list[dict[str, Any]]:
        """JSON log events written by this process (or every run when not ``since_start``)."""
        if not self.log_path.exists():
            return []
        data = self.log_path.read_bytes()
        if since_start:
            data = data[self._log_offset :]
        out = []
        for raw in data.decode("utf-8", "replace").splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    def events(self, name: str, *, since_start: bool = True) -> list[dict[str, Any]]:
        return [e for e in self.log_lines(since_start=since_start) if e.get("event") == name]

    def ops_url(self) -> str:
        listen = self.config.metrics.listen
        return f"http://{listen}"

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.ops_url() + path, timeout=timeout)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics").text)

    def wait_until(
        self, predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2
    ) -> Any:
        """Poll ``predicate`` until truthy; fail with the log tail if syncd died or time ran out."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None and "run" in self.command:
                raise AssertionError(f"syncd exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                value = predicate()
                if value:
                    return value
            except (httpx.HTTPError, OSError, AssertionError) as exc:
                last_exc = exc
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout}s (last error: {last_exc!r})\n{self.tail()}"
        )

    def wait_metric(
        self, name: str, expected: float, timeout: float = 10.0, **labels: str
    ) -> dict[str, float]:
        """Until the sum of ``name{labels}`` equals ``expected``; returns that scrape.

        For the gauges syncd reads from its store on a timer (dead letters, paintings
        without a thumbnail, parked documents): they trail the work by up to that period,
        so a test that reads them once right after ``wait_idle`` races the timer.
        """
        seen: list[float] = []

        def reached() -> dict[str, float] | None:
            scrape = self.metrics()
            seen.append(metric_sum(scrape, name, **labels))
            return scrape if seen[-1] == expected else None

        try:
            result: dict[str, float] = self.wait_until(reached, timeout)
        except AssertionError as exc:
            last = seen[-1] if seen else "no scrape"
            raise AssertionError(
                f"{name}{labels} stayed {last}, expected {expected}: {exc}"
            ) from None
        return result

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200 (stream open, lag under the threshold)."""
        self.wait_until(lambda: self.get("/readyz").status_code == 200, timeout)

    def wait_idle(self, timeout: float = 60.0) -> dict[str, float]:
        """Until nothing is in flight (``syncd_queue_depth{stage="source"} == 0``) twice in a row."""

        def idle() -> dict[str, float] | None:
            first = self.metrics()
            if metric_sum(first, "syncd_queue_depth", stage="source") != 0:
                return None
            time.sleep(0.3)
            second = self.metrics()
            return second if metric_sum(second, "syncd_queue_depth", stage="source") == 0 else None

        result: dict[str, float] = self.wait_until(idle, timeout)
        return result

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = 20.0) -> bool:
        """Until ``needle`` appears in the log (False if the process exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            if not self.running:
                return False
            time.sleep(0.05)
        return False

    def __enter__(self) -> SyncdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            try:
                self.stop(15)
            except AssertionError:
                pass  # it was killed


def run_cli(
    config_path: str | os.PathLike[str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot ``syncd`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
