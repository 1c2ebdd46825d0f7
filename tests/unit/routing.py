"""A router without servers: fake writers that record what they are given, a resolver
that answers from a table, a real SQLite state store. Shared by the router's and the
lifecycle's unit tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId

from syncd.accounts import NO_ACCOUNT
from syncd.changes import Change, Op
from syncd.checkpoint import Checkpointer
from syncd.handles import Handles
from syncd.mappings import MappingContext
from syncd.pds.sessions import Account
from syncd.router import Router, RouterDeps
from syncd.state import StateStore
from syncd.state.aio import StateCalls

ALICE = Account(sub="auth0|alice", did="did:plc:alice", handle="alice.test", password="pw")


class FakeWriter:
    def __init__(self, account: Account, submitted: list[tuple[str, Op]]) -> None:
        self.account = account
        self.queue: list[Op] = []
        self._submitted = submitted

    def start(self) -> None:
        pass

    def submit(self, op: Op) -> None:
        self._submitted.append((self.account.did, op))


class FakeResolver:
    """``owner -> (account, reason)``; ``gate`` (if set) holds the next lookup until set."""

    def __init__(self, answers: dict[str | None, tuple[Account | None, str]]) -> None:
        self.answers = answers
        self.gate: asyncio.Event | None = None

    async def resolve(self, owner: str | None) -> tuple[Account | None, str]:
        gate, self.gate = self.gate, None  # only the next lookup is slow
        if gate is not None:
            await gate.wait()
        return self.answers.get(owner, (None, NO_ACCOUNT))

    def conflict_detail(self, owner: str | None) -> str:
        return f"users {owner!r} and 'auth0|erin' both name did:plc:alice"

    async def by_handle_or_did(self, ident: str) -> Account | None:
        known = [ALICE] + [a for a, _ in self.answers.values() if a is not None]
        return next((a for a in known if ident in (a.did, a.handle)), None)


class Harness:
    def __init__(self, tmp_path: Path, resolver: FakeResolver, gone: set[str]) -> None:
        self.store = StateStore(tmp_path)
        self.calls = StateCalls(self.store, offload=False)
        self.submitted: list[tuple[str, Op]] = []
        self.queue = Checkpointer(100)
        self.router = Router(
            RouterDeps(
                calls=self.calls,
                accounts=resolver,  # type: ignore[arg-type]
                mapping_ctx=MappingContext(),
                make_writer=lambda a: FakeWriter(a, self.submitted),  # type: ignore[arg-type,return-value]
                credentials_changed=lambda a: None,
                handles=Handles(self.calls),
                is_gone=gone.__contains__,
            )
        )

    async def change(
        self, doc: dict[str, Any] | None, doc_id: Any = None, op: str = "update"
    ) -> Change:
        doc_id = doc["_id"] if doc is not None else doc_id
        return Change(
            collection="moods",
            doc_id=doc_id,
            key=str(doc_id),
            doc=doc,
            operation=op,
            ticket=await self.queue.open(None),
        )


def mood(user: str | None, text: str = "hi", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "mood": text,
        "when": datetime(2025, 1, 1, tzinfo=UTC),
    }
    if user is not None:
        doc["user"] = user
    doc.update(extra)
    return doc
