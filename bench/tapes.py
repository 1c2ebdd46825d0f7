"""``python -m bench.tapes``: other accounts' live moods while one account uploads tapes.

    python -m bench.tapes                          # 40 MB tapes, moods at 20/s
    python -m bench.tapes --rounds 3 --seconds 15 --tape-mb 40 --rate 20

On one sandbox world (real PDS, Mongo sandbox, image server) and one ``syncd run``,
moods of ``--accounts`` accounts are inserted at ``--rate`` per second through three
kinds of phase, repeated ``--rounds`` times in turn (the machine's load moves; the
turns spread it over all three):

* ``alone``: the moods alone (the reference);
* ``syncd``: while another account's 40 MB tapes go through syncd one after the
  other (the next tape inserted as soon as the previous record is committed, so an
  upload is in flight the whole phase);
* ``bare``: while a bare client (not syncd) uploads 40 MB MP4s to the same PDS and
  creates their records, one after the other: what the PDS itself costs the moods
  when it takes 40 MB blobs, whoever sends them.

A mood's latency is from its insert to the commit time of its record on the PDS
(read from the firehose, as scenario 3 does). Prints the figures and syncd's peak
RSS; writes ``bench/results/<time>-tapes.json``. A benchmark, not a test: nothing
fails on a timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.fixtures import EXTRA_OVERRIDES, NSID, Space, make_space, up_world
from bench.pdsclient import Firehose
from bench.procstat import loadavg, status_kb
from bench.scenarios import percentile
from syncd.rkey import derive_rkey
from syncd_sandbox.seed import (
    make_mood,
    make_tape,
    mp4_bytes,
    store_url,
    when_ms,
    write_tape_file,
)
from syncd_sandbox.syncd_process import SyncdProcess

RESULTS = Path(__file__).resolve().parent / "results"
TAPE_NSID = "computer.aesthetic.tape"
MB = 1024 * 1024
PHASES = ("alone", "syncd", "bare")
Inserted = list[tuple[float, tuple[str, str]]]


def _key(did: str, nsid: str, doc: dict[str, Any]) -> tuple[str, str]:
    return did, f"{nsid}/{derive_rkey(doc['when'], doc['_id'])}"


def moods_at_rate(space: Space, owners: list[str], rate: float, seconds: float) -> Inserted:
    """Insert moods round-robin at ``rate``/s for ``seconds``; (insert time, key) each."""
    out: Inserted = []
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


def figures(fh: Firehose, inserted: Inserted) -> dict[str, Any]:
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


class Tapes:
    """The uploads of one phase, on a thread: through syncd, or by a bare client."""

    def __init__(self, space: Space, fh: Firehose, images: Path, tape_bytes: int) -> None:
        self.space, self.fh, self.images, self.size = space, fh, images, tape_bytes
        self.uploader = space.users[0]
        self.n = 0
        self.done: list[float] = []  # seconds from insert (or send) to the record

    def through_syncd(self, stop: threading.Event) -> None:
        sub, did = self.uploader.sub, self.uploader.did or ""
        while not stop.is_set():
            self.n += 1
            doc = make_tape(sub, f"bench-{self.n}-{time.time_ns()}")
            obj, _ = write_tape_file(self.images, sub, doc["slug"], self.size, self.n)
            doc["mp4"] = store_url(obj, self.space.world.image_base_url)
            key = _key(did, TAPE_NSID, doc)
            t = time.time()
            self.space.db.tapes.insert_one(doc)
            deadline = time.monotonic() + 300
            while key not in self.fh.seen and time.monotonic() < deadline:
                time.sleep(0.05)
            if key in self.fh.seen:
                self.done.append(self.fh.seen[key] - t)

    def bare_client(self, stop: threading.Event) -> None:
        acc = self.uploader
        with httpx.Client(base_url=self.space.world.pds_url, timeout=300) as http:
            token = http.post(
                "/xrpc/com.atproto.server.createSession",
                json={"identifier": acc.did, "password": acc.password},
            ).json()["accessJwt"]
            auth = {"Authorization": f"Bearer {token}"}
            while not stop.is_set():
                self.n += 1
                data = mp4_bytes(self.size, seed=1000 + self.n)
                started = time.time()
                blob = http.post(
                    "/xrpc/com.atproto.repo.uploadBlob",
                    content=data,
                    headers={**auth, "Content-Type": "video/mp4"},
                ).json()["blob"]
                del data
                record = {
                    "$type": TAPE_NSID,
                    "slug": f"bare-{self.n}",
                    "code": f"b{self.n}",
                    "when": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "video": blob,
                }
                http.post(
                    "/xrpc/com.atproto.repo.createRecord",
                    json={"repo": acc.did, "collection": TAPE_NSID, "record": record},
                    headers=auth,
                ).raise_for_status()
                self.done.append(time.time() - started)


def run(
    root: Path, *, seconds: float, rate: float, tape_mb: int, accounts: int, rounds: int
) -> dict[str, Any]:
    world = up_world(root / "world")
    out: dict[str, Any] = {
        "rate_per_s": rate,
        "seconds_per_phase": seconds,
        "rounds": rounds,
        "tape_bytes": tape_mb * MB,
        "mood_accounts": accounts,
        "syncd_overrides": EXTRA_OVERRIDES,
        "loadavg_before": loadavg(),
    }
    space = make_space(world, root, "tapes", accounts + 1)
    images = Path(world.info["images"]["root"])
    others = [str(u.sub) for u in space.users[1:]]
    (root / "logs").mkdir(parents=True, exist_ok=True)
    syncd = SyncdProcess(space.config_path, log_path=root / "logs" / "syncd.log")
    syncd.start()
    fh = Firehose(world.pds_url).start()
    inserted: dict[str, Inserted] = {p: [] for p in PHASES}
    rounds_out: list[dict[str, Any]] = []
    tapes: dict[str, list[float]] = {"syncd": [], "bare": []}
    try:
        syncd.wait_ready(60)
        # Warm-up: one mood per account (their one login happens before the clock).
        warm = [make_mood(s, "warm-up", when_ms(datetime.now(UTC))) for s in others]
        warm.append(make_mood(str(space.users[0].sub), "warm-up", when_ms(datetime.now(UTC))))
        space.db.moods.insert_many(warm)
        keys = {_key(space.did_of(d["user"]), NSID["moods"], d) for d in warm}
        if fh.wait_for(keys, timeout=60) is None:
            raise RuntimeError("warm-up moods never appeared")
        time.sleep(1.0)
        for r in range(rounds):
            row: dict[str, Any] = {"round": r + 1, "loadavg": loadavg()[0]}
            for phase in PHASES:
                load = Tapes(space, fh, images, tape_mb * MB)
                work: Callable[[threading.Event], None] | None = {
                    "alone": None,
                    "syncd": load.through_syncd,
                    "bare": load.bare_client,
                }[phase]
                stop = threading.Event()
                thread = None
                if work is not None:
                    thread = threading.Thread(target=work, args=(stop,), daemon=True)
                    thread.start()
                    time.sleep(1.0)  # the first tape is on its way
                moods = moods_at_rate(space, others, rate, seconds)
                stop.set()
                fh.wait_for({k for _, k in moods}, timeout=120)
                if thread is not None:
                    thread.join(300)
                inserted[phase] += moods
                row[phase] = figures(fh, moods)["p99_ms"]
                if phase in tapes:
                    tapes[phase] += load.done
                time.sleep(2.0)
            rounds_out.append(row)
        out["phases"] = {p: figures(fh, inserted[p]) for p in PHASES}
        out["rounds_p99_ms"] = rounds_out
        out["tapes_s"] = {k: [round(x, 2) for x in v] for k, v in tapes.items()}
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
    label = {
        "alone": "moods alone",
        "syncd": "while syncd uploads tapes",
        "bare": "while a bare client uploads them",
    }
    ph, s, t = res["phases"], res["syncd"], res["tapes_s"]
    lines = [
        f"moods at {res['rate_per_s']:g}/s over {res['mood_accounts']} accounts; "
        f"{res['rounds']} rounds of {res['seconds_per_phase']:g} s per phase; tapes of "
        f"{res['tape_bytes'] / MB:.0f} MB from one other account, one after another"
        + (f"; syncd config {res['syncd_overrides']}" if res["syncd_overrides"] else ""),
        "| phase | moods | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for p in PHASES:
        f = ph[p]
        lines.append(
            f"| {label[p]} | {f['seen']}/{f['moods']} | {f['p50_ms']} | {f['p95_ms']} | "
            f"{f['p99_ms']} | {f['max_ms']} |"
        )
    lines.append(
        "p99 per round (ms): "
        + "; ".join(
            f"#{r['round']} (load {r['loadavg']:.1f}) alone {r['alone']}, syncd {r['syncd']}, "
            f"bare {r['bare']}"
            for r in res["rounds_p99_ms"]
        )
    )
    lines.append(
        f"40 MB tapes: through syncd {len(t['syncd'])} (insert to record, median "
        f"{percentile(t['syncd'], 50):.2f} s), bare client {len(t['bare'])} (upload + "
        f"record, median {percentile(t['bare'], 50):.2f} s)"
    )
    lines.append(
        f"syncd peak RSS {s['peak_rss_mb']} MB; blob bytes uploaded "
        f"{s['blob_bytes_uploaded']:,.0f}; dead letters {s['dead_letters']:g}; "
        f"load average {res['loadavg_before']} -> {res['loadavg_after']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tapes")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/syncd-bench-tapes"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--tape-mb", type=int, default=40)
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument(
        "--syncd-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=INT",
        help="a syncd config value for the run, e.g. tapes.upload_bytes_per_second=8388608",
    )
    args = parser.parse_args(argv)
    for item in args.syncd_set:
        name, _, value = item.partition("=")
        section, _, key = name.partition(".")
        EXTRA_OVERRIDES.setdefault(section, {})[key] = int(value)
    if args.dir.exists():
        shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    res = run(
        args.dir,
        seconds=args.seconds,
        rate=args.rate,
        tape_mb=args.tape_mb,
        accounts=args.accounts,
        rounds=args.rounds,
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
