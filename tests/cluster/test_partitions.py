"""Four partitions across four instances (and a fifth standing by): each account is
written by exactly one partition leader, and every document has exactly one record."""

from __future__ import annotations

import json
import time
from collections import Counter

from syncd.cluster import partition_of
from syncd_sandbox.load import LoadGenerator
from syncd_sandbox.seed import make_kidlisp, make_mood
from syncd_sandbox.syncd_process import run_cli
from tests.cluster.conftest import ClusterFactory

PARTITIONS = 4


def test_partition_of_is_stable_and_spreads() -> None:
    dids = [f"did:plc:{i:024d}" for i in range(4000)]
    counts = Counter(partition_of(d, PARTITIONS) for d in dids)
    assert set(counts) == set(range(PARTITIONS))
    assert min(counts.values()) > 800  # roughly a quarter each
    # Fixed values: a change here would move every account to another partition.
    assert [partition_of(d, PARTITIONS) for d in dids[:6]] == [3, 0, 3, 1, 2, 3]
    assert partition_of("did:plc:ewvi7nxzyoun6zhxrhs64oiz", 4) == 1
    assert partition_of("did:plc:ewvi7nxzyoun6zhxrhs64oiz", 7) == 0
    assert partition_of("did:plc:abc", 1) == 0


def test_four_partitions_split_the_accounts(make_cluster: ClusterFactory) -> None:
    rig = make_cluster(PARTITIONS + 1, partitions=PARTITIONS, lease_seconds=2.0)
    w = rig.world
    names = [f"u{i}" for i in range(8)]
    for name in names:
        w.add_user(name)
    subs = [w.sub(n) for n in ["alice", "bob", *names]]
    for i, sub in enumerate(subs):
        assert sub is not None
        w.insert("moods", *(make_mood(sub, f"m{i}-{j}") for j in range(12)))
        w.insert("kidlisp", *(make_kidlisp(sub) for _ in range(4)))
    rig.start()
    leaders = rig.wait_leaders(timeout=60)
    assert len(leaders) == PARTITIONS
    standby = next(m for m in rig.members if m not in leaders)
    rig.wait_quiet()
    held = {}
    for m in leaders:
        metrics = m.metrics()
        assert metrics is not None
        held[int(metrics["syncd_partition"])] = m
    assert sorted(held) == list(range(PARTITIONS))
    out = run_cli(rig.members[0].config_path, "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)["cluster"]["partitions"]
    assert {p["partition"]: p["leader"] for p in status} == {
        p: f"i{m.index}" for p, m in held.items()
    }
    assert all(p["position_age_seconds"] is not None for p in status)
    # Each leader wrote to exactly the repos of its partition's accounts (and only those).
    dids_by_partition = Counter(
        partition_of(w.did(n), PARTITIONS) for n in ["alice", "bob", *names]
    )
    for p, m in held.items():
        wrote = m.pds_writes() > 0
        assert wrote == (dids_by_partition[p] > 0), (p, m.pds_writes())
    # Live traffic, and a partition leader dies: the standby takes its partition.
    load = LoadGenerator(w.db, w.image_dir, subs, seed=3, paintings=False).start(rate=20)
    time.sleep(1.0)
    victim = held[0]
    victim.syncd.kill()
    started = time.monotonic()
    while not standby.is_leader():
        assert time.monotonic() - started < 15, standby.syncd.tail(20)
        time.sleep(0.1)
    metrics = standby.metrics()
    assert metrics is not None and metrics["syncd_partition"] == 0
    time.sleep(1.5)
    load.stop()
    report = rig.wait_quiet(timeout=120)
    assert report.ok and load.total > 20
