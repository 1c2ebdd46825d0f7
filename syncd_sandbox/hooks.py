"""The platform's own inline writers, as a switch in a running world (platform-facts.md §6).

When the platform saves a painting, piece, kidlisp or mood it creates the
record itself, in the background: ``createRecord`` with a key the PDS picks,
then ``atproto.rkey`` (and ``atproto.uri``) written back to the document a
moment later. Mood records made inline carry a fresh ``when``, a few ms off
the stored one. A tape is published when its conversion completes (a webhook:
the insert of a converted tape, or the update that sets ``mp4Status:
"complete"``): the whole MP4 is downloaded, uploaded as the ``video`` blob, the
record created, and ``at: {rkey, uri, cid}`` written back (platform-facts §5,
§7); no retry, no dedupe. Guest content goes to the ``art`` account. Until those call
sites are switched off, two writers act on the same documents; this module
is the second writer, so tests can run syncd beside it.

:class:`PlatformHooks` tails the world database's change stream (plain
pymongo) and, for every **insert** of a public document it can build a record
for (and every tape whose conversion completes), after a random delay creates
the record the platform's way (its own
record builder and thumbnail, :mod:`syncd_sandbox.platform` and
:mod:`syncd_sandbox.thumbs`; a painting without an image in storage gets no
thumbnail), then after another random delay writes the back-reference -- or,
for a configurable fraction, never does (``lost``). Sessions are made once per
account and cached. What it did is counted in :attr:`PlatformHooks.stats` (and,
when ``stats_path`` is set, in that JSON file after every change).

In a test: ``with world.hooks(delay_ms=(10, 50), lose_fraction=0.2, seed=1) as h:``.
In a world directory: ``syncd-sandbox hooks --dir D on|off`` runs
``python -m syncd_sandbox.hooks --dir D`` in the background; its counters are
in ``D/hooks.stats.json``.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from bson import CodecOptions, DatetimeConversion
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from syncd_sandbox import platform, thumbs
from syncd_sandbox.images import UnsafeKeyError, painting_objects
from syncd_sandbox.pds import PdsApi, PdsError

STATS_FILE = "hooks.stats.json"
#: The platform's inline writers played here (tapes: its conversion webhook).
HOOK_COLLECTIONS = ("paintings", "moods", "pieces", "kidlisp", "tapes")
#: The event that runs the tape webhook besides an insert: the conversion completing.
_TAPE_CONVERTED = {
    "ns.coll": "tapes",
    "operationType": "update",
    "updateDescription.updatedFields.mp4Status": "complete",
}
_CODEC: CodecOptions[Any] = CodecOptions(
    tz_aware=True,
    tzinfo=UTC,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="surrogateescape",
)


@dataclass(frozen=True)
class HookOptions:
    """How the platform's writers behave. Delays are (min, max) milliseconds."""

    delay_ms: tuple[int, int] = (20, 200)  # insert -> createRecord
    writeback_delay_ms: tuple[int, int] = (20, 200)  # createRecord -> atproto.rkey written
    lose_fraction: float = 0.0  # write-backs never written
    seed: int | None = None
    mood_skew_ms: tuple[int, int] = (1, 25)  # inline mood `when` is this far off
    collections: tuple[str, ...] = HOOK_COLLECTIONS
    workers: int = 4

    def __post_init__(self) -> None:
        for name in ("delay_ms", "writeback_delay_ms", "mood_skew_ms"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"{name} must be 0 <= min <= max, got {(lo, hi)}")
        if not 0.0 <= self.lose_fraction <= 1.0:
            raise ValueError(f"lose_fraction must be within [0, 1], got {self.lose_fraction}")
        unknown = set(self.collections) - set(HOOK_COLLECTIONS)
        if unknown:
            raise ValueError(f"unknown collections {sorted(unknown)}")


@dataclass(frozen=True)
class CreatedRecord:
    """A record the platform's writer made (and whether its back-reference was written)."""

    collection: str
    ref: str
    did: str
    uri: str
    writeback: str = "pending"  # pending | written | lost | cancelled


@dataclass
class _State:
    counts: Counter[str] = field(default_factory=Counter)
    created: dict[str, CreatedRecord] = field(default_factory=dict)  # by uri


