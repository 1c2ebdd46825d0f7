"""The MongoDB replica-set sandbox as the world runs it: started, stopped, restarted.

The server itself is ``syncd_sandbox.mongo`` (another module). Two ways to run it:

* :class:`ChildMongo` -- through that module's helper
  ``syncd_sandbox.mongo.process.start_sandbox_process`` (a child of this
  process; used by the pytest fixtures);
* :class:`DetachedMongo` -- the same helper, but the process outlives the
  caller and is stopped later by its :class:`ProcessRecord` (``syncd-sandbox up``).

Both restart on the same data directory and port, so the URI stays valid and
the data (and oplog) survive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from syncd_sandbox.procs import (
    ProcessRecord,
    SandboxProcessError,
    kill_record,
    stop_record,
)

START_TIMEOUT = 30.0


def port_of(uri: str) -> int:
    """The port of a ``mongodb://host:port/...`` URI."""
    hostport = uri.split("://", 1)[1].split("/", 1)[0].split(",", 1)[0]
    return int(hostport.rsplit(":", 1)[1])


def ping(uri: str, timeout_ms: int = 2000) -> bool:
    client: MongoClient[Any] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def _start(
    data_dir: Path,
    port: int,
    oplog_size: int | None,
    log_path: Path | None,
    ready_file: Path | None,
    max_wire_version: int | None = None,
) -> Any:
    from syncd_sandbox.mongo.process import start_sandbox_process

    data_dir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"port": port, "log_file": log_path, "ready_file": ready_file}
    if oplog_size is not None:
        kwargs["oplog_size"] = oplog_size
    if max_wire_version is not None:
        kwargs["extra_args"] = ["--max-wire-version", str(max_wire_version)]
    return start_sandbox_process(data_dir, timeout=START_TIMEOUT, **kwargs)


class ChildMongo:
    """The sandbox as a child of this process (pytest fixtures)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        oplog_size: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        max_wire_version: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.oplog_size = oplog_size
        self.log_path = Path(log_path) if log_path else None
        #: 17 (6.0.8, no $changeStreamSplitLargeEvent), 21 (7.0, default) or 25 (8.0).
        self.max_wire_version = max_wire_version
        self.port = 0
        self._handle: Any = None

    def start(self) -> str:
        self._handle = _start(
            self.data_dir, self.port, self.oplog_size, self.log_path, None, self.max_wire_version
        )
        self.port = int(self._handle.port)
        return self.uri

    @property
    def uri(self) -> str:
        if self._handle is None:
            raise SandboxProcessError("Mongo sandbox not started")
        return str(self._handle.uri)

    @property
    def pid(self) -> int:
        return int(self._handle.pid)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.stop()

    def kill(self) -> None:
        if self._handle is not None:
            self._handle.kill()

    def ensure_running(self) -> bool:
        """Start it again (same port and data) if it died or was left stopped; True if so."""
        if self._handle is None or self._handle.alive:
            return False
        self.start()
        return True

    def restart(self, pause_seconds: float = 0.0, *, kill: bool = False) -> str:
        """Stop (or kill), wait ``pause_seconds``, start again on the same port and data."""
        uri = self.uri
        if kill:
            self.kill()
        else:
            self.stop()
        time.sleep(pause_seconds)
        self.start()
        if self.uri != uri:
            raise SandboxProcessError(f"Mongo sandbox came back at {self.uri}, not {uri}")
        return self.uri


class DetachedMongo:
    """The sandbox for ``syncd-sandbox up``: it outlives the caller, stopped by its record."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        oplog_size: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.oplog_size = oplog_size
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / "mongo.log"
        self.ready_file = self.data_dir.parent / "mongo.ready.json"
        self.uri = ""
        self.record: ProcessRecord | None = None

    def start(self) -> str:
        handle = _start(self.data_dir, self.port, self.oplog_size, self.log_path, self.ready_file)
        self.uri = str(handle.uri)
        self.port = int(handle.port)
        self.record = ProcessRecord.capture("mongo", int(handle.pid), self.log_path)
        return self.uri

    def stop(self, timeout: float = 15.0) -> bool:
        return False if self.record is None else stop_record(self.record, timeout)

    def kill(self) -> bool:
        return False if self.record is None else kill_record(self.record)

    def restart(self, pause_seconds: float = 0.0, *, kill: bool = False) -> str:
        uri = self.uri
        if kill:
            self.kill()
        else:
            self.stop()
        time.sleep(pause_seconds)
        self.start()
        if uri and self.uri != uri:
            raise SandboxProcessError(f"Mongo sandbox came back at {self.uri}, not {uri}")
        return self.uri
