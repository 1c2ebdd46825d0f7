"""``syncd dead-letters list|retry``: documents that could not be published, and why.

``retry`` re-reads each document and hands its current state to the publish
path (router → writer), exactly as the daemon would: success clears the dead
letter, a document that is still wrong is recorded again with its new reason
(``attempts`` goes up), a document that is gone or no longer public has its
record removed and its dead letter cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from syncd.admin.fixes import publish_documents
from syncd.admin.progress import Reporter
from syncd.logs import redact
from syncd.state import DeadLetter, Store

if TYPE_CHECKING:
    from syncd.engine import Engine


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def letter_json(d: DeadLetter) -> dict[str, Any]:
    return {
        "collection": d.collection,
        "id": d.doc_key,
        "reason": d.reason,
        "detail": redact(d.detail),
        "retryable": d.retryable,
        "attempts": d.attempts,
        "first_seen": _iso(d.first_seen),
        "last_seen": _iso(d.last_seen),
    }


def select(
    store: Store,
    *,
    collections: Sequence[str] | None,
    ids: Sequence[str] | None = None,
    retryable_only: bool = False,
) -> list[DeadLetter]:
    """Dead letters in ``collections`` (all if None), optionally only ``ids`` / retryable ones."""
    letters = store.dead_letters()
    wanted = set(ids or ())
    out = []
    for d in letters:
        if collections is not None and d.collection not in collections:
            continue
        if wanted and d.doc_key not in wanted and f"{d.collection}/{d.doc_key}" not in wanted:
            continue
        if retryable_only and not d.retryable:
            continue
        out.append(d)
    return out


def render_list(letters: Sequence[DeadLetter], *, width: int = 80) -> str:
    if not letters:
        return "no dead letters"
    lines = [
        f"{'collection':<10} {'id':<24} {'reason':<24} {'attempts':>8}  {'last seen':<20}  detail"
    ]
    for d in letters:
        detail = redact(d.detail).replace("\n", " ")
        if len(detail) > width:
            detail = detail[: width - 1] + "…"
        retry = "" if d.retryable else " (permanent)"
        lines.append(
            f"{d.collection:<10} {d.doc_key:<24} {d.reason:<24} {d.attempts:>8}  "
            f"{_iso(d.last_seen):<20}  {detail}{retry}"
        )
    lines.append(f"{len(letters)} dead letter(s)")
    return "\n".join(lines)


@dataclass
class RetryOutcome:
    apply: bool
    selected: list[DeadLetter] = field(default_factory=list)
    cleared: list[dict[str, Any]] = field(default_factory=list)
    still_dead: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "dead-letters retry",
            "apply": self.apply,
            "selected": [letter_json(d) for d in self.selected],
            "cleared": self.cleared,
            "still_dead": self.still_dead,
        }


async def retry(
    engine: Engine,
    *,
    collections: Sequence[str] | None,
    ids: Sequence[str] | None,
    apply: bool,
    reporter: Reporter,
) -> RetryOutcome:
    store = engine.store
    chosen = select(store, collections=collections, ids=ids)
    out = RetryOutcome(apply, chosen)
    if not apply or not chosen:
        return out
    by_coll: dict[str, list[str]] = {}
    for d in chosen:
        by_coll.setdefault(d.collection, []).append(d.doc_key)
    for coll, keys in by_coll.items():
        task = reporter.task(f"retrying {coll}", len(keys))
        await publish_documents(engine, coll, keys, on_progress=task.set)
        task.done()
    now = {(d.collection, d.doc_key): d for d in store.dead_letters()}
    for d in chosen:
        again = now.get((d.collection, d.doc_key))
        if again is None:
            out.cleared.append({"collection": d.collection, "id": d.doc_key})
        else:
            out.still_dead.append(letter_json(again))
    return out


def render_retry(outcome: RetryOutcome) -> str:
    if not outcome.selected:
        return "no dead letters selected"
    if not outcome.apply:
        lines = [render_list(outcome.selected)]
        lines.append("Dry run: nothing retried; rerun with --apply to retry these.")
        return "\n".join(lines)
    lines = [
        f"retried {len(outcome.selected)}: cleared {len(outcome.cleared)}, "
        f"still dead {len(outcome.still_dead)}"
    ]
    for s in outcome.still_dead:
        lines.append(
            f"  {s['collection']:<10} {s['id']:<24} {s['reason']:<24} attempts {s['attempts']}"
            f"  {s['detail'][:80]}"
        )
    return "\n".join(lines)
