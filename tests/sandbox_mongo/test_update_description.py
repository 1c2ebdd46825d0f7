"""``updateDescription`` computed by the sandbox: applying it to the old document gives
the new one (property test over nested documents and arrays)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd_sandbox.mongo.diff import update_description

keys = st.sampled_from(["a", "b", "c", "d"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text("xy", max_size=2))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=4)


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *head, last = path.split(".")
    parent = _walk(doc, head)
    if isinstance(parent, list):
        index = int(last)
        if index == len(parent):
            parent.append(value)
        else:
            parent[index] = value
    else:
        parent[last] = value


def apply(before: dict[str, Any], desc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(before)
    for trunc in desc["truncatedArrays"]:
        *head, last = trunc["field"].split(".")
        parent = _walk(doc, head)
        key: Any = int(last) if isinstance(parent, list) else last
        parent[key] = parent[key][: trunc["newSize"]]
    for path, value in desc["updatedFields"].items():
        _set(doc, path, copy.deepcopy(value))
    for path in desc["removedFields"]:
        *head, last = path.split(".")
        del _walk(doc, head)[last]
    return doc


@settings(max_examples=300, deadline=None)
@given(documents, documents)
def test_applying_the_description_gives_the_new_document(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    desc = update_description(before, after)
    assert apply(before, desc) == after


def test_examples() -> None:
    assert update_description({"a": 1, "b": {"c": 1}}, {"a": 2, "b": {"c": 1, "d": 2}}) == {
        "updatedFields": {"a": 2, "b.d": 2},
        "removedFields": [],
        "truncatedArrays": [],
    }
    assert update_description({"l": [1, 2, 3]}, {"l": [1, 5]}) == {
        "updatedFields": {"l.1": 5},
        "removedFields": [],
        "truncatedArrays": [{"field": "l", "newSize": 2}],
    }
    # 1 and 1.0 and True are different BSON values.
    assert update_description({"a": 1}, {"a": 1.0})["updatedFields"] == {"a": 1.0}
    assert update_description({"a": 1}, {"a": True})["updatedFields"] == {"a": True}
