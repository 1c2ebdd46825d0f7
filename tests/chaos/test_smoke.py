from __future__ import annotations

from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood


def test_daemon_publishes_and_invariant_holds(rig: Rig) -> None:
    w = rig.world
    w.add_user("carol", with_atproto=False)
    w.add_painting("alice", width=700, height=300, recording=True)
    w.add_painting(None)
    w.insert("moods", make_mood(w.sub("alice"), "hi"), make_mood(w.sub("carol"), "no acct"))
    w.insert("kidlisp", make_kidlisp(None), make_kidlisp(w.sub("bob"), private=True))
    rig.syncd.start()
    report = rig.wait_quiet(30)
    assert report.expected_records == 4  # 2 paintings, a mood, a guest kidlisp
    w.insert("moods", make_mood(w.sub("bob"), "later"))
    rig.wait_quiet(30)
    assert rig.syncd.stop() == 0
