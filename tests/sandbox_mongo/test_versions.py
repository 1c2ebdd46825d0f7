"""What the sandbox reports for each ``--max-wire-version``, and what that version offers."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from syncd_sandbox.mongo.process import start_sandbox_process

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("wire", "version", "split"),
    [(17, "6.0.8", False), (21, "7.0.14", True), (25, "8.0.4", True)],
)
def test_version_follows_wire_version(wire: int, version: str, split: bool) -> None:
    handle = start_sandbox_process(extra_args=["--max-wire-version", str(wire)])
    client: MongoClient[dict[str, Any]] = MongoClient(handle.uri)
    try:
        assert client.admin.command("hello")["maxWireVersion"] == wire
        info = client.admin.command("buildInfo")
        assert info["version"] == version
        assert info["versionArray"][:3] == [int(p) for p in version.split(".")]
        assert client.admin.command("serverStatus")["version"] == version
        coll = client["v"]["c"]
        pipeline = [{"$changeStreamSplitLargeEvent": {}}]
        if split:
            with coll.watch(pipeline, max_await_time_ms=50) as stream:
                coll.insert_one({"_id": 1})
                ev = None
                while ev is None:
                    ev = stream.try_next()
                assert ev["documentKey"] == {"_id": 1}
        else:  # 6.0 before 6.0.9 has no such stage
            with pytest.raises(OperationFailure) as info_:
                with coll.watch(pipeline, max_await_time_ms=50) as stream:
                    stream.try_next()
            assert info_.value.code == 40324
    finally:
        client.close()
        handle.stop()
