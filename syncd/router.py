"""Route each change to the account writers that must act on it.

The record belongs in the owner's repository when the document is public and
valid (:mod:`syncd.ownership` decides whose it is and whether it may be
published); it must be removed from wherever it lives now (the ledger says
where, and so do changes still in flight to a writer). A change with nowhere to
go (a private document never published, a user without an ATProto account) is
settled here, without a writer. With ``cluster.partitions`` > 1 a change that
another partition serves is dropped here.

Changes are routed in groups (a backfill page, the events a change-stream batch
holds): one state read per group, and only a document's newest change in a
group is routed (the older ones are superseded: every change carries the whole
current document).

Groups are routed one at a time, in the order their ``route_many`` calls begin
(a lock), so each writer's queue receives a document's changes in the order the
sources handed them over. A source that read documents a while ago can ask to
leave out those that someone else routed since (``admit``, with an
``observers`` callback seeing every group): the account backfill does
(:mod:`syncd.source.owner_backfill`), so its older read never lands after the
change stream's newer one.

A DID two users name (``did_conflict``) is held without any writer: neither
user's document is written and the records the DID holds stay. An account that
is gone (:mod:`syncd.gone`) is never a target: its records cannot be deleted or
moved out of a repository that is not there (its ledger rows stay, flagged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from syncd import metrics
from syncd.accounts import DID_CONFLICT, AccountResolver
from syncd.changes import Change, Op, Problem
from syncd.handles import Handles
from syncd.mappings import MAPPINGS, MappingContext, MappingError
from syncd.ownership import standing, verdict
from syncd.pds.sessions import Account
from syncd.rkey import named_key
from syncd.state import LedgerEntry, StateOp
from syncd.state.aio import StateCalls
from syncd.write.account import AccountWriter
from syncd.write.commit import outcome_of

log = structlog.get_logger("syncd.router")

Ident = tuple[str, str]


@dataclass(frozen=True)
class _Settle:
    """Nothing to write anywhere: record ``problem`` (None: public, nothing to do)."""

    problem: Problem | None


@dataclass
class RouterDeps:
    calls: StateCalls
    accounts: AccountResolver
    mapping_ctx: MappingContext
    make_writer: Callable[[Account], AccountWriter]
    #: The account's credentials changed in ``users``: drop its sessions.
    credentials_changed: Callable[[Account], None]
    #: Handles remembered for ``syncd status``.
    handles: Handles
    #: Whether this instance's partition serves the account ``did`` (always when None).
    owns: Callable[[str | None], bool] | None = None
    #: Whether syncd no longer writes for the account ``did`` (:mod:`syncd.gone`).
    is_gone: Callable[[str], bool] | None = None


class Router:
    def __init__(self, deps: RouterDeps) -> None:
        self.deps = deps
        self.writers: dict[str, AccountWriter] = {}
        # (collection, key) -> {did: ops in flight}; a delete must reach a writer
        # that has a create for the same document still queued.
        self._inflight: dict[Ident, dict[str, int]] = {}
        self._order = asyncio.Lock()
        #: Called with every group about to be routed (after ``admit``), in routing order.
        self.observers: list[Callable[[Sequence[Change]], None]] = []

    # -- writers ---------------------------------------------------------------------
    def writer(self, account: Account) -> AccountWriter:
        w = self.writers.get(account.did)
        if w is None:
            w = self.deps.make_writer(account)
            self.writers[account.did] = w
            w.start()
            self.deps.handles.note(account.did, account.handle)
        elif w.account.password != account.password or w.account.handle != account.handle:
            if w.account.password != account.password:
                self.deps.credentials_changed(account)
            w.account = account
            self.deps.handles.note(account.did, account.handle)
        return w

    @property
    def queued(self) -> int:
        """Ops waiting in the writers' queues (``syncd_queue_depth{stage="writer"}``)."""
        return sum(len(w.queue) for w in self.writers.values())

    def op_done(self, op: Op, did: str) -> None:
        """A writer finished ``op`` (applied, dead-lettered or superseded)."""
        ident = (op.change.collection, op.change.key)
        counts = self._inflight.get(ident)
        if counts is not None:
            counts[did] = counts.get(did, 1) - 1
            if counts[did] <= 0:
                del counts[did]
            if not counts:
                del self._inflight[ident]
        op.change.ticket.complete()

    # -- routing -----------------------------------------------------------------------
    async def route(self, change: Change) -> None:
        await self.route_many([change])

    async def route_many(
        self, changes: Sequence[Change], *, admit: Callable[[Change], bool] | None = None
    ) -> None:
        """Route a group of changes in source order (one state read for the group); with
        ``admit``, the changes it refuses -- decided when the group's turn comes -- are
        completed without routing."""
        async with self._order:
            if admit is not None:
                kept: list[Change] = []
                for change in changes:
                    if admit(change):
                        kept.append(change)
                    else:
                        change.ticket.complete()
                changes = kept
            for observe in self.observers:
                observe(changes)
            await self._route_many(changes)

    def _gone(self, did: str) -> bool:
        is_gone = self.deps.is_gone
        return is_gone is not None and is_gone(did)

    async def _route_many(self, changes: Sequence[Change]) -> None:
        newest: dict[Ident, Change] = {}
        for change in changes:
            older = newest.get((change.collection, change.key))
            if older is not None:
                older.ticket.complete()  # superseded by a newer state of the same document
            newest[(change.collection, change.key)] = change
        calls = self.deps.calls
        found = await calls(calls.store.lookup, list(newest), None, [])
        settled: list[tuple[Change, Problem | None]] = []
        for ident, change in newest.items():
            settle = await self._route(change, found.entries.get(ident))
            if settle is not None:
                settled.append((change, settle.problem))
        if settled:
            ops: list[StateOp] = [outcome_of(c.collection, c.key, p) for c, p in settled]
            await calls(calls.store.apply, ops)
            for change, problem in settled:
                if problem is not None and problem.kind == "dead":
                    log.warning(
                        "dead_letter",
                        collection=change.collection,
                        doc=change.key,
                        reason=problem.reason,
                    )
                change.ticket.complete()

    async def _route(self, change: Change, entry: LedgerEntry | None) -> _Settle | None:
        """Hand ``change`` to its writers (None), or say how to settle it here."""
        mapping = MAPPINGS[change.collection]
        doc = change.doc
        desired: Account | None = None
        draft = None
        problem: Problem | None = None
        owner_did: str | None = None
        if doc is not None:
            where = standing(change.collection, doc)
            account, why = None, ""
            if where.invalid is None:
                account, why = await self.deps.accounts.resolve(where.owner)
                if account is not None:
                    owner_did = account.did
            detail = self.deps.accounts.conflict_detail(where.owner) if why == DID_CONFLICT else ""
            problem = verdict(where, account, why, detail)
            if problem is not None and problem.reason == DID_CONFLICT:
                return _Settle(problem)  # held: no writer acts, the DID's records stay
            if problem is None:
                try:
                    draft = mapping.draft(doc, self.deps.mapping_ctx)
                    desired = account
                except MappingError as exc:
                    problem = Problem("dead", exc.reason, exc.detail)
            elif problem.kind == "skip":
                metrics.SKIPPED.labels(collection=change.collection, reason=problem.reason).inc()
            if problem is not None and account is not None and named_key(doc, mapping.backref):
                # A record another writer (the platform's inline hooks) made for a
                # document that is not public, or not publishable: its owner's writer
                # deletes it once it is known to be this document's, and unsets the key.
                self.writer(account)
        owns = self.deps.owns
        if owns is not None:
            # Exactly one partition acts on each change: the one serving the account the
            # record belongs in, else the one holding it now, else the document's owner.
            responsible = desired.did if desired else (entry.did if entry else owner_did)
            if not owns(responsible):
                change.ticket.complete()
                return None
        targets = await self._targets(change, desired, entry, owner_did)
        if not targets:
            return _Settle(problem)
        ticket = change.ticket
        for n, (did, account) in enumerate(targets.items()):
            if n:
                ticket.add_part()
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
            self.writer(account).submit(op)
        return None

    async def _targets(
        self,
        change: Change,
        desired: Account | None,
        entry: LedgerEntry | None,
        owner_did: str | None,
    ) -> dict[str, Account]:
        """Every repository that must act: where the record belongs, where it may live
        now (changes still in flight, the ledger), and the owner's when the document
        names a key there."""
        targets: dict[str, Account] = {}
        if desired is not None:
            targets[desired.did] = desired
        for did in self._inflight.get((change.collection, change.key), {}):
            if did not in targets and did in self.writers and not self._gone(did):
                targets[did] = self.writers[did].account
        if entry is not None and entry.did not in targets and not self._gone(entry.did):
            holder = self.writers.get(entry.did)
            account = (
                holder.account if holder else await self.deps.accounts.by_handle_or_did(entry.did)
            )
            if account is not None:
                targets[entry.did] = account
            else:
                log.warning("record_holder_unknown", did=entry.did, doc=change.key)
        field = MAPPINGS[change.collection].backref
        if owner_did is not None and owner_did not in targets and named_key(change.doc, field):
            if owner_did in self.writers:
                targets[owner_did] = self.writers[owner_did].account
        return targets
