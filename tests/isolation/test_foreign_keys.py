"""Keys are checked before they are trusted (issue 18): a document that names another
document's record key (``atproto.rkey``) never touches that record -- not when it is
nuked, not when it is invalid, not when it is public. The dangerous case is the shared
guest repository ``art``, where every anonymous document's record lives side by side.

The witness is the firehose: after the setup, no operation at all reaches a protected
record's path, and its CID is the same at the end. A positive control shows the check is
not "never act on a named key": a nuked document naming its *own* record (the platform
wrote it) gets it deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from syncd_sandbox import platform
from syncd_sandbox.firehose import Firehose
from syncd_sandbox.pds import new_tid
from syncd_sandbox.platform import MOOD, PIECE
from syncd_sandbox.seed import legacy_mood_record, make_mood, make_piece
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum
from syncd_sandbox.testing import SandboxWorld

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _named(doc: dict[str, Any], rkey: str, did: str, nsid: str) -> dict[str, Any]:
    return {**doc, "atproto": {"rkey": rkey, "uri": f"at://{did}/{nsid}/{rkey}"}}


def _put(w: SandboxWorld, who: str, nsid: str, rkey: str, record: dict[str, Any]) -> str:
    """A record written the platform's way (not by syncd); its CID."""
    out = w.api.procedure(
        "com.atproto.repo.putRecord",
        {"repo": w.did(who), "collection": nsid, "rkey": rkey, "record": record},
        token=w.session_token(who),
    )
    return str(out["cid"])


def test_a_document_naming_another_documents_key_never_touches_that_record(
    world: SandboxWorld,
) -> None:
    w = world
    art = w.did(None)
    w.write_config({"mongo": {"max_await_ms": 100}})
    # Guest pieces whose records syncd writes, and records the platform wrote itself:
    # one for a document syncd will see, one whose document is long gone, a legacy mood.
    a = make_piece(None, "alpha", T0)
    e = make_piece(None, "echo", T0 + timedelta(seconds=1))
    f = make_piece(None, "foxtrot", T0 + timedelta(seconds=2))
    kf, kx, kh = new_tid(), new_tid(), new_tid()
    orphan_ref = "0123456789abcdef01234567"  # an ObjectId no document has
    protected: dict[str, tuple[str, str, str]] = {}  # name -> (did, nsid, rkey)
    cids = {
        "f": _put(w, "art", PIECE, kf, platform.record_for("pieces", f)),
        "x": _put(w, "art", PIECE, kx, {**platform.record_for("pieces", a), "ref": orphan_ref}),
    }
    protected["f"] = (art, PIECE, kf)
    protected["x"] = (art, PIECE, kx)
    m = make_mood(w.sub("alice"), "an old mood", T0)
    km = new_tid()
    cids["m"] = _put(w, "alice", MOOD, km, legacy_mood_record(m))
    protected["m"] = (w.did("alice"), MOOD, km)
    # The positive control: the platform's record of a document that is nuked.
    h = make_piece(None, "hotel", T0 + timedelta(seconds=3))
    _put(w, "art", PIECE, kh, platform.record_for("pieces", h))
    w.insert("pieces", a, e, _named(f, kf, art, PIECE))
    w.insert("moods", _named(m, km, w.did("alice"), MOOD))

    with (
        Firehose(w.pds.url) as hose,
        SyncdProcess(w.config_path, log_path=w.tmp / "syncd.log") as proc,
    ):
        proc.wait_ready()
        proc.wait_idle()
        records = w.records_by_ref("art", PIECE)
        ka = records[str(a["_id"])]["uri"].rsplit("/", 1)[1]
        ke = records[str(e["_id"])]["uri"].rsplit("/", 1)[1]
        cids["a"] = records[str(a["_id"])]["cid"]
        protected["a"] = (art, PIECE, ka)
        assert records[str(f["_id"])]["cid"] == cids["f"]  # adopted as it was
        # m's legacy record is m's own: syncd adopted it and wrote it the current way.
        mood = w.get_record("alice", MOOD, km)
        assert mood is not None and mood["value"]["ref"] == str(m["_id"])
        cids["m"] = mood["cid"]
        seen = hose.caught_up(art, w.did("alice"))

        hostile = [
            # nuked, naming a syncd-written guest record (the ledger gives it to `a`)
            make_piece(None, "b-nuked", T0, nuked=True),
            # invalid (slug over the lexicon's 100 bytes), naming the same key
            make_piece(None, "c" * 101, T0),
            # invalid (`when` is not a date), naming the platform's record of `f`
            {**make_piece(None, "c-when", T0), "when": "yesterday"},
            # public and valid, naming `a`'s key: refused, published at its own key
            make_piece(None, "d-public", T0 + timedelta(seconds=9)),
            # nuked, naming a platform record whose document is gone (getRecord says so)
            make_piece(None, "g-nuked", T0, nuked=True),
            # nuked, naming the legacy mood (its record says mongoId, not ref)
            make_mood(w.sub("alice"), "n", T0, nuked=True),
        ]
        named_at = [ka, ka, kf, ka, kx, km]
        for doc, rkey in zip(hostile, named_at, strict=True):
            did, nsid = (w.did("alice"), MOOD) if "mood" in doc else (art, PIECE)
            w.insert("moods" if "mood" in doc else "pieces", _named(doc, rkey, did, nsid))
        # `e` is published by syncd, then nuked *and* made to name `f`'s key: its own
        # record goes, `f`'s stays.
        w.db.pieces.update_one(
            {"_id": e["_id"]},
            {"$set": {"nuked": True, "atproto": {"rkey": kf, "uri": f"at://{art}/{PIECE}/{kf}"}}},
        )
        w.insert("pieces", _named({**h, "nuked": True}, kh, art, PIECE))
        proc.wait_idle()
        refused = metric_sum(proc.metrics(), "syncd_refused_keys_total")
        assert proc.alive
        hose.caught_up(art, w.did("alice"))
        later = hose.ops()[seen:]

    touched = {
        name: [o for o in later if (o.repo, o.collection, o.rkey) == where]
        for name, where in protected.items()
    }
    assert all(not ops for ops in touched.values()), touched
    for name, (did, nsid, rkey) in protected.items():
        rec = w.get_record(did, nsid, rkey)
        assert rec is not None and rec["cid"] == cids[name], name
    # e's own record was deleted; d was published at a key of its own.
    assert [o.action for o in later if o.rkey == ke] == ["delete"]
    final = w.records_by_ref("art", PIECE)
    d_key = final[str(hostile[3]["_id"])]["uri"].rsplit("/", 1)[1]
    assert d_key not in {ka, kf, kx}
    assert refused >= 4, refused
    # The control: a nuked document naming its own (platform-written) record loses it.
    assert [o.action for o in later if o.rkey == kh] == ["delete"]
    assert w.get_record("art", PIECE, kh) is None
    # The world agrees, but for the orphan record syncd cannot attribute (only a rescan
    # or `syncd reconcile` removes those; docs/guarantees.md) and the back-references
    # the hostile documents carry.
    report = w.check_invariant(collections=("pieces", "moods"))
    print(report.summary())
    assert [v.doc for v in report.of_kind("orphan")] == [orphan_ref]
    hostile_ids = {str(d["_id"]) for d in hostile}
    assert {v.doc for v in report.of_kind("bad_backref")} <= hostile_ids
    assert set(report.by_kind()) <= {"orphan", "bad_backref"}, report.summary()
    print(f"\nforeign keys: {refused:.0f} refused, {len(protected)} records untouched")
