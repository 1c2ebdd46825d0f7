"""Hostile images through the thumbnail pool: ``python -m bench.hostile [--lift]``.

For each file of ``syncd_sandbox/hostile_images.py``: the outcome (a reason, or
a thumbnail), the wall time, how much this process's peak RSS grew while the
worker had it (this process plays the daemon), and the longest the event loop
waited meanwhile (a 10 ms ticker measures its lag). ``--lift`` lifts the
structural limits, so the box (worker memory and CPU limits) has to stop them.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable

from syncd.images.errors import ImageError
from syncd.images.structure import StructureLimits
from syncd.images.thumbnail import ThumbnailPool
from syncd_sandbox import hostile_images as hostile

CASES: list[tuple[str, Callable[[], bytes]]] = [
    ("gif_comment_flood (25 MB)", hostile.gif_comment_flood),
    ("gif_frame_flood (100k frames)", hostile.gif_frame_flood),
    ("jpeg_marker_flood (600k COM)", hostile.jpeg_marker_flood),
    ("progressive_scan_bomb (2.5 MB)", hostile.progressive_scan_bomb),
    ("palette_png_bomb (39.7 Mpx)", hostile.palette_png_bomb),
    ("png_chunk_flood (200k chunks)", hostile.png_chunk_flood),
    ("png_dimension_bomb (10 Gpx)", hostile.png_dimension_bomb),
]


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        found = re.search(r"VmHWM:\s+(\d+)", f.read())
    return int(found.group(1)) / 1024 if found else 0.0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


async def _one(pool: ThumbnailPool, data: bytes) -> tuple[str, float, float]:
    lag = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = max(lag, time.perf_counter() - started - 0.01)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        thumb = await pool.make(data)
        outcome = f"thumbnail {thumb.width}x{thumb.height} {len(thumb.data)} B"
    except ImageError as exc:
        outcome = exc.reason
    finally:
        done.set()
        await tick
    return outcome, time.perf_counter() - started, lag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--lift", action="store_true", help="lift the structural limits")
    args = parser.parse_args()
    limits = StructureLimits()
    if args.lift:
        big = 10**9
        limits = StructureLimits(big, big, big, big, big, big)
    print(f"structural limits {'lifted' if args.lift else 'default'}; worker 512 MB, 5 s CPU")
    with ThumbnailPool(1, limits=limits) as pool:
        pool.make_many([hostile.png_chunk_flood(1)])  # start the worker
        for name, make in CASES:
            data = make()
            _reset_peak()
            before = _peak_mib()
            outcome, seconds, lag = asyncio.run(_one(pool, data))
            grown = _peak_mib() - before
            print(
                f"  {name:<32} {len(data) / 1e6:6.2f} MB  {outcome:<28} {seconds:6.2f} s  "
                f"this process +{grown:5.1f} MiB peak, event loop lag max {lag * 1000:5.1f} ms"
            )


if __name__ == "__main__":
    main()
