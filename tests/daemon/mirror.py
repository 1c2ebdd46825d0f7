"""A compact mirror check for the daemon tests: the PDS (listed directly) against MongoDB.

The full invariant checker used by the chaos suites lives in syncd_sandbox; this
one is deliberately small so each daemon test states its own expectations.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from syncd import lexicon
from syncd.lexicon import LexiconError
from syncd.mappings import MAPPINGS, MappingError, not_public_reason
from syncd_sandbox.testing import SandboxWorld

NSIDS = {c: m.nsid for c, m in MAPPINGS.items()}
_DUMMY_BLOB = {"$type": "blob", "ref": {"$link": "bafkrei"}, "mimeType": "image/png", "size": 1}


def expected(world: SandboxWorld, collection: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """ref -> (owner DID, expected fields) for every document that must have a record."""
    mapping = MAPPINGS[collection]
    by_sub = {a.sub: a for a in world.accounts.values() if a.did}
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for doc in world.db[collection].find():
        if not_public_reason(doc):
            continue
        try:
            owner = mapping.owner(doc)
            account = by_sub.get("art-guest" if owner is None else owner)
            if account is None or account.did is None:
                continue
            draft = mapping.draft(doc, _ctx(world))
            record = {"$type": draft.nsid, **draft.fields}
            if draft.image is not None:
                record["thumbnail"] = _DUMMY_BLOB
            lexicon.validate(draft.nsid, record)
        except (MappingError, LexiconError):
            continue
        out[draft.fields["ref"]] = (account.did, draft.fields)
    return out


def _ctx(world: SandboxWorld) -> Any:
    from syncd.mappings import MappingContext

    cfg = world.config
    return MappingContext(public_base_url=cfg.records.public_base_url, images=cfg.images)


def actual(world: SandboxWorld, collection: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(DID, rkey, value) for every record of the collection's NSID in every world repo."""
    out = []
    for account in world.accounts.values():
        if not account.did:
            continue
        for rec in world.list_records(account.name, NSIDS[collection]):
            out.append((account.did, rec["uri"].rsplit("/", 1)[1], rec["value"]))
    return out


def assert_mirrored(world: SandboxWorld, collections: tuple[str, ...] = tuple(NSIDS)) -> int:
    """Exactly one record per public valid document, right repo, right fields, back-ref set."""
    checked = 0
    for coll in collections:
        want = expected(world, coll)
        have = actual(world, coll)
        refs = Counter(v.get("ref") for _, _, v in have)
        dupes = {r: n for r, n in refs.items() if n > 1}
        assert not dupes, f"{coll}: duplicate records for {dupes}"
        extra = {v.get("ref") for _, _, v in have} - set(want)
        assert not extra, f"{coll}: records for documents that must have none: {extra}"
        missing = set(want) - {v.get("ref") for _, _, v in have}
        assert not missing, f"{coll}: missing records for {missing}"
        docs = {str(d["_id"]): d for d in world.db[coll].find()}
        for did, rkey, value in have:
            owner_did, fields = want[value["ref"]]
            assert did == owner_did, f"{coll} {value['ref']}: in {did}, expected {owner_did}"
            for k, v in fields.items():
                assert value.get(k) == v, (
                    f"{coll} {value['ref']}: {k}={value.get(k)!r}, expected {v!r}"
                )
            assert docs[value["ref"]].get("atproto", {}).get("rkey") == rkey, (
                f"{coll} {value['ref']}: back-reference"
            )
            checked += 1
    return checked
