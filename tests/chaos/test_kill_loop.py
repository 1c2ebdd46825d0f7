"""syncd SIGKILLed at ≥30 seeded moments, under load, and restarted: nothing lost, duplicated or left behind.

Kill moments (drawn from one seeded RNG, printed; replay with
``SYNCD_CHAOS_SEED=<seed>``: the same seed draws the same schedule of kinds,
delays and event counts; wall-clock timing still varies):

* ``random``          -- a random delay after start (covers backfill, position saves, idle);
* ``apply_request``   -- the moment the PDS proxy receives an ``applyWrites`` (mid-call:
  the PDS applies it, syncd never hears back);
* ``apply_response``  -- right after the ``applyWrites`` reply was relayed (between the
  PDS write and the ledger commit / ``atproto.rkey`` write-back);
* ``upload_blob``     -- the moment a thumbnail upload arrives;
* ``backfill``        -- while a backfill pass is in progress (the first start, and
  the rescan after the oplog was truncated while syncd was down).
"""

from __future__ import annotations

import os
import random
import threading
import time

from syncd.state import StateStore
from syncd_sandbox import tally
from syncd_sandbox.load import LoadGenerator
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece

KILL_POINTS = 32
TARGETED = {
    "apply_request": ("request", "com.atproto.repo.applyWrites"),
    "apply_response": ("response", "com.atproto.repo.applyWrites"),
    "upload_blob": ("request", "com.atproto.repo.uploadBlob"),
}
KINDS = ("random", "apply_request", "apply_response", "upload_blob")


def schedule(seed: int, n: int) -> list[tuple[str, float, int]]:
    """(kind, delay or fallback seconds, which matching event) for each kill point."""
    rng = random.Random(seed)
    plan: list[tuple[str, float, int]] = [("backfill", rng.uniform(0.4, 1.2), 1)]
    kinds = [KINDS[i % len(KINDS)] for i in range(n - 1)]
    rng.shuffle(kinds)
    for kind in kinds:
        plan.append((kind, rng.uniform(0.3, 2.0), rng.randint(1, 3)))
    return plan


def _backfilling(rig: Rig) -> bool:
    store = StateStore(rig.world.state_dir)
    try:
        return store.backfill_start_time() is not None or store.load_position() is None
    finally:
        store.close()


def test_kill_loop(rig: Rig) -> None:
    seed = int(os.environ.get("SYNCD_CHAOS_SEED") or random.randrange(1 << 32))
    print(f"\nchaos seed: {seed}  (replay: SYNCD_CHAOS_SEED={seed})")
    try:
        _kill_loop(rig, seed)
    except BaseException as exc:
        raise AssertionError(
            f"[chaos seed {seed}: replay with SYNCD_CHAOS_SEED={seed}] {exc}"
        ) from exc


def _kill_loop(rig: Rig, seed: int) -> None:
    w = rig.world
    w.add_user("carol", with_atproto=False)
    rng = random.Random(seed)
    # Enough documents that the first backfill takes a moment.
    alice, bob, carol = w.sub("alice"), w.sub("bob"), w.sub("carol")
    owners = [alice, bob, carol, None]
    w.insert("moods", *(make_mood(rng.choice([alice, bob, carol]), f"m{i}") for i in range(120)))
    w.insert("kidlisp", *(make_kidlisp(rng.choice(owners)) for _ in range(80)))
    w.insert("pieces", *(make_piece(rng.choice(owners), f"p{i}") for i in range(60)))
    for i in range(8):
        w.add_painting(rng.choice(["alice", "bob", None]), width=300 + i, height=200)

    load = LoadGenerator(rig.load_db(), w.image_dir, owners, seed=seed)
    proxy = rig.proxy
    assert proxy is not None
    fired = threading.Event()
    target: dict[str, object] = {}

    def hook(event: str, method: str) -> None:
        want = target.get("want")
        if want is None or (event, method) != want:
            return
        target["left"] = int(target["left"]) - 1  # type: ignore[call-overload]
        if int(target["left"]) <= 0:  # type: ignore[call-overload]
            target["want"] = None
            if rig.syncd.kill_now():
                fired.set()

    proxy.on_event = hook
    plan = schedule(seed, KILL_POINTS)
    survived: dict[str, int] = {}
    history_lost_at = KILL_POINTS // 2
    load.start(rate=25)
    try:
        for i, (kind, delay, nth) in enumerate(plan):
            if i == history_lost_at:
                # The oplog loses the saved position while syncd is down: it must rescan.
                load.run_for(0.5, rate=40)
                w.fault("truncateOplog", keep=0)
                tally.count("mongo_faults")
                kind = "backfill"
            fired.clear()
            rig.syncd.start()
            actual = kind
            if kind in TARGETED:
                target.update(want=TARGETED[kind], left=nth)
                if not fired.wait(delay + 3.0):
                    target["want"] = None
                    actual = f"{kind}(timed out: random)"
            else:
                time.sleep(delay)
                if kind == "backfill" and not _backfilling(rig):
                    actual = "backfill(finished: random)"
            rig.syncd.kill()
            code = rig.syncd.proc.returncode if rig.syncd.proc else None
            assert code in (-9, None), (
                f"syncd exited by itself ({code}) before kill {i}:\n{rig.syncd.tail()}"
            )
            survived[actual] = survived.get(actual, 0) + 1
            tally.count("kill_points")
    finally:
        load.stop()
        proxy.on_event = None
    tally.count("load_ops", load.total)
    print(f"kill points by moment: {survived}; load: {dict(load.counts)}")
    assert sum(survived.values()) >= 30
    targeted_hits = sum(n for k, n in survived.items() if k in TARGETED or k == "backfill")
    assert targeted_hits >= 10, survived

    rig.syncd.start()
    report = rig.wait_quiet(120)
    print(
        f"invariant holds: {report.expected_records} records expected, "
        f"{report.records_checked} checked, {report.blobs_checked} thumbnails"
    )
    assert rig.syncd.stop() == 0
