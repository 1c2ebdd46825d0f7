"""Many dead letters in the store: ``python -m bench.deadletters [--dead N] [--changes N]``.

Issue 18 measured 600 changes taking 25 s with 1,000,000 dead letters in the SQLite
state, against 1.4 s with none: the dead-letter gauge counted the whole table with a
GROUP BY after every batch, and the retry pass read every retryable dead letter at
once, on the event loop. Now the counts are kept by triggers and the retry pass reads a
page at a time off the loop. This prints, for each scenario, the seconds from inserting
``--changes`` moods (one ``insert_many``, live on the change stream) to the last record
on the PDS, the longest a ``/metrics`` scrape took meanwhile (the ops listener shares
the event loop), and what the retry pass did:

* no dead letters;
* ``--dead`` permanent dead letters (bad data: not retried by the daemon);
* ``--dead`` dead letters of which ``--due`` are retryable and due, for documents that
  no longer exist: the retry pass pages through them while the moods arrive.

Each scenario has its own database, accounts and state. Needs the PDS's node_modules.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId
from pymongo import MongoClient

from syncd.state import StateStore
from syncd_sandbox.mongo_server import ChildMongo
from syncd_sandbox.pds import PdsProcess
from syncd_sandbox.seed import make_mood
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum
from syncd_sandbox.testing import SandboxWorld


def fill(state_dir: Path, dead: int, due: int) -> float:
    """``dead`` dead letters (the first ``due`` retryable, last seen an hour ago) written
    straight into a fresh state file; returns the seconds it took."""
    started = time.monotonic()
    StateStore(state_dir).close()  # the schema, triggers included
    db = sqlite3.connect(state_dir / "syncd.sqlite3")
    try:
        now = time.time()
        db.execute("BEGIN")
        step = 100_000
        for first in range(0, dead, step):
            rows = [
                (
                    "moods",
                    str(ObjectId()),
                    "transient_image" if i < due else "invalid_field",
                    "bench",
                    int(i < due),
                    1,
                    now - 3600,
                    now - 3600 if i < due else now,
                )
                for i in range(first, min(dead, first + step))
            ]
            db.executemany(
                "INSERT INTO dead_letters (collection, doc_key, reason, detail, retryable, "
                "attempts, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        db.execute("COMMIT")
    finally:
        db.close()
    return time.monotonic() - started


class Scraper:
    """Scrapes /metrics every 50 ms; the slowest answer is the event loop's worst stall."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.wait(0.05):
                started = time.monotonic()
                try:
                    http.get(self.url)
                except httpx.HTTPError:
                    continue
                self.worst = max(self.worst, time.monotonic() - started)
                self.samples += 1

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def scenario(
    base: Path,
    name: str,
    pds: PdsProcess,
    mongo: ChildMongo,
    client: MongoClient[Any],
    *,
    dead: int,
    due: int,
    changes: int,
    rounds: int,
) -> dict[str, Any]:
    tmp = base / name
    tmp.mkdir()
    world = SandboxWorld(
        tmp=tmp, pds_process=pds, mongo=mongo, client=client, database=f"bench_dl_{name}"
    )
    try:
        world.add_guest()
        world.add_user("alice")
        world.write_config(
            {
                "mongo": {"max_await_ms": 100},
                "pipeline": {"dead_letter_retry_seconds": 2.0},
                "logging": {"level": "warning"},
            }
        )
        filled = fill(world.state_dir, dead, due)
        with SyncdProcess(world.config_path, log_path=tmp / "syncd.log") as proc:
            proc.wait_ready(120)
            time.sleep(2.5)  # the first retry pass starts (it runs every 2 s)
            times: list[float] = []
            alice = world.account("alice").sub
            with Scraper(proc.ops_url() + "/metrics") as scraper:
                for n in range(1, rounds + 1):
                    moods = [make_mood(alice, f"mood {i}") for i in range(changes)]

                    def written(target: int = n * changes) -> bool:
                        samples = proc.metrics()
                        done = metric_sum(
                            samples, "syncd_records_written_total", collection="moods"
                        )
                        return done >= target

                    started = time.monotonic()
                    world.insert("moods", *moods)
                    proc.wait_until(written, 600, interval=0.05)
                    times.append(time.monotonic() - started)
            metrics = proc.metrics()
        left = sqlite3.connect(world.state_dir / "syncd.sqlite3")
        try:
            remaining = left.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            counted = left.execute("SELECT SUM(n) FROM dead_letter_counts").fetchone()[0]
        finally:
            left.close()
        return {
            "scenario": name,
            "dead": dead,
            "due": due,
            "fill_s": filled,
            "seconds": times,
            "worst_scrape_s": scraper.worst,
            "scrapes": scraper.samples,
            "gauge": metric_sum(metrics, "syncd_dead_letters"),
            "left": remaining,
            "counted": counted or 0,
        }
    finally:
        world.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--dead", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=20_000, help="retryable and due")
    parser.add_argument("--changes", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3, help="batches of --changes, one by one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dl-") as raw:
        base = Path(raw)
        pds = PdsProcess(base / "pds", log_path=base / "pds.log")
        mongo = ChildMongo(base / "mongo")
        pds.start()
        mongo.start()
        client: MongoClient[Any] = MongoClient(mongo.uri, tz_aware=True)
        try:
            rows = [
                scenario(
                    base, "none", pds, mongo, client, dead=0, due=0,
                    changes=args.changes, rounds=args.rounds,
                ),
                scenario(
                    base, "permanent", pds, mongo, client, dead=args.dead, due=0,
                    changes=args.changes, rounds=args.rounds,
                ),
                scenario(
                    base, "retrying", pds, mongo, client, dead=args.dead, due=args.due,
                    changes=args.changes, rounds=args.rounds,
                ),
            ]  # fmt: skip
        finally:
            client.close()
            mongo.stop()
            pds.stop()
    print(
        f"\n{args.changes} live mood inserts to the last record on the PDS, {args.rounds} "
        f"rounds one after another (SQLite state; load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'scenario':<10} {'dead letters':>12} {'due':>7} {'fill s':>7} {'seconds (rounds)':>22} "
        f"{'worst /metrics':>15} {'gauge':>9} {'left':>9}"
    )
    for r in rows:
        rounds = " ".join(f"{t:.2f}" for t in r["seconds"])
        print(
            f"{r['scenario']:<10} {r['dead']:>12,} {r['due']:>7,} {r['fill_s']:>7.1f} "
            f"{rounds:>22} {r['worst_scrape_s'] * 1000:>12.0f} ms "
            f"{r['gauge']:>9,.0f} {r['left']:>9,}"
        )
        assert r["counted"] == r["left"], r  # the triggers' counts agree with the table


if __name__ == "__main__":
    main()
