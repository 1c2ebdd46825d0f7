"""Follow the platform's account lifecycle: accounts that appear, change and go away.

The change stream hands every ``users`` event that can change an account
(:func:`syncd.source.users.users_match`; an email or a profile field never gets
here) to :meth:`Lifecycle.on_user_event`, in stream order, before the stream's
position passes it. The event is compared with the account the stream showed
last for that user (kept in the state store, so a replayed event is compared
with the state it followed):

* **an account appears** (``atproto.did`` where there was none): the account
  is recorded together with an *account backfill* in one state write
  (:mod:`syncd.source.owner_backfill`), which publishes every document the
  user already has; their skips clear as they are published;
* **a new DID** (the account was made again): the old DID is gone, the
  user's back-references to it are removed, and an account backfill publishes
  their documents into the new repository (the ledger follows them);
* **new credentials** (a changed password): the account's sessions are dropped
  (made again at the next write), a parked account is unparked at once, and
  the user's ``account_unavailable`` dead letters are retried at once;
* **a new handle**: no write; ``syncd status`` shows it;
* **an account goes away** (``atproto`` removed or left without a password, or
  the user deleted): the
  DID is *gone* (:mod:`syncd.gone`): sessions dropped, no writer, the user's
  documents lose their back-references to it (the records went with the
  account) and later ones are skips; its ledger rows stay, flagged.

The PDS can also say an account is gone -- it does not exist any more, it is
deactivated or taken down: the writer's refusal reaches :meth:`Lifecycle.refused`
(through :class:`syncd.parking.Parking`), the DID is marked gone, and the
documents that were waiting become skips. ``users`` naming the DID again (any
account change of that user), or the PDS reporting the repository active again
(checked hourly), brings it back with an account backfill.

Every DID change also retries the ``did_conflict`` dead letters at once (a
conflict may have been resolved). A DID named by two users is refused by the
resolver (:mod:`syncd.accounts`) and held by the router.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from pymongo import UpdateMany
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from syncd import metrics
from syncd.accounts import ACCOUNT_GONE, DID_CONFLICT, AccountResolver
from syncd.changes import Op
from syncd.gone import REFUSED, REMOVED, REPLACED, GoneAccounts
from syncd.handles import Handles
from syncd.ids import parse_doc_key
from syncd.logs import register_secret
from syncd.ownership import users_entry_documents
from syncd.parking import REFUSED_RETRY, Parking
from syncd.pds.errors import XrpcError
from syncd.pds.sessions import Account, SessionManager
from syncd.pds.xrpc import XrpcClient
from syncd.positions import Positions
from syncd.retry import retrying
from syncd.router import Router
from syncd.source.owner_backfill import OwnerBackfillDeps, OwnerBackfills
from syncd.source.publish import Publisher
from syncd.source.users import Change, Seen, account_fields, classify
from syncd.state import KnownAccount, Outcome
from syncd.state.aio import StateCalls

if TYPE_CHECKING:
    from syncd.config import Config

log = structlog.get_logger("syncd.lifecycle")

DOC_OPS = frozenset({"insert", "update", "replace", "delete"})
#: The back-reference fields syncd writes into documents (and removes when the account goes).
BACKREF_UNSET = {"$unset": {"atproto.rkey": "", "atproto.uri": "", "atproto.cid": ""}}
#: Dead letters retried at once when their account's credentials change.
CREDENTIAL_LETTERS = frozenset({"account_unavailable"})


@dataclass
class LifecycleDeps:
    calls: StateCalls
    db: AsyncDatabase[dict[str, Any]]  # the source database
    accounts: AccountResolver
    gone: GoneAccounts
    parking: Parking
    backfills: OwnerBackfills
    publisher: Publisher
    collections: tuple[str, ...]
    users_collection: str
    guest_id: str
    stopping: asyncio.Event
    #: The password the writer of a DID uses now (None: no writer).
    writer_password: Callable[[str], str | None]
    #: New credentials for an account that may have a writer: the writer takes them.
    refresh_writer: Callable[[Account], None]
    #: Drop the account's sessions in memory (the stored one is dropped here).
    forget_sessions: Callable[[str], None]
    #: Whether this instance's partition serves the account ``did``.
    owns: Callable[[str | None], bool]
    #: Handles remembered for ``syncd status`` (shared with the router).
    handles: Handles
    #: Whether the PDS says the repository ``did`` is active (None: cannot tell).
    repo_active: Callable[[str], Awaitable[bool | None]] | None = None


class Lifecycle:
    def __init__(self, deps: LifecycleDeps) -> None:
        self.deps = deps
        self.events: dict[str, int] = {}  # kind -> count (tests, logs)

    # -- the gone registry, as the parking sees it ---------------------------------------
    def is_gone(self, did: str) -> bool:
        return did in self.deps.gone

    async def refused(self, did: str, reason: str, ops: Sequence[Op]) -> None:
        """The PDS refused ``did`` (or it is gone already): mark it, settle ``ops`` as skips."""
        deps = self.deps
        if reason.startswith(REFUSED) and did not in deps.gone:
            account = next((op.desired for op in ops if op.desired and op.desired.did == did), None)
            uid = None
            if account is not None:
                uid = deps.guest_id if account.sub is None else account.sub
            await deps.gone.mark(did, uid, account.handle if account else "", reason)
            await self._drop_sessions(did)
            log.warning(
                "account_gone",
                did=did,
                handle=account.handle if account else None,
                reason=reason,
                action="no more writes for it; its documents are skipped until users names "
                "it again or the PDS reports it active",
            )
        keys = sorted({(op.change.collection, op.change.key) for op in ops})
        if keys:
            await deps.calls(
                deps.calls.store.apply, [Outcome(c, k, "skip", ACCOUNT_GONE) for c, k in keys]
            )
            for c, _ in keys:
                metrics.SKIPPED.labels(collection=c, reason=ACCOUNT_GONE).inc()

    # -- users events -----------------------------------------------------------------------
    async def on_user_event(self, event: dict[str, Any]) -> None:
        """Act on one ``users`` change event (durably, before the stream passes it).

        A MongoDB error propagates (the stream reopens and the event comes again); any
        other failure is logged and the stream moves on: a ``users`` document must never
        stall the mirror."""
        try:
            await self._on_user_event(event)
        except PyMongoError:
            raise
        except Exception as exc:
            log.error(
                "account_event_failed",
                user=str((event.get("documentKey") or {}).get("_id"))[:200],
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    async def _on_user_event(self, event: dict[str, Any]) -> None:
        op = event.get("operationType")
        uid = (event.get("documentKey") or {}).get("_id")
        if op not in DOC_OPS or not isinstance(uid, str):
            return
        doc = None if op == "delete" else event.get("fullDocument")
        if doc is None and op != "delete":
            # Looked up after the user was deleted: the delete's own event follows.
            self._count("unchanged")
            return
        now = account_fields(doc)
        if now is not None:
            register_secret(now.password)  # never in a log line, a dead letter or status
        deps = self.deps
        before: KnownAccount | None = await deps.calls(deps.calls.store.known_account, uid)
        if before is None and op != "insert":
            # Never seen here: look for the DID the user had, but only to learn that it went
            # (gone, or re-created). The same DID stays an appearance -- the safe reading:
            # an account backfill publishes what was skipped; were it taken for "unchanged",
            # documents skipped before the account appeared would never be published.
            last = await self._last_known(uid)
            if last is not None and (now is None or last.did != now.did):
                before = last
        change = classify(before, now)
        if change is Change.UNCHANGED:
            if op == "update":  # atproto was touched and there is none: nothing may point
                await self._clear_backrefs(uid)  # to a repository (the platform's writers)
            self._count("unchanged")
            return
        # Cached lookups go: this user's, and any a DID conflict involves.
        deps.accounts.invalidate()
        if change is Change.GONE:
            assert before is not None
            await self._gone_from_users(uid, before, REMOVED)
            await deps.calls(deps.calls.store.drop_known_account, uid)
            self._count("gone")
        elif change is Change.RECREATED:
            assert before is not None and now is not None
            await self._gone_from_users(uid, before, REPLACED)
            await self._appeared(uid, now, recreated=True)
            self._count("recreated")
        elif change is Change.APPEARED:
            assert now is not None
            await self._appeared(uid, now)
            self._count("appeared")
        else:
            assert before is not None and now is not None
            await self._same(uid, before, now)
        if change is not Change.SAME:
            await self._retry_letters(None, frozenset({DID_CONFLICT}))

    async def _last_known(self, uid: str) -> KnownAccount | None:
        """A DID the user had when the stream never showed their account (syncd started
        after it was made, or was upgraded): the one last resolved, one the PDS refused, or
        the one the user's documents' back-references name."""
        deps = self.deps
        cached = deps.accounts.cached(uid)
        if cached is not None:
            return KnownAccount(uid, cached.did, cached.handle)
        for g in deps.gone.all():
            if g.sub == uid and g.reason.startswith(REFUSED):  # the others came from here
                return KnownAccount(uid, g.did, g.handle)
        where = {
            **users_entry_documents(uid, deps.guest_id),
            "atproto.uri": {"$regex": "^at://did:"},
        }
        for coll in deps.collections:
            doc = await deps.db[coll].find_one(where, {"atproto.uri": 1})
            uri = ((doc or {}).get("atproto") or {}).get("uri")
            if isinstance(uri, str):
                return KnownAccount(uid, uri.removeprefix("at://").split("/", 1)[0], "")
        return None

    def _count(self, kind: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1
        metrics.ACCOUNT_EVENTS.labels(kind=kind).inc()

    def _sub(self, uid: str) -> str | None:
        return None if uid == self.deps.guest_id else uid

    async def _appeared(self, uid: str, now: Seen, *, recreated: bool = False) -> None:
        """An account to publish the user's documents into: record it with a backfill."""
        deps = self.deps
        store = deps.calls.store
        did = now.did
        revived = await deps.gone.clear(did)
        await deps.handles.save(did, now.handle)
        if not deps.owns(did):
            await deps.calls(store.put_known_account, uid, did, now.handle, backfill=False)
            return
        await self._drop_sessions(did)
        deps.parking.wake(did)
        await deps.calls(store.put_known_account, uid, did, now.handle, backfill=True)
        job = await deps.calls(store.known_account, uid)
        assert job is not None
        deps.backfills.due(job)
        log.info(
            "account_new" if not recreated else "account_recreated",
            user=uid,
            did=did,
            handle=now.handle,
            came_back=revived,
            action="publishing the user's documents (account backfill)",
        )

    async def _same(self, uid: str, before: KnownAccount, now: Seen) -> None:
        """The same DID: new credentials, a new handle, or an account back from gone."""
        deps = self.deps
        did = now.did
        if did in deps.gone:
            # users names it again and changed: try it again, and publish what was skipped.
            gone = deps.gone.get(did)
            await self._appeared(uid, now)
            log.info("account_back", did=did, was=gone.reason if gone else None)
            self._count("appeared")
            return
        if not deps.owns(did):
            if before.handle != now.handle:
                await deps.calls(
                    deps.calls.store.put_known_account, uid, did, now.handle, backfill=False
                )
            return
        current = deps.writer_password(did)
        if current is not None:
            changed = current != now.password
        else:  # no writer: nothing in memory to drop, but a parked account may wait for it
            changed = deps.parking.is_parked(did)
        deps.refresh_writer(Account(self._sub(uid), did, now.handle, now.password))
        if changed:
            await self._drop_sessions(did)
            deps.parking.wake(did)
            retried = await self._retry_letters(uid, CREDENTIAL_LETTERS)
            log.info("account_credentials_changed", did=did, handle=now.handle, retried=retried)
            self._count("credentials")
        if before.handle != now.handle:
            await deps.handles.save(did, now.handle)
            await deps.calls(
                deps.calls.store.put_known_account, uid, did, now.handle, backfill=False
            )
            log.info("account_handle_changed", did=did, handle=now.handle, was=before.handle)
            self._count("handle")
        elif not changed:
            self._count("unchanged")

    async def _gone_from_users(self, uid: str, before: KnownAccount, reason: str) -> None:
        """``before.did`` is no longer the user's: mark it gone, stop everything for it."""
        deps = self.deps
        did = before.did
        deps.backfills.cancel(uid)
        if not deps.owns(did):
            return
        other = await deps.db[deps.users_collection].find_one(
            {"atproto.did": did, "_id": {"$ne": uid}}, {"_id": 1}
        )
        if other is not None:
            # Another user names it (a DID conflict resolved, or an account moved): it is
            # not gone. Records this user's documents may hold there stay until their next
            # change (or `syncd reconcile`).
            log.info("account_left_user", user=uid, did=did, still_named_by=other["_id"])
            return
        await deps.gone.mark(did, uid, before.handle, reason)
        await self._drop_sessions(did)
        deps.parking.wake(did)  # its parked documents are routed again: skips now
        cleared = await self._clear_backrefs(uid)
        log.warning(
            "account_gone",
            user=uid,
            did=did,
            handle=before.handle,
            reason=reason,
            backrefs_removed=cleared,
            action="no more writes for it; its ledger rows are kept, flagged",
        )

    async def _clear_backrefs(self, uid: str) -> int:
        """Remove the user's documents' back-references (they name records that went with
        the account); each later change of those documents is a skip, or is published
        into the user's new account."""
        deps = self.deps
        query = {**users_entry_documents(uid, deps.guest_id), "atproto.rkey": {"$exists": True}}
        cleared = 0
        for coll in deps.collections:
            result = await retrying(
                lambda coll=coll: deps.db[coll].bulk_write(  # type: ignore[misc]
                    [UpdateMany(query, BACKREF_UNSET)], ordered=False
                ),
                stop=deps.stopping,
                cap=10.0,
                what="backref_cleanup",
            )
            cleared += int(result.modified_count)
        return cleared

    async def _drop_sessions(self, did: str) -> None:
        self.deps.forget_sessions(did)
        await self.deps.calls(self.deps.calls.store.drop_session, did)

    async def _retry_letters(self, uid: str | None, reasons: frozenset[str]) -> int:
        """Route again, now, the retryable dead letters with one of ``reasons`` (of the
        user ``uid``'s documents only, unless None)."""
        deps = self.deps
        store = deps.calls.store
        keys: dict[str, list[str]] = {}
        after: tuple[str, str] | None = None
        while letters := await deps.calls.read(store.dead_letters_due, time.time(), 500, after):
            after = (letters[-1].collection, letters[-1].doc_key)
            for d in letters:
                if d.reason in reasons and d.collection in deps.collections:
                    keys.setdefault(d.collection, []).append(d.doc_key)
        if not keys:
            return 0
        owner = None if uid is None else users_entry_documents(uid, deps.guest_id)["user"]
        chosen: list[tuple[str, str]] = []
        for coll, ks in keys.items():
            if uid is None:
                chosen += [(coll, k) for k in ks]
                continue
            docs = await deps.publisher.fetch(coll, [parse_doc_key(k) for k in ks])
            chosen += [(coll, k) for k, d in docs.items() if d.get("user") == owner]
        if chosen:
            await deps.publisher.republish(chosen, operation="redrive", wait=False)
        return len(chosen)

    # -- before a backfill scans -------------------------------------------------------------
    async def resync(self) -> None:
        """Take the accounts as ``users`` shows them now; for a backfill that has not read a
        document yet (the first start, or the rescan after the history was lost).

        Safe only then: every document is read after this, with the accounts as they are,
        so no document is skipped for an account this takes as known; what changes in
        ``users`` from now on comes down the stream. An account remembered but no longer
        in ``users`` (a change the lost history held) is gone; one under a new DID is
        re-created (the rescan publishes its documents); the others are recorded, so their
        next change is told apart (credentials, handle) instead of taken as new."""
        deps = self.deps
        store = deps.calls.store
        current: dict[str, Seen] = {}
        async for user in deps.db[deps.users_collection].find(
            {"atproto.did": {"$exists": True}}, {"atproto": 1}
        ):
            seen = account_fields(user)
            if isinstance(user["_id"], str) and seen is not None:
                current[user["_id"]] = seen
        after, changed = "", 0
        remembered: dict[str, KnownAccount] = {}
        while page := await deps.calls(store.known_accounts, after, 500):
            after = page[-1].sub
            for known in page:
                remembered[known.sub] = known
                now = current.get(known.sub)
                if now is None or now.did != known.did:
                    deps.accounts.invalidate()
                    reason = REMOVED if now is None else REPLACED
                    await self._gone_from_users(known.sub, known, reason)
                    if now is None:
                        await deps.calls(store.drop_known_account, known.sub)
                    changed += 1
        for uid, now in current.items():
            was = remembered.get(uid)
            if was is None or was.did != now.did or was.handle != now.handle:
                await deps.handles.save(now.did, now.handle)
                await deps.calls(store.put_known_account, uid, now.did, now.handle, backfill=False)
        log.info("accounts_resynced", accounts=len(current), gone_or_replaced=changed)

    # -- the task ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Account backfills (resumed after a restart), and an hourly look at accounts the
        PDS refused: one reported active again comes back."""
        deps = self.deps
        await deps.backfills.load()
        task = asyncio.create_task(deps.backfills.run(), name="account-backfills")
        try:
            while not deps.stopping.is_set():
                try:
                    await self._recheck_refused()
                except Exception as exc:  # the next look, in an hour
                    log.warning("gone_recheck_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                try:
                    await asyncio.wait_for(deps.stopping.wait(), REFUSED_RETRY)
                except TimeoutError:
                    pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _recheck_refused(self) -> None:
        deps = self.deps
        if deps.repo_active is None:
            return
        now = time.time()
        for g in deps.gone.all():
            if not g.reason.startswith(REFUSED) or now - g.since < REFUSED_RETRY or g.sub is None:
                continue
            try:
                active = await deps.repo_active(g.did)
            except Exception as exc:  # a look that failed changes nothing
                log.warning("gone_recheck_failed", did=g.did, error=type(exc).__name__)
                continue
            if not active:
                continue
            user = await deps.db[deps.users_collection].find_one({"_id": g.sub}, {"atproto": 1})
            seen = account_fields(user)
            if seen is None or seen.did != g.did:
                continue  # users names another account now: its own event decides
            log.info("account_active_again", did=g.did, was=g.reason)
            await self._appeared(g.sub, seen)


async def repo_active(xrpc: XrpcClient, did: str) -> bool | None:
    """``com.atproto.sync.getRepoStatus``: whether the PDS hosts ``did`` as active (False:
    deactivated, taken down or not there; None: no answer)."""
    try:
        data = await xrpc.query("com.atproto.sync.getRepoStatus", {"did": did})
    except XrpcError as exc:
        return False if 400 <= exc.status < 500 else None
    return bool(data.get("active"))


def build_lifecycle(
    config: Config,
    *,
    db: AsyncDatabase[dict[str, Any]],
    calls: StateCalls,
    positions: Positions,
    router: Router,
    publisher: Publisher,
    parking: Parking,
    accounts: AccountResolver,
    gone: GoneAccounts,
    sessions: SessionManager,
    xrpc: XrpcClient,
    stopping: asyncio.Event,
    owns: Callable[[str | None], bool],
) -> Lifecycle:
    """The lifecycle wired to the engine's parts; it also takes the parking's refusals."""
    collections = tuple(config.mongo.collections)
    backfills = OwnerBackfills(
        OwnerBackfillDeps(
            db=db,
            calls=calls,
            positions=positions,
            router=router,
            collections=collections,
            guest_id=config.mongo.guest_user_id,
            page=config.mongo.scan_batch_size,
            group=publisher.group,
            capacity=publisher.capacity,
            stopping=stopping,
        )
    )

    def writer_password(did: str) -> str | None:
        writer = router.writers.get(did)
        return None if writer is None else writer.account.password

    def refresh_writer(account: Account) -> None:
        if account.did in router.writers:
            router.writer(account)  # takes the new credentials (and drops the old sessions)

    def forget_sessions(did: str) -> None:
        sessions.forget(Account(None, did, "", ""))

    lifecycle = Lifecycle(
        LifecycleDeps(
            calls=calls,
            db=db,
            accounts=accounts,
            gone=gone,
            parking=parking,
            backfills=backfills,
            publisher=publisher,
            collections=collections,
            users_collection=config.mongo.users_collection,
            guest_id=config.mongo.guest_user_id,
            stopping=stopping,
            writer_password=writer_password,
            refresh_writer=refresh_writer,
            forget_sessions=forget_sessions,
            owns=owns,
            handles=router.deps.handles,
            repo_active=partial(repo_active, xrpc),
        )
    )
    parking.gone = lifecycle
    return lifecycle
