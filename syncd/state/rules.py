"""The rules both state backends share, written once.

A backend stores rows; what a batch *means* -- which rows a settled document's
outcome sets or clears, how a batch of writes is applied in one unit -- is
decided here, so the SQLite and MongoDB stores cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from syncd.state.model import (
    BlobAdd,
    BlobForget,
    LedgerDelete,
    LedgerEntry,
    LedgerPending,
    LedgerPut,
    Lookup,
    Outcome,
    StateOp,
)

if TYPE_CHECKING:
    from syncd.state.model import Store


def apply_ops(store: Store, ops: Iterable[StateOp]) -> None:
    """Apply a batch in one unit: one transaction (SQLite), grouped bulk writes (MongoDB)."""
    with store.transaction():
        for op in ops:
            if isinstance(op, LedgerPut):
                store.ledger_put(
                    op.collection,
                    op.doc_key,
                    did=op.did,
                    nsid=op.nsid,
                    rkey=op.rkey,
                    cid=op.cid,
                    fingerprint=op.fingerprint,
                    blob_cid=op.blob_cid,
                    pending=op.pending,
                )
            elif isinstance(op, LedgerPending):
                store.ledger_mark_pending(op.collection, op.doc_key)
            elif isinstance(op, LedgerDelete):
                store.ledger_delete(op.collection, op.doc_key, did=op.did, rkey=op.rkey)
            elif isinstance(op, Outcome):
                record_outcome(store, op)
            elif isinstance(op, BlobAdd):
                store.blob_add(op.did, op.cid, op.size)
            elif isinstance(op, BlobForget):
                store.blob_forget(op.did, op.cid)


def record_outcome(store: Store, op: Outcome) -> None:
    """A published (or merely private) document has no dead letter and is not skipped; a
    skipped one has no dead letter; a dead one is a dead letter (attempts counted) and
    no longer a skip."""
    if op.kind in ("published", "hidden"):
        store.clear_dead_letter(op.collection, op.doc_key)
        store.unskip(op.collection, op.doc_key)
    elif op.kind == "skip":
        store.clear_dead_letter(op.collection, op.doc_key)
        store.skip(op.collection, op.doc_key, op.reason)
    else:
        store.unskip(op.collection, op.doc_key)
        store.dead_letter(op.collection, op.doc_key, op.reason, op.detail, retryable=op.retryable)


def lookup_by_rows(
    store: Store,
    keys: Iterable[tuple[str, str]],
    did: str | None,
    rkeys: Iterable[tuple[str, str]],
) -> Lookup:
    """:meth:`Store.lookup` from the row-level reads (a local store's calls are cheap)."""
    by_collection: dict[str, list[str]] = {}
    for collection, doc_key in keys:
        by_collection.setdefault(collection, []).append(doc_key)
    entries: dict[tuple[str, str], LedgerEntry] = {}
    for collection, doc_keys in by_collection.items():
        for doc_key, entry in store.ledger_get_many(collection, doc_keys).items():
            entries[(collection, doc_key)] = entry
    holders: dict[tuple[str, str], str] = {}
    if did is not None:
        for nsid, rkey in set(rkeys):
            holder = store.rkey_owner(did, nsid, rkey)
            if holder is not None:
                holders[(nsid, rkey)] = holder
    return Lookup(entries, holders)
