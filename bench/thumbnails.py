"""Thumbnail throughput: ``python -m bench.thumbnails [-n N] [--size 1024] [--workers W]``.

Generates N painting-like PNGs (flat background, filled shapes, brush strokes,
a little grain) plus the same number of pure-noise PNGs, then reports
thumbnails per second made in this process, one at a time (``make_thumbnail``),
and through :class:`~syncd.images.thumbnail.ThumbnailPool` (boxed worker
processes, what the daemon uses), with the CPU time each thumbnail cost (for the
pool: this process's and the workers'; a steadier figure than the rate on a
shared machine). It also measures what the process boundary costs: the round
trip of a job that does nothing with 200 KB and 3 MB inputs.
Deterministic (seeded). Moved here from ``syncd/images/bench.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial

from PIL import Image, ImageDraw, ImageFilter

from syncd.images.thumbnail import Thumbnail, ThumbnailPool, make_thumbnail
from syncd.images.worker import WorkerPool


def painting(size: int, seed: int) -> bytes:
    rng = random.Random(seed)

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    im = Image.new("RGB", (size, size), colour())
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 8)):  # flat blocks of colour
        x0, y0 = rng.randrange(size), rng.randrange(size)
        x1, y1 = x0 + rng.randrange(size // 2), y0 + rng.randrange(size // 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour())
    for _ in range(rng.randint(10, 30)):  # brush strokes: thick random walks
        x, y = rng.randrange(size), rng.randrange(size)
        points = [(x, y)]
        for _ in range(rng.randint(5, 40)):
            x += rng.randint(-40, 40)
            y += rng.randint(-40, 40)
            points.append((x, y))
        draw.line(points, fill=colour(), width=rng.randint(2, 24), joint="curve")
    im = im.filter(ImageFilter.SMOOTH)  # anti-aliased edges, as a canvas would produce
    # a little grain on a patch (spray/noise brushes)
    patch = rng.randrange(size // 8, size // 3)
    noise = Image.effect_noise((patch, patch), 40).convert("RGB")
    px, py = rng.randrange(size - patch), rng.randrange(size - patch)
    region = im.crop((px, py, px + patch, py + patch))
    im.paste(Image.blend(region, noise, 0.3), (px, py))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def noise(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _serial(datas: list[bytes]) -> list[Thumbnail]:
    return [make_thumbnail(d) for d in datas]


def worker_cpu(data: bytes) -> float:
    """Runs in a worker: the CPU seconds it has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _workers_cpu(pool: WorkerPool) -> float:
    """CPU seconds used by all of ``pool``'s workers (each idle worker is asked in turn)."""
    # By its module's name: run as ``-m``, this module is ``__main__`` here, not there.
    from bench.thumbnails import worker_cpu as job

    return sum(pool.call(job, b"", {}) for _ in range(pool.size))


def _timed(fn: Callable[[], list[Thumbnail]]) -> tuple[float, list[Thumbnail]]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _describe(name: str, seconds: float, thumbs: list[Thumbnail], cpu: float) -> str:
    counts: dict[str, int] = {}
    for t in thumbs:
        counts[t.mime_type.split("/")[1]] = counts.get(t.mime_type.split("/")[1], 0) + 1
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    sizes = [len(t.data) for t in thumbs]
    return (
        f"  {name:<22} {len(thumbs) / seconds:7.1f} thumbnails/s  "
        f"{cpu / len(thumbs) * 1000:6.1f} ms CPU each  ({seconds:6.2f} s; {kinds}; "
        f"median {statistics.median(sizes) / 1024:.0f} KiB, max {max(sizes) / 1024:.0f} KiB)"
    )


def _round_trip(pool: WorkerPool, data: bytes, n: int) -> float:
    """Median seconds for ``len`` of ``data`` in a worker: the cost of the boundary."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        pool.call(len, data, {})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(n: int, size: int, workers: int) -> None:
    print(f"cpu_count={os.cpu_count()} workers={workers} n={n} size={size}x{size}")
    for label, make in (("painting-like", painting), ("pure noise", noise)):
        datas = [make(size, seed) for seed in range(n)]
        avg = sum(map(len, datas)) / len(datas) / 1024
        print(f"{label} PNGs (average {avg:.0f} KiB):")
        make_thumbnail(datas[0])  # warm up imports/codecs
        cpu = time.process_time()
        seconds, thumbs = _timed(partial(_serial, datas))
        print(_describe("in-process, serial", seconds, thumbs, time.process_time() - cpu))
        with ThumbnailPool(workers) as pool:
            pool.make_many(datas[: workers * 2])  # start the workers
            cpu = time.process_time() + _workers_cpu(pool.worker_pool)
            seconds, thumbs = _timed(partial(pool.make_many, datas))
            cpu = time.process_time() + _workers_cpu(pool.worker_pool) - cpu
        print(_describe("ThumbnailPool", seconds, thumbs, cpu))
    with WorkerPool(1) as one:
        one.call(len, b"warm up", {})
        for kib in (200, 3072):
            cost = _round_trip(one, bytes(kib * 1024), 20)
            print(f"worker round trip, {kib:>4} KiB in, nothing done: {cost * 1000:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=40, help="images per kind (default 40)")
    parser.add_argument("--size", type=int, default=1024, help="side in px (default 1024)")
    parser.add_argument("--workers", type=int, default=0, help="pool size (default cpu count)")
    args = parser.parse_args()
    run(args.n, args.size, args.workers or (os.cpu_count() or 1))


if __name__ == "__main__":
    main()
