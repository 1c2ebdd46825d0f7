"""The sandbox PDS: run ``sandbox/pds/launch.mjs`` and talk to it over plain HTTP.

* :class:`PdsProcess` starts the Node launcher (reference PDS + in-memory PLC on
  127.0.0.1) as a child in its own process group, waits for its ready file and
  keeps its log in a file. It can be stopped and restarted on the same data
  directory and ports (accounts survive).
* :class:`PdsApi` is a small synchronous XRPC client (httpx) for tests and the
  world: create accounts and sessions, list and read records, blobs, and the
  admin calls (takedown, delete) that authenticate with the admin password.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from syncd_sandbox import tokens
from syncd_sandbox.procs import (
    ProcessRecord,
    SandboxProcessError,
    spawn,
    stop_popen,
    stop_record,
    wait_ready_file,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PDS_DIR = Path(os.environ.get("SYNCD_SANDBOX_PDS_DIR", REPO_ROOT / "sandbox" / "pds"))
LAUNCHER = PDS_DIR / "launch.mjs"
HANDLE_DOMAIN = ".test"
START_TIMEOUT = 60.0


class PdsError(RuntimeError):
    """An XRPC call to the sandbox PDS failed."""

    def __init__(self, method: str, status: int, body: Any) -> None:
        self.method = method
        self.status = status
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else body
        self.error: str | None = error
        super().__init__(f"{method}: HTTP {status} {error or ''} {message or ''}".strip())


@dataclass(frozen=True)
class PdsHandle:
    """How to reach a running sandbox PDS."""

    url: str
    plc_url: str
    pid: int
    admin_password: str
    port: int = 0
    plc_port: int = 0
    data_dir: str = ""
    rate_limits: bool = False
    #: PDS_BLOB_UPLOAD_LIMIT: the largest blob it takes (the launcher's default admits 50 MB).
    blob_upload_limit: int = 0
    #: Seconds the repository-write budget lasts (None: the PDS's hour).
    rate_limit_window: int | None = None

    def api(self, timeout: float = 30.0) -> PdsApi:
        return PdsApi(self.url, admin_password=self.admin_password, timeout=timeout)


@dataclass(frozen=True)
class Account:
    """An ATProto account on the sandbox PDS (tokens from its creation)."""

    did: str
    handle: str
    password: str
    email: str
    access_jwt: str = ""
    refresh_jwt: str = ""


def node_binary() -> str:
    node = os.environ.get("SYNCD_SANDBOX_NODE") or shutil.which("node")
    if not node:
        raise SandboxProcessError("node not found (install Node 20+ or set SYNCD_SANDBOX_NODE)")
    return node


def check_installed() -> None:
    """Fail with set-up advice when the launcher's node_modules are missing."""
    if not (PDS_DIR / "node_modules" / "@atproto" / "pds").is_dir():
        raise SandboxProcessError(
            f"{PDS_DIR}/node_modules is missing: run scripts/setup.sh (or `npm ci` in sandbox/pds)"
        )


