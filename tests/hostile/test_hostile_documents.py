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
from bson import DatetimeMS, ObjectId
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import PyMongoError

from syncd.ids import doc_key
from syncd_sandbox import tally
from syncd_sandbox.invariant import HIDDEN, INVALID, NO_ACCOUNT, PUBLISH
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_mood, write_painting_files

COLLECTIONS = ("paintings", "moods", "pieces", "kidlisp")
MARK = "@@BADUTF8@@"
BAD_UTF8 = b"a\xed\xa0\x80\xff\xfe\xc3(zzz"  # a CESU surrogate, stray bytes; len(MARK) bytes
assert len(BAD_UTF8) == len(MARK.encode())

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=16),
)
nested = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), inner, max_size=3),
    ),
    max_leaves=12,
)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {f"d{i}": value} if i % 2 else [value]
    return value


def text_field() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(min_size=1, max_size=40),
        st.text(min_size=1, max_size=40),  # weight valid values
        st.just(""),
        st.just("   "),
        st.just(MARK),
        st.integers(min_value=0, max_value=10**6).map(lambda n: "x" * (n % 3 + 1) * 40_000),
        scalar,
        nested,
        st.integers(min_value=30, max_value=90).map(deep),
    )


def when_field() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
        st.just(DatetimeMS(2**62)),  # year ~146 million
        st.just(DatetimeMS(-(2**62))),
        st.just(datetime(1, 1, 1, tzinfo=UTC)),
        st.just(datetime(9999, 12, 31, tzinfo=UTC)),
        st.text(max_size=25),
        st.integers(),
        st.none(),
    )


def id_field() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(ObjectId),
        st.builds(ObjectId),
        st.builds(ObjectId),
        st.text(min_size=1, max_size=30),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.uuids().map(Binary.from_uuid),  # a UUID _id (subtype 4)
    )


def _owner(subs: dict[str, str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(["alice", "bob", "carol", "unknown", "absent"]).map(
            lambda n: subs.get(n, n)
        ),
        st.sampled_from(["alice", "bob"]).map(lambda n: subs[n]),
        scalar,
        st.just("x" * 300),
    )


HOSTILE: dict[str, Any] = {}


def _valid(subs: dict[str, str]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    owner = st.sampled_from([subs["alice"], subs["bob"], "absent"])
    when = st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
    word = st.text(
        st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40
    ).filter(str.strip)
    code = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
    slug = st.from_regex(r"20[0-9]{2}\.[0-9]{2}\.[0-9]{2}\.[a-z0-9]{1,8}", fullmatch=True)
    base = {"_id": st.builds(ObjectId), "user": owner, "when": when}
    return st.one_of(
        st.tuples(
            st.just("paintings"), st.fixed_dictionaries({**base, "slug": slug, "code": code})
        ),
        st.tuples(
            st.just("moods"),
            st.fixed_dictionaries(
                {**base, "user": st.sampled_from([subs["alice"], subs["bob"]]), "mood": word}
            ),
        ),
        st.tuples(
            st.just("pieces"),
            st.fixed_dictionaries(
                base | {"slug": code}, optional={"code": code, "extension": st.just("mjs")}
            ),
        ),
        st.tuples(
            st.just("kidlisp"), st.fixed_dictionaries({**base, "code": code, "source": word})
        ),
    )


def _hostile_fields(subs: dict[str, str]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "_id": id_field(),
        "user": _owner(subs),
        "when": when_field(),
        "mood": text_field(),
        "slug": text_field(),
        "code": text_field(),
        "source": text_field(),
        "extension": text_field(),
        "bucket": st.one_of(
            st.none(), st.just("../etc"), st.just("evil.example.com"), st.text(max_size=10)
        ),
        "nuked": st.one_of(st.booleans(), scalar),
        "private": st.booleans(),
        "visibility": st.one_of(st.just("public"), st.just("unlisted"), scalar),
        "atproto": st.one_of(st.none(), st.just({"rkey": 5}), nested),
        "extra": nested,
        "deep": st.integers(min_value=20, max_value=90).map(deep),
    }


@st.composite
def documents(draw: st.DrawFn, subs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A valid document with 0-3 fields made hostile (missing, wrong type, huge, ...)."""
    collection, doc = draw(_valid(subs))
    hostile = _hostile_fields(subs)
    names = draw(st.lists(st.sampled_from(sorted(hostile)), min_size=1, max_size=4, unique=True))
    for name in names:
        if draw(st.integers(0, 4)) == 0 and name != "_id":
            doc.pop(name, None)  # missing
        else:
            doc[name] = draw(hostile[name])
    return collection, doc


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
