"""The pure comparison (syncd.admin.diff): every kind of difference and the fix it plans."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from syncd.admin import diff
from syncd.admin.inventory import DocState, RepoRecord, doc_state
from syncd.mappings import MappingContext
from syncd.rkey import derive_rkey
from syncd.state import LedgerEntry

DID = "did:plc:alice"
MOOD = "computer.aesthetic.mood"
PAINTING = "computer.aesthetic.painting"
CTX = MappingContext()
WHEN = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
OLD1, OLD2, OLD3 = "3kaaaaaaaaaa2", "3kbbbbbbbbbb2", "3kcccccccccc2"


def mood(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"_id": ObjectId(), "user": "auth0|a", "mood": text, "when": WHEN, **extra}


def state(doc: dict[str, Any], collection: str = "moods") -> DocState:
    return doc_state(collection, doc, CTX)


def record(doc: dict[str, Any], rkey: str, **override: Any) -> RepoRecord:
    s = state({k: v for k, v in doc.items() if k not in ("deleted", "nuked")})
    assert s.fields is not None
    value = {"$type": MOOD, **s.fields, **override}
    return RepoRecord(MOOD, rkey, f"cid-{rkey}", {k: v for k, v in value.items() if v is not None})


def ledger(doc: dict[str, Any], rkey: str, **kw: Any) -> LedgerEntry:
    s = state(doc)
    base: dict[str, Any] = {
        "collection": "moods",
        "doc_key": s.key,
        "did": DID,
        "nsid": MOOD,
        "rkey": rkey,
        "cid": f"cid-{rkey}",
        "fingerprint": s.fingerprint,
        "blob_cid": None,
        "pending": False,
        "updated_at": 0.0,
    }
    base.update(kw)
    return LedgerEntry(**base)


def synced(doc: dict[str, Any], rkey: str) -> dict[str, Any]:
    doc["atproto"] = {"rkey": rkey, "uri": f"at://{DID}/{MOOD}/{rkey}", "cid": f"cid-{rkey}"}
    return doc


def compare(
    records: list[RepoRecord],
    docs: list[dict[str, Any]],
    rows: list[LedgerEntry] = (),  # type: ignore[assignment]
    wiped: dict[str, tuple[str, str]] | None = None,
    *,
    collection: str = "moods",
    thumbnails: dict[str, str] | None = None,
) -> diff.CollectionReport:
    states = {s.key: s for s in (state(d, collection) for d in docs)}
    return diff.compare(
        did=DID,
        collection=collection,
        nsid=MOOD if collection == "moods" else PAINTING,
        records=records,
        docs=states,
        ledger={r.doc_key: r for r in rows},
        wiped=wiped,
        thumbnails=thumbnails,
    )


def kinds(report: diff.CollectionReport) -> dict[str, int]:
    return {k: v for k, v in report.counts().items() if v}


def test_in_sync_reports_nothing() -> None:
    doc = mood()
    key = derive_rkey(WHEN, doc["_id"])
    report = compare([record(doc, key)], [synced(doc, key)], [ledger(doc, key)])
    assert report.total == 0 and not report.deletes and not report.publish
    assert report.keys == {str(doc["_id"]): key}


def test_missing_record_is_created_at_the_derived_key_without_pinning() -> None:
    doc = mood()
    report = compare([], [doc])
    assert kinds(report) == {"missing": 1}
    (p,) = report.publish
    assert (p.action, p.rkey, p.pin) == ("create", derive_rkey(WHEN, doc["_id"]), False)


def test_missing_record_uses_the_adopted_key_then_the_wiped_key() -> None:
    doc = mood(atproto={"rkey": OLD1})
    (p,) = compare([], [doc]).publish
    assert (p.rkey, p.pin) == (OLD1, False)  # the planner adopts it by itself
    doc = mood()
    (p,) = compare([], [doc], wiped={str(doc["_id"]): (MOOD, OLD2)}).publish
    assert (p.rkey, p.pin) == (OLD2, True)  # only the ledger pin makes the writer use it
    doc = mood(atproto={"rkey": "not-a-tid"})
    (p,) = compare([], [doc]).publish
    assert p.rkey == derive_rkey(WHEN, doc["_id"])


def test_missing_record_with_a_ledger_row_is_pinned_to_it() -> None:
    doc = mood()
    (p,) = compare([], [doc], [ledger(doc, OLD1)]).publish
    assert (p.rkey, p.pin) == (OLD1, True)
    # A row at the derived key is dropped instead, so the writer can batch a create.
    key = derive_rkey(WHEN, doc["_id"])
    (p,) = compare([], [doc], [ledger(doc, key)]).publish
    assert (p.rkey, p.pin, p.drop_ledger) == (key, False, True)


def test_missing_record_never_takes_a_key_another_document_keeps() -> None:
    a, b = mood("a"), mood("b", atproto={"rkey": OLD1})
    report = compare([record(a, OLD1)], [a, b], [ledger(a, OLD1)])
    (p,) = report.publish
    assert p.doc_key == str(b["_id"]) and p.rkey == derive_rkey(WHEN, b["_id"]) and p.pin


def test_orphans_deleted_document_hidden_document_and_no_ref() -> None:
    hidden = mood(deleted=True)
    gone = mood()
    recs = [
        record(gone, OLD1),
        record(hidden, OLD2),
        RepoRecord(MOOD, OLD3, "c", {"$type": MOOD, "mood": "x"}),
    ]
    report = compare(recs, [synced(hidden, OLD2)], [ledger(hidden, OLD2), ledger(gone, OLD1)])
    assert kinds(report) == {"orphan": 3, "ledger": 2, "backref": 1}
    assert sorted(report.deletes) == [OLD1, OLD2, OLD3]
    assert sorted(report.ledger_drops) == sorted([str(hidden["_id"]), str(gone["_id"])])
    assert report.backref_unsets == [str(hidden["_id"])]


def test_duplicates_keep_syncds_key_else_the_earliest() -> None:
    doc = mood()
    key = derive_rkey(WHEN, doc["_id"])
    report = compare(
        [record(doc, OLD2), record(doc, key), record(doc, OLD1)],
        [synced(doc, key)],
        [ledger(doc, key)],
    )
    assert kinds(report) == {"duplicate": 2}
    assert sorted(report.deletes) == [OLD1, OLD2]
    # Without syncd's key among them, the earliest stays and the ledger/back-reference follow it.
    report = compare([record(doc, OLD2), record(doc, OLD1)], [mood(), doc])
    assert report.deletes == [OLD2]
    assert report.keys[str(doc["_id"])] == OLD1
    assert [r.rkey for r in report.ledger_repairs] == [OLD1]
    assert [b.rkey for b in report.backref_sets] == [OLD1]


def test_stale_content_is_updated_in_place() -> None:
    doc = mood("today's text")
    key = derive_rkey(WHEN, doc["_id"])
    old = record(doc, key, mood=None, text="today's text")  # the old scripts' moods bug
    report = compare([old], [synced(doc, key)], [ledger(doc, key)])
    assert kinds(report) == {"stale": 1}
    assert report.differences[0].detail == "differs: mood, text"
    (p,) = report.publish
    assert (p.action, p.rkey) == ("update", key)


def test_ledger_and_backref_repairs_need_no_write() -> None:
    doc = mood()
    key = derive_rkey(WHEN, doc["_id"])
    report = compare([record(doc, key)], [doc])
    assert kinds(report) == {"ledger": 1, "backref": 1}
    assert not report.publish and not report.deletes
    report = compare([record(doc, key)], [synced(doc, key)], [ledger(doc, key, pending=True)])
    assert kinds(report) == {"ledger": 1}


def painting(**extra: Any) -> dict[str, Any]:
    return {"_id": ObjectId(), "user": "auth0|a", "slug": "s", "code": "abc", "when": WHEN, **extra}


def painting_record(doc: dict[str, Any], rkey: str, thumb: Any) -> RepoRecord:
    s = state(doc, "paintings")
    assert s.fields is not None
    value = {"$type": PAINTING, **s.fields}
    if thumb is not None:
        value["thumbnail"] = thumb
    return RepoRecord(PAINTING, rkey, f"cid-{rkey}", value)


def blob(link: str = "bafkgood", size: int = 1000, mime: str = "image/png") -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": link}, "mimeType": mime, "size": size}


def test_painting_blob_mismatches() -> None:
    for thumb, why in [
        (blob(size=2_000_000), "exceeds"),
        (blob(mime="image/gif"), "mime"),
        ({"$type": "blob"}, "ref.$link"),
    ]:
        doc = painting()
        key = derive_rkey(WHEN, doc["_id"])
        report = compare([painting_record(doc, key, thumb)], [doc], collection="paintings")
        assert report.counts()["blob"] == 1, thumb
        assert why in next(d.detail for d in report.differences if d.kind == "blob")
        (p,) = report.publish
        assert p.action == "update"
    # A valid thumbnail whose CID differs from the one the ledger recorded.
    doc = painting()
    key = derive_rkey(WHEN, doc["_id"])
    row = LedgerEntry(
        "paintings",
        str(doc["_id"]),
        DID,
        PAINTING,
        key,
        f"cid-{key}",
        state(doc, "paintings").fingerprint,
        "bafkother",
        False,
        0.0,
    )
    report = compare([painting_record(doc, key, blob())], [doc], [row], collection="paintings")
    assert report.counts()["blob"] == 1
    assert report.publish[0].forget_blobs == ("bafkgood", "bafkother")


def test_a_painting_without_thumbnail_differs_only_once_its_image_exists() -> None:
    doc = painting()
    key = derive_rkey(WHEN, doc["_id"])
    rec = painting_record(doc, key, None)  # published while the image was missing
    assert compare([rec], [synced(doc, key)], collection="paintings").counts()["blob"] == 0
    found = {key: "no thumbnail (its image was missing) and the image exists now"}
    report = compare([rec], [doc], collection="paintings", thumbnails=found)
    assert report.counts()["blob"] == 1
    (p,) = report.publish
    assert (p.action, p.rkey) == ("update", key)  # the record's key and fields stay


def test_an_old_way_thumbnail_is_reported_and_remade() -> None:
    doc = painting()
    key = derive_rkey(WHEN, doc["_id"])
    old = {key: "thumbnail made the old way (not the platform's 512x512)"}
    report = compare(
        [painting_record(doc, key, blob())], [doc], collection="paintings", thumbnails=old
    )
    assert report.counts()["blob"] == 1 and report.counts()["stale"] == 0
    assert "old way" in report.differences[0].detail
    (p,) = report.publish
    assert p.action == "update" and p.forget_blobs == ("bafkgood",)


def test_restrict_to_missing_is_what_restore_does() -> None:
    a, b, gone = mood("a"), mood("b"), mood("gone")
    report = compare([record(b, OLD1), record(b, OLD2), record(gone, OLD3)], [a, b])
    only = report.restrict({diff.MISSING})
    assert kinds(only) == {"missing": 1}
    assert not only.deletes and not only.ledger_repairs and not only.backref_sets
    assert [p.doc_key for p in only.publish] == [str(a["_id"])]


def test_unpublishable_public_document_is_not_missing_and_its_record_is_an_orphan() -> None:
    doc = mood("")  # an empty mood cannot form a record
    report = compare([record(mood(), OLD1)], [doc])
    assert report.counts()["missing"] == 0
    doc2 = {**mood(), "mood": ""}
    rec = RepoRecord(MOOD, OLD2, "c", {"$type": MOOD, "mood": "old", "ref": str(doc2["_id"])})
    report = compare([rec], [doc2])
    assert report.deletes == [OLD2]
    assert "cannot be published" in report.differences[0].detail


def test_legacy_mongoid_record_is_the_documents_own_and_is_rewritten_with_ref() -> None:
    # The earliest mood records carry `mongoId` instead of `ref`.
    doc = mood()
    legacy = record(doc, OLD1, ref=None, mongoId=str(doc["_id"]))
    assert "ref" not in legacy.value and legacy.ref == str(doc["_id"])
    # Named by the document: kept (not an orphan), and stale until it carries `ref`.
    report = compare([legacy], [synced(dict(doc), OLD1)])
    assert kinds(report).get("orphan", 0) == 0 and kinds(report).get("stale") == 1
    assert [(p.action, p.rkey) for p in report.publish] == [("update", OLD1)]
    # Not named by the document: still found by its mongoId, and rewritten in place.
    report = compare([legacy], [doc])
    assert kinds(report).get("orphan", 0) == 0 and kinds(report).get("stale") == 1
    # Beside syncd's own record: a duplicate, and the one the document names is kept.
    key = derive_rkey(WHEN, doc["_id"])
    report = compare([legacy, record(doc, key)], [synced(dict(doc), OLD1)], [ledger(doc, key)])
    assert kinds(report).get("duplicate") == 1 and report.deletes == [key]


def test_the_key_the_document_names_is_kept_over_the_ledgers() -> None:
    # The platform's inline writer made a record and wrote its key back; syncd's own
    # record (in the ledger) is the duplicate.
    doc = mood()
    key = derive_rkey(WHEN, doc["_id"])
    report = compare(
        [record(doc, key), record(doc, OLD2)], [synced(dict(doc), OLD2)], [ledger(doc, key)]
    )
    assert report.deletes == [key]
    assert report.keys == {str(doc["_id"]): OLD2}


TAPE = "computer.aesthetic.tape"
MP4 = "https://art-aesthetic-computer.sfo3.digitaloceanspaces.com/t/a.mp4"
VIDEO = {"$type": "blob", "ref": {"$link": "bafkvideo"}, "mimeType": "video/mp4", "size": 900}


def tape_doc(**extra: Any) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "user": "auth0|a",
        "slug": "wand-1",
        "code": "w1",
        "when": WHEN,
        "mp4Status": "complete",
        "mp4": MP4,
        **extra,
    }


def tape_report(
    doc: dict[str, Any], value: dict[str, Any] | None, blob_cid: str | None = "bafkvideo"
) -> diff.CollectionReport:
    s = state(doc, "tapes")
    key = derive_rkey(WHEN, doc["_id"])
    records = [] if value is None else [RepoRecord(TAPE, key, f"cid-{key}", value)]
    row = LedgerEntry(
        "tapes", s.key, DID, TAPE, key, f"cid-{key}", s.fingerprint, blob_cid, False, 0.0
    )
    return diff.compare(
        did=DID,
        collection="tapes",
        nsid=TAPE,
        records=records,
        docs={s.key: s},
        ledger={s.key: row},
    )


def tape_value(doc: dict[str, Any], **override: Any) -> dict[str, Any]:
    s = state(doc, "tapes")
    assert s.fields is not None
    return {"$type": TAPE, **s.fields, "video": VIDEO, **override}


def test_a_tape_in_sync_keeps_its_back_reference_in_at() -> None:
    doc = tape_doc()
    key = derive_rkey(WHEN, doc["_id"])
    doc["at"] = {"rkey": key, "uri": f"at://{DID}/{TAPE}/{key}", "cid": f"cid-{key}"}
    assert tape_report(doc, tape_value(doc)).total == 0
    # An `atproto` field on a tape is not its back-reference: `at` is what must be set.
    other = tape_doc()
    other_key = derive_rkey(WHEN, other["_id"])
    other["atproto"] = {"rkey": other_key}
    report = tape_report(other, tape_value(other))
    assert kinds(report) == {"backref": 1} and report.backref_sets[0].rkey == other_key
    assert "at.rkey is None" in report.differences[0].detail


def test_a_tapes_video_is_checked_against_the_lexicon_and_the_ledger() -> None:
    doc = tape_doc()
    wrong_type = tape_value(doc, video={**VIDEO, "mimeType": "video/quicktime"})
    report = tape_report(doc, wrong_type)
    assert kinds(report) == {"backref": 1, "blob": 1} and report.publish[0].action == "update"
    assert report.publish[0].forget_blobs == ("bafkvideo",)  # uploaded again
    too_big = tape_value(doc, video={**VIDEO, "size": 52_428_801})
    assert "maxSize" in tape_report(doc, too_big).differences[0].detail
    missing = tape_report(doc, tape_value(doc, video=None) | {"video": None})
    assert any(d.kind == "blob" and d.detail == "no video" for d in missing.differences)
    other_blob = tape_report(doc, tape_value(doc), blob_cid="bafkother")
    assert any(d.kind == "blob" and "bafkother" in d.detail for d in other_blob.differences)


def test_deleting_a_tape_record_forgets_its_video() -> None:
    doc = tape_doc(nuked=True)
    report = tape_report(doc, tape_value(tape_doc()) | {"ref": str(doc["_id"])})
    assert kinds(report) == {"orphan": 1, "ledger": 1}
    assert report.deleted_blobs == ["bafkvideo"]
