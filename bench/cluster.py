"""Scenario 6 (issues 9 and 14): backfill throughput on each state backend, and what the
MongoDB state costs per record.

Three runs on the same data size, each in a fresh database with fresh accounts:
one ``syncd run`` on the SQLite state (the default, for reference), one on the
MongoDB state (``partitions = 1``), and four on the MongoDB state with
``partitions = 4`` (each instance leads one partition). Time runs from starting
the processes until every expected record has appeared on the PDS's firehose
(measured from the PDS, not from syncd).

The MongoDB state lives on a MongoDB sandbox of its own, so its
``serverStatus()`` counts state traffic only: ``metrics.commands.<name>.total``
(commands received: round trips) and ``opcounters`` (operations: a bulk write of
200 updates is one round trip and 200 updates), divided by the records written
and by syncd's ``applyWrites`` calls. After the backfill of the one-instance
MongoDB run, ``live`` documents are inserted at ``live_rate`` per second and the
same figures are taken while the stream tails them.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.fixtures import DocFactory, insert_grouped, make_space, mixed_text_docs
from bench.pdsclient import Firehose
from bench.procstat import CpuMeter, status_kb
from syncd_sandbox.metrics import metric_sum
from syncd_sandbox.mongo import start_sandbox_process
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


def _instance_configs(
    base: Path, backend: str, partitions: int, state_db: str, *, state_uri: str
) -> list[Path]:
    sections = tomllib.loads(base.read_text())
    if backend == "mongodb":
        sections = merge_sections(
            sections,
            {
                "state": {
                    "backend": "mongodb",
                    "mongodb_database": state_db,
                    "mongodb_uri": state_uri,
                },
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


def state_counts(client: MongoClient[Any]) -> dict[str, int]:
    """The state server's round trips (commands received) and operations so far."""
    status = client.admin.command("serverStatus")
    out = {f"op_{k}": int(v) for k, v in status["opcounters"].items()}
    commands = status.get("metrics", {}).get("commands", {})
    out["round_trips"] = sum(
        int(c.get("total", 0))
        for name, c in commands.items()
        if name not in ("hello", "isMaster", "ismaster", "ping", "serverStatus", "endSessions")
    )
    return out


def per_record(
    before: dict[str, int], after: dict[str, int], records: int, batches: float
) -> dict[str, Any]:
    delta = {k: after[k] - before.get(k, 0) for k in after}
    ops = sum(v for k, v in delta.items() if k.startswith("op_") and k != "op_command")
    return {
        "records": records,
        "apply_writes_calls": int(batches),
        "state_round_trips": delta["round_trips"],
        "state_round_trips_per_record": round(delta["round_trips"] / max(records, 1), 3),
        "state_round_trips_per_batch": round(delta["round_trips"] / max(batches, 1), 2),
        "state_ops_per_record": round(ops / max(records, 1), 2),
        "state_ops": {k[3:]: v for k, v in delta.items() if k.startswith("op_")},
    }


def apply_writes_calls(procs: list[SyncdProcess]) -> float:
    total = 0.0
    for p in procs:
        if p.alive:
            total += metric_sum(
                p.metrics(), "syncd_pds_requests_total", method="com.atproto.repo.applyWrites"
            )
    return total


def state_thread(procs: list[SyncdProcess], wall: float) -> dict[str, Any]:
    """syncd's own view of its state calls (``syncd_state_call_seconds``, ``..._wait_...``):
    seconds inside calls and waiting for the state thread, summed over the instances,
    and the share of the wall time the (busiest) state thread was in a call."""
    calls = seconds = waited = busiest = 0.0
    by_call: dict[str, float] = {}
    for p in procs:
        if not p.alive:
            continue
        m = p.metrics()
        for key, value in m.items():
            if key.startswith('syncd_state_call_seconds_sum{call="'):
                name = key.split('"')[1]
                by_call[name] = by_call.get(name, 0.0) + value
        inside = metric_sum(m, "syncd_state_call_seconds_sum")
        calls += metric_sum(m, "syncd_state_call_seconds_count")
        seconds += inside
        waited += metric_sum(m, "syncd_state_call_wait_seconds_sum")
        busiest = max(busiest, inside)
    return {
        "calls": calls,
        "call_s": round(seconds, 2),
        "wait_s": round(waited, 2),
        "ms_per_call": round(1000 * seconds / max(calls, 1), 2),
        "busy_share": round(busiest / max(wall, 1e-9), 2),
        "call_s_by_call": {
            k: round(v, 2) for k, v in sorted(by_call.items(), key=lambda kv: -kv[1])[:6]
        },
    }


