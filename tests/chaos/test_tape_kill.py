"""SIGKILL in the middle of a tape's MP4 upload, then a restart: exactly one record, whose
video is the MP4; the bytes sent before the kill and uploaded after it are reported.

The PDS is reached through a throttling TCP relay (about 12 MB/s towards the PDS), so the
kill lands while the MP4 is on the wire, not before or after it.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from syncd_sandbox import tally
from syncd_sandbox.metrics import parse_metrics
from syncd_sandbox.platform import NSIDS
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_mood, make_tape, store_url, write_tape_file
from syncd_sandbox.testing import SandboxWorld

pytestmark = pytest.mark.slow

MB = 1024 * 1024


class Throttle:
    """A loopback TCP relay to ``upstream`` that paces client→server bytes."""

    def __init__(self, upstream: str, bytes_per_second: float) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._up = (host, int(port))
        self._rate = bytes_per_second
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="throttle")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Throttle:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self._up)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_w, self._rate), self._pump(up_r, writer, None))

    @staticmethod
    async def _pump(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, rate: float | None
    ) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
                if rate is not None:
                    await asyncio.sleep(len(data) / rate)
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


def metrics(rig: Rig) -> dict[str, float]:
    import httpx

    return parse_metrics(httpx.get(rig.metrics_url, timeout=2.0).text)


def test_sigkill_during_a_tape_upload_then_restart_leaves_one_record(world: SandboxWorld) -> None:
    throttle = Throttle(world.pds.url, 12 * MB).start()
    rig = Rig(world, proxy=False, overrides={"pds": {"url": throttle.url}})
    try:
        sub = world.sub("alice")
        doc = make_tape(sub)
        obj, mp4 = write_tape_file(world.image_dir, sub, doc["slug"], 24 * MB, seed=24)
        doc["mp4"] = store_url(obj, world.image_base_url)
        world.insert("tapes", doc)
        world.insert("moods", *(make_mood(world.sub("bob"), f"mood {i}") for i in range(5)))
        rig.syncd.start()
        # Kill once a third of the MP4 is on the wire.
        deadline = time.monotonic() + 120
        sent = 0.0
        while time.monotonic() < deadline:
            try:
                sent = metrics(rig).get("syncd_blob_bytes_sent_total", 0.0)
            except Exception:
                sent = 0.0
            if sent >= 8 * MB:
                break
            time.sleep(0.02)
        assert 8 * MB <= sent < mp4.size, f"sent {sent:,.0f} of {mp4.size:,}"
        rig.syncd.kill()
        tally.count("kill_points")
        assert not world.records_by_ref("alice", NSIDS["tapes"])  # no record yet
        # Restart (straight to the PDS this time): the change is replayed, the MP4
        # fetched and uploaded again from its start, one record made.
        rig.config = world.write_config({"pds": {"url": world.pds.url}})
        rig.syncd.start()
        report = rig.wait_quiet(120)
        after = metrics(rig)
        records = world.records_by_ref("alice", NSIDS["tapes"])
        assert list(records) == [str(doc["_id"])]
        assert records[str(doc["_id"])]["value"]["video"]["size"] == mp4.size
        assert after["syncd_blob_bytes_uploaded_total"] == mp4.size
        print(
            f"\ntape SIGKILL: {sent:,.0f} of {mp4.size:,} bytes sent before the kill; after "
            f"the restart {after['syncd_blob_bytes_sent_total']:,.0f} sent, "
            f"{after['syncd_blob_bytes_uploaded_total']:,.0f} uploaded; "
            f"{report.records_checked} records checked, {len(report.violations)} violations"
        )
    finally:
        rig.close()
        throttle.stop()
