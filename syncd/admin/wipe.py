"""``syncd wipe``: delete one account's records in some collections, and syncd's memory of them.

Per collection: list the repository's records (all pages), remember for each
public document the key its record had (``wiped_keys`` in the state store, so
``syncd restore`` brings it back under the same key), delete every record in
``applyWrites`` batches, drop the account's ledger rows, and ``$unset``
``atproto.rkey/uri/cid`` on the account's documents (one bulk update).

Why remember keys: a record's key is derived from the document (``when`` and
``_id``) unless the old scripts assigned it (then ``atproto.rkey`` held it). The
``$unset`` removes that back-reference (the platform's UI must not link to a
deleted record), so without the state store's copy a restore would choose the
derived key instead, and links to the old ``at://`` URI would stay broken.

While the daemon runs, a document changed during or after a wipe is published
again at once (the daemon mirrors every public document): wipe is a step before
``restore`` or before removing the account, not a way to hide content. To hide
content, make the documents non-public; the daemon then removes their records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncd.admin.diff import record_blob_link
from syncd.admin.fixes import delete_records
from syncd.admin.progress import Reporter
from syncd.admin.reconcile import inspect_with_records, select_accounts
from syncd.mappings import MAPPINGS
from syncd.ownership import owner_filter
from syncd.pds.sessions import Account
from syncd.write.writeback import unset_backref

if TYPE_CHECKING:
    from syncd.engine import Engine


@dataclass
class WipeCollection:
    collection: str
    nsid: str
    records: int = 0
    ledger_rows: int = 0
    backrefs: int = 0
    keys_remembered: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class WipeOutcome:
    did: str
    handle: str
    apply: bool
    collections: list[WipeCollection] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(len(c.failed) for c in self.collections)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "wipe",
            "apply": self.apply,
            "did": self.did,
            "handle": self.handle,
            "records": sum(c.records for c in self.collections),
            "deleted": sum(c.deleted for c in self.collections),
            "failed": self.failed,
            "collections": [c.to_json() for c in self.collections],
        }


def backref_filter(account: Account, field: str = "atproto") -> dict[str, Any]:
    """The account's documents that carry any back-reference field (in ``field``:
    the mapping's ``backref``, ``at`` on tapes)."""
    return {
        **owner_filter(account),
        "$or": [
            {f"{field}.rkey": {"$exists": True}},
            {f"{field}.uri": {"$exists": True}},
            {f"{field}.cid": {"$exists": True}},
        ],
    }


async def wipe(
    engine: Engine,
    *,
    account: str,
    collections: Sequence[str],
    apply: bool,
    reporter: Reporter,
) -> WipeOutcome:
    (acct,) = await select_accounts(engine, account)
    store = engine.store
    out = WipeOutcome(acct.did, acct.handle, apply)
    for coll in collections:
        nsid, backref = MAPPINGS[coll].nsid, MAPPINGS[coll].backref
        wc = WipeCollection(coll, nsid)
        out.collections.append(wc)
        # Reconcile's comparison tells which key each public document's record has
        # (or, when it has none, which key syncd would give it).
        records, report = await inspect_with_records(engine, acct, coll, reporter)
        listed = {r.rkey for r in records}
        wc.records = len(records)
        ledger_rows = list(store.ledger_iter(collection=coll, did=acct.did))
        wc.ledger_rows = len(ledger_rows)
        query = backref_filter(acct, backref)
        wc.backrefs = await engine.db[coll].count_documents(query)
        # Remember every public document's key (cheap, and it keeps adopted and
        # salted keys, which nothing else could re-derive once `atproto` is unset).
        remember = dict(report.keys)
        wc.keys_remembered = len(remember)
        if not apply:
            continue
        with store.transaction():
            for key, rkey in remember.items():
                store.wiped_key_put(coll, key, acct.did, nsid, rkey)
        task = reporter.task(f"deleting {acct.handle or acct.did} {coll}", len(records))
        deleted, failed = await delete_records(
            engine, acct, nsid, sorted(listed), on_progress=task.advance
        )
        task.done()
        wc.deleted, wc.failed = deleted, failed
        blobs = {link for r in records if (link := record_blob_link(nsid, r.value))}
        with store.transaction():
            for entry in ledger_rows:
                current = store.ledger_get(coll, entry.doc_key)
                if current is not None and current.did == acct.did:
                    store.ledger_delete(coll, entry.doc_key)
            for cid in blobs:
                store.blob_forget(acct.did, cid)
        await engine.db[coll].update_many(query, unset_backref(backref))
    return out


def render(outcome: WipeOutcome) -> str:
    mode = "apply" if outcome.apply else "dry run"
    lines = [f"wipe ({mode}): {outcome.handle or outcome.did} ({outcome.did})"]
    for c in outcome.collections:
        if outcome.apply:
            lines.append(
                f"  {c.collection:<10} deleted {c.deleted}/{c.records} records, "
                f"{c.ledger_rows} ledger rows, {c.backrefs} back-references; "
                f"{c.keys_remembered} keys kept for restore; failed {len(c.failed)}"
            )
        else:
            lines.append(
                f"  {c.collection:<10} would delete {c.records} records, {c.ledger_rows} "
                f"ledger rows, {c.backrefs} back-references ({c.keys_remembered} keys kept "
                "for restore)"
            )
    if not outcome.apply:
        lines.append("Dry run: nothing changed; rerun with --apply to wipe.")
    return "\n".join(lines)
