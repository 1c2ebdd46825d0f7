"""Run the MongoDB sandbox as a subprocess and wait until it is ready (dev/test only).

Used by the pytest fixtures and by ``syncd-sandbox up``::

    handle = start_sandbox_process(data_dir, port=0, oplog_size=10_000)
    client = MongoClient(handle.uri)
    ...
    handle.stop()      # SIGTERM: flush, exit 0
    handle.kill()      # SIGKILL: simulate a crash
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .server import DEFAULT_OPLOG_SIZE


class SandboxStartError(RuntimeError):
    """The sandbox process exited or did not become ready in time."""


class SandboxProcess:
    """Handle on a running sandbox subprocess."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        info: dict[str, Any],
        data_dir: Path | None,
        ready_file: Path,
        tmp_dir: Path | None,
        log_path: Path | None,
    ) -> None:
        self.proc = proc
        self.info = info
        self.host: str = str(info["host"])
        self.port: int = int(info["port"])
        self.pid: int = int(info["pid"])
        self.uri: str = str(info["uri"])
        self.data_dir = data_dir
        self.ready_file = ready_file
        self.log_path = log_path
        self._tmp_dir = tmp_dir

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _cleanup(self) -> None:
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a clean exit (flushes the journal); return the exit code."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._cleanup()
        return int(self.proc.returncode if self.proc.returncode is not None else -1)

    def kill(self) -> int:
        """SIGKILL (simulated crash); return the exit code."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)
        self._cleanup()
        return int(self.proc.returncode if self.proc.returncode is not None else -1)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SandboxProcess(uri={self.uri!r}, pid={self.pid}, alive={self.alive})"


def start_sandbox_process(
    data_dir: str | Path | None = None,
    port: int = 0,
    oplog_size: int = DEFAULT_OPLOG_SIZE,
    host: str = "127.0.0.1",
    ready_file: str | Path | None = None,
    log_file: str | Path | None = None,
    timeout: float = 30.0,
    extra_args: list[str] | None = None,
    python: str | None = None,
) -> SandboxProcess:
    """Start ``python -m syncd_sandbox.mongo`` and return once it accepts connections.

    ``data_dir=None`` keeps everything in memory. ``port=0`` picks a free port (pass the
    old handle's ``port`` to restart on the same address). Output goes to ``log_file``
    (default: discarded). Raises :class:`SandboxStartError` if it does not come up.
    """
    tmp_dir: Path | None = None
    if ready_file is None:
        tmp_dir = Path(tempfile.mkdtemp(prefix="syncd-mongo-sandbox-"))
        ready = tmp_dir / "ready.json"
    else:
        ready = Path(ready_file)
        ready.unlink(missing_ok=True)
    cmd = [
        python or sys.executable,
        "-m",
        "syncd_sandbox.mongo",
        "--host",
        host,
        "--port",
        str(port),
        "--oplog-size",
        str(oplog_size),
        "--ready-file",
        str(ready),
    ]
    data_path = Path(data_dir) if data_dir is not None else None
    if data_path is not None:
        cmd += ["--data-dir", str(data_path)]
    cmd += list(extra_args or [])
    log_path = Path(log_file) if log_file is not None else None
    out: IO[bytes] | int
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")
    else:
        out = subprocess.DEVNULL
    env = dict(os.environ)
    src_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL, env=env
        )
    finally:
        if not isinstance(out, int):
            out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            raise SandboxStartError(
                f"sandbox exited with code {proc.returncode} before becoming ready"
                + (f" (see {log_path})" if log_path else "")
            )
        if ready.exists():
            try:
                info = json.loads(ready.read_text())
            except (OSError, ValueError):
                info = None
            if info and int(info.get("pid", -1)) == proc.pid:
                return SandboxProcess(proc, info, data_path, ready, tmp_dir, log_path)
        time.sleep(0.02)
    proc.kill()
    proc.wait(5)
    if tmp_dir is not None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    raise SandboxStartError(f"sandbox did not become ready within {timeout:.0f}s")
