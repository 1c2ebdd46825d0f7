"""Regression: a document whose ``atproto`` field is not an object (``5``, ``null``, a list).

Before the fix, the ``atproto.rkey`` write-back failed with a per-document write
error that syncd retried forever, stalling every later change of that account.
"""

from __future__ import annotations

from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood


def test_non_object_atproto_does_not_stall_the_account(rig: Rig) -> None:
    w = rig.world
    alice = w.sub("alice")
    odd = [
        make_mood(alice, f"odd {i}", atproto=value)
        for i, value in enumerate([5, None, [1, 2], "x"])
    ]
    w.insert("moods", *odd)
    w.insert("kidlisp", make_kidlisp(alice, atproto=7))
    later = make_mood(alice, "after the odd ones")
    w.insert("moods", later)
    rig.syncd.start()
    report = rig.wait_quiet(30)
    assert report.expected_records == 6
    for doc in odd:
        assert isinstance(w.db.moods.find_one({"_id": doc["_id"]})["atproto"]["rkey"], str)
    assert rig.syncd.stop() == 0
