"""``syncd reconcile`` (and ``syncd restore``, which is reconcile limited to missing records).

For each account (``--account``, or every user with ``atproto.did``) and each
collection: list the repository's records (all pages), read the account's
documents, compare (:mod:`syncd.admin.diff`), print the differences, and with
``--apply`` fix them (:mod:`syncd.admin.fixes`). Accounts and collections are
handled one at a time, so memory is bounded by one account's collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncd.admin.diff import KINDS, CollectionReport, compare, thumbnail_link
from syncd.admin.fixes import ApplyResult, apply_report
from syncd.admin.inventory import (
    DocState,
    RepoRecord,
    account_doc_states,
    all_accounts,
    list_repo,
    resolve_account,
)
from syncd.admin.progress import Reporter
from syncd.images import ImageError, is_platform_thumbnail
from syncd.mappings import MAPPINGS
from syncd.pds.sessions import Account
from syncd.state import LedgerEntry

if TYPE_CHECKING:
    from syncd.engine import Engine


class AccountNotFound(LookupError):
    pass


@dataclass
class AccountOutcome:
    account: Account
    reports: list[CollectionReport] = field(default_factory=list)
    applied: ApplyResult | None = None

    def to_json(self, *, details: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "did": self.account.did,
            "handle": self.account.handle,
            "guest": self.account.sub is None,
            "collections": [],
        }
        for r in self.reports:
            item = r.summary()
            if details:
                item["items"] = [d.to_json() for d in r.differences]
            out["collections"].append(item)
        if self.applied is not None:
            out["applied"] = self.applied.to_json()
        return out


@dataclass
class Outcome:
    command: str
    apply: bool
    accounts: list[AccountOutcome] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return sum(r.total for a in self.accounts for r in a.reports)

    @property
    def failed(self) -> int:
        return sum(len(a.applied.failed) for a in self.accounts if a.applied is not None)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for a in self.accounts:
            for r in a.reports:
                for k, v in r.counts().items():
                    out[k] += v
        return out

    def to_json(self, *, details: bool = True) -> dict[str, Any]:
        applied = ApplyResult()
        for a in self.accounts:
            if a.applied is not None:
                applied.add(a.applied)
        return {
            "command": self.command,
            "apply": self.apply,
            "differences": self.differences,
            "counts": self.counts(),
            "applied": applied.to_json() if self.apply else None,
            "accounts": [a.to_json(details=details) for a in self.accounts],
        }


async def select_accounts(engine: Engine, ident: str | None) -> list[Account]:
    """``--account`` or every account; an account that is gone (syncd.gone: removed from
    users, or refused by the PDS) is never one: nothing is re-created into it."""
    if ident is None:
        return await all_accounts(engine)  # the resolver leaves gone accounts out
    account = await resolve_account(engine, ident)
    gone = engine.gone.get(account.did if account is not None else ident)
    if gone is None and account is None:
        raise AccountNotFound(f"--account: no user with ATProto handle or DID {ident!r}")
    if gone is not None:
        raise AccountNotFound(
            f"--account: {gone.did} is gone ({gone.reason}): syncd no longer writes for it"
        )
    assert account is not None
    return [account]


async def inspect(
    engine: Engine, account: Account, collection: str, reporter: Reporter
) -> CollectionReport:
    """Compare one account's collection with its repository (read-only)."""
    return (await inspect_with_records(engine, account, collection, reporter))[1]


async def inspect_with_records(
    engine: Engine, account: Account, collection: str, reporter: Reporter
) -> tuple[list[RepoRecord], CollectionReport]:
    """The repository's records of ``collection`` and the comparison (read-only)."""
    nsid = MAPPINGS[collection].nsid
    task = reporter.task(f"listing {account.handle or account.did} {collection}")
    records = await list_repo(engine, account.did, nsid, on_page=task.advance)
    task.done()
    docs = await account_doc_states(engine, collection, account)
    store = engine.store
    ledger = {e.doc_key: e for e in store.ledger_iter(collection=collection, did=account.did)}
    thumbnails: dict[str, str] = {}
    if collection == "paintings":
        thumbnails = await thumbnail_facts(engine, account.did, records, docs, ledger)
    return records, compare(
        did=account.did,
        collection=collection,
        nsid=nsid,
        records=records,
        docs=docs,
        ledger=ledger,
        wiped=store.wiped_keys(collection, account.did),
        public_base_url=engine.mapping_ctx.public_base_url,
        thumbnail_max_bytes=engine.config.images.thumbnail_max_bytes,
        thumbnails=thumbnails,
    )


#: Thumbnails read back (getBlob) or images probed (HEAD) at once.
THUMBNAIL_CHECKS = 8


