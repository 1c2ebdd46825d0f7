"""Run the real ``syncd`` CLI as a subprocess, the way systemd would (dev/test only).

Tests use it to send SIGTERM/SIGKILL at chosen moments, read its JSON log lines,
and scrape its ops listener (``/metrics``, ``/healthz``, ``/readyz``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from syncd.config import Config, load

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → {"name{labels}": value} (labels as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


class SyncdProcess:
    """``python -m syncd <command> --config PATH`` with logs captured to a file."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        command: Sequence[str] = ("run",),
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.command = list(command)
        self.log_path = Path(log_path) if log_path else self.config_path.parent / "syncd.log"
        self.env = dict(os.environ if env is None else env)
        if env is None:
            self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def config(self) -> Config:
        return load(self.config_path, environ={})

    def start(self) -> SyncdProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", *self.command, "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
            raise AssertionError(f"syncd did not stop within {timeout}s of SIGTERM") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

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

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> SyncdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


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
