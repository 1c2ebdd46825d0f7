"""A standby takes over from a killed or paused leader; nothing lost, nothing duplicated.

Two and three real ``syncd run`` processes share one sandbox world with
``state.backend = "mongodb"`` and a 2-second lease. The invariant checker reads
MongoDB and the PDS directly; per-instance fault proxies count which instance
sent which PDS write.
"""

from __future__ import annotations

import os
import random
import signal
import time

from syncd_sandbox.cluster import ClusterRig
from syncd_sandbox.load import LoadGenerator
from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece
from tests.cluster.conftest import ClusterFactory

LEASE = 2.0
# Takeover bound: the lease lapses (LEASE after the last renewal), the standby's
# next poll (LEASE / 6), engine start; plus slack for 2 busy cores.
TAKEOVER_BOUND = LEASE + LEASE / 6 + 3.0


def _seed(rig: ClusterRig, n: int = 60) -> LoadGenerator:
    w = rig.world
    alice, bob = w.sub("alice"), w.sub("bob")
    w.insert("moods", *(make_mood(alice if i % 2 else bob, f"m{i}") for i in range(n)))
    w.insert("kidlisp", *(make_kidlisp(bob) for _ in range(n // 2)))
    w.insert("pieces", *(make_piece(None, f"p{i}") for i in range(n // 3)))
    return LoadGenerator(w.db, w.image_dir, [alice, bob, None], seed=7, paintings=False)


def _takeover_after(rig: ClusterRig, old: object) -> tuple[object, float]:
    started = time.monotonic()
    new = rig.wait_leaders(1, timeout=TAKEOVER_BOUND + 10, exclude=old)[0]  # type: ignore[arg-type]
    return new, time.monotonic() - started


def test_sigkill_leader_under_traffic_standby_takes_over(make_cluster: ClusterFactory) -> None:
    rig = make_cluster(2, lease_seconds=LEASE)
    load = _seed(rig)
    rig.start()
    leader = rig.wait_leaders(timeout=30)[0]
    assert len(rig.leaders()) == 1  # exactly one of the two
    rig.wait_quiet()
    load.start(rate=25)
    time.sleep(1.5)
    leader.syncd.kill()
    new, took = _takeover_after(rig, leader)
    print(f"\ntakeover after SIGKILL: {took:.2f}s (bound {TAKEOVER_BOUND:.1f}s)")
    assert took < TAKEOVER_BOUND
    time.sleep(1.5)
    load.stop()
    report = rig.wait_quiet()
    assert report.ok and load.total > 40
    assert new is not leader


def test_paused_leader_steps_down_without_writing(make_cluster: ClusterFactory) -> None:
    rig = make_cluster(2, lease_seconds=LEASE)
    load = _seed(rig)
    rig.start()
    old = rig.wait_leaders(timeout=30)[0]
    rig.wait_quiet()
    load.start(rate=25)
    time.sleep(1.0)
    os.kill(old.syncd.pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)  # requests already on the wire reach the proxy
        writes_at_pause = old.pds_writes()
        new, took = _takeover_after(rig, old)
        assert took < TAKEOVER_BOUND
        time.sleep(1.0)  # the new leader writes under its own token meanwhile
    finally:
        os.kill(old.syncd.pid, signal.SIGCONT)
    assert old.syncd.wait_for_log('"stepped_down"', timeout=15), old.syncd.tail(30)
    time.sleep(1.0)
    load.stop()
    report = rig.wait_quiet()
    assert report.ok
    assert old.pds_writes() == writes_at_pause, "the resumed former leader sent a PDS write"
    assert not old.is_leader() and new.is_leader()  # type: ignore[attr-defined]
    assert old.syncd.running  # it stands by; it did not crash


def test_three_instances_random_kills_and_pauses(make_cluster: ClusterFactory) -> None:
    seed = int(os.environ.get("SYNCD_CHAOS_SEED") or random.randrange(1 << 32))
    print(f"\ncluster chaos seed: {seed}")
    rng = random.Random(seed)
    rig = make_cluster(3, lease_seconds=LEASE)
    load = _seed(rig, 90)
    rig.start()
    rig.wait_leaders(timeout=30)
    load.start(rate=20)
    takeovers: list[float] = []
    try:
        for _ in range(5):
            time.sleep(rng.uniform(0.2, 2.5))
            leader = rig.wait_leaders(timeout=TAKEOVER_BOUND + 10)[0]
            if rng.random() < 0.5:
                leader.syncd.kill()
                _, took = _takeover_after(rig, leader)
                leader.syncd.start()  # comes back as a standby
            else:
                os.kill(leader.syncd.pid, signal.SIGSTOP)
                try:
                    _, took = _takeover_after(rig, leader)
                    time.sleep(rng.uniform(0.0, 1.5))
                finally:
                    os.kill(leader.syncd.pid, signal.SIGCONT)
            takeovers.append(took)
    finally:
        load.stop()
    print("takeovers (s):", ", ".join(f"{t:.2f}" for t in takeovers))
    report = rig.wait_quiet(timeout=120)
    assert report.ok, f"seed {seed}: {report.summary()}"
    assert max(takeovers) < TAKEOVER_BOUND
    assert len(rig.leaders()) == 1


def test_sigterm_releases_the_lease_for_an_immediate_takeover(make_cluster: ClusterFactory) -> None:
    rig = make_cluster(2, lease_seconds=10.0)  # a long lease: a takeover must not wait for it
    _seed(rig, 30)
    rig.start()
    old = rig.wait_leaders(timeout=30)[0]
    rig.wait_quiet()
    started = time.monotonic()
    assert old.syncd.stop(timeout=20) == 0
    new, _ = _takeover_after(rig, old)
    print(f"\ntakeover after SIGTERM: {time.monotonic() - started:.2f}s")
    assert time.monotonic() - started < 10.0  # well before the 10 s lease could lapse
    assert '"lease_released"' in old.syncd.log_text()
    rig.world.insert("moods", make_mood(rig.world.sub("alice"), "after the handover"))
    assert rig.wait_quiet().ok
    assert new is not old
