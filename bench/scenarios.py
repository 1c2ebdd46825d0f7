"""The five scenarios of issue 8. Each returns a JSON-able dict of figures."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.fixtures import NSID, DocFactory, Space, insert_grouped, make_space, mixed_text_docs
from bench.pdsclient import Firehose, apply_writes_ceiling, count_records, create_write, record_for
from bench.procstat import CpuMeter, status_kb
from bench.runner import run_measured
from syncd.rkey import derive_rkey
from syncd_sandbox.seed import (
    make_painting,
    png_bytes,
    short_code,
    when_ms,
    write_painting_files,
)
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum
from syncd_sandbox.world import World

ACCOUNT_CONCURRENCY = 8  # syncd's default pds.account_concurrency; the ceiling uses the same


@dataclass
class Scale:
    name: str
    seed_factor: float  # scenario 1: fraction of the seed report's counts
    text_sizes: tuple[int, int]  # scenario 2
    text_accounts: int
    live_seconds: float  # scenario 3, per rate
    live_rates: tuple[int, int]
    catchup_docs: int  # scenario 4
    rl_accounts: int  # scenario 5
    rl_docs_per_account: int
    rl_window_s: float
    # scenario 1: also run the baseline (False only to iterate on syncd's side quickly;
    # then there is no ratio)
    seed_baseline: bool = True


SCALES = {
    "small": Scale("small", 0.1, (1_000, 3_000), 10, 6.0, (50, 500), 1_000, 1, 1_800, 12.0),
    "full": Scale("full", 1.0, (20_000, 100_000), 50, 60.0, (50, 500), 10_000, 10, 2_000, 150.0),
}

# The seed report's data set: one user (jeffrey) plus a guest share.
SEED_COUNTS = {"moods": 226, "pieces": 26, "kidlisp": 2220, "paintings": 395}
GUEST_SHARE = {"moods": 0, "pieces": 3, "kidlisp": 220, "paintings": 40}


def pids_of(world: World) -> dict[str, int]:
    return {name: rec.pid for name, rec in world.processes().items()}


def expected_key(space: Space, coll: str, doc: dict[str, Any]) -> tuple[str, str]:
    return space.did_of(doc.get("user")), f"{NSID[coll]}/{derive_rkey(doc['when'], doc['_id'])}"


def apply_calls(summary: str) -> int | None:
    """applyWrites calls from ``syncd backfill``'s summary line."""
    m = re.search(r"applyWrites (\d+)", summary)
    return int(m.group(1)) if m else None


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


# -- 1. backfill of the seed's data set -------------------------------------------


def _seed_docs(
    space: Space, factory: DocFactory, images: Path, n: dict[str, int], pngs: list[bytes]
) -> list[tuple[str, dict[str, Any]]]:
    user = space.users[0].sub
    docs: list[tuple[str, dict[str, Any]]] = []
    for coll in ("moods", "pieces", "kidlisp"):
        guests = round(GUEST_SHARE[coll] * n[coll] / SEED_COUNTS[coll])
        for i in range(n[coll]):
            docs.append((coll, factory.text_doc(coll, None if i < guests else user)))
    guests = round(GUEST_SHARE["paintings"] * n["paintings"] / SEED_COUNTS["paintings"])
    for i in range(n["paintings"]):
        owner = None if i < guests else user
        when = factory._when()
        slug = when.strftime("%Y.%m.%d.%H.%M.%S.") + f"{when.microsecond // 1000:03d}"
        write_painting_files(images, owner, slug, data=pngs[i])
        docs.append(("paintings", make_painting(owner, slug, short_code(factory.rng, 6), when)))
    return docs


