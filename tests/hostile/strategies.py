"""Hypothesis strategies for hostile source documents: a valid document of one of the
four original collections with a few fields made hostile (missing, wrong type, huge,
deeply nested, dates out of range, odd ``_id`` types, owners with and without accounts).

Shared by the daemon-level property test and the fast agreement test between syncd's
mappings and the witness.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import DatetimeMS, ObjectId
from bson.binary import Binary
from hypothesis import strategies as st

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
