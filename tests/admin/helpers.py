"""Helpers for the admin-command tests: run the real CLI, seed the old scripts' mess, check the end state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from syncd.mappings import MAPPINGS, MappingContext, MappingError, not_public_reason
from syncd_sandbox.testing import SandboxWorld

SYNCD = str(Path(sys.executable).parent / "syncd")
NSIDS = {coll: m.nsid for coll, m in MAPPINGS.items()}
CREATE = "com.atproto.repo.applyWrites#create"


def syncd(
    world: SandboxWorld, *args: str, expect: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``syncd ARGS --config world.config_path`` as a subprocess."""
    proc = subprocess.run(
        [SYNCD, *args, "--config", str(world.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if expect is not None:
        assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr[-4000:])
    return proc


def syncd_json(world: SandboxWorld, *args: str, expect: int | None = 0) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(syncd(world, *args, "--json", expect=expect).stdout)
    return out


class OldScripts:
    """Writes records the way the old Node scripts did: PDS-assigned keys, one call each."""

    def __init__(self, world: SandboxWorld) -> None:
        self.world = world
        self._tokens: dict[str, str] = {}

    def token(self, who: str) -> str:
        if who not in self._tokens:
            self._tokens[who] = self.world.access_token(who)
        return self._tokens[who]

    def create(self, who: str, nsid: str, value: dict[str, Any], rkey: str | None = None) -> str:
        body: dict[str, Any] = {
            "repo": self.world.did(who),
            "collection": nsid,
            "record": {"$type": nsid, **value},
        }
        if rkey is not None:
            body["rkey"] = rkey
        out = self.world.api.procedure("com.atproto.repo.createRecord", body, token=self.token(who))
        return str(out["uri"]).rsplit("/", 1)[-1]

    def create_many(self, who: str, nsid: str, values: list[dict[str, Any]]) -> None:
        for i in range(0, len(values), 200):
            writes = [
                {"$type": CREATE, "collection": nsid, "value": {"$type": nsid, **v}}
                for v in values[i : i + 200]
            ]
            self.world.api.procedure(
                "com.atproto.repo.applyWrites",
                {"repo": self.world.did(who), "writes": writes},
                token=self.token(who),
            )

    def put(self, who: str, nsid: str, rkey: str, value: dict[str, Any]) -> None:
        self.world.api.procedure(
            "com.atproto.repo.putRecord",
            {
                "repo": self.world.did(who),
                "collection": nsid,
                "rkey": rkey,
                "record": {"$type": nsid, **value},
            },
            token=self.token(who),
        )


def snapshot(world: SandboxWorld, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``"{name} {nsid}"`` → {rkey: (cid, value)} for every listed account and collection."""
    out: dict[str, dict[str, Any]] = {}
    for name, acc in world.accounts.items():
        if acc.did is None or (names is not None and name not in names):
            continue
        for nsid in NSIDS.values():
            out[f"{name} {nsid}"] = {
                rec["uri"].rsplit("/", 1)[-1]: (rec["cid"], rec["value"])
                for rec in world.list_records(name, nsid)
            }
    return out


def assert_converged(world: SandboxWorld) -> None:
    """Every public document of every account has exactly one record, with today's content,
    named by the document's ``atproto.rkey``; no other record exists; non-public documents
    carry no back-reference."""
    ctx = MappingContext(
        public_base_url=world.config.records.public_base_url.rstrip("/"),
        images=world.config.images,
    )
    for name, acc in world.accounts.items():
        if acc.did is None:
            continue
        owner = {"user": None} if name == "art" else {"user": acc.sub}
        for coll, nsid in NSIDS.items():
            records = world.records_by_ref(name, nsid)  # raises on duplicates
            expected: dict[str, Any] = {}
            for doc in world.db[coll].find(owner):
                at = doc.get("atproto") or {}
                try:
                    public = not_public_reason(doc) is None
                    draft = MAPPINGS[coll].draft(doc, ctx) if public else None
                except MappingError:
                    draft = None
                if draft is None:
                    assert not at.get("rkey"), (coll, doc["_id"], at)
                    continue
                ref = str(doc["_id"])
                expected[ref] = doc
                rec = records.get(ref)
                assert rec is not None, f"{name} {coll} {ref}: no record"
                rkey = rec["uri"].rsplit("/", 1)[-1]
                assert at.get("rkey") == rkey, (coll, ref, at, rkey)
                assert at.get("uri") == rec["uri"]
                value = rec["value"]
                for field, want in draft.fields.items():
                    assert value.get(field) == want, (coll, ref, field, value.get(field), want)
                if coll == "paintings":
                    thumb = value["thumbnail"]
                    assert thumb["$type"] == "blob" and thumb["mimeType"] in (
                        "image/png",
                        "image/jpeg",
                    )
                    assert 0 < thumb["size"] <= 1_048_576
            assert set(records) == set(expected), (name, coll, set(records) ^ set(expected))
