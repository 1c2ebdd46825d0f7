"""Many clients at once, and the in-process ``MongoSandbox`` class."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from syncd_sandbox.mongo import MongoSandbox
from syncd_sandbox.mongo.process import SandboxProcess

Doc = dict[str, Any]


@pytest.mark.slow
def test_many_concurrent_clients_and_a_watcher_see_everything(mongo: SandboxProcess) -> None:
    clients, per = 8, 150
    db_name = "sb_conc"
    watcher: MongoClient[Doc] = MongoClient(mongo.uri)
    watcher.drop_database(db_name)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            c: MongoClient[Doc] = MongoClient(mongo.uri)
            coll = c[db_name]["c"]
            for i in range(per):
                if i % 10 == 0:
                    coll.insert_many([{"w": worker, "i": i}])
                else:
                    coll.insert_one({"w": worker, "i": i})
                if i % 25 == 0:
                    coll.find_one({"w": worker})
            c.close()
        except BaseException as exc:
            errors.append(exc)

    with watcher[db_name]["c"].watch(max_await_time_ms=100, batch_size=500) as stream:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(seen) < clients * per and time.monotonic() < deadline:
            ev = stream.try_next()
            if ev is not None:
                seen.append((ev["fullDocument"]["w"], ev["fullDocument"]["i"]))
        for t in threads:
            t.join()
    assert not errors
    assert len(seen) == clients * per
    assert len(set(seen)) == clients * per
    for w in range(clients):
        mine = [i for (ww, i) in seen if ww == w]
        assert mine == list(range(per))  # each writer's order is preserved
    assert watcher[db_name]["c"].count_documents({}) == clients * per
    watcher.drop_database(db_name)
    watcher.close()


async def test_in_process_sandbox_with_async_client() -> None:
    sandbox = MongoSandbox(host="127.0.0.1", port=0)
    await sandbox.start()
    try:
        assert sandbox.port > 0
        assert sandbox.uri == f"mongodb://127.0.0.1:{sandbox.port}/?replicaSet=rs0"
        client: AsyncMongoClient[Doc] = AsyncMongoClient(sandbox.uri)
        coll = client["inproc"]["c"]
        stream = await coll.watch(max_await_time_ms=100)
        await coll.insert_one({"_id": 1})
        ev = None
        while ev is None:
            ev = await stream.try_next()
        assert ev["documentKey"] == {"_id": 1}
        await stream.close()
        assert await coll.count_documents({}) == 1
        await client.close()
    finally:
        await sandbox.stop()
