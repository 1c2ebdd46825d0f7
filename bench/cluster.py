"""Scenario 6 (issue 9): backfill throughput, four partitioned instances vs one instance.

Three runs on the same data size, each in a fresh database with fresh accounts:
one ``syncd run`` on the SQLite state (the default, for reference), one on the
MongoDB state (``partitions = 1``), and four on the MongoDB state with
``partitions = 4`` (each instance leads one partition). Time runs from starting
the processes until every expected record has appeared on the PDS's firehose
(measured from the PDS, not from syncd).
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

from bench.fixtures import DocFactory, insert_grouped, make_space, mixed_text_docs
from bench.pdsclient import Firehose
from bench.procstat import CpuMeter, status_kb
from syncd_sandbox.procs import free_port
from syncd_sandbox.syncd_config import merge_sections, write_config
from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.world import World

RUNS = (
    ("sqlite x1", "sqlite", 1),
    ("mongodb x1", "mongodb", 1),
    ("mongodb x4 partitions", "mongodb", 4),
)
RUNS_LABELS = tuple(r[0] for r in RUNS)


def _instance_configs(base: Path, backend: str, partitions: int, state_db: str) -> list[Path]:
    sections = tomllib.loads(base.read_text())
    if backend == "mongodb":
        sections = merge_sections(
            sections,
            {
                "state": {"backend": "mongodb", "mongodb_database": state_db},
                "cluster": {
                    "cluster_name": "bench",
                    "partitions": partitions,
                    "lease_seconds": 10.0,
                },
            },
        )
    paths = []
    for i in range(partitions):
        own = merge_sections(
            sections,
            {"metrics": {"listen": f"127.0.0.1:{free_port()}"}}
            | ({"cluster": {"instance_id": f"bench{i}"}} if backend == "mongodb" else {}),
        )
        path = base.with_name(f"{base.stem}-{i}.toml")
        write_config(path, own)
        paths.append(path)
    return paths


def partitioned_backfill(
    world: World, root: Path, size: int, accounts: int, pids: dict[str, int]
) -> dict[str, Any]:
    from bench.scenarios import expected_key  # the keys syncd derives (one definition)

    out: dict[str, Any] = {"documents": size, "accounts": accounts}
    for label, backend, n in RUNS:
        name = "s6_" + "".join(c for c in label if c.isalnum())
        space = make_space(world, root, name, accounts)
        owners: list[str | None] = [u.sub for u in space.users]
        docs = mixed_text_docs(DocFactory(seed=6), owners, size)
        insert_grouped(space.db, docs)
        keys = {expected_key(space, c, d) for c, d in docs}
        configs = _instance_configs(space.config_path, backend, n, f"{name}_state")
        (root / "logs").mkdir(parents=True, exist_ok=True)
        fh = Firehose(world.pds_url).start()
        meter = CpuMeter(pids).start()
        t0 = time.monotonic()
        procs = [SyncdProcess(c, log_path=root / "logs" / f"{c.stem}.log").start() for c in configs]
        for i, p in enumerate(procs):
            meter.add(f"syncd{i}", p.pid)
        try:
            seen = fh.wait_for(keys, timeout=1800)
            wall = time.monotonic() - t0
            meter.stop()
            rss = [round((status_kb(p.pid, "VmHWM") or 0) / 1024, 1) for p in procs]
        finally:
            fh.stop()
            for p in procs:
                if p.alive:
                    p.terminate(30)
            space.close()
        out[label] = {
            "instances": n,
            "wall_s": round(wall, 2),
            "records_per_s": round(len(keys) / wall, 1) if seen is not None else None,
            "all_seen": seen is not None,
            "seen": fh.count(keys),
            "peak_rss_mb": rss,
            **meter.report(),
        }
    one, four = out["mongodb x1"], out["mongodb x4 partitions"]
    if one["records_per_s"] and four["records_per_s"]:
        out["speedup_4_vs_1"] = round(four["records_per_s"] / one["records_per_s"], 2)
    return out


def partitions(world: World, root: Path, scale: Any) -> dict[str, Any]:
    """Scenario 6 at the scale's first text size (20,000 at full scale)."""
    from bench.scenarios import pids_of

    return partitioned_backfill(
        world, root, scale.text_sizes[0], scale.text_accounts, pids_of(world)
    )
