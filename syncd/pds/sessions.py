"""One session per account: log in once, reuse, refresh before expiry.

The PDS allows 30 ``createSession`` calls per account per 5 minutes, so syncd
logs in at most once per account per process, keeps the refresh token in the
state store so a restart refreshes instead of logging in, and backs off from an
account whose login fails instead of retrying it per record.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from atproto_server.auth.jwt import get_jwt_payload

from syncd import metrics
from syncd.pds.errors import AuthError, XrpcError
from syncd.pds.xrpc import XrpcClient
from syncd.retry import Kind, classify
from syncd.state import Store

log = structlog.get_logger("syncd.sessions")

REFRESH_MARGIN_SECONDS = 15 * 60
LOGIN_FAILURE_BACKOFF_SECONDS = 120.0


@dataclass(frozen=True)
class Account:
    """An ATProto account syncd writes for. ``sub`` is None for the guest account."""

    sub: str | None
    did: str
    handle: str
    password: str

    def __repr__(self) -> str:  # never let the password reach a log line
        return f"Account(sub={self.sub!r}, did={self.did!r}, handle={self.handle!r})"


@dataclass
class Session:
    did: str
    access_jwt: str
    refresh_jwt: str
    expires_at: float


class LoginFailedError(AuthError):
    """Logging in failed (bad credentials, account deactivated); retried after a pause."""


def _expiry(jwt: str) -> float:
    try:
        exp = get_jwt_payload(jwt).exp
        return float(exp) if exp else time.time() + 3600
    except Exception:
        return time.time() + 600


class SessionManager:
    def __init__(self, xrpc: XrpcClient, store: Store | None) -> None:
        self._xrpc = xrpc
        self._store = store
        self._sessions: dict[str, Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[str, tuple[float, LoginFailedError]] = {}

    def _lock(self, did: str) -> asyncio.Lock:
        return self._locks.setdefault(did, asyncio.Lock())

    async def token(self, account: Account) -> str:
        """A valid access token for ``account``."""
        session = self._sessions.get(account.did)
        if session and session.expires_at - time.time() > REFRESH_MARGIN_SECONDS:
            return session.access_jwt
        async with self._lock(account.did):
            session = self._sessions.get(account.did)
            if session and session.expires_at - time.time() > REFRESH_MARGIN_SECONDS:
                return session.access_jwt
            if session is None and self._store is not None:
                saved = self._store.load_session(account.did)
                if saved is not None:
                    session = Session(account.did, saved[0], saved[1], _expiry(saved[0]))
                    if session.expires_at - time.time() > REFRESH_MARGIN_SECONDS:
                        self._sessions[account.did] = session
                        return session.access_jwt
            if session is not None:
                refreshed = await self._refresh(session)
                if refreshed is not None:
                    return refreshed.access_jwt
            return (await self._login(account)).access_jwt

    async def expired(self, account: Account, bad_token: str) -> None:
        """The PDS rejected ``bad_token``: refresh (or log in again) unless done already."""
        async with self._lock(account.did):
            session = self._sessions.get(account.did)
            if session is None or session.access_jwt != bad_token:
                return
            if await self._refresh(session) is None:
                await self._login(account)

    def forget(self, account: Account) -> None:
        self._sessions.pop(account.did, None)
        self._failed.pop(account.did, None)

    async def _refresh(self, session: Session) -> Session | None:
        try:
            data = await self._xrpc.procedure(
                "com.atproto.server.refreshSession", token=session.refresh_jwt
            )
        except XrpcError as exc:
            if not isinstance(exc, AuthError) and classify(exc).kind in (Kind.RETRY, Kind.WAIT):
                raise  # no verdict on the session: the caller retries
            # Refused (an account deleted since answers 400 "Could not find user info"):
            # the session is dead, log in again.
            self._sessions.pop(session.did, None)
            return None
        return self._keep(session.did, data)

    async def _login(self, account: Account) -> Session:
        failed = self._failed.get(account.did)
        if failed and time.monotonic() - failed[0] < LOGIN_FAILURE_BACKOFF_SECONDS:
            raise failed[1]
        metrics.SESSIONS_CREATED.inc()
        try:
            data = await self._xrpc.procedure(
                "com.atproto.server.createSession",
                {"identifier": account.did, "password": account.password},
            )
        except XrpcError as exc:
            if classify(exc).kind in (Kind.RETRY, Kind.WAIT):
                raise  # not a verdict on the credentials: the caller retries
            err = LoginFailedError(exc.method, exc.status, exc.error, exc.message)
            self._failed[account.did] = (time.monotonic(), err)
            log.error("login_failed", did=account.did, handle=account.handle, error=exc.error)
            raise err from None
        self._failed.pop(account.did, None)
        if data.get("did") not in (None, account.did):
            raise LoginFailedError(
                "com.atproto.server.createSession",
                400,
                "DidMismatch",
                f"credentials belong to {data.get('did')}, not {account.did}",
            )
        log.info("session_created", did=account.did, handle=account.handle)
        return self._keep(account.did, data)

    def _keep(self, did: str, data: dict[str, object]) -> Session:
        access, refresh = str(data["accessJwt"]), str(data["refreshJwt"])
        session = Session(did, access, refresh, _expiry(access))
        self._sessions[did] = session
        if self._store is not None:
            self._store.save_session(did, access, refresh)
        return session
