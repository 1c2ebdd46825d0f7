"""Background processes of the sandbox: spawn, wait for readiness, identify, stop.

Every process is started in its own session (so its process group is its pid),
with its output going to a log file. A :class:`ProcessRecord` remembers the
pid together with the command line and the kernel start time read from
``/proc``, so a later ``down`` signals a pid only while it still belongs to the
process that was started (pids are reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class SandboxProcessError(RuntimeError):
    """A sandbox process failed to start or to stop."""


@dataclass(frozen=True)
class ProcessRecord:
    """A started process, identified beyond its pid."""

    name: str
    pid: int
    cmdline: tuple[str, ...]
    start_time: int | None
    log_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cmdline"] = list(self.cmdline)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            cmdline=tuple(str(a) for a in data["cmdline"]),
            start_time=None if data.get("start_time") is None else int(data["start_time"]),
            log_path=data.get("log_path"),
        )

    @classmethod
    def capture(
        cls, name: str, pid: int, log_path: str | os.PathLike[str] | None = None
    ) -> ProcessRecord:
        """Record a running process as it is now."""
        cmdline = read_cmdline(pid)
        if cmdline is None:
            raise SandboxProcessError(f"{name}: process {pid} is not running")
        return cls(
            name=name,
            pid=pid,
            cmdline=cmdline,
            start_time=read_start_time(pid),
            log_path=None if log_path is None else str(log_path),
        )

    def is_running(self) -> bool:
        """True while the pid is alive (not a zombie) and still the same process."""
        if read_cmdline(self.pid) != self.cmdline:
            return False
        if self.start_time is not None and read_start_time(self.pid) != self.start_time:
            return False
        return not _is_zombie(self.pid)


def read_cmdline(pid: int) -> tuple[str, ...] | None:
    """The argv of ``pid`` from ``/proc`` (None when gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return tuple(part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0"))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return raw[raw.rindex(")") + 2 :].split()


def read_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks (field 22 of ``/proc/PID/stat``)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    log_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=None if cwd is None else str(cwd),
            start_new_session=True,
            close_fds=True,
        )


def tail(path: str | os.PathLike[str] | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_ready_file(
    proc: subprocess.Popen[bytes],
    ready_file: str | os.PathLike[str],
    *,
    name: str,
    timeout: float,
    log_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Wait until the process writes its JSON ready file; fail early if it exits."""
    path = Path(ready_file)
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            with contextlib.suppress(json.JSONDecodeError, OSError):
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    return data
        code = proc.poll()
        if code is not None:
            raise SandboxProcessError(
                f"{name} exited with code {code} before it was ready; log {log_path}:\n"
                f"{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop_popen(proc)
            raise SandboxProcessError(
                f"{name} not ready after {timeout:.0f}s; log {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads, or just ``pid`` when it leads none."""
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        if leads_group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_popen(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM a child we started (its group), SIGKILL after ``timeout``; reap it."""
    if proc.poll() is not None:
        return proc.returncode
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        return proc.wait(5)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.is_running():
            return True
        time.sleep(0.05)
    return not record.is_running()


def stop_record(record: ProcessRecord, timeout: float = 10.0) -> bool:
    """Stop a recorded process if it is still that process.

    SIGTERM to its process group, SIGKILL after ``timeout``. Returns True when
    it was running and has been stopped, False when it was already gone (or
    the pid now belongs to another process, which is left alone).
    """
    if not record.is_running():
        return False
    _signal_group(record.pid, signal.SIGTERM)
    if _wait_gone(record, timeout):
        return True
    if record.is_running():
        _signal_group(record.pid, signal.SIGKILL)
    if not _wait_gone(record, 5.0):
        raise SandboxProcessError(f"{record.name} (pid {record.pid}) did not stop")
    return True


def kill_record(record: ProcessRecord) -> bool:
    """SIGKILL a recorded process (if it is still that process); wait until it is gone."""
    if not record.is_running():
        return False
    _signal_group(record.pid, signal.SIGKILL)
    if not _wait_gone(record, 5.0):
        raise SandboxProcessError(f"{record.name} (pid {record.pid}) did not die")
    return True
