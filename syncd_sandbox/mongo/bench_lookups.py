"""Micro-benchmark of the MongoDB sandbox's equality look-ups (dev/test only).

``python -m syncd_sandbox.mongo.bench_lookups [--n 20000] [--ops 2000]``

Fills a collection shaped like syncd's MongoDB state ledger (``syncd/state/mongo.py``:
``_id = "<collection>/<key>"``, indexes ``{did, nsid, rkey}`` and ``{c, k}``) and times the
queries the state store sends, with plain pymongo: the key-owner look-up
``{did, nsid, rkey}``, a look-up on ``{c, k}``, ``_id: {$in: [...500]}`` pages, one
account's rows ``{did}``, and a fenced delete (``_id`` plus conditions). It reports
operations per second and the sandbox's CPU time per operation.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from pymongo import ASCENDING, DeleteOne, MongoClient

from .bench import server_cpu_seconds
from .process import start_sandbox_process

Doc = dict[str, Any]
COLLECTIONS = ("paintings", "moods", "pieces", "kidlisp")


def ledger_docs(n: int, accounts: int) -> list[Doc]:
    docs = []
    for i in range(n):
        c = COLLECTIONS[i % 4]
        key = f"{i:024x}"
        docs.append(
            {
                "_id": f"{c}/{key}",
                "c": c,
                "k": key,
                "did": f"did:plc:{i % accounts:024d}",
                "nsid": f"computer.aesthetic.{c}",
                "rkey": f"3k{i:011d}",
                "cid": "bafy" + key,
                "pending": False,
            }
        )
    return docs


def timed(label: str, ops: int, pid: int | None, fn: Callable[[int], None]) -> dict[str, Any]:
    cpu0, t0 = server_cpu_seconds(pid), time.perf_counter()
    for i in range(ops):
        fn(i)
    wall, cpu = time.perf_counter() - t0, server_cpu_seconds(pid) - cpu0
    return {"query": label, "ops": ops, "per_s": ops / wall, "server_us": cpu / ops * 1e6}


def run(n: int, ops: int, accounts: int = 50) -> list[dict[str, Any]]:
    handle = start_sandbox_process(oplog_size=10_000)
    client: MongoClient[Doc] = MongoClient(handle.uri)
    try:
        coll = client["bench"]["syncd_ledger"]
        coll.create_index([("did", ASCENDING), ("nsid", ASCENDING), ("rkey", ASCENDING)])
        coll.create_index([("c", ASCENDING), ("k", ASCENDING)])
        docs = ledger_docs(n, accounts)
        for i in range(0, n, 1000):
            coll.insert_many(docs[i : i + 1000])
        rng = random.Random(7)
        picks = [rng.choice(docs) for _ in range(ops)]
        pid = handle.pid
        results = []

        def owner(i: int) -> None:
            d = picks[i]
            found = coll.find_one({"did": d["did"], "nsid": d["nsid"], "rkey": d["rkey"]}, {"k": 1})
            assert found is not None and found["k"] == d["k"]

        def by_ck(i: int) -> None:
            d = picks[i]
            assert coll.find_one({"c": d["c"], "k": d["k"]}) is not None

        def in_page(i: int) -> None:
            ids = [picks[(i * 7 + j) % ops]["_id"] for j in range(500)]
            assert len(list(coll.find({"_id": {"$in": ids}}))) == len(set(ids))

        def account(i: int) -> None:
            assert len(list(coll.find({"did": picks[i]["did"]}, {"_id": 1}))) == n // accounts

        def fenced_delete(i: int) -> None:
            d = picks[i]
            query = {"_id": d["_id"], "did": d["did"], "rkey": "no-such-key"}
            coll.bulk_write([DeleteOne(query)])  # matches nothing: the document stays

        results.append(timed("find_one {did, nsid, rkey}", ops, pid, owner))
        results.append(timed("find_one {c, k}", ops, pid, by_ck))
        results.append(timed("find {_id: {$in: 500 ids}}", max(1, ops // 20), pid, in_page))
        results.append(timed("find {did} (one account)", max(1, ops // 20), pid, account))
        results.append(timed("delete {_id, did, rkey} (fenced)", ops, pid, fenced_delete))
        return results
    finally:
        client.close()
        handle.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m syncd_sandbox.mongo.bench_lookups")
    p.add_argument("--n", type=int, default=20_000, help="documents in the ledger")
    p.add_argument("--ops", type=int, default=2_000, help="look-ups per query shape")
    args = p.parse_args(argv)
    print(f"ledger of {args.n} documents, {args.ops} look-ups per shape")
    print(f"{'query':40} {'ops/s':>10} {'sandbox µs/op':>14}")
    for r in run(args.n, args.ops):
        print(f"{r['query']:40} {r['per_s']:10.0f} {r['server_us']:14.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
