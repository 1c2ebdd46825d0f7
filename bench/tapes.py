"""``python -m bench.tapes``: other accounts' live moods while one account uploads tapes.

    python -m bench.tapes                      # 40 MB tapes, moods at 20/s, 30 s a phase
    python -m bench.tapes --seconds 60 --tape-mb 40 --rate 20

Two phases on one sandbox world (real PDS, Mongo sandbox, image server) and one
``syncd run``: moods of ``--accounts`` accounts at ``--rate`` per second, first alone
(the reference), then while another account uploads 40 MB tapes one after the other
(the next tape inserted as soon as the previous record is committed, so an upload is
in flight the whole phase). A mood's latency is from its insert to the commit time of
its record on the PDS (read from the firehose, as scenario 3 does). Prints the figures
and syncd's peak RSS; writes ``bench/results/<time>-tapes.json``. A benchmark, not a
test: nothing fails on a timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.fixtures import NSID, make_space, up_world
from bench.pdsclient import Firehose
from bench.procstat import loadavg, status_kb
from bench.scenarios import percentile
from syncd.rkey import derive_rkey
from syncd_sandbox.seed import make_mood, make_tape, store_url, when_ms, write_tape_file
from syncd_sandbox.syncd_process import SyncdProcess

RESULTS = Path(__file__).resolve().parent / "results"
TAPE_NSID = "computer.aesthetic.tape"
MB = 1024 * 1024


def _key(did: str, nsid: str, doc: dict[str, Any]) -> tuple[str, str]:
    return did, f"{nsid}/{derive_rkey(doc['when'], doc['_id'])}"


def moods_at_rate(
    space: Any, owners: list[str], rate: float, seconds: float
) -> list[tuple[float, tuple[str, str]]]:
    """Insert moods round-robin at ``rate``/s for ``seconds``; (insert time, key) each."""
    out: list[tuple[float, tuple[str, str]]] = []
    interval, start, i = 1.0 / rate, time.monotonic(), 0
    while True:
        due = start + i * interval
        if due - start >= seconds:
            return out
        time.sleep(max(0.0, due - time.monotonic()))
        owner = owners[i % len(owners)]
        doc = make_mood(owner, f"live mood {i}", when_ms(datetime.now(UTC)))
        t = time.time()
        space.db.moods.insert_one(doc)
        out.append((t, _key(space.did_of(owner), NSID["moods"], doc)))
        i += 1


def latency(fh: Firehose, inserted: list[tuple[float, tuple[str, str]]]) -> dict[str, Any]:
    lat = [fh.seen[k] - t for t, k in inserted if k in fh.seen]
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {
        "moods": len(inserted),
        "seen": len(lat),
        "p50_ms": ms(percentile(lat, 50)),
        "p95_ms": ms(percentile(lat, 95)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(max(lat)) if lat else None,
    }


def run(root: Path, *, seconds: float, rate: float, tape_mb: int, accounts: int) -> dict[str, Any]:
    world = up_world(root / "world")
    out: dict[str, Any] = {
        "rate_per_s": rate,
        "seconds_per_phase": seconds,
        "tape_bytes": tape_mb * MB,
        "mood_accounts": accounts,
        "loadavg_before": loadavg(),
    }
    space = make_space(world, root, "tapes", accounts + 1)
    images = Path(world.info["images"]["root"])
    uploader, others = space.users[0], [u.sub for u in space.users[1:]]
    syncd = SyncdProcess(space.config_path, log_path=root / "logs" / "syncd.log")
    (root / "logs").mkdir(parents=True, exist_ok=True)
    syncd.start()
    fh = Firehose(world.pds_url).start()
    try:
        syncd.wait_ready(60)
        # Warm-up: one mood per account (their one login happens before the clock).
        warm = [make_mood(sub, "warm-up", when_ms(datetime.now(UTC))) for sub in others]
        warm.append(make_mood(uploader.sub, "warm-up", when_ms(datetime.now(UTC))))
        space.db.moods.insert_many(warm)
        keys = {_key(space.did_of(d["user"]), NSID["moods"], d) for d in warm}
        if fh.wait_for(keys, timeout=60) is None:
            raise RuntimeError("warm-up moods never appeared")
        time.sleep(1.0)

        # Phase 1: moods alone.
        inserted = moods_at_rate(space, others, rate, seconds)
        fh.wait_for({k for _, k in inserted}, timeout=120)
        out["moods_alone"] = latency(fh, inserted)
        time.sleep(2.0)

        # Phase 2: the same while the uploader's tapes go up one after another.
        stop = threading.Event()
        tapes: list[dict[str, Any]] = []
        assert uploader.sub is not None and uploader.did is not None

        def upload_tapes() -> None:
            n = 0
            while not stop.is_set():
                doc = make_tape(uploader.sub, f"bench-{n}-{time.time_ns()}")
                obj, mp4 = write_tape_file(images, uploader.sub, doc["slug"], tape_mb * MB, n)
                doc["mp4"] = store_url(obj, world.image_base_url)
                key = _key(uploader.did or "", TAPE_NSID, doc)
                t = time.time()
                space.db.tapes.insert_one(doc)
                tapes.append({"t": t, "key": key, "bytes": mp4.size})
                deadline = time.monotonic() + 300
                while key not in fh.seen and time.monotonic() < deadline:
                    time.sleep(0.05)
                n += 1

        writer = threading.Thread(target=upload_tapes, daemon=True)
        writer.start()
        time.sleep(1.0)  # the first tape is on its way (fetched, then uploaded)
        inserted = moods_at_rate(space, others, rate, seconds)
        stop.set()
        fh.wait_for({k for _, k in inserted}, timeout=120)
        writer.join(300)
        out["moods_while_tapes_upload"] = latency(fh, inserted)
        done = [t for t in tapes if t["key"] in fh.seen]
        spans = [fh.seen[t["key"]] - t["t"] for t in done]
        out["tapes"] = {
            "committed": len(done),
            "insert_to_record_s": [round(s, 2) for s in spans],
            "mb_per_s": round(sum(t["bytes"] for t in done) / MB / sum(spans), 1)
            if spans
            else None,
        }
        metrics = syncd.metrics()
        out["syncd"] = {
            "peak_rss_mb": round((status_kb(syncd.pid, "VmHWM") or 0) / 1024, 1),
            "blob_bytes_uploaded": metrics.get("syncd_blob_bytes_uploaded_total"),
            "dead_letters": sum(
                v for k, v in metrics.items() if k.startswith("syncd_dead_letters")
            ),
        }
        out["loadavg_after"] = loadavg()
    finally:
        fh.stop()
        syncd.terminate(30)
        space.close()
        world.down()
    return out


def render(res: dict[str, Any]) -> str:
    a, b = res["moods_alone"], res["moods_while_tapes_upload"]
    t, s = res["tapes"], res["syncd"]
    lines = [
        f"moods at {res['rate_per_s']:g}/s over {res['mood_accounts']} accounts, "
        f"{res['seconds_per_phase']:g} s a phase; tapes of {res['tape_bytes'] / MB:.0f} MB "
        "from one other account, one after another",
        "| phase | moods | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        f"| moods alone | {a['seen']}/{a['moods']} | {a['p50_ms']} | {a['p95_ms']} | "
        f"{a['p99_ms']} | {a['max_ms']} |",
        f"| while tapes upload | {b['seen']}/{b['moods']} | {b['p50_ms']} | {b['p95_ms']} | "
        f"{b['p99_ms']} | {b['max_ms']} |",
        f"tapes committed during the phase: {t['committed']} "
        f"(insert to record: {', '.join(f'{x} s' for x in t['insert_to_record_s'])}; "
        f"{t['mb_per_s']} MB/s)",
        f"syncd peak RSS {s['peak_rss_mb']} MB; blob bytes uploaded "
        f"{s['blob_bytes_uploaded']:,.0f}; dead letters {s['dead_letters']:g}; "
        f"load average {res['loadavg_before']} -> {res['loadavg_after']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tapes")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/syncd-bench-tapes"))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--tape-mb", type=int, default=40)
    parser.add_argument("--accounts", type=int, default=5)
    args = parser.parse_args(argv)
    if args.dir.exists():
        shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    res = run(
        args.dir,
        seconds=args.seconds,
        rate=args.rate,
        tape_mb=args.tape_mb,
        accounts=args.accounts,
    )
    text = render(res)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}-tapes.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{stamp}-tapes.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
