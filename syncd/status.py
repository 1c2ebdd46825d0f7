"""``syncd status``: what the state store says, for people and for machines."""

from __future__ import annotations

import time
from typing import Any

from syncd.accounts import DID_CONFLICT
from syncd.config import Config
from syncd.logs import redact
from syncd.parking import describe as describe_parked
from syncd.state import Store, open_store


def collect(config: Config) -> dict[str, Any]:
    store = open_store(config)
    try:
        now = time.time()
        pos = store.load_position()
        position: dict[str, Any] | None = None
        if pos is not None:
            position = {
                "saved_at": pos.saved_at,
                "age_seconds": round(now - pos.saved_at, 1),
                "cluster_time": list(pos.cluster_time) if pos.cluster_time else None,
                "has_token": pos.token is not None,
            }
        records: dict[str, dict[str, int]] = {}
        for coll, did, n in store.ledger_counts():
            records.setdefault(coll, {})[did] = n
        dids = sorted({did for per in records.values() for did in per})
        handles = {did: store.get_meta(f"handle:{did}") for did in dids}
        backfill = {
            c: {"scanned": p.scanned, "done": p.done, "phase": p.phase}
            for c, p in store.backfill_progress().items()
        }
        skipped: dict[str, dict[str, int]] = {}
        for coll, reason, n in store.skipped_counts():
            skipped.setdefault(coll, {})[reason] = n
        dead = [
            {
                "collection": d.collection,
                "id": d.doc_key,
                "reason": d.reason,
                "detail": redact(d.detail),
                "retryable": d.retryable,
                "attempts": d.attempts,
                "last_seen": d.last_seen,
            }
            for d in store.dead_letters(limit=50)
        ]
        return {
            "accounts": accounts(store, handles),
            "state_file": store.describe(),
            "position": position,
            "backfill": {
                "in_progress": store.backfill_start_time() is not None,
                "reason": store.backfill_reason(),
                "collections": backfill,
            },
            "records": records,
            "handles": handles,
            "records_total": sum(sum(v.values()) for v in records.values()),
            "pending": store.pending_count(),
            # Paintings published without a thumbnail (their image was missing):
            # `syncd reconcile --apply` attaches it once the image exists.
            "without_thumbnail": store.without_blob_count("paintings"),
            "skipped": skipped,
            "tapes": tapes_summary(config, store, records, skipped),
            "parked": describe_parked(store.parked_accounts()),
            "dead_letters": {"counts": store.dead_letter_counts(), "recent": dead},
            "cluster": cluster(config) if config.state.backend == "mongodb" else None,
        }
    finally:
        store.close()


def accounts(store: Store, handles: dict[str, str | None]) -> dict[str, Any]:
    """The account lifecycle: account backfills due or running, accounts gone, DIDs two
    users name."""
    backfills = []
    for job in store.account_backfills():
        read = sum(p.scanned for p in job.progress.values())
        total = sum(p.total or 0 for p in job.progress.values())
        backfills.append(
            {
                "user": job.sub,
                "did": job.did,
                "handle": job.handle,
                "since": job.backfill_since,
                "read": read,
                "of": total or None,
                "collections": {
                    c: {"read": p.scanned, "of": p.total, "phase": p.phase}
                    for c, p in sorted(job.progress.items())
                },
            }
        )
    kept: dict[str, int] = {}
    if store.gone_accounts():
        for _, did, n in store.ledger_counts():
            kept[did] = kept.get(did, 0) + n
    gone = [
        {
            "did": g.did,
            "user": g.sub,
            "handle": g.handle or handles.get(g.did),
            "reason": g.reason,
            "since": g.since,
            "ledger_rows_kept": kept.get(g.did, 0),
        }
        for g in store.gone_accounts()
    ]
    conflicts: set[str] = set()
    after: tuple[str, str] | None = None
    while letters := store.dead_letters_due(time.time(), 500, after):
        after = (letters[-1].collection, letters[-1].doc_key)
        conflicts.update(d.detail for d in letters if d.reason == DID_CONFLICT)
    return {"backfills": backfills, "gone": gone, "did_conflicts": sorted(conflicts)}


def tapes_summary(
    config: Config, store: Store, records: dict[str, dict[str, int]], skipped: dict[str, Any]
) -> dict[str, Any]:
    """Tapes at a glance: mirrored or left out, published, waiting for their MP4, and the
    dead letters by reason (an MP4 over a limit says which one in its detail)."""
    if "tapes" not in config.mongo.collections:
        return {"mirrored": False}
    reasons: dict[str, int] = {}
    for d in store.dead_letters("tapes", limit=10_000):
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    return {
        "mirrored": True,
        "published": sum(records.get("tapes", {}).values()),
        "waiting_for_mp4": skipped.get("tapes", {}).get("mp4_not_ready", 0),
        "dead_letters": reasons,
        "pds_upload_limit": config.pds.blob_upload_limit or None,
    }


