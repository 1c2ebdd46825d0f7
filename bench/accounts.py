"""``python -m bench.accounts``: an account that appears with many documents, while others write.

A benchmark, not a test (nothing fails on a timing). It brings up a sandbox world
(empty seed), makes a user ``late`` without an ATProto account who already has
``--docs`` documents (moods and kidlisp, half each) and a user ``busy`` with one,
starts ``syncd run`` and waits until it is idle. Then:

1. ``busy`` writes moods at ``--rate`` per second for ``--seconds``: their latency
   (insert to syncd's back-reference in MongoDB) when nothing else happens;
2. ``late`` gets an account as the platform does it (the PDS account, then
   ``users.atproto``) while ``busy`` keeps writing at the same rate: the time until
   the account backfill has published every earlier document, its documents per
   second, and ``busy``'s latency meanwhile.

Prints a table; ``--json`` prints the figures as JSON too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.procstat import loadavg
from syncd_sandbox.accounts import provision_user
from syncd_sandbox.pds import PdsApi, unique_handle
from syncd_sandbox.seed import make_kidlisp, make_mood
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum
from syncd_sandbox.world import World


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Writer(threading.Thread):
    """Inserts ``busy`` moods at ``rate``/s and records each one's latency (insert to
    back-reference written by syncd)."""

    def __init__(self, db: Any, sub: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.db, self.sub, self.rate = db, sub, rate
        self.stop = threading.Event()
        self.pending: dict[Any, float] = {}
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        n, started = 0, time.monotonic()
        while not self.stop.is_set():
            doc = make_mood(self.sub, f"busy {n}")
            with self.lock:
                self.pending[doc["_id"]] = time.monotonic()
            self.db.moods.insert_one(doc)
            n += 1
            self.collect()
            time.sleep(max(0.0, started + n / self.rate - time.monotonic()))

    def collect(self) -> None:
        with self.lock:
            ids = list(self.pending)
        if not ids:
            return
        for doc in self.db.moods.find(
            {"_id": {"$in": ids}, "atproto.rkey": {"$exists": True}}, {"_id": 1}
        ):
            with self.lock:
                t0 = self.pending.pop(doc["_id"], None)
            if t0 is not None:
                self.latencies.append((time.monotonic() - t0) * 1000)

    def drain(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.collect()
            time.sleep(0.02)


def latency_row(name: str, values: list[float]) -> dict[str, Any]:
    return {
        "phase": name,
        "documents": len(values),
        "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1) if values else None,
    }


def run(directory: Path, docs: int, rate: float, seconds: float) -> dict[str, Any]:
    world = World.up(directory, "empty", reset=True)
    client: MongoClient[Any] = MongoClient(world.mongo_uri, tz_aware=True)
    syncd = SyncdProcess(world.config_path, log_path=directory / "syncd.log")
    try:
        db = client[world.database]
        busy_sub = world.account("create", "busy").sub  # busy has an account ...
        # ... late is a user without one, who already has documents.
        with PdsApi(world.pds_url) as api:
            late_acc = provision_user(db, api, "late", with_atproto=False)
        half = docs // 2
        db.moods.insert_many([make_mood(late_acc.sub, f"late {i}") for i in range(half)])
        db.kidlisp.insert_many(
            [make_kidlisp(late_acc.sub, source=f"(ink {i})") for i in range(docs - half)]
        )
        syncd.start()
        syncd.wait_ready(120)
        syncd.wait_idle(120)

        quiet = Writer(db, busy_sub, rate)
        quiet.start()
        time.sleep(seconds)
        quiet.stop.set()
        quiet.join()
        quiet.drain()

        during = Writer(db, busy_sub, rate)
        with PdsApi(world.pds_url) as api:
            created = api.create_account(unique_handle("late"))
        during.start()
        started = time.monotonic()
        db.users.update_one(
            {"_id": late_acc.sub},
            {
                "$set": {
                    "atproto": {
                        "did": created.did,
                        "handle": created.handle,
                        "password": created.password,
                    }
                }
            },
        )

        def finished() -> bool:
            m = syncd.metrics()
            return (
                metric_sum(m, "syncd_account_backfill_documents_total") >= docs
                and metric_sum(m, "syncd_account_backfills") == 0
            )

        syncd.wait_until(finished, 3600, interval=0.1)
        backfill_s = time.monotonic() - started
        during.stop.set()
        during.join()
        during.drain()
        syncd.wait_idle(120)
        with PdsApi(world.pds_url) as api:
            published = len(api.list_records(created.did, "computer.aesthetic.mood")) + len(
                api.list_records(created.did, "computer.aesthetic.kidlisp")
            )
        (event,) = syncd.events("account_backfill_finished")
        return {
            "documents": docs,
            "published": published,
            "backfill_s_from_users_update": round(backfill_s, 2),
            "backfill_s_syncd": event["seconds"],
            "backfill_docs_per_s": round(docs / backfill_s, 1),
            "busy_rate_per_s": rate,
            "busy_quiet": latency_row("busy, nothing else", quiet.latencies),
            "busy_during": latency_row("busy, during the account backfill", during.latencies),
            "load_average": loadavg(),
        }
    finally:
        if syncd.alive:
            syncd.terminate()
        client.close()
        world.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-accounts-"))
    res = run(directory, args.docs, args.rate, args.seconds)
    print(
        f"account backfill: {res['published']} of {res['documents']} documents published "
        f"{res['backfill_s_from_users_update']} s after users.atproto was set "
        f"({res['backfill_docs_per_s']} documents/s; syncd's own count: "
        f"{res['backfill_s_syncd']} s); load average {res['load_average']}"
    )
    print(f"another user writing {res['busy_rate_per_s']}/s meanwhile:")
    print("| phase | documents | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for row in (res["busy_quiet"], res["busy_during"]):
        print(
            f"| {row['phase']} | {row['documents']} | {row['p50_ms']} | {row['p95_ms']} "
            f"| {row['max_ms']} |"
        )
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
