"""``updateDescription`` of change events, computed from before/after documents.

Part of the MongoDB sandbox (dev/test only). Correct before minimal: a changed
sub-document is descended into and reported by dotted path; arrays that grow report
their new elements as ``arr.N``; arrays that shrink are reported in ``truncatedArrays``;
anything else that changed is reported whole.
"""

from __future__ import annotations

from typing import Any

import bson


def bson_equal(a: Any, b: Any) -> bool:
    """Equality as MongoDB sees stored values (types and key order matter)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict | list):
        return bool(bson.encode({"v": a}) == bson.encode({"v": b}))
    return bool(a == b)


def _diff_doc(
    before: dict[str, Any],
    after: dict[str, Any],
    prefix: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    for key, new in after.items():
        path = prefix + key
        if key not in before:
            updated[path] = new
            continue
        old = before[key]
        if bson_equal(old, new):
            continue
        if isinstance(old, dict) and isinstance(new, dict) and old and new:
            _diff_doc(old, new, path + ".", updated, removed, truncated)
        elif isinstance(old, list) and isinstance(new, list):
            _diff_array(old, new, path, updated, removed, truncated)
        else:
            updated[path] = new
    for key in before:
        if key not in after:
            removed.append(prefix + key)


def _diff_array(
    old: list[Any],
    new: list[Any],
    path: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    common = min(len(old), len(new))
    if common == 0 and len(new) > 0:
        updated[path] = new
        return
    if len(new) < len(old):
        truncated.append({"field": path, "newSize": len(new)})
    for i in range(common):
        a, b = old[i], new[i]
        if bson_equal(a, b):
            continue
        if isinstance(a, dict) and isinstance(b, dict) and a and b:
            _diff_doc(a, b, f"{path}.{i}.", updated, removed, truncated)
        else:
            updated[f"{path}.{i}"] = b
    for i in range(common, len(new)):
        updated[f"{path}.{i}"] = new[i]


def update_description(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Return ``{updatedFields, removedFields, truncatedArrays}`` turning before into after."""
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    _diff_doc(before, after, "", updated, removed, truncated)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}
