"""PDS writes under a lease carry swapCommit: a former leader's write that was already
on its way when its lease ran out is refused by the real PDS once the new leader wrote."""

from __future__ import annotations

import asyncio

import pytest

from syncd.lease import LeaseLost
from syncd.pds.repo import Repo, create_write
from syncd.pds.sessions import Account, SessionManager
from syncd.pds.xrpc import XrpcClient
from syncd_sandbox.testing import SandboxWorld

NSID = "computer.aesthetic.mood"


class ScriptedFence:
    """Valid for the first ``valid_checks`` checks, then expired."""

    def __init__(self, token: int, valid_checks: int = 1_000_000) -> None:
        self._token = token
        self.left = valid_checks

    @property
    def token(self) -> int:
        return self._token

    def check(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise LeaseLost("expired")

    def lose(self, why: str) -> None:
        self.left = 0


def _record(text: str) -> dict[str, object]:
    return {"$type": NSID, "mood": text, "when": "2026-11-25T00:00:00.000Z"}


def test_stale_leader_write_is_refused_by_swap_commit(world: SandboxWorld) -> None:
    acct = world.account("alice")
    assert acct.did and acct.handle and acct.password
    account = Account(sub=acct.sub, did=acct.did, handle=acct.handle, password=acct.password)

    async def scenario() -> None:
        xrpc = XrpcClient(world.pds.url)
        sessions = SessionManager(xrpc, None)
        # The old leader wrote once, so it knows the repo's head.
        old = Repo(xrpc, sessions, fence=ScriptedFence(1, valid_checks=2))
        await old.apply_writes(account, [create_write(NSID, "3kaaaaaaaaa2a", _record("v1"))])
        # A new leader takes over and writes to the same repo.
        new = Repo(xrpc, sessions, fence=ScriptedFence(2))
        await new.put_record(account, NSID, "3kaaaaaaaaa2a", _record("v2 by the new leader"))
        # The old leader's next write passes its own (stale) check, but the PDS refuses
        # the swap; the re-check after the conflict finds the lease gone.
        with pytest.raises(LeaseLost):
            await old.put_record(account, NSID, "3kaaaaaaaaa2a", _record("stale v1.1"))
        got = await new.get_record(account.did, NSID, "3kaaaaaaaaa2a")
        assert got is not None and got["value"]["mood"] == "v2 by the new leader"
        # A leader whose lease holds retries past a conflict caused by someone else.
        other = Repo(xrpc, sessions)
        await other.put_record(account, NSID, "3kaaaaaaaaa2b", _record("admin write"))
        await new.put_record(account, NSID, "3kaaaaaaaaa2a", _record("v3"))
        got = await new.get_record(account.did, NSID, "3kaaaaaaaaa2a")
        assert got is not None and got["value"]["mood"] == "v3"
        await xrpc.aclose()

    asyncio.run(scenario())
