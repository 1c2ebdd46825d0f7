"""The slow-image race (issue 18, latest state wins): a painting made private -- or
deleted -- while its image is still downloading is never published.

The world's image server holds the painting's download half-way (headers and half the
body sent) until the test releases it. Meanwhile the painting is made private (a user's)
or deleted (a guest's, in the shared ``art`` repository). Only then is the download
released. The witness is the PDS's firehose, not only the repository: a record that was
created and deleted again would be invisible in the repository afterwards but is on the
firehose.
"""

from __future__ import annotations

import time

from syncd_sandbox.firehose import Firehose
from syncd_sandbox.images import painting_keys
from syncd_sandbox.platform import MOOD, PAINTING
from syncd_sandbox.seed import make_mood, make_painting
from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.testing import SandboxWorld


def test_a_painting_hidden_while_its_image_downloads_is_never_published(
    world: SandboxWorld,
) -> None:
    w = world
    w.write_config({"mongo": {"max_await_ms": 100}, "images": {"timeout_seconds": 60.0}})
    mine = make_painting(w.sub("alice"), slug="slowmine")
    guest = make_painting(None, slug="slowguest")
    control = make_painting(w.sub("bob"), slug="quick")
    held = {}
    for who, doc in (("alice", mine), (None, guest), ("bob", control)):
        w.write_image(who, doc["slug"], width=1024, height=1024, seed=7)
        bucket, key, _ = painting_keys(doc.get("user"), doc["slug"])
        if doc is not control:
            held[str(doc["_id"])] = (bucket, key, w.images.hold(bucket, key))

    with (
        Firehose(w.pds.url) as hose,
        SyncdProcess(w.config_path, log_path=w.tmp / "syncd.log") as proc,
    ):
        proc.wait_ready()
        w.insert("paintings", mine, guest, control)
        # Both downloads are under way (half their bodies read), the control is published.
        proc.wait_until(lambda: all(w.images.holding(b, k) >= 1 for b, k, _ in held.values()), 30)
        hose.wait_for(
            lambda ops: any(o.record and o.record.get("ref") == str(control["_id"]) for o in ops),
            30,
        )
        # Hidden and deleted while the images are still downloading ...
        w.db.paintings.update_one({"_id": mine["_id"]}, {"$set": {"nuked": True}})
        w.db.paintings.delete_one({"_id": guest["_id"]})
        proc.wait_idle(30)
        # ... then the downloads finish.
        for _, _, release in held.values():
            release.set()
        time.sleep(1.0)
        marker = make_mood(w.sub("alice"), "after the slow images")
        w.insert("moods", marker)
        hose.wait_for(
            lambda ops: any(o.record and o.record.get("ref") == str(marker["_id"]) for o in ops),
            30,
        )
        proc.wait_idle(30)
        assert proc.alive
        ops = hose.ops(collection=PAINTING)

    refs = {str(mine["_id"]), str(guest["_id"])}
    touched = [o for o in ops if o.record is not None and o.record.get("ref") in refs]
    assert touched == [], f"published on the firehose: {touched}"
    paths = {o.path for o in ops if o.record is not None and o.record.get("ref") in refs}
    assert not [o for o in ops if o.path in paths]  # and so nothing deleted either
    assert {o.record["ref"] for o in ops if o.record} == {str(control["_id"])}
    assert w.list_records("alice", PAINTING) == [] and w.list_records("art", PAINTING) == []
    assert len(w.list_records("alice", MOOD)) == 1
    report = w.check_invariant(collections=("paintings", "moods"))
    assert report.ok, report.summary()