def partitioned_backfill(
    world: World,
    root: Path,
    size: int,
    accounts: int,
    pids: dict[str, int],
    *,
    live: int = 2000,
    live_rate: float = 50.0,
) -> dict[str, Any]:
    from bench.scenarios import expected_key  # the keys syncd derives (one definition)

    out: dict[str, Any] = {"documents": size, "accounts": accounts}
    (root / "logs").mkdir(parents=True, exist_ok=True)
    state_server = start_sandbox_process(log_file=root / "logs" / "s6_state_mongo.log")
    state_client: MongoClient[Any] = MongoClient(state_server.uri)
    # The state store's own server is metered too ("state_mongo"): the world's "mongo"
    # is the source database only.
    pids = {**pids, "state_mongo": state_server.pid}
    try:
        for label, backend, n in RUNS:
            out[label] = _one_run(
                world,
                root,
                size,
                accounts,
                pids,
                label,
                backend,
                n,
                state_uri=state_server.uri,
                state_client=state_client,
                live=live if (backend, n) == ("mongodb", 1) else 0,
                live_rate=live_rate,
                expected_key=expected_key,
            )
    finally:
        state_client.close()
        state_server.stop()
    one, four = out["mongodb x1"], out["mongodb x4 partitions"]
    if one["records_per_s"] and four["records_per_s"]:
        out["speedup_4_vs_1"] = round(four["records_per_s"] / one["records_per_s"], 2)
    sqlite = out["sqlite x1"]
    if one["records_per_s"] and sqlite["records_per_s"]:
        out["mongodb_vs_sqlite"] = round(one["records_per_s"] / sqlite["records_per_s"], 2)
    return out


def _one_run(
    world: World,
    root: Path,
    size: int,
    accounts: int,
    pids: dict[str, int],
    label: str,
    backend: str,
    n: int,
    *,
    state_uri: str,
    state_client: MongoClient[Any],
    live: int,
    live_rate: float,
    expected_key: Any,
) -> dict[str, Any]:
    name = "s6_" + "".join(c for c in label if c.isalnum())
    space = make_space(world, root, name, accounts)
    owners: list[str | None] = [u.sub for u in space.users]
    factory = DocFactory(seed=6)
    docs = mixed_text_docs(factory, owners, size)
    insert_grouped(space.db, docs)
    keys = {expected_key(space, c, d) for c, d in docs}
    configs = _instance_configs(space.config_path, backend, n, f"{name}_state", state_uri=state_uri)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    fh = Firehose(world.pds_url).start()
    meter = CpuMeter(pids).start()
    t0 = time.monotonic()
    counts0 = state_counts(state_client)
    procs = [SyncdProcess(c, log_path=root / "logs" / f"{c.stem}.log").start() for c in configs]
    for i, p in enumerate(procs):
        meter.add(f"syncd{i}", p.pid)
    result: dict[str, Any] = {"instances": n}
    try:
        seen = fh.wait_for(keys, timeout=1800)
        wall = time.monotonic() - t0
        meter.stop()
        rss = [round((status_kb(p.pid, "VmHWM") or 0) / 1024, 1) for p in procs]
        time.sleep(1.0)  # the last write-backs and positions
        batches = apply_writes_calls(procs)
        if backend == "mongodb":
            result["backfill_state"] = per_record(
                counts0, state_counts(state_client), len(keys), batches
            )
            result["backfill_state"]["state_thread"] = state_thread(procs, wall)
        if live:
            counts1 = state_counts(state_client)
            live_docs = mixed_text_docs(factory, owners, live, when_now=True)
            live_keys = {expected_key(space, c, d) for c, d in live_docs}
            t1 = time.monotonic()
            for i, (coll, doc) in enumerate(live_docs):
                space.db[coll].insert_one(doc)
                ahead = t1 + (i + 1) / live_rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            fh.wait_for(live_keys, timeout=600)
            time.sleep(1.0)
            result["live_state"] = per_record(
                counts1,
                state_counts(state_client),
                len(live_keys),
                apply_writes_calls(procs) - batches,
            )
            result["live_rate_per_s"] = live_rate
    finally:
        fh.stop()
        for p in procs:
            if p.alive:
                p.terminate(30)
        space.close()
    result.update(
        {
            "wall_s": round(wall, 2),
            "records_per_s": round(len(keys) / wall, 1) if seen is not None else None,
            "all_seen": seen is not None,
            "seen": fh.count(keys),
            "peak_rss_mb": rss,
            **meter.report(),
        }
    )
    return result


def partitions(world: World, root: Path, scale: Any) -> dict[str, Any]:
    """Scenario 6 at the scale's first text size (20,000 at full scale)."""
    from bench.scenarios import pids_of

    return partitioned_backfill(
        world, root, scale.text_sizes[0], scale.text_accounts, pids_of(world)
    )