class PdsProcess:
    """The launcher as a child process; ``handle`` once started."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        plc_port: int = 0,
        rate_limits: bool = False,
        rate_limit_window: int | None = None,
        admin_password: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        log_level: str = "warn",
        exit_with_parent: bool = True,
        blob_upload_limit: int | None = None,
    ) -> None:
        """``rate_limit_window``: the per-account repository-write budget (5,000 points)
        lasts this many seconds instead of an hour, the daily one (35,000) 24 times as
        long (``launch.mjs --rate-limit-window-seconds``); implies ``rate_limits``."""
        self.exit_with_parent = exit_with_parent
        self.blob_upload_limit = blob_upload_limit  # None: the launcher's (52,428,800)
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.plc_port = plc_port
        self.rate_limits = rate_limits or rate_limit_window is not None
        self.rate_limit_window = rate_limit_window
        self.admin_password = admin_password or tokens.token_hex(12)
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / "pds.log"
        self.log_level = log_level
        self.ready_file = self.data_dir.parent / f"{self.data_dir.name}.ready.json"
        self.proc: Any = None
        self._handle: PdsHandle | None = None

    @property
    def handle(self) -> PdsHandle:
        if self._handle is None:
            raise SandboxProcessError("PDS not started")
        return self._handle

    def argv(self) -> list[str]:
        argv = [
            node_binary(),
            str(LAUNCHER),
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--plc-port",
            str(self.plc_port),
            "--ready-file",
            str(self.ready_file),
            "--log-level",
            self.log_level,
        ]
        if self.rate_limits:
            argv.append("--rate-limits")
        if self.blob_upload_limit is not None:
            argv += ["--blob-upload-limit", str(self.blob_upload_limit)]
        if self.rate_limit_window is not None:
            argv += ["--rate-limit-window-seconds", str(int(self.rate_limit_window))]
        if self.exit_with_parent:
            argv.append("--exit-with-parent")
        return argv

    def start(self, timeout: float = START_TIMEOUT) -> PdsHandle:
        check_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        self.proc = spawn(
            self.argv(),
            log_path=self.log_path,
            env={"PDS_ADMIN_PASSWORD": self.admin_password},
            cwd=PDS_DIR,
        )
        info = wait_ready_file(
            self.proc, self.ready_file, name="PDS", timeout=timeout, log_path=self.log_path
        )
        # Later restarts reuse the same ports: DID documents name this PDS's URL.
        self.port = int(info["port"])
        self.plc_port = int(info["plcPort"])
        self._handle = PdsHandle(
            url=str(info["pdsUrl"]),
            plc_url=str(info["plcUrl"]),
            pid=int(info["pid"]),
            admin_password=self.admin_password,
            port=self.port,
            plc_port=self.plc_port,
            data_dir=str(self.data_dir),
            rate_limits=self.rate_limits,
            blob_upload_limit=int(info.get("blobUploadLimit") or 0),
            rate_limit_window=self.rate_limit_window,
        )
        return self._handle

    def record(self) -> ProcessRecord:
        return ProcessRecord.capture("pds", self.handle.pid, self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_popen(self.proc, timeout)
            self.proc = None

    def ensure_running(self) -> bool:
        """Start it again (same data and ports) if it was started once and is gone; True if so."""
        if self._handle is None or (self.proc is not None and self.proc.poll() is None):
            return False
        self.start()
        return True

    def restart(self, timeout: float = START_TIMEOUT) -> PdsHandle:
        """Stop and start again on the same data dir and ports."""
        self.stop()
        old = self._handle
        handle = self.start(timeout)
        if old is not None and handle.url != old.url:
            raise SandboxProcessError(f"PDS came back at {handle.url}, not {old.url}")
        return handle

    def __enter__(self) -> PdsHandle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_detached(
    data_dir: str | os.PathLike[str],
    *,
    port: int = 0,
    plc_port: int = 0,
    rate_limits: bool = False,
    admin_password: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = START_TIMEOUT,
) -> tuple[PdsHandle, ProcessRecord]:
    """Start a PDS that outlives this Python process (for ``syncd-sandbox up``)."""
    proc = PdsProcess(
        data_dir,
        port=port,
        plc_port=plc_port,
        rate_limits=rate_limits,
        admin_password=admin_password,
        log_path=log_path,
        exit_with_parent=False,
    )
    handle = proc.start(timeout)
    record = proc.record()
    proc.proc = None  # not ours to reap; `down` stops it by its record
    return handle, record


def stop_detached(record: ProcessRecord, timeout: float = 10.0) -> bool:
    return stop_record(record, timeout)


_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_last_tid_micros = 0


def new_tid() -> str:
    """A fresh, strictly increasing TID record key (microseconds + random clock id)."""
    global _last_tid_micros
    micros = max(time.time_ns() // 1000, _last_tid_micros + 1)
    _last_tid_micros = micros
    value = (micros << 10) | tokens.randbelow(1024)
    out = []
    for _ in range(13):
        out.append(_TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def unique_handle(name: str, suffix: str | None = None) -> str:
    """``{name}-{suffix}.test`` within the PDS's 3–18 character limit."""
    clean = "".join(ch for ch in name.lower() if ch.isalnum()) or "user"
    suffix = suffix or tokens.token_hex(3)
    front = f"{clean[: 17 - len(suffix)]}-{suffix}"
    return f"{front}{HANDLE_DOMAIN}"


