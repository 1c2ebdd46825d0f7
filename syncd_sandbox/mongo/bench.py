"""Benchmark of the MongoDB sandbox (dev/test only): ``python -m syncd_sandbox.mongo.bench``.

Starts a sandbox subprocess and measures, with plain pymongo:

* ``insert_one`` in a loop from a few concurrent clients (one process each, timed from
  when all are connected),
* ``insert_many`` in batches,

while one change stream on the collection counts events and the end-to-end delay from
the insert call to the event arriving at the watcher.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from typing import Any

from pymongo import MongoClient

from .process import start_sandbox_process


class Watcher(threading.Thread):
    """Counts change events on one collection and records their delays."""

    def __init__(self, uri: str, db: str, coll: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self.stream = self.client[db][coll].watch(max_await_time_ms=200, batch_size=1000)
        self.expected = expected
        self.count = 0
        self.delays: list[float] = []
        self.first_at = 0.0
        self.last_at = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while self.count < self.expected and time.monotonic() < deadline:
            ev = self.stream.try_next()
            if ev is None:
                continue
            now = time.time()
            if self.count == 0:
                self.first_at = now
            self.last_at = now
            self.count += 1
            sent = ev["fullDocument"].get("t")
            if sent is not None:
                self.delays.append(now - sent)
        self.stream.close()
        self.client.close()
        self.done.set()


def _insert_one_worker(
    uri: str, db: str, coll: str, n: int, worker: int, ready: Any, go: Any
) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    c = client[db][coll]
    client.admin.command("ping")
    ready.release()
    go.wait()
    for i in range(n):
        c.insert_one({"w": worker, "i": i, "t": time.time(), "payload": "x" * 64})
    client.close()


def server_cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds used so far by process ``pid`` (Linux; 0.0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report(
    name: str, n: int, elapsed: float, watcher: Watcher, pid: int | None, cpu0: float
) -> dict[str, float]:
    watcher.done.wait(120)
    cpu = server_cpu_seconds(pid) - cpu0
    delays = sorted(watcher.delays) or [0.0]
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    events_rate = watcher.count / max(1e-9, watcher.last_at - watcher.first_at)
    cpu_note = f" | server CPU {cpu / n * 1e6:4.0f} us/doc" if pid is not None else ""
    print(
        f"{name:<30} {n / elapsed:7.0f} inserts/s | change stream {watcher.count} events, "
        f"{events_rate:7.0f} events/s, delay p50 {p50 * 1000:5.1f} ms p99 {p99 * 1000:6.1f} ms"
        + cpu_note
    )
    return {"rate": n / elapsed, "events": watcher.count, "p50": p50, "p99": p99}


def bench_insert_one(
    uri: str, total: int, clients: int, pid: int | None = None
) -> dict[str, float]:
    per = total // clients
    n = per * clients
    watcher = Watcher(uri, "bench", "one", n)
    watcher.start()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    procs = [
        ctx.Process(target=_insert_one_worker, args=(uri, "bench", "one", per, w, ready, go))
        for w in range(clients)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    cpu0 = server_cpu_seconds(pid)
    t0 = time.monotonic()
    go.set()
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - t0
    return _report(f"insert_one x{clients} clients", n, elapsed, watcher, pid, cpu0)


def bench_insert_many(uri: str, total: int, batch: int, pid: int | None = None) -> dict[str, float]:
    watcher = Watcher(uri, "bench", "many", total)
    watcher.start()
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    c = client["bench"]["many"]
    client.admin.command("ping")
    cpu0 = server_cpu_seconds(pid)
    t0 = time.monotonic()
    for start in range(0, total, batch):
        now = time.time()
        c.insert_many(
            [
                {"i": i, "t": now, "payload": "x" * 64}
                for i in range(start, min(total, start + batch))
            ]
        )
    elapsed = time.monotonic() - t0
    client.close()
    return _report(f"insert_many (batches of {batch})", total, elapsed, watcher, pid, cpu0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the MongoDB sandbox (dev/test only).")
    p.add_argument("--n", type=int, default=20_000, help="documents per phase")
    p.add_argument("--clients", type=int, default=4, help="concurrent insert_one clients")
    p.add_argument("--batch", type=int, default=1000, help="insert_many batch size")
    p.add_argument("--persist", action="store_true", help="use a data dir (journal + fsync)")
    p.add_argument("--rounds", type=int, default=1, help="repeat both phases this often")
    p.add_argument("--uri", default=None, help="benchmark this server instead of starting one")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="sandbox-bench-") if args.persist else None
    handle = None
    uri = args.uri
    if uri is None:
        handle = start_sandbox_process(data_dir=tmp.name if tmp else None, oplog_size=200_000)
        uri = handle.uri
    print(f"sandbox: {uri} ({'data dir + fsync' if args.persist else 'in memory'})")
    try:
        pid = handle.pid if handle is not None else None
        for _ in range(args.rounds):
            bench_insert_one(uri, args.n, args.clients, pid)
            bench_insert_many(uri, args.n, args.batch, pid)
    finally:
        if handle is not None:
            handle.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
