"""The change-stream stages the sandbox applies itself agree with mongomock's.

Consumers such as syncd send ``$match`` on the event's own fields and a top-level
``$project``; the sandbox applies those directly (a string-equality matcher, a field
filter) instead of mongomock's aggregation. In-process, no server.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock import aggregate as mm_aggregate
from mongomock.filtering import filter_applies

from syncd_sandbox.mongo.changestream import (
    _compiled_match,
    _match_fields,
    _match_strings,
    _matches,
    _simple_projection,
    _string_conditions,
)

names = st.sampled_from(["a", "b", "c", ""])
leaf = st.one_of(names, st.integers(0, 2), st.none(), st.lists(names, max_size=2))
events = st.fixed_dictionaries(
    {"_id": st.just({"_data": "00"}), "operationType": names},
    optional={
        "ns": st.one_of(
            st.fixed_dictionaries({}, optional={"db": leaf, "coll": leaf}),
            leaf,
            st.lists(st.fixed_dictionaries({"coll": leaf}), max_size=2),
        ),
        "documentKey": st.fixed_dictionaries({"_id": leaf}),
    },
)
conditions = st.one_of(
    names,
    st.builds(lambda v: {"$eq": v}, names),
    st.builds(lambda vs: {"$in": vs}, st.lists(names, max_size=3)),
)
filters = st.dictionaries(
    st.sampled_from(["operationType", "ns.coll", "ns.db", "ns", "documentKey._id"]),
    conditions,
    min_size=1,
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(event=events, filter_=filters)
def test_string_match_agrees_with_mongomock(event: dict[str, Any], filter_: dict[str, Any]) -> None:
    conditions = _string_conditions(filter_)
    assert conditions is not None
    got = _match_strings(conditions, event)
    if got is not None:  # None: a path crossed an array, mongomock decides
        assert got == filter_applies(filter_, event)


@settings(max_examples=300, deadline=None)
@given(
    event=events,
    fields=st.lists(st.sampled_from(["operationType", "ns", "documentKey", "x"]), max_size=3),
    include=st.booleans(),
)
def test_simple_projection_agrees_with_mongomock(
    event: dict[str, Any], fields: list[str], include: bool
) -> None:
    spec: dict[str, Any] = dict.fromkeys(fields, 1 if include else 0)
    if not spec:
        return
    parsed = _simple_projection(spec)
    assert parsed is not None
    inclusion, keep, keep_id = parsed
    if inclusion:
        mine = {k: v for k, v in event.items() if k in keep or (k == "_id" and keep_id)}
    else:
        mine = {k: v for k, v in event.items() if k not in keep}
    (want,) = mm_aggregate.process_pipeline([dict(event)], None, [{"$project": spec}], None)
    assert mine == want


def test_syncds_match_keeps_the_fast_path_and_agrees_with_mongomock() -> None:
    """syncd's ``$match`` (its collections, or an account change of ``users``: an ``$or``
    with an ``$expr`` on ``updateDescription``) is applied without mongomock's aggregation:
    the clause pinning ``ns.coll`` to strings first, the users clause through mongomock's
    matcher; both agree with mongomock on every event."""
    from syncd.source.users import users_match

    filter_ = {"$or": [{"ns.coll": {"$in": ["moods", "pieces"]}}, users_match("users")]}
    assert _match_fields(filter_) == {"ns", "operationType", "updateDescription"}
    compiled = _compiled_match(filter_)
    assert compiled[0] == "any" and compiled[1][0][0] == "strings"

    def ev(coll: str, op: str, **extra: Any) -> dict[str, Any]:
        return {
            "_id": {"_data": "00"},
            "ns": {"db": "d", "coll": coll},
            "operationType": op,
            **extra,
        }

    def upd(set_: dict[str, Any], removed: list[str]) -> dict[str, Any]:
        return {"updateDescription": {"updatedFields": set_, "removedFields": removed}}

    cases = [
        (ev("moods", "update", **upd({"x": 1}, [])), True),
        (ev("tapes", "insert"), False),
        (ev("users", "insert"), True),
        (ev("users", "delete"), True),
        (ev("users", "update", **upd({"email": "a"}, [])), False),
        (ev("users", "update", **upd({"atproto.password": "p"}, [])), True),
        (ev("users", "update", **upd({"atproto": {"did": "d"}}, [])), True),
        (ev("users", "update", **upd({"atprotoX": 1}, ["profile"])), False),
        (ev("users", "update", **upd({}, ["atproto"])), True),
        (ev("users", "update", **upd({"a": 1}, ["atproto.did"])), True),
    ]
    for event, want in cases:
        assert _matches(compiled, event) is want, event
        assert filter_applies(filter_, event) is want, event
