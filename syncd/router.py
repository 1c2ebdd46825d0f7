"""Route each change to the account writers that must act on it.

The record belongs in the owner's repository when the document is public and
valid; it must be removed from wherever it lives now (the ledger says where, and
so do changes still in flight to a writer). A change with nowhere to go (a
private document never published, a user without an ATProto account) is
settled here, without a writer. With ``cluster.partitions`` > 1 a change that
another partition serves is dropped here (see :meth:`Engine.owns`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from syncd import metrics
from syncd.changes import Change, Op, Problem, record_outcome
from syncd.mappings import MAPPINGS, MappingError
from syncd.ownership import standing, verdict
from syncd.rkey import named_key
from syncd.writer import AccountWriter

if TYPE_CHECKING:
    from syncd.engine import Engine

log = structlog.get_logger("syncd.router")


class Router:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writers: dict[str, AccountWriter] = {}
        # (collection, key) -> {did: ops in flight}; a delete must reach a writer
        # that has a create for the same document still queued.
        self._inflight: dict[tuple[str, str], dict[str, int]] = {}

    def writer(self, account: Any) -> AccountWriter:
        w = self.writers.get(account.did)
        if w is None:
            w = AccountWriter(self.engine, account)
            self.writers[account.did] = w
            w.start()
            self._note_handle(account)
        elif w.account.password != account.password or w.account.handle != account.handle:
            if w.account.password != account.password:
                self.engine.sessions.forget(account)  # credentials changed in `users`
            w.account = account
            self._note_handle(account)
        return w

    def _note_handle(self, account: Any) -> None:
        """Remember the account's handle for ``syncd status`` (no PDS write needed)."""
        key = f"handle:{account.did}"
        if account.handle and self.engine.store.get_meta(key) != account.handle:
            self.engine.store.set_meta(key, account.handle)

    def finished(self, op: Op, did: str) -> None:
        ident = (op.change.collection, op.change.key)
        counts = self._inflight.get(ident)
        if counts is None:
            return
        counts[did] = counts.get(did, 1) - 1
        if counts[did] <= 0:
            del counts[did]
        if not counts:
            del self._inflight[ident]

    async def route(self, change: Change) -> None:
        engine = self.engine
        mapping = MAPPINGS[change.collection]
        doc = change.doc
        desired = None
        draft = None
        problem: Problem | None = None
        owner_did: str | None = None

        if doc is not None:
            where = standing(change.collection, doc)
            account, why = None, ""
            if where.invalid is None:
                account, why = await engine.accounts.resolve(where.owner)
                if account is not None:
                    owner_did = account.did
            problem = verdict(where, account, why)
            if problem is None:
                try:
                    draft = mapping.draft(doc, engine.mapping_ctx)
                    desired = account
                except MappingError as exc:
                    problem = Problem("dead", exc.reason, exc.detail)
            elif problem.kind == "skip":
                metrics.SKIPPED.labels(collection=change.collection, reason=problem.reason).inc()
            elif problem.kind == "hidden" and account is not None and named_key(doc):
                # A record another writer made for a document that is not public.
                self.writer(account)
        entry = engine.store.ledger_get(change.collection, change.key)
        if engine.partitions > 1 and engine.partition is not None:
            # Exactly one partition acts on each change: the one serving the account the
            # record belongs in, else the one holding it now, else the document's owner.
            responsible = desired.did if desired else (entry.did if entry else owner_did)
            if not engine.owns(responsible):
                change.ticket.complete()
                return
        targets: dict[str, Any] = {}
        if desired is not None:
            targets[desired.did] = desired
        for did in self._inflight.get((change.collection, change.key), {}):
            if did not in targets and did in self.writers:
                targets[did] = self.writers[did].account
        if entry is not None and entry.did not in targets:
            holder = self.writers.get(entry.did)
            account = holder.account if holder else await self._account_for_did(entry.did)
            if account is not None:
                targets[entry.did] = account
            else:
                log.warning("record_holder_unknown", did=entry.did, doc=change.key)
        if owner_did is not None and owner_did not in targets and named_key(doc):
            if owner_did in self.writers:
                targets[owner_did] = self.writers[owner_did].account

        if not targets:
            self._settle(change, problem, doc)
            return
        ticket = change.ticket
        first = True
        for did, account in targets.items():
            if not first:
                ticket.add_part()
            first = False
            op = Op(
                change=change,
                desired=desired,
                draft=draft,
                problem=problem,
                holder_hint=entry,
                extra={"owner_did": owner_did},
            )
            counts = self._inflight.setdefault((change.collection, change.key), {})
            counts[did] = counts.get(did, 0) + 1
            engine.queued_ops += 1
            self.writer(account).submit(op)

    def _settle(self, change: Change, problem: Problem | None, doc: dict[str, Any] | None) -> None:
        """Nothing to write anywhere: record why, and finish the change."""
        store = self.engine.store
        with store.transaction():
            record_outcome(store, change.collection, change.key, problem)
        if problem is not None and problem.kind == "dead":
            log.warning(
                "dead_letter", collection=change.collection, doc=change.key, reason=problem.reason
            )
        if problem is not None and problem.kind == "dead":
            self.engine.refresh_dead_letter_gauge()
        change.ticket.complete()

    async def _account_for_did(self, did: str) -> Any:
        return await self.engine.accounts.by_handle_or_did(did)
