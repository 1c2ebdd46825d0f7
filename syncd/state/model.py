"""What a state store holds, and the interface both backends implement.

Two backends keep the same state: :mod:`syncd.state.sqlite` (one file on the
host, the default) and :mod:`syncd.state.mongo` (collections in MongoDB, so a
standby on another host continues exactly where the leader stopped). Every
caller types against :class:`Store`, never against a backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@runtime_checkable
class ClusterStore(Protocol):
    """What only the MongoDB backend does: claim a partition, show leases (``status``)."""

    def claim(self) -> None: ...
    def lease_document(self, lease_id: str) -> dict[str, Any] | None: ...


class StateError(RuntimeError):
    """The state store cannot be used as it is (corrupt, unreadable, from a newer syncd).

    Its message is one line for the operator: which store, what is wrong, what to do.
    """


@dataclass(frozen=True)
class LedgerEntry:
    collection: str
    doc_key: str
    did: str
    nsid: str
    rkey: str
    cid: str | None
    fingerprint: str | None
    blob_cid: str | None
    pending: bool
    updated_at: float


@dataclass(frozen=True)
class Position:
    token: dict[str, Any] | None
    cluster_time: tuple[int, int] | None
    saved_at: float


@dataclass(frozen=True)
class BackfillProgress:
    collection: str
    last_id: Any
    phase: str
    scanned: int
    done: bool


@dataclass(frozen=True)
class ParkedAccount:
    """An account that cannot write now: its documents wait, by key, until ``until``."""

    did: str
    reason: str
    until: float
    since: float
    documents: int


@dataclass(frozen=True)
class OwnerScan:
    """How far an account backfill has read one collection of its owner's documents."""

    last_id: Any  # the last ``_id`` whose change is applied (None: from the start)
    phase: str  # "objectid" (resumable, in ``_id`` order), "other", "done"
    scanned: int
    total: int | None = None  # the owner's documents when the scan began (progress)


@dataclass(frozen=True)
class KnownAccount:
    """The ATProto account a platform user had when syncd last saw their ``users`` entry
    in the change stream (kept in stream order, so a replayed event is compared with the
    state it followed), and the account backfill due for it, if any."""

    sub: str
    did: str
    handle: str
    backfill_since: float | None = None  # an account backfill is due since then
    progress: dict[str, OwnerScan] = field(default_factory=dict)


@dataclass(frozen=True)
class GoneAccount:
    """An account syncd no longer writes for: removed from ``users`` or refused by the
    PDS (deleted, deactivated, taken down). Its ledger rows are kept, flagged by this."""

    did: str
    sub: str | None  # the ``users`` entry (``_id``) that named it, when known
    handle: str
    reason: str
    since: float


@dataclass(frozen=True)
class DeadLetter:
    collection: str
    doc_key: str
    reason: str
    detail: str
    retryable: bool
    attempts: int
    first_seen: float
    last_seen: float


# -- one batch's state writes: the writer and the router hand these to Store.apply -----
@dataclass(frozen=True, slots=True)
class LedgerPut:
    collection: str
    doc_key: str
    did: str
    nsid: str
    rkey: str
    cid: str | None
    fingerprint: str | None
    blob_cid: str | None
    pending: bool


@dataclass(frozen=True, slots=True)
class LedgerPending:
    collection: str
    doc_key: str


@dataclass(frozen=True, slots=True)
class LedgerDelete:
    """Delete the row; with ``did``/``rkey``, only if it still names that record."""

    collection: str
    doc_key: str
    did: str | None = None
    rkey: str | None = None


