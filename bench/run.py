"""``python -m bench``: bring up a sandbox world, run the scenarios, print a table, save JSON.

    python -m bench --scale small            # under 2 minutes
    python -m bench --scale full             # the figures in docs/performance.md
    python -m bench --scale small --only 1,3 # some scenarios

A benchmark, not a test: nothing fails on a timing. Results go to
``bench/results/<UTC time>-<scale>.json`` and ``.txt`` (the printed table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cluster, fixtures, scenarios
from bench.fixtures import up_world
from bench.procstat import loadavg
from syncd_sandbox.world import World

RESULTS = Path(__file__).resolve().parent / "results"

SCENARIOS: dict[str, tuple[str, Callable[[World, Path, scenarios.Scale], dict[str, Any]]]] = {
    "1": ("backfill_seed", scenarios.backfill_seed),
    "2": ("backfill_scale", scenarios.backfill_scale),
    "3": ("live_latency", scenarios.live_latency),
    "4": ("catch_up", scenarios.catch_up),
    "5": ("rate_limited", scenarios.rate_limited),
    "6": ("partitions", cluster.partitions),
}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def table(res: dict[str, Any]) -> str:
    """The results as a Markdown table: scenario, figure, syncd, reference, ratio, aim."""
    rows: list[tuple[str, str, Any, Any, Any, str]] = []
    s = res.get("scenarios", {})
    if "backfill_seed" in s and "syncd" in s["backfill_seed"]:
        r = s["backfill_seed"]
        c = r["counts"]
        name = f"1 backfill seed set ({r['documents']:,} docs: {c['paintings']} paintings 1024²)"
        rows.append(
            (
                name,
                "wall s (syncd / baseline)",
                r["syncd"]["wall_s"],
                r["baseline"]["wall_s"],
                f"{r['speedup']}× faster"
                if r["speedup"]
                else ("no baseline run" if r["baseline"].get("skipped") else "FAILED (see JSON)"),
                "≥ 20×",
            )
        )
        rows.append(
            (
                "",
                "records/s",
                r["syncd"]["records_per_s"],
                r["baseline"].get("records_per_s"),
                "",
                "",
            )
        )
        rows.append(
            (
                "",
                "records on PDS / failed",
                r["syncd"]["records_on_pds"],
                f"{r['baseline'].get('records_on_pds')} / {r['baseline']['detail'].get('failed')}",
                "",
                "",
            )
        )
        rows.append(
            (
                "",
                "peak RSS MB",
                r["syncd"]["peak_rss_mb"],
                r["baseline"].get("peak_rss_mb"),
                "",
                "",
            )
        )
        sc, bc = r["syncd"]["cpu_s"], r["baseline"].get("cpu_s", {})
        rows.append(
            (
                "",
                "CPU s: PDS / client",
                f"{sc.get('pds')} / {sc.get('syncd')}",
                f"{bc.get('pds')} / {bc.get('baseline')}",
                "",
                "",
            )
        )
    if "backfill_scale" in s:
        r = s["backfill_scale"]
        for v in r.values():
            if not isinstance(v, dict) or "syncd" not in v:
                continue
            name = f"2 text backfill {v['documents']:,} docs / {r['accounts']} accounts"
            rows.append(
                (
                    name,
                    "records/s (syncd / bare applyWrites)",
                    v["syncd"]["records_per_s"],
                    v["ceiling"]["records_per_s"],
                    f"{v['efficiency'] * 100:.0f}% of ceiling"
                    if v["efficiency"]
                    else "FAILED (see JSON)",
                    "≥ 80%",
                )
            )
            rows.append(("", "wall s", v["syncd"]["wall_s"], v["ceiling"]["seconds"], "", ""))
            rows.append(
                (
                    "",
                    "writes per applyWrites call",
                    v["syncd"].get("writes_per_call"),
                    v["ceiling"].get("writes_per_call"),
                    "",
                    "",
                )
            )
            rows.append(("", "syncd peak RSS MB", v["syncd"]["peak_rss_mb"], "", "", "< 150, flat"))
            cores = v["syncd"].get("cores", {})
            rows.append(
                (
                    "",
                    "cores used (syncd run)",
                    _cores(cores),
                    _cores(v["ceiling"].get("cores", {})),
                    "",
                    "",
                )
            )
    if "live_latency" in s:
        r = s["live_latency"]
        for key, v in r.items():
            if not isinstance(v, dict):
                continue
            name = f"3 live {key} for {v['inserted']:,} docs"
            rows.append(
                (
                    name,
                    "p50 / p95 / p99 ms",
                    f"{v['p50_ms']} / {v['p95_ms']} / {v['p99_ms']}",
                    "",
                    "",
                    "p99 < 250 @50/s" if key == "50/s" else "",
                )
            )
            rows.append(
                (
                    "",
                    "keeps up (drain s after producer)",
                    f"{'yes' if v['keeps_up'] else 'NO'} ({_fmt(v['drain_after_producer_s'])})",
                    "",
                    "",
                    "",
                )
            )
            rows.append(
                (
                    "",
                    "records/s on PDS while producing",
                    v.get("records_per_s_while_producing"),
                    "",
                    "",
                    "",
                )
            )
            rows.append(("", "cores used", _cores(v.get("cores", {})), "", "", ""))
    if "catch_up" in s:
        v = s["catch_up"]
        rows.append(
            (
                f"4 catch-up {v['documents']:,} docs",
                "s from start to all on PDS",
                v["all_records_on_pds_s"],
                "",
                f"{_fmt(v['records_per_s'])} rec/s",
                "< 30 s",
            )
        )
        rows.append(("", "s until syncd lag 0", v["syncd_lag_zero_s"], "", "", ""))
    if "rate_limited" in s:
        v = s["rate_limited"]
        rows.append(
            (
                f"5 rate-limited, {v['accounts']} accounts, {v['window_s']} s window",
                "records in window (syncd / ceiling)",
                v["records_in_window"],
                v["ceiling_records_in_window"],
                f"{v['of_ceiling'] * 100:.0f}% of ceiling",
                "",
            )
        )
        rows.append(
            (
                "",
                "zero failed writes (all records later, 0 dead letters)",
                v.get("zero_failed_writes"),
                "",
                "",
                "yes",
            )
        )
    if "partitions" in s and "speedup_4_vs_1" in s["partitions"]:
        v = s["partitions"]
        for label in cluster.RUNS_LABELS:
            r = v[label]
            rows.append(
                (
                    f"6 {label}, {v['documents']:,} docs / {v['accounts']} accounts"
                    if label == cluster.RUNS_LABELS[0]
                    else f"6 {label}",
                    "records/s (firehose) / wall s",
                    r["records_per_s"],
                    r["wall_s"],
                    f"{v['speedup_4_vs_1']}× (4 vs 1 on MongoDB state)"
                    if label == cluster.RUNS_LABELS[-1]
                    else "",
                    "",
                )
            )
            rows.append(("", "cores used", _cores(r.get("cores", {})), "", "", ""))
            for phase in ("backfill_state", "live_state"):
                st = r.get(phase)
                if st:
                    what = "backfill" if phase == "backfill_state" else "live tailing"
                    rows.append(
                        (
                            "",
                            f"state round trips per applyWrites batch / per record ({what})",
                            st["state_round_trips_per_batch"],
                            st["state_round_trips_per_record"],
                            f"{st['state_ops_per_record']} state ops per record",
                            "≤ 1 round trip per batch" if phase == "backfill_state" else "",
                        )
                    )
        if "mongodb_vs_sqlite" in v:
            rows.append(
                (
                    "",
                    "MongoDB-state records/s vs SQLite-state",
                    v["mongodb x1"]["records_per_s"],
                    v["sqlite x1"]["records_per_s"],
                    f"{v['mongodb_vs_sqlite'] * 100:.0f}%",
                    "≥ 80%",
                )
            )
    out = [
        "| scenario | figure | syncd | baseline / ceiling | ratio | aim |",
        "|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(_fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(out)


def _cores(c: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in c.items() if v >= 0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--scale", choices=sorted(scenarios.SCALES), default="small")
    ap.add_argument("--only", default="1,2,3,4,5,6", help="scenario numbers, comma-separated")
    ap.add_argument("--dir", default="/tmp/syncd-bench", help="scratch directory for the worlds")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--scale-set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a field of the scale, e.g. text_sizes=[20000] (experiments)",
    )
    ap.add_argument(
        "--syncd-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=JSON",
        help="override a syncd config value for every run, e.g. pipeline.queue_size=10000",
    )
    args = ap.parse_args(argv)
    scale = scenarios.SCALES[args.scale]
    for item in args.scale_set:
        field, _, value = item.partition("=")
        v = json.loads(value)
        changes: dict[str, Any] = {field: tuple(v) if isinstance(v, list) else v}
        scale = dataclasses.replace(scale, **changes)
    for item in args.syncd_set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        fixtures.EXTRA_OVERRIDES.setdefault(section, {})[name] = json.loads(value)
    root = Path(args.dir)
    if root.exists():
        for sub in ("state", "config", "logs"):
            shutil.rmtree(root / sub, ignore_errors=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    wanted = [x.strip() for x in args.only.split(",") if x.strip()]
    started = datetime.now(UTC)
    res: dict[str, Any] = {
        "scale": args.scale,
        "started": started.isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "loadavg_before": loadavg(),
        },
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scale_params": dataclasses.asdict(scale),
        "syncd_overrides": fixtures.EXTRA_OVERRIDES,
        "scenarios": {},
    }
    t0 = time.monotonic()
    plain = [n for n in wanted if n != "5"]
    if plain:
        world = up_world(root / "world")
        try:
            for n in plain:
                name, fn = SCENARIOS[n]
                print(f"[bench] scenario {n}: {name} …", file=sys.stderr, flush=True)
                ts = time.monotonic()
                try:
                    res["scenarios"][name] = fn(world, root, scale)
                except Exception as exc:
                    traceback.print_exc()
                    res["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                res["scenarios"][name]["scenario_s"] = round(time.monotonic() - ts, 1)
                print(
                    f"[bench] {name}: {json.dumps(res['scenarios'][name])[:2000]}",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            world.down()
    if "5" in wanted:
        name, fn = SCENARIOS["5"]
        print(f"[bench] scenario 5: {name} (rate limits on) …", file=sys.stderr, flush=True)
        world = up_world(root / "world-rl", rate_limits=True)
        ts = time.monotonic()
        try:
            res["scenarios"][name] = fn(world, root, scale)
        except Exception as exc:
            traceback.print_exc()
            res["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            world.down()
        res["scenarios"][name]["scenario_s"] = round(time.monotonic() - ts, 1)
    res["machine"]["loadavg_after"] = loadavg()
    res["total_s"] = round(time.monotonic() - t0, 1)
    text = table(res)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}-{args.scale}.json").write_text(json.dumps(res, indent=2) + "\n")
    header = (
        f"syncd benchmark, scale {args.scale}, {started:%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average before {res['machine']['loadavg_before']} "
        f"after {res['machine']['loadavg_after']}, total {res['total_s']} s"
    )
    (out / f"{stamp}-{args.scale}.txt").write_text(header + "\n\n" + text + "\n")
    print(header)
    print()
    print(text)
    print(f"\nresults: {out / f'{stamp}-{args.scale}.json'}")
    return 0
