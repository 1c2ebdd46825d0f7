"""The sandbox's string-equality fast path agrees with mongomock's general matcher."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock.filtering import filter_applies

from syncd_sandbox.mongo.storage import string_equality, string_matches

FIELDS = ("did", "nsid", "rkey")
strings = st.sampled_from(["a", "b", "A", "", "1"])
values = st.one_of(
    strings,
    st.integers(0, 2),
    st.none(),
    st.booleans(),
    st.lists(st.one_of(strings, st.integers(0, 1), st.lists(strings, max_size=2)), max_size=3),
    st.dictionaries(strings, strings, max_size=1),
)
docs = st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)
filters = st.dictionaries(st.sampled_from(FIELDS), strings, min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(doc=docs, filter_=filters)
def test_fast_path_matches_like_mongomock(doc: dict[str, Any], filter_: dict[str, str]) -> None:
    assert string_equality(filter_) == filter_
    assert string_matches({"_id": 1, **doc}, filter_) == filter_applies(filter_, {"_id": 1, **doc})


def test_other_filters_take_the_general_path() -> None:
    for f in ({}, {"_id": "x"}, {"a.b": "x"}, {"a": 1}, {"a": {"$gt": "x"}}, {"$or": []}):
        assert string_equality(f) is None