class PlatformHooks:
    """The platform's inline record writers, on threads, for one world database."""

    def __init__(
        self,
        mongo_uri: str,
        database: str,
        pds_url: str,
        image_url_template: str,
        options: HookOptions | None = None,
        *,
        stats_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.options = options or HookOptions()
        self.image_url_template = image_url_template
        self.stats_path = Path(stats_path) if stats_path is not None else None
        self._client: MongoClient[Any] = MongoClient(
            mongo_uri, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        self._db = self._client.get_database(database, codec_options=_CODEC)
        self._api = PdsApi(pds_url, timeout=30.0)
        self._http = httpx.Client(timeout=15.0, trust_env=False)
        self._rng = random.Random(self.options.seed)
        self._lock = threading.Lock()
        self._state = _State()
        self._sessions: dict[str, str] = {}  # did -> access token
        self._session_lock = threading.Lock()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._busy = 0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="hooks-work")
        self._threads: list[threading.Thread] = []
        self._stream: Any = None
        self._token: Any = None
        self._last_error: str | None = None
        self._polls = 0

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> PlatformHooks:
        """Open the change stream (inserts from now on are seen), then start the threads."""
        self._stream = self._open()
        for name, target in (("hooks-watch", self._watch), ("hooks-timer", self._timer)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._save_stats()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching; scheduled work not yet started is dropped (write-backs count as
        ``writebacks_cancelled``), work in progress finishes."""
        self._stop.set()
        with self._wake:
            dropped = len(self._heap)
            self._heap.clear()
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._state.counts["tasks_dropped"] += dropped
            for uri, rec in self._state.created.items():
                if rec.writeback == "pending":
                    self._state.created[uri] = _with(rec, "cancelled")
                    self._state.counts["writebacks_cancelled"] += 1
        self._save_stats(running=False)
        self._http.close()
        self._api.close()
        self._client.close()

    def __enter__(self) -> PlatformHooks:
        return self.start() if not self._threads else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until every insert made before this call has been handled: the change stream came
        back empty from a poll that began after the call, and nothing is scheduled or running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            polls = self._polls
        while time.monotonic() < deadline:
            with self._lock:
                # Two more empty polls: the second began after this call started.
                if self._polls >= polls + 2 and not self._heap and self._busy == 0:
                    return True
            time.sleep(0.02)
        return False

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: ``inserts_seen``, ``records_created`` (and per collection),
        ``writebacks_written``, ``writebacks_lost``, ``writebacks_cancelled``,
        ``sessions_created``, ``thumbnails``, ``skipped_*``, ``errors``."""
        with self._lock:
            return dict(self._state.counts)

    @property
    def created(self) -> list[CreatedRecord]:
        with self._lock:
            return list(self._state.created.values())

    # -- the change stream ----------------------------------------------------------

    def _open(self) -> Any:
        inserts = {"operationType": "insert", "ns.coll": {"$in": list(self.options.collections)}}
        wanted = [inserts, _TAPE_CONVERTED] if "tapes" in self.options.collections else [inserts]
        pipeline = [{"$match": {"$or": wanted}}]
        kwargs: dict[str, Any] = {"max_await_time_ms": 200, "full_document": "updateLookup"}
        if self._token is not None:
            kwargs["resume_after"] = self._token
        return self._db.watch(pipeline, **kwargs)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self._stream is None:
                    self._stream = self._open()
                with self._stream as stream:
                    while not self._stop.is_set():
                        change = stream.try_next()
                        if change is None:
                            with self._lock:  # an empty poll: all earlier inserts delivered
                                self._polls += 1
                            self._token = stream.resume_token or self._token
                            continue
                        self._token = change["_id"]
                        self._on_change(change)
            except PyMongoError:
                self._count("stream_errors")
                self._stop.wait(0.3)
            finally:
                self._stream = None

    def _on_change(self, change: Mapping[str, Any]) -> None:
        coll = change["ns"]["coll"]
        doc = change.get("fullDocument")
        self._count("inserts_seen" if change["operationType"] == "insert" else "tapes_converted")
        if not isinstance(doc, Mapping):
            return
        if platform.not_public_reason(coll, doc) is not None:
            self._count("skipped_not_public")
            return
        try:
            platform.owner_of(coll, doc)
            platform.record_for(coll, doc)
        except platform.Invalid:
            self._count("skipped_invalid")
            return
        self._schedule(self.options.delay_ms, lambda: self._create(coll, doc))

    # -- scheduling -------------------------------------------------------------------

    def _delay(self, span: tuple[int, int]) -> float:
        with self._lock:
            return self._rng.uniform(*span) / 1000.0

    def _schedule(self, span: tuple[int, int], task: Callable[[], None]) -> None:
        due = time.monotonic() + self._delay(span)
        with self._wake:
            heapq.heappush(self._heap, (due, next(self._seq), task))
            self._wake.notify()

    def _timer(self) -> None:
        while True:
            with self._wake:
                while not self._stop.is_set() and (
                    not self._heap or self._heap[0][0] > time.monotonic()
                ):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(wait)
                if self._stop.is_set():
                    return
                _, _, task = heapq.heappop(self._heap)
                self._busy += 1
            try:
                self._pool.submit(self._run, task)
            except RuntimeError:  # the pool is shutting down
                with self._lock:
                    self._busy -= 1
                return

    def _run(self, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception as exc:
            with self._lock:
                self._state.counts["errors"] += 1
                self._last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            with self._lock:
                self._busy -= 1
            self._save_stats()

    # -- what the platform does ---------------------------------------------------------

    def _account(self, owner: str | None) -> tuple[str, str] | None:
        user = self._db[platform.USERS].find_one(
            {"_id": platform.GUEST_USER_ID if owner is None else owner}
        )
        return platform.account_of(user)

    def _session(self, did: str, password: str, *, fresh: bool = False) -> str:
        with self._session_lock:
            token = self._sessions.get(did)
            if token is None or fresh:
                token = str(self._api.create_session(did, password)["accessJwt"])
                self._sessions[did] = token
                self._count("sessions_created")
            return token

    def _call(self, did: str, password: str, fn: Callable[[str], Any]) -> Any:
        try:
            return fn(self._session(did, password))
        except PdsError as exc:
            if exc.error not in ("ExpiredToken", "InvalidToken"):
                raise
            return fn(self._session(did, password, fresh=True))

    def _create(self, coll: str, doc: Mapping[str, Any]) -> None:
        owner = platform.owner_of(coll, doc)
        account = self._account(owner)
        if account is None:
            self._count("skipped_no_account")
            return
        did, password = account
        record = platform.record_for(coll, doc)
        if coll == "moods":
            skew = self._delay(self.options.mood_skew_ms)
            record["when"] = platform.when_string(_fresh(doc["when"], skew))
        if coll == "paintings":
            self._painting_extras(owner, doc, record, did, password)
        if coll == "tapes" and not self._tape_video(doc, record, did, password):
            return
        out = self._call(
            did,
            password,
            lambda token: self._api.procedure(
                "com.atproto.repo.createRecord",
                {"repo": did, "collection": platform.NSIDS[coll], "record": record},
                token=token,
            ),
        )
        uri, cid = str(out["uri"]), str(out["cid"])
        with self._lock:
            self._state.counts["records_created"] += 1
            self._state.counts[f"records_created.{coll}"] += 1
            self._state.created[uri] = CreatedRecord(coll, str(doc["_id"]), did, uri)
            lose = self._rng.random() < self.options.lose_fraction
        if lose:
            self._finish_writeback(uri, "lost")
            return
        self._schedule(
            self.options.writeback_delay_ms,
            lambda: self._write_back(coll, doc["_id"], uri, cid),
        )

    def _painting_extras(
        self,
        owner: str | None,
        doc: Mapping[str, Any],
        record: dict[str, Any],
        did: str,
        password: str,
    ) -> None:
        try:
            objects = painting_objects(owner, record["slug"], doc.get("bucket"))
        except UnsafeKeyError:
            return
        for obj in objects.recordings:
            if self._http.head(obj.url(self.image_url_template)).status_code == 200:
                record["recordingUrl"] = platform.painting_recording_url(record["code"])
                break
        image: bytes | None = None
        for obj in objects.images:
            r = self._http.get(obj.url(self.image_url_template))
            if r.status_code == 200:
                image = r.content
                break
        if image is None:  # nothing to upload: the record has no thumbnail
            self._count("paintings_without_image")
            return
        try:
            data, mime = thumbs.make_thumbnail(image)
            self._count("thumbnails")
        except Exception:  # the platform falls back to uploading the original
            data, mime = image, "image/png"
            self._count("thumbnail_fallbacks")
        try:
            blob = self._call(did, password, lambda t: self._api.upload_blob(t, data, mime))
        except PdsError:  # ... and without a blob, creates the record without a thumbnail
            self._count("upload_failures")
            return
        record["thumbnail"] = blob

    def _tape_video(
        self, doc: Mapping[str, Any], record: dict[str, Any], did: str, password: str
    ) -> bool:
        """The webhook's upload: the whole MP4 into memory, then ``uploadBlob``. Without
        it the platform makes no record (False)."""
        r = self._http.get(str(doc["mp4"]))
        if r.status_code != 200:
            self._count("tapes_without_mp4")
            return False
        try:
            blob = self._call(
                did, password, lambda t: self._api.upload_blob(t, r.content, "video/mp4")
            )
        except PdsError:
            self._count("upload_failures")
            return False
        record["video"] = blob
        return True

    def _write_back(self, coll: str, doc_id: Any, uri: str, cid: str) -> None:
        rkey = uri.rsplit("/", 1)[-1]
        field = platform.BACKREF_FIELDS.get(coll)
        update = (
            {field: {"rkey": rkey, "uri": uri, "cid": cid}}
            if field is not None
            else {"atproto.rkey": rkey, "atproto.uri": uri}
        )
        self._db[coll].update_one({"_id": doc_id}, {"$set": update})
        self._finish_writeback(uri, "written")

    def _finish_writeback(self, uri: str, outcome: str) -> None:
        with self._lock:
            self._state.counts[f"writebacks_{outcome}"] += 1
            rec = self._state.created.get(uri)
            if rec is not None:
                self._state.created[uri] = _with(rec, outcome)

    # -- bookkeeping --------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._state.counts[name] += n

    def _save_stats(self, running: bool = True) -> None:
        if self.stats_path is None:
            return
        with self._lock:
            data = {
                "pid": os.getpid(),
                "running": running,
                "updated": datetime.now(UTC).isoformat(),
                "options": asdict(self.options),
                "stats": dict(self._state.counts),
                "last_error": self._last_error,
                "created": [asdict(r) for r in self._state.created.values()],
            }
            tmp = self.stats_path.with_name(f".{self.stats_path.name}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            tmp.replace(self.stats_path)


def _with(rec: CreatedRecord, outcome: str) -> CreatedRecord:
    return CreatedRecord(rec.collection, rec.ref, rec.did, rec.uri, outcome)


def _fresh(when: datetime, skew_seconds: float) -> datetime:
    """The stored ``when`` moved by a few ms (at least one), as an inline mood's own clock."""
    return when + timedelta(milliseconds=max(1, round(skew_seconds * 1000)))


def read_stats(world_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The hooks' stats file of a world directory (``{}`` when the hooks never ran)."""
    path = Path(world_dir) / STATS_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return data


def parse_span(text: str) -> tuple[int, int]:
    """``"20:200"`` -> (20, 200); ``"50"`` -> (50, 50)."""
    lo, sep, hi = text.partition(":")
    span = (int(lo), int(hi if sep else lo))
    if span[0] < 0 or span[1] < span[0]:
        raise argparse.ArgumentTypeError(f"want MIN:MAX milliseconds, got {text!r}")
    return span


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delay-ms", type=parse_span, default=(20, 200), metavar="MIN:MAX")
    parser.add_argument(
        "--writeback-delay-ms", type=parse_span, default=(20, 200), metavar="MIN:MAX"
    )
    parser.add_argument("--lose-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)


def options_from_args(args: argparse.Namespace) -> HookOptions:
    return HookOptions(
        delay_ms=args.delay_ms,
        writeback_delay_ms=args.writeback_delay_ms,
        lose_fraction=args.lose_fraction,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m syncd_sandbox.hooks --dir D [options] [--ready-file F]``: run until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m syncd_sandbox.hooks")
    parser.add_argument("--dir", required=True, help="the world directory (its world.json)")
    parser.add_argument("--ready-file")
    add_option_arguments(parser)
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    info = json.loads((root / "world.json").read_text())
    hooks = PlatformHooks(
        info["mongo"]["uri"],
        info["mongo"]["database"],
        info["pds"]["url"],
        info["images"]["url_template"],
        options_from_args(args),
        stats_path=root / STATS_FILE,
    )
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    hooks.start()
    ready = {"ready": True, "pid": os.getpid(), "stats": str(root / STATS_FILE)}
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(json.dumps(ready) + "\n")
        tmp.replace(args.ready_file)
    print(json.dumps(ready), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        hooks.stop()
    print(json.dumps({"stopped": True, "stats": hooks.stats}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
