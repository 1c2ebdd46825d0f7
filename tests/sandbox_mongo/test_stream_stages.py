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
    _match_strings,
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
