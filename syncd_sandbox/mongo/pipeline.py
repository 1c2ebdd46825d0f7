"""Aggregation-stage fixes applied before mongomock sees a pipeline (sandbox; dev/test only).

mongomock reads a ``$project`` path ``{"ns.viewOn": <expression>}`` as one literal field
named ``ns.viewOn``, and a nested spec ``{"ns": {"coll": 1}}`` as an expression; a server
reads both as paths (``{ns: {viewOn: ...}}``, ``{"ns.coll": 1}``). :func:`normalize_stage`
rewrites a ``$project`` into the form mongomock reads the way the server does: inclusion
and exclusion flags as dotted paths, computed fields as nested documents.
"""

from __future__ import annotations

from typing import Any


def _is_flag(value: Any) -> bool:
    return isinstance(value, bool | int | float)


def _is_expression_object(value: Any) -> bool:
    return isinstance(value, dict) and any(str(k).startswith("$") for k in value)


def normalize_project(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with nested paths flattened and computed dotted paths nested."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value and not _is_expression_object(value):
                walk(path, value)
            else:
                flat[path] = value

    walk("", spec)
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if _is_flag(value) or "." not in path:
            if path in out:
                return spec  # a path conflict: let mongomock report it
            out[path] = value
            continue
        head, *rest = path.split(".")
        node = out.setdefault(head, {})
        if not isinstance(node, dict):
            return spec
        for part in rest[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                return spec
            node = nxt
        node[rest[-1]] = value
    return out


def normalize_stage(stage: Any) -> Any:
    """One pipeline stage, rewritten where mongomock would read it differently."""
    if isinstance(stage, dict) and len(stage) == 1 and isinstance(stage.get("$project"), dict):
        return {"$project": normalize_project(stage["$project"])}
    return stage


def normalize_pipeline(stages: list[Any]) -> list[Any]:
    return [normalize_stage(s) for s in stages]
