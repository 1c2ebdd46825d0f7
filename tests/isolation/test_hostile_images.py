"""Hostile images through the running daemon (issue 18): each one a real upload at a
painting's real key (``add_painting(..., data=...)`` stores it where the platform does),
all at once, three of each -- GIF comment-block floods (25 MB), GIF frame floods, JPEG
COM and APPn marker floods, progressive-scan bombs, PNG chunk and text floods, palette PNG
decompression bombs and a PNG whose header claims 10 G pixels.

Each is dead-lettered with its reason, the daemon stays alive, its peak RSS and each
image worker's stay small (``VmHWM`` from /proc, sampled every 50 ms), and another user's
mood inserted while they are being refused is published within 2 s. The palette PNG of
39.7 M pixels is under ``images.max_pixels``: it is a legitimate image and becomes a
thumbnail (in a worker), which is the point -- the daemon's memory must not notice it.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable

from PIL import Image

from syncd_sandbox import hostile_images as hostile
from syncd_sandbox.peaks import ProcessPeaks
from syncd_sandbox.platform import MOOD, PAINTING
from syncd_sandbox.seed import make_mood
from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.testing import SandboxWorld

COPIES = 3
MB = 1024
#: (name, generator, the dead letter's reason; None: a legitimate image, published)
CASES: list[tuple[str, Callable[[], bytes], str | None]] = [
    ("gifcomments", hostile.gif_comment_flood, "image_too_many_blocks"),
    ("gifframes", hostile.gif_frame_flood, "image_too_many_frames"),
    ("jpegcom", hostile.jpeg_marker_flood, "image_too_many_markers"),
    ("jpegapp", lambda: hostile.jpeg_marker_flood(marker=0xE1), "image_too_many_markers"),
    ("scanbomb", hostile.progressive_scan_bomb, "image_too_many_scans"),
    ("pngchunks", hostile.png_chunk_flood, "image_too_many_chunks"),
    ("pngtext", lambda: hostile.png_chunk_flood(kind=b"tEXt"), "image_too_many_chunks"),
    ("pngdims", hostile.png_dimension_bomb, "decompression_bomb"),
    ("palette64m", lambda: hostile.palette_png_bomb(8000), "decompression_bomb"),
    ("palette40m", hostile.palette_png_bomb, None),
]


def test_hostile_images_all_at_once(world: SandboxWorld) -> None:
    w = world
    w.write_config({"mongo": {"max_await_ms": 100}, "images": {"retries": 0}})
    files = {name: make() for name, make, _ in CASES}
    with SyncdProcess(w.config_path, log_path=w.tmp / "syncd.log") as proc:
        proc.wait_ready()
        with ProcessPeaks(proc.pid) as peaks:
            docs = {}
            for name, _, _ in CASES:
                for i in range(COPIES):
                    docs[f"{name}{i}"] = w.add_painting("alice", f"{name}{i}", data=files[name])
            inserted = time.monotonic()
            mood = make_mood(w.sub("bob"), "published while the images are refused")
            w.insert("moods", mood)
            while not w.list_records("bob", MOOD):
                assert time.monotonic() - inserted < 30, "bob's mood was not published"
                time.sleep(0.02)
            mood_s = time.monotonic() - inserted
            # Bob's mood is out while the images are still being fetched and refused.
            still_working = len(w.records_by_ref("alice", PAINTING)) < COPIES
            proc.wait_idle(120)
            assert proc.alive and proc.get("/healthz").status_code == 200
        daemon_kb = peaks.peak_kb()
        workers = {pid: kb for pid, (cmd, kb) in peaks.children().items() if "workerproc" in cmd}
        db = sqlite3.connect(w.state_dir / "syncd.sqlite3")
        try:
            dead = dict(db.execute("SELECT doc_key, reason FROM dead_letters"))
        finally:
            db.close()

    for name, _, reason in CASES:
        for i in range(COPIES):
            key = str(docs[f"{name}{i}"]["_id"])
            assert dead.get(key) == reason, (name, i, dead.get(key))
    published = w.records_by_ref("alice", PAINTING)
    assert set(published) == {str(docs[f"palette40m{i}"]["_id"]) for i in range(COPIES)}
    for rec in published.values():
        thumb = rec["value"]["thumbnail"]
        with Image.open(io.BytesIO(w.api.get_blob(w.did("alice"), thumb["ref"]["$link"]))) as im:
            assert im.size == (512, 512)
    # Moods only: the world's checker would decode each hostile file itself, unboxed, and
    # the structural limits these trip (blocks, markers, scans) are syncd's own.
    report = w.check_invariant(collections=("moods",))
    assert report.ok, report.summary()
    print(
        f"\nhostile images: {len(CASES) * COPIES} paintings "
        f"({sum(len(b) for b in files.values()) * COPIES / 1e6:.1f} MB), bob's mood "
        f"published in {mood_s:.2f} s (images still in flight: {still_working}); "
        f"peak RSS: syncd {daemon_kb / MB:.1f} MiB, image workers "
        f"{', '.join(f'{kb / MB:.1f}' for kb in workers.values())} MiB"
    )
    assert workers, "no image worker was seen"
    assert daemon_kb < 400 * MB, daemon_kb
    assert max(workers.values()) < 400 * MB, workers
    assert mood_s < 2.0, mood_s