OutcomeKind = Literal["published", "hidden", "skip", "dead"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the store remembers about a settled document (see :func:`syncd.state.rules`)."""

    collection: str
    doc_key: str
    kind: OutcomeKind
    reason: str = ""
    detail: str = ""
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class BlobAdd:
    did: str
    cid: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class BlobForget:
    did: str
    cid: str


StateOp = LedgerPut | LedgerPending | LedgerDelete | Outcome | BlobAdd | BlobForget


@dataclass
class Lookup:
    """One batch's reads: ledger rows by (collection, doc key), and which document holds
    each of some record keys in one repository ((nsid, rkey) -> doc key)."""

    entries: dict[tuple[str, str], LedgerEntry]
    holders: dict[tuple[str, str], str]


class Store(Protocol):
    """The state store's interface (see :mod:`syncd.state.sqlite` for what each part holds)."""

    # -- batches (the daemon's hot path: one call per batch, not per document) --------
    def lookup(
        self, keys: Iterable[tuple[str, str]], did: str | None, rkeys: Iterable[tuple[str, str]]
    ) -> Lookup: ...
    def apply(self, ops: Iterable[StateOp]) -> None: ...
    def dead_letters_due(
        self, before: float, limit: int, after: tuple[str, str] | None = None
    ) -> list[DeadLetter]: ...

    def close(self) -> None: ...
    def describe(self) -> str: ...
    def transaction(self) -> AbstractContextManager[None]: ...

    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str | None) -> None: ...

    def save_position(
        self, token: dict[str, Any] | None, cluster_time: tuple[int, int] | None
    ) -> None: ...
    def load_position(self) -> Position | None: ...
    def clear_position(self) -> None: ...

    def backfill_start_time(self) -> tuple[int, int] | None: ...
    def begin_backfill(
        self, start: tuple[int, int], collections: Iterable[str], *, reason: str
    ) -> None: ...
    def backfill_progress(self) -> dict[str, BackfillProgress]: ...
    def save_backfill_progress(
        self, collection: str, last_id: Any, phase: str, scanned: int, done: bool
    ) -> None: ...
    def finish_backfill(self) -> None: ...
    def backfill_reason(self) -> str | None: ...

    def ledger_get(self, collection: str, doc_key: str) -> LedgerEntry | None: ...
    def ledger_get_many(
        self, collection: str, doc_keys: Iterable[str]
    ) -> dict[str, LedgerEntry]: ...
    def ledger_put(
        self,
        collection: str,
        doc_key: str,
        *,
        did: str,
        nsid: str,
        rkey: str,
        cid: str | None,
        fingerprint: str | None,
        blob_cid: str | None,
        pending: bool,
    ) -> None: ...
    def rkey_owner(self, did: str, nsid: str, rkey: str) -> str | None: ...
    def ledger_mark_pending(self, collection: str, doc_key: str) -> None: ...
    def ledger_delete(
        self, collection: str, doc_key: str, *, did: str | None = None, rkey: str | None = None
    ) -> None: ...
    def ledger_iter(
        self, collection: str | None = None, did: str | None = None, batch: int = 1000
    ) -> Iterator[LedgerEntry]: ...
    def ledger_counts(self) -> list[tuple[str, str, int]]: ...
    def ledger_page(self, collection: str, after: str, limit: int) -> list[LedgerEntry]: ...
    def pending_count(self) -> int: ...
    def without_blob_count(self, collection: str) -> int: ...

    def blob_known(self, did: str, cid: str) -> bool: ...
    def blob_add(self, did: str, cid: str, size: int) -> None: ...
    def blob_forget(self, did: str, cid: str | None = None) -> None: ...

    def dead_letter(
        self, collection: str, doc_key: str, reason: str, detail: str, *, retryable: bool = False
    ) -> None: ...
    def clear_dead_letter(self, collection: str, doc_key: str) -> None: ...
    def dead_letters(
        self, collection: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]: ...
    def dead_letter_counts(self) -> dict[str, int]: ...

    def park(
        self, did: str, reason: str, until: float, keys: Iterable[tuple[str, str]]
    ) -> None: ...
    def parked_accounts(self) -> list[ParkedAccount]: ...
    def parked_page(
        self, did: str, before: float, limit: int, after: tuple[str, str] | None = None
    ) -> list[tuple[str, str]]: ...
    def unpark(self, did: str, keys: Iterable[tuple[str, str]], before: float) -> None: ...
    def unpark_account(self, did: str, before: float) -> bool: ...

    def known_account(self, sub: str) -> KnownAccount | None: ...
    def put_known_account(self, sub: str, did: str, handle: str, *, backfill: bool) -> None: ...
    def drop_known_account(self, sub: str) -> None: ...
    def known_accounts(self, after: str, limit: int) -> list[KnownAccount]: ...
    def account_backfills(self) -> list[KnownAccount]: ...
    def save_account_scan(
        self, sub: str, since: float, collection: str, scan: OwnerScan
    ) -> None: ...
    def finish_account_backfill(self, sub: str, since: float) -> None: ...
    def mark_gone(self, did: str, sub: str | None, handle: str, reason: str) -> None: ...
    def clear_gone(self, did: str) -> None: ...
    def gone_accounts(self) -> list[GoneAccount]: ...

    def skip(self, collection: str, doc_key: str, reason: str) -> None: ...
    def unskip(self, collection: str, doc_key: str) -> None: ...
    def skipped_counts(self) -> list[tuple[str, str, int]]: ...

    def wiped_key_put(
        self, collection: str, doc_key: str, did: str, nsid: str, rkey: str
    ) -> None: ...
    def wiped_keys(self, collection: str, did: str) -> dict[str, tuple[str, str]]: ...
    def wiped_key_clear(self, collection: str, doc_key: str, did: str) -> None: ...

    def save_session(self, did: str, access_jwt: str, refresh_jwt: str) -> None: ...
    def load_session(self, did: str) -> tuple[str, str] | None: ...
    def drop_session(self, did: str) -> None: ...