def backfill_seed(world: World, root: Path, scale: Scale) -> dict[str, Any]:
    n = {k: max(1, round(v * scale.seed_factor)) for k, v in SEED_COUNTS.items()}
    images = Path(world.info["images"]["root"])
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # 1024×1024 PNGs, each different (no blob dedupe)
        pngs = list(
            pool.map(lambda i: png_bytes(1024, 1024, seed=10_000 + i), range(n["paintings"]))
        )
    out: dict[str, Any] = {"counts": n, "png_bytes_avg": round(statistics.mean(map(len, pngs)))}
    sides = {}
    for side in ("syncd", "baseline"):
        space = make_space(world, root, f"s1_{side}", 1)
        docs = _seed_docs(space, DocFactory(seed=1), images, n, pngs)
        insert_grouped(space.db, docs)
        sides[side] = space
    out["setup_s"] = round(time.monotonic() - t0, 1)

    meter = CpuMeter(pids_of(world)).start()
    m = run_measured(
        ["syncd", "backfill", "--config", str(sides["syncd"].config_path)],
        root / "logs" / "s1_syncd.log",
    )
    meter.stop({"syncd": m.cpu_s})
    total = sum(n.values())
    syncd_res = {
        "returncode": m.returncode,
        "wall_s": round(m.wall_s, 2),
        "records_per_s": round(total / m.wall_s, 1),
        "peak_rss_mb": round(m.peak_rss_mb, 1),
        "summary": m.output.strip().splitlines()[-1] if m.output.strip() else "",
        **meter.report(),
    }
    if scale.seed_baseline:
        meter = CpuMeter(pids_of(world)).start()
        b = run_measured(
            ["bench.baseline", "--config", str(sides["baseline"].config_path)],
            root / "logs" / "s1_baseline.log",
        )
        meter.stop({"baseline": b.cpu_s})
        try:
            bres = json.loads(b.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            bres = {"raw": b.output[-500:]}
        base_res = {
            "returncode": b.returncode,
            "wall_s": round(b.wall_s, 2),
            "records_per_s": round(bres.get("created", 0) / b.wall_s, 1),
            "peak_rss_mb": round(b.peak_rss_mb, 1),
            "detail": bres,
            **meter.report(),
        }
    else:
        base_res = {"skipped": True, "wall_s": None, "returncode": None, "detail": {}}
    nsids = list(NSID.values())
    syncd_res["records_on_pds"] = count_records(world.pds_url, sides["syncd"].all_dids(), nsids)
    if scale.seed_baseline:
        base_res["records_on_pds"] = count_records(
            world.pds_url, sides["baseline"].all_dids(), nsids
        )
    out.update(
        documents=total,
        syncd=syncd_res,
        baseline=base_res,
        # A ratio only when both sides finished and wrote every record.
        speedup=round(base_res["wall_s"] / syncd_res["wall_s"], 1)
        if m.returncode == 0
        and base_res["returncode"] == 0
        and syncd_res["records_on_pds"] == total
        and base_res["records_on_pds"] == total
        else None,
    )
    for s in sides.values():
        s.close()
    return out


# -- 2. text backfill at scale, with the bare applyWrites ceiling ----------------------


def backfill_scale(world: World, root: Path, scale: Scale) -> dict[str, Any]:
    out: dict[str, Any] = {"accounts": scale.text_accounts, "concurrency": ACCOUNT_CONCURRENCY}
    for size in scale.text_sizes:
        label = f"{size // 1000}k"
        # syncd
        space = make_space(
            world,
            root,
            f"s2_{label}",
            scale.text_accounts,
            overrides={"pds": {"account_concurrency": ACCOUNT_CONCURRENCY}},
        )
        owners: list[str | None] = [u.sub for u in space.users]
        docs = mixed_text_docs(DocFactory(seed=size), owners, size)
        t0 = time.monotonic()
        insert_grouped(space.db, docs)
        insert_s = time.monotonic() - t0
        meter = CpuMeter(pids_of(world)).start()
        m = run_measured(
            ["syncd", "backfill", "--config", str(space.config_path)],
            root / "logs" / f"s2_{label}.log",
        )
        meter.stop({"syncd": m.cpu_s})
        on_pds = count_records(world.pds_url, space.all_dids(), list(NSID.values()))
        summary = m.output.strip().splitlines()[-1] if m.output.strip() else ""
        calls = apply_calls(summary)
        syncd_res = {
            "returncode": m.returncode,
            "wall_s": round(m.wall_s, 2),
            "records_per_s": round(size / m.wall_s, 1),
            "apply_writes_calls": calls,
            "writes_per_call": round(size / calls, 1) if calls else None,
            "peak_rss_mb": round(m.peak_rss_mb, 1),
            "records_on_pds": on_pds,
            "summary": m.output.strip().splitlines()[-1] if m.output.strip() else "",
            **meter.report(),
        }
        space.close()
        # the ceiling: fresh accounts, the same records (syncd's own mapping and keys)
        ceil_space = make_space(world, root, f"s2_{label}_ceiling", scale.text_accounts)
        by_sub = {u.sub: str(u.did) for u in space.users}
        ceil_did = {
            str(u.did): str(c.did) for u, c in zip(space.users, ceil_space.users, strict=True)
        }
        writes: dict[str, list[dict[str, Any]]] = {}
        for coll, doc in docs:
            nsid, rkey, rec = record_for(coll, doc)
            did = ceil_did[by_sub[doc["user"]]]
            writes.setdefault(did, []).append(create_write(nsid, rkey, rec))
        accounts = [(str(u.did), str(u.password)) for u in ceil_space.users]
        meter = CpuMeter(pids_of(world)).start()
        meter.add("bench (ceiling client)", os.getpid())
        meter._start["bench (ceiling client)"] = _self_cpu()
        ceiling = asyncio.run(
            apply_writes_ceiling(world.pds_url, accounts, writes, concurrency=ACCOUNT_CONCURRENCY)
        )
        meter.stop()
        ceiling.update(meter.report())
        ceil_space.close()
        out[label] = {
            "documents": size,
            "insert_s": round(insert_s, 1),
            "syncd": syncd_res,
            "ceiling": ceiling,
            "efficiency": round(syncd_res["records_per_s"] / ceiling["records_per_s"], 3)
            if m.returncode == 0 and on_pds == size
            else None,
        }
    return out


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# -- 3. live latency ----------------------------------------------------------------------


def live_latency(world: World, root: Path, scale: Scale) -> dict[str, Any]:
    space = make_space(world, root, "s3_live", 5)
    owners: list[str | None] = [*(u.sub for u in space.users), None]
    images = Path(world.info["images"]["root"])
    max_docs = int(max(scale.live_rates) * scale.live_seconds * 1.1) + 10
    n_paint = max_docs // 20 + 5  # 5% paintings, 512×512 PNGs written before the run
    with ThreadPoolExecutor(2) as pool:
        pngs = list(pool.map(lambda i: png_bytes(512, 512, seed=50_000 + i), range(n_paint)))
    syncd = SyncdProcess(space.config_path, log_path=root / "logs" / "s3_syncd.log").start()
    out: dict[str, Any] = {
        "mix": "45% kidlisp, 40% moods, 15% pieces of the text; 5% of all are 512×512 paintings",
        "accounts": len(owners),
    }
    fh = Firehose(world.pds_url).start()
    try:
        syncd.wait_ready(60)
        factory = DocFactory(seed=3)
        # Warm-up (not measured): one document per account, so syncd's one login per
        # account (createSession, ~0.1-0.3 s of PDS CPU each) happens before the clock
        # starts, as it does once in a long-running daemon.
        now = when_ms(datetime.now(UTC))
        warm = [
            ("kidlisp", factory.text_doc("kidlisp", None, now))
            if o is None
            else ("moods", factory.text_doc("moods", o, now))
            for o in owners
        ]
        insert_grouped(space.db, warm)
        if fh.wait_for({expected_key(space, c, d) for c, d in warm}, timeout=60) is None:
            raise RuntimeError("warm-up documents never appeared")
        time.sleep(1.0)
        paint_i = 0
        for rate in scale.live_rates:
            meter = CpuMeter({**pids_of(world), "syncd": syncd.pid}).start()
            tick = 0.02
            per_tick = rate * tick
            inserted: list[tuple[float, str, tuple[str, str]]] = []
            acc = 0.0
            t_start = time.time()
            next_t = time.monotonic()
            behind = 0.0
            i = 0
            while True:
                now_m = time.monotonic()
                if now_m < next_t:
                    time.sleep(next_t - now_m)
                behind = max(behind, time.monotonic() - next_t)
                if time.time() - t_start >= scale.live_seconds:
                    break
                acc += per_tick
                k = int(acc)
                acc -= k
                batch: list[tuple[str, dict[str, Any]]] = []
                now = when_ms(datetime.now(UTC))
                for _ in range(k):
                    owner = owners[i % len(owners)]
                    i += 1
                    if i % 20 == 0 and paint_i < len(pngs):
                        slug = now.strftime("%Y.%m.%d.%H.%M.%S.") + f"L{paint_i}"
                        write_painting_files(images, owner, slug, data=pngs[paint_i])
                        paint_i += 1
                        batch.append(
                            (
                                "paintings",
                                make_painting(owner, slug, short_code(factory.rng, 6), now),
                            )
                        )
                    else:
                        batch.extend(
                            mixed_text_docs(factory, [owner, *owners[:1]], 1, when_now=True)
                        )
                t_ins = time.time()
                if batch:
                    insert_grouped(space.db, batch)
                for coll, doc in batch:
                    inserted.append((t_ins, coll, expected_key(space, coll, doc)))
                next_t += tick
            produced_s = time.time() - t_start
            t_end = t_start + produced_s
            keys = {k for _, _, k in inserted}
            drain = fh.wait_for(keys, timeout=120)
            in_window = sum(1 for k in keys if fh.seen.get(k, float("inf")) <= t_end)
            meter.stop()
            lat = [fh.seen[k] - t for t, _, k in inserted if k in fh.seen]
            lat_text = [fh.seen[k] - t for t, c, k in inserted if k in fh.seen and c != "paintings"]
            lat_paint = [
                fh.seen[k] - t for t, c, k in inserted if k in fh.seen and c == "paintings"
            ]
            half = len(inserted) // 2
            first = [fh.seen[k] - t for t, _, k in inserted[:half] if k in fh.seen]
            last = [fh.seen[k] - t for t, _, k in inserted[half:] if k in fh.seen]
            ms = lambda v: round(v * 1000, 1)  # noqa: E731
            dump = os.environ.get("BENCH_LATENCY_DUMP")
            if dump:
                # Every document's insert and commit time (investigating the tail).
                with open(Path(dump) / f"s3_{rate}.jsonl", "w") as f:
                    for t_ins, coll, key in inserted:
                        row = {"t_insert": t_ins, "collection": coll, "repo": key[0]}
                        row.update(path=key[1], t_commit=fh.seen.get(key))
                        f.write(json.dumps(row) + "\n")
            metrics = syncd.metrics()
            out[f"{rate}/s"] = {
                "inserted": len(inserted),
                "producer_rate": round(len(inserted) / produced_s, 1),
                "producer_max_behind_ms": ms(behind),
                "seen": sum(1 for _, _, k in inserted if k in fh.seen),
                "records_per_s_while_producing": round(in_window / produced_s, 1),
                "drain_after_producer_s": None if drain is None else round(drain, 2),
                "p50_ms": ms(percentile(lat, 50)),
                "p95_ms": ms(percentile(lat, 95)),
                "p99_ms": ms(percentile(lat, 99)),
                "max_ms": ms(max(lat)) if lat else None,
                "text_p99_ms": ms(percentile(lat_text, 99)),
                "paintings_p50_ms": ms(percentile(lat_paint, 50)),
                "paintings_p99_ms": ms(percentile(lat_paint, 99)),
                "first_half_p50_ms": ms(percentile(first, 50)),
                "second_half_p50_ms": ms(percentile(last, 50)),
                # keeps up: the backlog is gone within 1 s of the last insert and latency
                # does not grow from the first half of the run to the second.
                "keeps_up": drain is not None
                and drain <= 1.0
                and percentile(last, 50) <= 1.5 * percentile(first, 50) + 0.05,
                "syncd_rss_mb": round((status_kb(syncd.pid, "VmRSS") or 0) / 1024, 1),
                "dead_letters": metric_sum(metrics, "syncd_dead_letters"),
                **meter.report(),
            }
            time.sleep(2)
        out["syncd_peak_rss_mb"] = round((status_kb(syncd.pid, "VmHWM") or 0) / 1024, 1)
    finally:
        fh.stop()
        syncd.terminate(30)
        space.close()
    return out


# -- 4. catch-up ----------------------------------------------------------------------------


def catch_up(world: World, root: Path, scale: Scale) -> dict[str, Any]:
    space = make_space(world, root, "s4_catchup", 5)
    owners: list[str | None] = [*(u.sub for u in space.users), None]
    log = root / "logs" / "s4_syncd.log"
    syncd = SyncdProcess(space.config_path, log_path=log).start()
    syncd.wait_ready(60)
    syncd.terminate(30)
    docs = mixed_text_docs(DocFactory(seed=4), owners, scale.catchup_docs, when_now=True)
    insert_grouped(space.db, docs)
    keys = {expected_key(space, c, d) for c, d in docs}
    fh = Firehose(world.pds_url).start()
    meter = CpuMeter(pids_of(world)).start()
    t0 = time.monotonic()
    syncd = SyncdProcess(space.config_path, log_path=log).start()
    meter.add("syncd", syncd.pid)
    lag_zero: float | None = None
    try:
        syncd.wait_until(lambda: syncd.get("/healthz").status_code < 500, 30, 0.05)
        started_s = time.monotonic() - t0
        all_seen = fh.wait_for(keys, timeout=300)
        all_seen_s = None if all_seen is None else time.monotonic() - t0 - 0.0
        # syncd's own view: nothing in flight and lag 0 (scraped, for comparison only)
        syncd.wait_until(
            lambda: (
                metric_sum(syncd.metrics(), "syncd_queue_depth", stage="source") == 0
                and metric_sum(syncd.metrics(), "syncd_lag_seconds") == 0
            ),
            120,
            0.1,
        )
        lag_zero = time.monotonic() - t0
        meter.stop()
        peak = round((status_kb(syncd.pid, "VmHWM") or 0) / 1024, 1)
    finally:
        fh.stop()
        syncd.terminate(30)
        space.close()
    return {
        "documents": len(docs),
        "listening_s": round(started_s, 2),
        "all_records_on_pds_s": None if all_seen_s is None else round(all_seen_s, 2),
        "syncd_lag_zero_s": round(lag_zero, 2),
        "records_per_s": None if all_seen_s is None else round(len(docs) / all_seen_s, 1),
        "seen": fh.count(keys),
        "syncd_peak_rss_mb": peak,
        **meter.report(),
    }


# -- 5. rate-limited PDS --------------------------------------------------------------------


def rate_limited(world: World, root: Path, scale: Scale) -> dict[str, Any]:
    n_acc, per = scale.rl_accounts, scale.rl_docs_per_account
    space = make_space(world, root, "s5_ratelimited", n_acc)
    owners: list[str | None] = [u.sub for u in space.users]
    docs = mixed_text_docs(DocFactory(seed=5), owners, n_acc * per)
    insert_grouped(space.db, docs)
    keys = {expected_key(space, c, d) for c, d in docs}
    budget_creates = 5000 // 3  # points per hour per account / points per create
    ceiling = n_acc * min(per, budget_creates)
    log = root / "logs" / "s5_syncd.log"
    fh = Firehose(world.pds_url).start()
    meter = CpuMeter(pids_of(world)).start()
    syncd = SyncdProcess(space.config_path, log_path=log).start()
    meter.add("syncd", syncd.pid)
    t0 = time.monotonic()
    first_full: float | None = None
    while time.monotonic() - t0 < scale.rl_window_s:
        if first_full is None and fh.count(keys) >= ceiling:
            first_full = time.monotonic() - t0
        time.sleep(0.25)
    window = time.monotonic() - t0
    in_window = fh.count(keys)
    metrics = syncd.metrics()
    meter.stop()
    errors = {k: v for k, v in metrics.items() if k.startswith("syncd_write_errors_total") and v}
    res: dict[str, Any] = {
        "accounts": n_acc,
        "documents": len(docs),
        "window_s": round(window, 1),
        "budget": "5000 points/h per account, create = 3 points -> 1666 creates/account/h",
        "ceiling_records_in_window": ceiling,
        "records_in_window": in_window,
        "of_ceiling": round(in_window / ceiling, 3),
        "records_per_s": round(in_window / window, 1),
        "ceiling_records_per_s": round(ceiling / window, 1),
        "reached_ceiling_after_s": None if first_full is None else round(first_full, 1),
        "rate_limited_responses": metric_sum(metrics, "syncd_rate_limited_total"),
        "write_errors_by_reason": errors,
        "dead_letters_in_window": metric_sum(metrics, "syncd_dead_letters"),
        **meter.report(),
    }
    # "Eventually": the budget resets after an hour; the PDS keeps its limiter in memory,
    # so a restart stands in for the hour. syncd is restarted too (it sleeps until
    # ratelimit-reset, an hour away); then every document must have exactly one record.
    # Progress is watched on the firehose (listRecords polling would spend the per-IP
    # budget of 3000 calls per 5 minutes).
    syncd.terminate(30)
    fh.stop()
    world.restart_pds()
    fh2 = Firehose(world.pds_url).start()
    syncd2 = SyncdProcess(space.config_path, log_path=log).start()
    t1 = time.monotonic()
    try:
        syncd2.wait_ready(60)
        rest = {k for k in keys if k not in fh.seen}
        took = fh2.wait_for(rest, timeout=300)
        res["rest_after_reset_s"] = None if took is None else round(time.monotonic() - t1, 1)
        syncd2.wait_idle(60)
        m2 = syncd2.metrics()
        res["dead_letters_final"] = metric_sum(m2, "syncd_dead_letters")
    finally:
        fh2.stop()
        syncd2.terminate(30)
    res["records_final"] = count_records(world.pds_url, space.all_dids(), list(NSID.values()))
    res["zero_failed_writes"] = (
        res["records_final"] == len(docs)
        and res["dead_letters_final"] == 0
        and res["dead_letters_in_window"] == 0
    )
    space.close()
    return res