async def thumbnail_facts(
    engine: Engine,
    did: str,
    records: Sequence[RepoRecord],
    docs: Mapping[str, DocState],
    ledger: Mapping[str, LedgerEntry],
) -> dict[str, str]:
    """Painting record key -> why its thumbnail must be made again.

    * a thumbnail syncd did not make with this version (no ledger row confirms it)
      is read back and checked for the platform's shape (512x512, platform-facts §2):
      records made the old way, or by another writer, are reported;
    * a record without a thumbnail (its image was missing) is reported once the
      image exists at one of its candidate keys (a HEAD each).
    Nothing is rewritten here: ``--apply`` re-makes what is reported.
    """
    by_ref = {s.ref: s for s in docs.values() if s.ref is not None and s.publishable}
    shapes: dict[str, bool | None] = {}
    out: dict[str, str] = {}
    sem = asyncio.Semaphore(THUMBNAIL_CHECKS)

    async def check(rec: RepoRecord) -> None:
        state = by_ref.get(rec.ref) if rec.ref is not None else None
        if state is None:
            return
        link = thumbnail_link(rec.value)
        async with sem:
            if link is None:
                if "thumbnail" in rec.value or not state.image_urls:
                    return
                try:
                    found = await engine.image_fetcher.first_recording(state.image_urls)
                except ImageError:
                    return  # unreachable now: nothing to report
                if found is not None:
                    out[rec.rkey] = "no thumbnail (its image was missing) and the image exists now"
                return
            entry = ledger.get(state.key)
            if (
                entry is not None
                and not entry.pending
                and entry.rkey == rec.rkey
                and entry.fingerprint == state.fingerprint
                and entry.blob_cid == link
            ):
                return  # made by this version of syncd
            if link not in shapes:
                data = await engine.repo.get_blob(did, link)
                shapes[link] = None if data is None else is_platform_thumbnail(data)
        shape = shapes[link]
        if shape is None:
            out[rec.rkey] = f"thumbnail blob {link} is not on the PDS"
        elif not shape:
            out[rec.rkey] = "thumbnail made the old way (not the platform's 512x512)"

    await asyncio.gather(*(check(r) for r in records))
    return out


async def reconcile(
    engine: Engine,
    *,
    account: str | None,
    collections: Sequence[str],
    apply: bool,
    reporter: Reporter,
    kinds: Iterable[str] | None = None,
    command: str = "reconcile",
) -> Outcome:
    """Compare (and with ``apply`` fix) every selected account and collection."""
    outcome = Outcome(command, apply)
    only = set(kinds) if kinds is not None else None
    for acct in await select_accounts(engine, account):
        ao = AccountOutcome(acct, applied=ApplyResult() if apply else None)
        outcome.accounts.append(ao)
        for coll in collections:
            report = await inspect(engine, acct, coll, reporter)
            if only is not None:
                report = report.restrict(only)
            ao.reports.append(report)
            if apply and ao.applied is not None and report.total:
                ao.applied.add(await apply_report(engine, acct, report, reporter))
    return outcome


def render(outcome: Outcome, *, details: int = 20) -> str:
    """The human report: one block per account, one line per collection, then items."""
    lines: list[str] = []
    mode = "apply" if outcome.apply else "dry run"
    lines.append(f"{outcome.command} ({mode}): {len(outcome.accounts)} account(s)")
    for ao in outcome.accounts:
        who = ao.account.handle or ao.account.did
        guest = " [guest]" if ao.account.sub is None else ""
        lines.append(f"{who} ({ao.account.did}){guest}")
        for r in ao.reports:
            counts = " ".join(f"{k} {v}" for k, v in r.counts().items() if v)
            lines.append(
                f"  {r.collection:<10} records {r.records}  documents {r.documents} "
                f"(public {r.public})  {counts or 'in sync'}"
            )
            for d in r.differences[:details]:
                what = d.rkey or "-"
                lines.append(f"    {d.kind:<9} {d.doc_key or '-':<24} {what:<13} {d.detail}")
            if len(r.differences) > details:
                lines.append(f"    ... {len(r.differences) - details} more (--details N, --json)")
        if ao.applied is not None:
            a = ao.applied
            lines.append(
                f"  applied: deleted {a.deleted}, published {a.published}, ledger rows "
                f"{a.ledger_fixed}, back-references {a.backrefs_fixed}, failed {len(a.failed)}"
            )
            for f in a.failed[:details]:
                lines.append(f"    failed {f}")
    total = outcome.differences
    counts = ", ".join(f"{k} {v}" for k, v in outcome.counts().items() if v)
    if outcome.apply:
        lines.append(
            f"{total} difference(s) found and applied ({counts or 'none'}); "
            f"{outcome.failed} failed. Rerun without --apply to verify."
        )
    else:
        tail = "; rerun with --apply to fix" if total else ""
        lines.append(f"{total} difference(s) ({counts or 'none'}). Dry run: nothing changed{tail}.")
    return "\n".join(lines)