def cluster(config: Config) -> dict[str, Any]:
    """Each partition's lease holder, fencing token, expiry and saved position."""
    from syncd.state import ClusterStore, open_store

    now = time.time()
    name = config.cluster.cluster_name
    partitions = []
    for n in range(config.cluster.partitions):
        store = open_store(config, partition=n)
        try:
            assert isinstance(store, ClusterStore)
            lease = store.lease_document(f"{name}/{n}") or {}
            pos = store.load_position()
        finally:
            store.close()
        expires = float(lease.get("expires_at") or 0.0)
        partitions.append(
            {
                "partition": n,
                "leader": lease.get("owner") if expires > now else None,
                "fence": lease.get("fence"),
                "lease_expires_in": round(expires - now, 1) if expires > now else None,
                "position_age_seconds": None if pos is None else round(now - pos.saved_at, 1),
            }
        )
    return {"cluster_name": name, "partitions": partitions}


def render(report: dict[str, Any]) -> str:
    lines = [f"state: {report['state_file']}"]
    pos = report["position"]
    if pos is None:
        lines.append("position: none saved (the next start backfills)")
    else:
        lines.append(
            f"position: saved {pos['age_seconds']}s ago, cluster time {pos['cluster_time']}"
        )
    bf = report["backfill"]
    if bf["in_progress"]:
        lines.append(f"backfill: in progress ({bf['reason']})")
        for c, p in sorted(bf["collections"].items()):
            lines.append(
                f"  {c:<10} scanned {p['scanned']:>8}  {'done' if p['done'] else p['phase']}"
            )
    lines.append(
        f"records mirrored: {report['records_total']} (pending confirmation: {report['pending']})"
    )
    if report.get("without_thumbnail"):
        lines.append(
            f"paintings without a thumbnail (image missing when published): "
            f"{report['without_thumbnail']} (`syncd reconcile --apply` attaches them once "
            "the image exists)"
        )
    tapes = report.get("tapes") or {}
    if tapes.get("mirrored") is False:
        lines.append("tapes: not mirrored (left out of mongo.collections)")
    elif tapes:
        dead = ", ".join(f"{r} {n}" for r, n in sorted(tapes["dead_letters"].items()))
        limit = tapes.get("pds_upload_limit")
        lines.append(
            f"tapes: {tapes['published']} published, {tapes['waiting_for_mp4']} waiting for "
            f"their MP4 (mp4Status not complete), dead letters: {dead or 'none'}; PDS upload "
            f"limit {f'{limit:,} bytes' if limit else 'not configured (learned from 413s)'}"
        )
    handles = report.get("handles") or {}
    for coll, per in sorted(report["records"].items()):
        for did, n in sorted(per.items()):
            who = handles.get(did) or "?"
            lines.append(f"  {coll:<10} {who:<36} {did:<40} {n:>8}")
    if report["skipped"]:
        lines.append("skipped (not an error):")
        for coll, per in sorted(report["skipped"].items()):
            for reason, n in sorted(per.items()):
                lines.append(f"  {coll:<10} {reason:<30} {n:>8}")
    for p in report.get("parked") or []:
        who = (report.get("handles") or {}).get(p["did"]) or p["did"]
        lines.append(
            f"parked: {who}: {p['documents']} document(s) wait ({p['reason']}) "
            f"for {p['in_seconds']}s more"
        )
    acc = report.get("accounts") or {}
    for b in acc.get("backfills") or []:
        per = ", ".join(
            f"{c} {p['read']}/{p['of'] if p['of'] is not None else '?'}"
            for c, p in b["collections"].items()
        )
        lines.append(
            f"account backfill: {b['handle'] or b['did']} ({b['user']}): {b['read']} of "
            f"{b['of'] if b['of'] is not None else '?'} documents read"
            + (f" ({per})" if per else " (starting)")
        )
    for g in acc.get("gone") or []:
        lines.append(
            f"gone: {g['handle'] or '?'} {g['did']} ({g['user'] or 'user unknown'}): "
            f"{g['reason']}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(g['since']))}"
            f"; no writes for it, its documents are skipped; {g['ledger_rows_kept']} ledger "
            "row(s) kept, never re-created there"
        )
    for detail in acc.get("did_conflicts") or []:
        lines.append(f"DID conflict: {detail}")
    if report.get("cluster"):
        lines.append(f"cluster {report['cluster']['cluster_name']}:")
        for p in report["cluster"]["partitions"]:
            who = p["leader"] or "NO LEADER"
            age = p["position_age_seconds"]
            lines.append(
                f"  partition {p['partition']}: {who} (fence {p['fence']}, "
                f"lease {p['lease_expires_in']}s), position "
                f"{'none' if age is None else f'{age}s old'}"
            )
    counts = report["dead_letters"]["counts"]
    lines.append(f"dead letters: {sum(counts.values())}")
    for d in report["dead_letters"]["recent"][:20]:
        lines.append(f"  {d['collection']:<10} {d['id']:<26} {d['reason']}: {d['detail'][:80]}")
    return "\n".join(lines)
