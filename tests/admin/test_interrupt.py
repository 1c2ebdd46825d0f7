"""``reconcile --apply`` killed halfway (SIGKILL) and run again converges to the same end state."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest
from bson import ObjectId

from syncd.rkey import decode_tid, derive_rkey
from syncd_sandbox.seed import make_mood
from syncd_sandbox.testing import SandboxWorld
from tests.admin.helpers import NSIDS, SYNCD, OldScripts, assert_converged, syncd_json

MOOD = NSIDS["moods"]


def _mess(world: SandboxWorld) -> list[dict[str, Any]]:
    alice = world.sub("alice")
    docs = [make_mood(alice, f"mood {i}") for i in range(150)]
    world.insert("moods", *docs)
    old = OldScripts(world)
    # Orphans: records for documents that do not exist.
    old.create_many(
        "alice",
        MOOD,
        [
            {"mood": f"ghost {i}", "when": "2024-01-01T00:00:00.000Z", "ref": str(ObjectId())}
            for i in range(60)
        ],
    )
    # Duplicates: the old scripts published the first 20 documents twice, with their own keys.
    values = []
    for doc in docs[:20]:
        when = (
            doc["when"].strftime("%Y-%m-%dT%H:%M:%S.") + f"{doc['when'].microsecond // 1000:03d}Z"
        )
        values += [{"mood": doc["mood"], "when": when, "ref": str(doc["_id"])}] * 2
    old.create_many("alice", MOOD, values)
    return docs


@pytest.mark.parametrize("stage", ["deleting", "publishing"])
def test_killed_reconcile_converges_when_rerun(world: SandboxWorld, stage: str) -> None:
    world.write_config({"pds": {"max_writes_per_call": 3}})
    docs = _mess(world)
    # The end state an uninterrupted run reaches: one record per document, at the key
    # derived from the document, except where the old scripts' duplicates exist: there
    # the earliest of them is kept (syncd's own key is not among them).
    expected = {str(d["_id"]): derive_rkey(d["when"], d["_id"]) for d in docs}
    old_keys: dict[str, list[str]] = {}
    for rec in world.list_records("alice", MOOD):
        old_keys.setdefault(rec["value"]["ref"], []).append(rec["uri"].rsplit("/", 1)[-1])
    for ref, keys in old_keys.items():
        if ref in expected:
            expected[ref] = min(keys, key=decode_tid)
    proc = subprocess.Popen(
        [SYNCD, "reconcile", "--apply", "--progress", "lines", "--config", str(world.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if line.startswith(f"reconcile: {stage} ") and "moods" in line:
            break
        assert time.monotonic() < deadline
    time.sleep(0.3)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    halfway = syncd_json(world, "reconcile")
    assert halfway["differences"] > 0  # it really was interrupted

    rerun = syncd_json(world, "reconcile", "--apply")
    assert rerun["applied"]["failed"] == []
    assert syncd_json(world, "reconcile")["differences"] == 0
    assert_converged(world)
    records = world.records_by_ref("alice", MOOD)
    assert {ref: r["uri"].rsplit("/", 1)[-1] for ref, r in records.items()} == expected