class PdsApi:
    """Plain-HTTP XRPC calls against the sandbox PDS (synchronous, httpx)."""

    def __init__(self, url: str, *, admin_password: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.admin_password = admin_password
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PdsApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------

    def _raise(self, method: str, resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            try:
                body: Any = resp.json()
            except ValueError:
                body = resp.text
            raise PdsError(method, resp.status_code, body)

    def _headers(self, token: str | None, admin: bool) -> dict[str, str]:
        if admin:
            if not self.admin_password:
                raise ValueError("this PdsApi has no admin password")
            basic = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {"Authorization": f"Bearer {token}"} if token else {}

    def query(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        admin: bool = False,
    ) -> Any:
        resp = self.http.get(
            f"/xrpc/{method}", params=dict(params or {}), headers=self._headers(token, admin)
        )
        self._raise(method, resp)
        return resp.json()

    def procedure(
        self,
        method: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        admin: bool = False,
    ) -> Any:
        headers = self._headers(token, admin)
        if body is None:  # some procedures refuse any body, even {}
            resp = self.http.post(f"/xrpc/{method}", headers=headers)
        else:
            resp = self.http.post(f"/xrpc/{method}", json=dict(body), headers=headers)
        self._raise(method, resp)
        return resp.json() if resp.content else None

    # -- accounts -----------------------------------------------------------

    def health(self) -> bool:
        try:
            return self.http.get("/xrpc/_health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def create_account(
        self, handle: str, password: str | None = None, email: str | None = None
    ) -> Account:
        """``com.atproto.server.createAccount`` (handle like ``name.test``, unique email)."""
        if not handle.endswith(HANDLE_DOMAIN):
            handle += HANDLE_DOMAIN
        password = password or tokens.token_urlsafe(12)
        email = email or f"{handle.removesuffix(HANDLE_DOMAIN)}-{tokens.token_hex(4)}@sandbox.test"
        out = self.procedure(
            "com.atproto.server.createAccount",
            {"handle": handle, "email": email, "password": password},
        )
        return Account(
            did=out["did"],
            handle=out["handle"],
            password=password,
            email=email,
            access_jwt=out["accessJwt"],
            refresh_jwt=out["refreshJwt"],
        )

    def create_session(self, identifier: str, password: str) -> dict[str, Any]:
        out: dict[str, Any] = self.procedure(
            "com.atproto.server.createSession", {"identifier": identifier, "password": password}
        )
        return out

    def login(self, account: Account) -> Account:
        """A fresh session for ``account`` (new tokens)."""
        out = self.create_session(account.did, account.password)
        return replace(account, access_jwt=out["accessJwt"], refresh_jwt=out["refreshJwt"])

    def deactivate_account(self, access_jwt: str) -> None:
        """``com.atproto.server.deactivateAccount`` as the account itself."""
        self.procedure("com.atproto.server.deactivateAccount", {}, token=access_jwt)

    def activate_account(self, access_jwt: str) -> None:
        self.procedure("com.atproto.server.activateAccount", None, token=access_jwt)

    # -- admin (HTTP basic auth admin:<admin password>) ------------------------

    def takedown(self, did: str, *, applied: bool = True, ref: str = "sandbox") -> None:
        """Take an account down (``applied=False`` reverses it)."""
        self.procedure(
            "com.atproto.admin.updateSubjectStatus",
            {
                "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
                "takedown": {"applied": applied, "ref": ref} if applied else {"applied": False},
            },
            admin=True,
        )

    def subject_status(self, did: str) -> dict[str, Any]:
        out: dict[str, Any] = self.query(
            "com.atproto.admin.getSubjectStatus", {"did": did}, admin=True
        )
        return out

    def account_info(self, did: str) -> dict[str, Any]:
        out: dict[str, Any] = self.query(
            "com.atproto.admin.getAccountInfo", {"did": did}, admin=True
        )
        return out

    def delete_account(self, did: str) -> None:
        self.procedure("com.atproto.admin.deleteAccount", {"did": did}, admin=True)

    # -- records and blobs --------------------------------------------------

    def iter_records(
        self, did: str, collection: str, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every record of one collection (``{uri, cid, value}``), all pages."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": did, "collection": collection, "limit": page_size}
            if cursor:
                params["cursor"] = cursor
            page = self.query("com.atproto.repo.listRecords", params)
            records = page.get("records", [])
            yield from records
            cursor = page.get("cursor")
            if not cursor or not records:
                return

    def list_records(self, did: str, collection: str, page_size: int = 100) -> list[dict[str, Any]]:
        return list(self.iter_records(did, collection, page_size))

    def get_record(self, did: str, collection: str, rkey: str) -> dict[str, Any] | None:
        """``{uri, cid, value}`` or None when the record does not exist."""
        try:
            out: dict[str, Any] = self.query(
                "com.atproto.repo.getRecord", {"repo": did, "collection": collection, "rkey": rkey}
            )
        except PdsError as exc:
            if exc.error == "RecordNotFound":
                return None
            raise
        return out

    def describe_repo(self, did: str) -> dict[str, Any]:
        out: dict[str, Any] = self.query("com.atproto.repo.describeRepo", {"repo": did})
        return out

    def collections(self, did: str) -> list[str]:
        return list(self.describe_repo(did).get("collections", []))

    def get_blob(self, did: str, cid: str) -> bytes:
        resp = self.http.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid})
        self._raise("com.atproto.sync.getBlob", resp)
        return resp.content

    def list_blobs(self, did: str) -> list[str]:
        cids: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"did": did, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = self.query("com.atproto.sync.listBlobs", params)
            cids.extend(page.get("cids", []))
            cursor = page.get("cursor")
            if not cursor or not page.get("cids"):
                return cids

    def upload_blob(
        self, access_jwt: str, data: bytes, mime_type: str = "image/png"
    ) -> dict[str, Any]:
        resp = self.http.post(
            "/xrpc/com.atproto.repo.uploadBlob",
            content=data,
            headers={"Authorization": f"Bearer {access_jwt}", "Content-Type": mime_type},
        )
        self._raise("com.atproto.repo.uploadBlob", resp)
        out: dict[str, Any] = resp.json()["blob"]
        return out

    def apply_writes(
        self, access_jwt: str, did: str, writes: list[dict[str, Any]]
    ) -> dict[str, Any]:
        out: dict[str, Any] = self.procedure(
            "com.atproto.repo.applyWrites", {"repo": did, "writes": writes}, token=access_jwt
        )
        return out
