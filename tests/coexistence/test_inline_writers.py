"""syncd beside the platform's own inline writers (platform-facts §6), under SIGKILLs.

The platform creates a record for every public document it saves (``createRecord``,
a key the PDS picks) and writes ``atproto.rkey`` back a moment later; mood records
it makes carry a ``when`` a few ms off. ``syncd_sandbox.hooks`` plays those writers
with random delays. Whatever the interleaving with syncd's own write and write-back
-- and with syncd killed and restarted in the middle -- each document must end with
exactly one record, named by its back-reference, and nothing else in the repos
(checked by the independent invariant checker). With write-backs lost, the
platform's records syncd cannot know of are duplicates until ``reconcile --apply``.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from syncd_sandbox import tally
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import (
    make_kidlisp,
    make_mood,
    make_piece,
    make_tape,
    store_url,
    write_tape_file,
)
from syncd_sandbox.syncd_process import metric_sum, run_cli

pytestmark = pytest.mark.slow


def _seeded() -> tuple[int, random.Random]:
    """A random seed (or ``SYNCD_CHAOS_SEED``), printed so that a failure can be replayed."""
    seed = int(os.environ.get("SYNCD_CHAOS_SEED") or random.randrange(1 << 32))
    print(f"\ncoexistence seed: {seed}  (replay: SYNCD_CHAOS_SEED={seed})")
    return seed, random.Random(seed)


def _insert_mix(rig: Rig, rng: random.Random, n: int) -> int:
    """``n`` documents over the four collections, a few at a time, some not public."""
    w = rig.world
    owners = [w.sub("alice"), w.sub("bob"), None]
    inserted = 0
    while inserted < n:
        kind = rng.choice(["moods", "moods", "pieces", "kidlisp", "paintings"])
        owner = rng.choice(owners)
        hidden = {"nuked": True} if rng.random() < 0.08 else {}
        if kind == "moods":
            w.insert("moods", make_mood(owner or w.sub("alice"), f"mood {inserted}", **hidden))
        elif kind == "pieces":
            w.insert("pieces", make_piece(owner, f"piece-{inserted}", **hidden))
        elif kind == "kidlisp":
            w.insert("kidlisp", make_kidlisp(owner, **hidden))
        else:
            who = {w.sub("alice"): "alice", w.sub("bob"): "bob", None: None}[owner]
            w.add_painting(who, width=rng.choice([16, 32, 64, 300]), height=48, **hidden)
        inserted += 1
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.15))
    return inserted


def test_one_record_per_document_beside_the_inline_writers_under_kills(rig: Rig) -> None:
    seed, rng = _seeded()
    w = rig.world
    # Write-backs up to 4 s after the platform's createRecord: seconds later, across kills.
    hooks = w.start_hooks(delay_ms=(0, 600), writeback_delay_ms=(0, 4000), seed=seed)
    rig.syncd.start()
    inserted = kills = 0
    for _ in range(4):
        inserted += _insert_mix(rig, rng, 55)
        time.sleep(rng.uniform(0.0, 1.5))
        rig.syncd.kill()  # SIGKILL: no drain, no saved position
        kills += 1
        tally.count("kill_points", 1)
        inserted += _insert_mix(rig, rng, 5)  # the platform goes on while syncd is down
        rig.syncd.start()
    assert hooks.wait_idle(60)
    report = rig.wait_quiet(120)
    stats = hooks.stats
    print(
        f"inserts {inserted}, syncd SIGKILLs {kills}, platform records {stats.get('records_created')},"
        f" platform write-backs {stats.get('writebacks_written')}, records checked"
        f" {report.records_checked}, violations {len(report.violations)}"
    )
    assert inserted >= 200 and kills >= 4
    assert stats.get("records_created", 0) >= 150  # the platform wrote its own records
    assert report.ok
    assert report.expected_records >= 150
    assert rig.syncd.exited_unexpectedly() is None


def test_one_record_per_tape_beside_the_platforms_tape_webhook(rig: Rig) -> None:
    """The tape writer too (§7: upload the MP4, createRecord, ``at`` written back): tapes
    converted at insert and later, for users and guests, syncd SIGKILLed in the middle
    of the uploads; each public tape ends with one record whose video is its MP4."""
    seed, rng = _seeded()
    w = rig.world
    hooks = w.start_hooks(delay_ms=(0, 800), writeback_delay_ms=(0, 3000), seed=seed)
    rig.syncd.start()
    processing = []
    for i in range(24):
        doc = make_tape(rng.choice([w.sub("alice"), w.sub("bob"), None]))
        obj, _ = write_tape_file(w.image_dir, doc.get("user"), doc["slug"], 400_000, seed=i)
        doc["mp4"] = store_url(obj, w.image_base_url)
        if i % 3 == 0:  # converted later: the webhook runs on the update
            doc["mp4Status"] = "processing"
            processing.append(doc["_id"])
        w.insert("tapes", doc)
        if i == 12:
            rig.syncd.kill()
            tally.count("kill_points", 1)
            rig.syncd.start()
        time.sleep(rng.uniform(0.0, 0.1))
    for doc_id in processing:
        w.db.tapes.update_one({"_id": doc_id}, {"$set": {"mp4Status": "complete"}})
    assert hooks.wait_idle(60)
    report = rig.wait_quiet(120)
    stats = hooks.stats
    written = {
        action: metric_sum(rig.syncd.metrics(), "syncd_records_written_total", action=action)
        for action in ("create", "update", "delete")
    }
    print(
        f"tapes 24, platform tape records {stats.get('records_created.tapes')}, write-backs"
        f" {stats.get('writebacks_written')}, syncd's writes after the restart {written},"
        f" records checked {report.records_checked}, violations {len(report.violations)}"
    )
    assert stats.get("records_created.tapes") == 24, stats
    assert stats.get("tapes_converted") == len(processing), stats
    assert report.ok, report.summary()
    assert report.expected_records == 24
    assert rig.syncd.exited_unexpectedly() is None


def test_lost_platform_writebacks_are_converged_by_reconcile(rig: Rig) -> None:
    seed, rng = _seeded()
    w = rig.world
    hooks = w.start_hooks(
        delay_ms=(0, 300), writeback_delay_ms=(0, 2000), lose_fraction=0.3, seed=seed
    )
    rig.syncd.start()
    inserted = kills = 0
    for _ in range(2):  # the same as above, with kills, only some write-backs never come
        inserted += _insert_mix(rig, rng, 95)
        time.sleep(rng.uniform(0.0, 1.0))
        rig.syncd.kill()
        kills += 1
        tally.count("kill_points", 1)
        inserted += _insert_mix(rig, rng, 5)
        rig.syncd.start()
    assert inserted >= 200 and kills == 2
    assert hooks.wait_idle(60)
    lost = hooks.stats.get("writebacks_lost", 0)
    assert lost > 0
    # syncd cannot know of a platform record whose key was never written back: until a
    # reconcile, such a document has two records (the invariant says which).
    deadline = time.monotonic() + 60
    while not rig.caught_up() and time.monotonic() < deadline:
        time.sleep(0.5)
    before = rig.check()
    assert set(before.by_kind()) <= {"duplicate"}, before.summary()
    applied = run_cli(w.config_path, "reconcile", "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    report = rig.wait_quiet(60)
    print(
        f"\ninserts {inserted}, syncd SIGKILLs {kills}, write-backs lost {lost}, duplicates before reconcile "
        f"{before.by_kind().get('duplicate', 0)}, after: {len(report.violations)}"
    )
    assert report.ok
    assert run_cli(w.config_path, "reconcile", "--check").returncode == 0
