"""Hostile and malformed source documents through the real daemon path.

One ``syncd run`` child process for the whole property test; hypothesis feeds
generated documents into MongoDB (wrong types, missing fields, huge strings,
deep nesting, invalid UTF-8, string/int/UUID ``_id``s, dates out of range,
unknown fields, owners with and without accounts). Afterwards: syncd is still
running, the stream is not stalled (a sentinel inserted last is published),
every invalid document is dead-lettered with a reason, every skipped one has
a reason, and the invariant holds (each good document published once, no
record for any other).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from pymongo.errors import PyMongoError

from syncd.ids import doc_key
from syncd_sandbox import tally
from syncd_sandbox.invariant import HIDDEN, INVALID, NO_ACCOUNT, PUBLISH
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_mood, write_painting_files
from tests.hostile.strategies import BAD_UTF8, MARK, documents


def _insert(coll: Any, doc: dict[str, Any]) -> None:
    if doc.get("user") == "absent":
        del doc["user"]
    opts = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)
    raw = bson.encode(doc, codec_options=opts)
    if MARK.encode() in raw:
        raw = raw.replace(MARK.encode(), BAD_UTF8)
    coll.insert_one(RawBSONDocument(raw))


def test_hostile_documents_through_the_daemon(rig: Rig) -> None:
    w = rig.world
    w.add_user("carol", with_atproto=False)
    subs = {n: w.sub(n) or "" for n in ("alice", "bob", "carol")}
    subs["unknown"] = "auth0|nobody-knows-me"
    rig.syncd.start()
    rig.wait_quiet(30)

    inserted: dict[tuple[str, str], dict[str, Any]] = {}
    refused: list[str] = []

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(documents(subs))
    def feed(item: tuple[str, dict[str, Any]]) -> None:
        collection, doc = item
        if collection == "paintings" and isinstance(doc.get("slug"), str):
            user = doc.get("user")
            try:  # the image, where the platform would have stored it
                write_painting_files(
                    w.image_dir,
                    None if user == "absent" else user,
                    doc["slug"],
                    width=80,
                    height=60,
                )
            except Exception:
                pass
        try:
            _insert(w.db[collection], dict(doc))
        except (PyMongoError, bson.errors.BSONError, OverflowError) as exc:
            refused.append(f"{type(exc).__name__}: {str(exc)[:60]}")
            return
        inserted[(collection, doc_key(doc["_id"]))] = doc

    feed()
    assert rig.syncd.exited_unexpectedly() is None, rig.syncd.tail()
    # Not stalled: a good document inserted after all of them is published.
    sentinel = make_mood(subs["alice"], "after the storm")
    w.insert("moods", sentinel)
    report = rig.wait_quiet(120)
    assert report.expectations[("moods", str(sentinel["_id"]))].state == PUBLISH

    db = sqlite3.connect(rig.world.state_dir / "syncd.sqlite3")
    try:
        dead = {
            (c, k): (r, d)
            for c, k, r, d in db.execute(
                "SELECT collection, doc_key, reason, detail FROM dead_letters"
            )
        }
        skipped = {
            (c, k): r for c, k, r in db.execute("SELECT collection, doc_key, reason FROM skipped")
        }
    finally:
        db.close()
    states: dict[str, int] = {}
    problems: list[str] = []
    for key in inserted:
        exp = report.expectations.get(key)
        assert exp is not None, f"{key} vanished from MongoDB"
        states[exp.state] = states.get(exp.state, 0) + 1
        if exp.state == INVALID:
            if key not in dead or not dead[key][0]:
                # An owner problem may be reported as a skip instead.
                if key not in skipped:
                    problems.append(
                        f"{key}: invalid ({exp.reason}) but not dead-lettered: {inserted[key]!r:.300}"
                    )
        elif exp.state == NO_ACCOUNT:
            if key not in skipped and key not in dead:
                problems.append(f"{key}: owner without account but no skip reason")
        elif exp.state in (PUBLISH, HIDDEN) and key in dead:
            problems.append(
                f"{key}: {exp.state} but dead-lettered {dead[key]}: {inserted[key]!r:.300}"
            )
    tally.count("bad_documents", len(inserted) - states.get(PUBLISH, 0))
    tally.count("good_documents", states.get(PUBLISH, 0))
    print(
        f"\nhostile documents: {len(inserted)} inserted by state {states}; refused by MongoDB: {len(refused)} {Counter(r.split(':')[0] for r in refused)}"
    )
    assert not problems, "\n".join(problems[:20])
    assert states.get(PUBLISH, 0) > 5 and states.get(INVALID, 0) > 20, states
    assert rig.syncd.stop() == 0


def test_when_edges_are_not_lost() -> None:
    """Sanity for the generator: a ms-truncated aware datetime round-trips BSON."""
    d = datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC) + timedelta(0)
    assert bson.decode(bson.encode({"w": d}), CodecOptions(tz_aware=True))["w"] == d
