"""PDS faults under load: HTTP faults from the proxy, the PDS process killed and restarted,
and the real PDS with its rate limits on."""

from __future__ import annotations

import os
import signal
import time

from syncd_sandbox import tally
from syncd_sandbox.load import LoadGenerator
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece
from syncd_sandbox.testing import SandboxWorld, WorldFactory


def _seed(rig: Rig, n: int = 15) -> list[str | None]:
    w = rig.world
    w.add_user("carol", with_atproto=False)
    owners = rig.owners(["alice", "bob", "carol", None])
    w.insert("moods", *(make_mood(w.sub("bob"), f"m{i}") for i in range(n)))
    w.insert("kidlisp", *(make_kidlisp(owners[i % 4]) for i in range(n)))
    w.insert("pieces", *(make_piece(owners[i % 4], f"p{i}") for i in range(n)))
    w.add_painting("alice", width=900, height=500, recording=True)
    return owners


def test_http_faults_under_load(rig: Rig) -> None:
    owners = _seed(rig)
    w = rig.world
    proxy = rig.proxy
    assert proxy is not None
    timeout = rig.config.pds.timeout_seconds
    writes = [
        "com.atproto.repo.applyWrites",
        "com.atproto.repo.putRecord",
        "com.atproto.repo.deleteRecord",
        "com.atproto.repo.uploadBlob",
    ]
    # The first start meets faults too (sessions, backfill).
    proxy.add("status", status=503, n=3)
    proxy.add("reset", methods="com.atproto.server.createSession", n=1)
    rig.syncd.start()
    load = LoadGenerator(rig.load_db(), w.image_dir, owners, seed=3).start(rate=25)
    try:
        for status in (500, 502, 503):
            proxy.add("status", status=status, probability=0.08)
        proxy.add("ratelimit", probability=0.05, reset_in=1.0, remaining=0)
        proxy.add("ratelimit", methods=writes, probability=0.05, reset_in=1.0, retry_after=1)
        proxy.add(
            "ratelimit", methods="com.atproto.repo.applyWrites", probability=0.05, remaining=7
        )
        proxy.add("reset", probability=0.05)
        proxy.add("apply_then_drop", methods=writes, probability=0.1)
        # One certain delay past the timeout (the random ones may not fire in 12 s when
        # batches are full and write calls few), then random ones.
        proxy.add("delay", methods=writes, n=1, delay=timeout + 1.0)
        proxy.add("delay", methods=writes, probability=0.03, delay=timeout + 1.0)
        time.sleep(12.0)
    finally:
        load.stop()
        proxy.clear()
    tally.count("load_ops", load.total)
    injected = proxy.total_injected
    tally.count("pds_faults", injected)
    print(
        f"\nPDS faults injected: {dict(proxy.injected)}; requests: {sum(proxy.requests.values())}"
    )
    assert set(proxy.injected) >= {"status", "ratelimit", "reset", "apply_then_drop", "delay"}
    rig.wait_quiet(90)
    assert rig.syncd.exited_unexpectedly() is None, rig.syncd.tail()
    assert rig.syncd.stop() == 0


def test_pds_killed_and_restarted_under_load(rig: Rig) -> None:
    owners = _seed(rig, 10)
    w = rig.world
    rig.syncd.start()
    rig.wait_quiet(30)
    load = LoadGenerator(rig.load_db(), w.image_dir, owners, seed=5).start(rate=25)
    try:
        time.sleep(1.0)
        proc = w.pds_process.proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)  # the PDS this test session started
        proc.wait(10)
        w.pds_process.proc = None
        tally.count("pds_faults")
        time.sleep(2.0)  # syncd meets a dead PDS (the proxy answers 502)
        w.pds_process.start()
        time.sleep(1.0)
    finally:
        load.stop()
    tally.count("load_ops", load.total)
    rig.wait_quiet(90)
    assert rig.syncd.exited_unexpectedly() is None, rig.syncd.tail()
    assert rig.syncd.stop() == 0


def test_rate_limited_pds_under_load(make_world: WorldFactory) -> None:
    """The real PDS with PDS_RATE_LIMITS_ENABLED=true, plus 429s whose remaining points
    pay for part of a batch (syncd sends the part that fits)."""
    world: SandboxWorld = make_world(rate_limited=True)
    rig = Rig(world)
    try:
        owners = _seed(rig, 20)
        proxy = rig.proxy
        assert proxy is not None
        proxy.add("ratelimit", methods="com.atproto.repo.applyWrites", n=3, remaining=10)
        rig.syncd.start()
        load = LoadGenerator(rig.load_db(), world.image_dir, owners, seed=9).start(rate=20)
        try:
            time.sleep(5.0)
        finally:
            load.stop()
        tally.count("load_ops", load.total)
        tally.count("pds_faults", proxy.total_injected)
        rig.wait_quiet(90)
        assert rig.syncd.stop() == 0
    finally:
        rig.close()
