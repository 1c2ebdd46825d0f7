"""The MongoDB replica-set sandbox server: asyncio, real wire protocol, one primary.

**Dev/test only.** This is a fake ``mongod`` written in Python for syncd's tests and
demo, because no real MongoDB binary is available where they run. It implements the
subset of MongoDB that syncd and its tests use (see ``docs/mongo-sandbox.md``); it is
not a database and must never be used as a production option.

It presents itself as the primary of a single-member replica set (``rs0``) so that
pymongo, sync or async, connects with ``?replicaSet=rs0`` unmodified.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId

from .changestream import ChangeStreamCursor
from .commands import (
    MAX_BSON_OBJECT_SIZE,
    MAX_WRITE_BATCH_SIZE,
    Commands,
    FindCursor,
)
from .connection import CloseConnection, Connection
from .errors import CommandError, error_labels
from .faults import FaultState
from .journal import Journal
from .oplog import Key, Oplog, OplogEntry, encode_token
from .storage import Change, Storage
from .wire import MAX_MESSAGE_SIZE, Request, encode_reply

log = logging.getLogger("syncd_sandbox.mongo")

DEFAULT_OPLOG_SIZE = 100_000
#: The server version reported for each ``maxWireVersion`` the sandbox can present: 6.0
#: (a release before ``$changeStreamSplitLargeEvent`` was backported in 6.0.9), 7.0, 8.0.
VERSIONS = {17: "6.0.8", 21: "7.0.14", 25: "8.0.4"}
SET_NAME = "rs0"
#: Cursors idle this long are dropped (like mongod's 10-minute cursor timeout).
CURSOR_TIMEOUT_S = 600.0
CURSOR_REAP_EVERY_S = 30.0
#: Compact the journal into a snapshot after this many records.
SNAPSHOT_EVERY_RECORDS = 200_000

_NOT_PRIMARY_CODES = frozenset({10107, 13435, 13436, 11600, 11602, 189, 91})
#: Commands a ``notWritablePrimary`` fault does not touch (monitoring keeps working).
_FAULT_EXEMPT = frozenset(
    {"hello", "ismaster", "isMaster", "sandboxFault", "configureFailPoint", "endSessions"}
)
#: Commands answered even while paused (so the fault helper's own client can close).
_PAUSE_EXEMPT = frozenset({"sandboxFault", "endSessions"})
OPCOUNTERS = ("insert", "query", "update", "delete", "getmore", "command")
#: Commands that never count as ``command``: writes count their documents / statements
#: (in their handlers), ``find`` counts as ``query``, ``getMore`` as ``getmore``.
_NOT_COMMANDS = frozenset({"insert", "update", "delete", "find", "getMore"})
_ZERO_SIGNATURE = {"hash": Binary(b"\x00" * 20, 0), "keyId": Int64(0)}


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class MongoSandbox:
    """A single-node replica-set MongoDB look-alike for tests (dev/test only).

    ``await start()`` binds (``port=0`` picks a free port) and loads ``data_dir`` if
    given (otherwise everything lives in memory); ``await stop()`` flushes and closes.
    ``uri`` is ``mongodb://host:port/?replicaSet=rs0``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        oplog_size: int = DEFAULT_OPLOG_SIZE,
        max_wire_version: int = 21,
        fsync: bool = True,
        advertise_host: str | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if max_wire_version not in VERSIONS:
            raise ValueError(f"max_wire_version must be one of {sorted(VERSIONS)}")
        self.max_wire_version = max_wire_version
        self.version = VERSIONS[max_wire_version]
        self.version_tuple = tuple(int(p) for p in self.version.split("."))
        self.advertise_host = advertise_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        self.set_name = SET_NAME
        self.storage = Storage()
        self.oplog = Oplog(oplog_size)
        self.journal: Journal | None = Journal(self.data_dir, fsync) if self.data_dir else None
        self.faults = FaultState()
        self.commands = Commands(self)
        self.cursors: dict[int, FindCursor | ChangeStreamCursor] = {}
        self.connections: set[Connection] = set()
        self.total_connections = 0
        #: ``serverStatus().opcounters``: counted as a mongod counts them (see count_op).
        self.opcounters: dict[str, int] = dict.fromkeys(OPCOUNTERS, 0)
        #: ``serverStatus().metrics.commands.<name>.total``: commands received, one per
        #: round trip (a bulk write of 200 updates is one ``update`` command).
        self.command_totals: Counter[str] = Counter()
        self.retry_cache: OrderedDict[tuple[bytes, int], dict[str, Any]] = OrderedDict()
        self.process_id = ObjectId()
        self.tv_counter = 0
        self._topology_waiters: list[asyncio.Future[bool]] = []
        self._server: asyncio.Server | None = None
        self._next_conn_id = 0
        self._next_request_id = 0
        self.started_at = time.time()
        self._stopping = False
        self._reap_handle: asyncio.TimerHandle | None = None

    @property
    def supports_split_event(self) -> bool:
        """``$changeStreamSplitLargeEvent`` exists: 7.0+, and 6.0 from 6.0.9."""
        v = self.version_tuple
        return v >= (7, 0) or (6, 0, 9) <= v < (6, 1)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def advertised(self) -> str:
        return f"{self.advertise_host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"mongodb://{self.advertised}/?replicaSet={self.set_name}"

    async def start(self) -> None:
        if self.journal is not None:
            self._load()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_protocol, self.host, self.requested_port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self.started_at = time.time()
        self._reap_handle = loop.call_later(CURSOR_REAP_EVERY_S, self._reap_cursors)
        log.info("MongoDB sandbox (dev/test only) listening on %s", self.uri)

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._reap_handle is not None:
            self._reap_handle.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except TimeoutError:
                pass
        if self.journal is not None:
            self.snapshot()
            self.journal.close()

    def _reap_cursors(self) -> None:
        """Forget cursors nobody has used for a while (clients that went away)."""
        now = time.monotonic()
        for cid, cursor in list(self.cursors.items()):
            if now - cursor.last_used > CURSOR_TIMEOUT_S:
                del self.cursors[cid]
        loop = asyncio.get_running_loop()
        self._reap_handle = loop.call_later(CURSOR_REAP_EVERY_S, self._reap_cursors)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        assert self.journal is not None
        snapshot, records = self.journal.load()
        st = self.storage
        entries: list[OplogEntry] = []
        min_key: Key | None = None
        last_key: Key | None = None
        for rec in snapshot:
            kind = rec.get("t")
            if kind == "clock":
                min_key = tuple(int(x) for x in rec["min"])  # type: ignore[assignment]
                last_key = tuple(int(x) for x in rec["last"])  # type: ignore[assignment]
            elif kind == "coll":
                st.create(rec["db"], rec["coll"], rec.get("options") or None)
                if rec.get("indexes"):
                    st.create_indexes(rec["db"], rec["coll"], rec["indexes"])
            elif kind == "doc":
                st.put_raw(rec["db"], rec["coll"], bson.encode(rec["d"]))
            elif kind == "e":
                entries.append(OplogEntry.from_doc(rec))
        if min_key is not None and last_key is not None:
            self.oplog.min_resumable = min_key
            self.oplog.last_key = min_key
            for entry in entries:
                if entry.key > self.oplog.last_key:
                    self.oplog.append(entry)
            self.oplog.last_key = max(self.oplog.last_key, last_key)
            self.oplog.min_resumable = max(self.oplog.min_resumable, min_key)
        for rec in records:
            try:
                self._replay(rec)
            except Exception:  # a record that no longer applies: keep going
                log.exception("sandbox journal: could not replay record %r", rec.get("t"))
        if records or not self.journal.snapshot_path.exists():
            self.snapshot()

    def _replay(self, rec: dict[str, Any]) -> None:
        st = self.storage
        kind = rec.get("t")
        if kind == "e":
            entry = OplogEntry.from_doc(rec)
            self._apply_entry_state(entry)
            if entry.key > self.oplog.last_key:
                self.oplog.append(entry)
        elif kind == "create":
            st.create(rec["db"], rec["coll"], rec.get("options") or None)
        elif kind == "collMod":
            st.coll_mod(rec["db"], rec["coll"], rec.get("options") or {})
        elif kind == "idx":
            st.create_indexes(rec["db"], rec["coll"], rec["specs"])
        elif kind == "dropIdx":
            st.drop_indexes(rec["db"], rec["coll"], rec.get("index", "*"))
        elif kind == "trunc":
            self.oplog.truncate(int(rec.get("keep", 0)))

    def _apply_entry_state(self, entry: OplogEntry) -> None:
        st = self.storage
        if entry.op in ("insert", "update", "replace") and entry.post is not None:
            st.put_raw(entry.db, entry.coll, entry.post)
        elif entry.op == "delete":
            st.remove_id(entry.db, entry.coll, entry.doc_id)
        elif entry.op == "drop":
            st.drop(entry.db, entry.coll)
        elif entry.op == "dropDatabase":
            st.drop_database(entry.db)
        elif entry.op == "rename" and entry.to is not None:
            st.rename(entry.db, entry.coll, entry.to["db"], entry.to["coll"])

    def _snapshot_records(self) -> Iterator[dict[str, Any]]:
        st = self.storage
        yield {
            "t": "clock",
            "last": list(self.oplog.last_key),
            "min": list(self.oplog.min_resumable),
        }
        for db in st.database_names():
            for name in st.collection_names(db):
                yield {
                    "t": "coll",
                    "db": db,
                    "coll": name,
                    "options": st.options.get((db, name), {}),
                    "indexes": st.index_specs(db, name),
                }
                for doc in st.all_documents(db, name):
                    yield {"t": "doc", "db": db, "coll": name, "d": doc}
        for entry in self.oplog.entries():
            rec = entry.to_doc()
            rec["t"] = "e"
            yield rec

    def snapshot(self) -> None:
        """Write a full snapshot and empty the journal (no-op without a data dir)."""
        if self.journal is not None:
            self.journal.write_snapshot(self._snapshot_records())

    def journal_records(self, records: list[dict[str, Any]]) -> None:
        if self.journal is None:
            return
        self.journal.append(records)
        if self.journal.records_since_snapshot >= SNAPSHOT_EVERY_RECORDS:
            self.snapshot()

    async def durable(self) -> None:
        """Wait until every journal record written so far is fsynced."""
        if self.journal is not None:
            await self.journal.sync()

    # -- oplog ---------------------------------------------------------------------------
    def _now(self) -> datetime.datetime:
        now = datetime.datetime.now(datetime.UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def commit_changes(self, changes: list[tuple[str, str, Change]]) -> list[OplogEntry]:
        """Turn document changes into oplog entries (and journal records)."""
        wall = self._now()
        entries = []
        records = []
        images_cache: dict[tuple[str, str], bool] = {}
        for db, coll, ch in changes:
            images = images_cache.get((db, coll))
            if images is None:
                images = images_cache[(db, coll)] = self.storage.images_enabled(db, coll)
            entry = OplogEntry(
                key=self.oplog.next_key(),
                op=ch.op,
                db=db,
                coll=coll,
                wall=wall,
                doc_id=ch.doc_id,
                post=ch.post,
                pre=ch.pre,
                images=images,
                update_desc=ch.update_desc,
            )
            self.oplog.append(entry)
            entries.append(entry)
            if self.journal is not None:
                rec = entry.to_doc()
                rec["t"] = "e"
                records.append(rec)
        self.journal_records(records)
        return entries

    def apply_ddl(self, op: str, db: str, coll: str, to: dict[str, str] | None = None) -> None:
        """Apply a drop / dropDatabase / rename and record its oplog entries."""
        wall = self._now()
        entries: list[OplogEntry] = []
        if op == "dropDatabase":
            for name in self.storage.collection_names(db):
                entries.append(OplogEntry(self.oplog.next_key(), "drop", db, name, wall))
                self.oplog.append(entries[-1])
            entries.append(OplogEntry(self.oplog.next_key(), "dropDatabase", db, "", wall))
            self.oplog.append(entries[-1])
        else:
            entries.append(OplogEntry(self.oplog.next_key(), op, db, coll, wall, to=to))
            self.oplog.append(entries[-1])
        for entry in entries:
            self._apply_entry_state(entry)
        records = []
        for entry in entries:
            rec = entry.to_doc()
            rec["t"] = "e"
            records.append(rec)
        self.journal_records(records)

    def truncate_oplog(self, keep: int) -> int:
        dropped = self.oplog.truncate(keep)
        self.journal_records([{"t": "trunc", "keep": keep}])
        return dropped

    def status(self) -> dict[str, Any]:
        first, last = self.oplog.first, self.oplog.last
        return {
            "sandbox": True,
            "uri": self.uri,
            "oplogEntries": len(self.oplog),
            "oplogMaxEntries": self.oplog.max_entries,
            "oplogFirst": first.ts if first else None,
            "oplogLast": last.ts if last else None,
            "oldestResumableToken": {"_data": encode_token(self.oplog.min_resumable)},
            "clusterTime": self.oplog.cluster_time,
            "connections": len(self.connections),
            "cursors": len(self.cursors),
            "collections": sum(
                len(self.storage.collection_names(d)) for d in self.storage.database_names()
            ),
            "persistent": self.data_dir is not None,
            "failGetMore": self.faults.fail_getmore,
            "notWritablePrimary": self.faults.not_writable_primary,
            "failCommand": self.faults.fail_command.mode,
        }

    def remember_retry(self, key: tuple[bytes, int], reply: dict[str, Any]) -> None:
        self.retry_cache[key] = reply
        if len(self.retry_cache) > 10_000:
            self.retry_cache.popitem(last=False)

    def count_op(self, name: str) -> None:
        """Count one command in ``opcounters`` (writes count themselves, per document or
        statement). ``aggregate`` counts as ``query`` from 7.1 on, as ``command`` before."""
        if name == "find" or (name == "aggregate" and self.version_tuple >= (7, 1)):
            self.opcounters["query"] += 1
        elif name == "getMore":
            self.opcounters["getmore"] += 1
        elif name not in _NOT_COMMANDS:
            self.opcounters["command"] += 1

    # -- topology ------------------------------------------------------------------------
    def topology_version(self) -> dict[str, Any]:
        return {"processId": self.process_id, "counter": Int64(self.tv_counter)}

    def bump_topology(self) -> None:
        self.tv_counter += 1
        waiters, self._topology_waiters = self._topology_waiters, []
        for fut in waiters:
            _resolve(fut, True)

    async def wait_topology_change(self, tv: dict[str, Any], wait_s: float) -> None:
        if tv.get("processId") != self.process_id or int(tv.get("counter", -1)) != self.tv_counter:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._topology_waiters.append(fut)
        handle = loop.call_later(max(0.0, wait_s), _resolve, fut, False)
        try:
            await fut
        finally:
            handle.cancel()
            if fut in self._topology_waiters:
                self._topology_waiters.remove(fut)

    def hello_reply(self, conn: Connection, legacy: bool = False) -> dict[str, Any]:
        me = self.advertised
        now = self._now()
        last = self.oplog.cluster_time
        reply: dict[str, Any] = {
            "topologyVersion": self.topology_version(),
            "hosts": [me],
            "setName": self.set_name,
            "setVersion": 1,
            "isWritablePrimary": True,
            "ismaster": True,
            "secondary": False,
            "primary": me,
            "me": me,
            "electionId": ObjectId("7fffffff0000000000000001"),
            "lastWrite": {
                "opTime": {"ts": last, "t": Int64(1)},
                "lastWriteDate": now,
                "majorityOpTime": {"ts": last, "t": Int64(1)},
                "majorityWriteDate": now,
            },
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
            "localTime": now,
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": self.max_wire_version,
            "readOnly": False,
            "helloOk": True,
        }
        if not legacy:
            reply.pop("ismaster")
        return reply

    def drop_connections(self, except_conn: Connection | None = None) -> int:
        victims = [c for c in self.connections if c is not except_conn]
        for conn in victims:
            conn.abort()
        return len(victims)

    # -- connections ---------------------------------------------------------------------
    async def _gate(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self.faults.paused_until - loop.time()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def _make_protocol(self) -> Connection:
        self._next_conn_id += 1
        self.total_connections += 1
        conn = Connection(self._next_conn_id, self._handle, self.connections.discard)
        self.connections.add(conn)
        return conn

    async def _handle(self, request: Request, conn: Connection) -> bytes | None:
        """Run one request (honouring a ``pause`` fault) and return the encoded reply."""
        gated = request.name not in _PAUSE_EXEMPT
        if gated and self.faults.paused_until:
            await self._gate()
        reply = await self.dispatch(request, conn)
        if request.more_to_come:
            return None
        if gated and self.faults.paused_until:
            await self._gate()
        self._next_request_id += 1
        return encode_reply(request, self._next_request_id, reply)

    def _labels(self, request: Request, code: int | None, wc_code: int | None = None) -> list[str]:
        """The error labels a real server computes for this failure (no fail-point override)."""
        cmd = request.command
        return error_labels(
            command=request.name,
            code=code,
            wc_code=wc_code,
            retryable_write="txnNumber" in cmd and "autocommit" not in cmd,
            change_stream=request.change_stream,
            wrote=request.wrote,
        )

    async def dispatch(self, request: Request, conn: Connection) -> dict[str, Any]:
        """Run one command and return its reply (always a reply document).

        Error labels are the server's (:func:`~.errors.error_labels`), unless a
        ``failCommand`` fail point names ``errorLabels``: then exactly those, as a 4.4+
        server does (also on a ``writeConcernError`` reply, at its top level).
        """
        name = request.name
        override: list[str] | None = None
        wc_error: dict[str, Any] | None = None
        if name == "aggregate":
            pipeline = request.command.get("pipeline")
            if isinstance(pipeline, list) and pipeline and isinstance(pipeline[0], dict):
                request.change_stream = "$changeStream" in pipeline[0]
        if name in self.commands.table:
            self.count_op(name)
            self.command_totals[name] += 1
        try:
            fail = self.faults.fail_command
            data = fail.take(name, conn.app_name) if fail.mode != "off" else None
            if data is not None:
                if isinstance(data.get("errorLabels"), list):
                    override = [str(label) for label in data["errorLabels"]]
                if data.get("blockConnection"):
                    await asyncio.sleep(int(data.get("blockTimeMS", 0)) / 1000.0)
                if data.get("closeConnection"):
                    raise CloseConnection()
                if "errorCode" in data:
                    raise CommandError(
                        int(data["errorCode"]), "Failing command via 'failCommand' failpoint"
                    )
                if isinstance(data.get("writeConcernError"), dict):
                    wc_error = dict(data["writeConcernError"])
            if self.faults.not_writable_primary > 0 and name not in _FAULT_EXEMPT:
                self.faults.not_writable_primary -= 1
                self.bump_topology()
                raise CommandError(10107, "not primary (sandboxFault notWritablePrimary)")
            handler = self.commands.table.get(name)
            if handler is None:
                if name == "$sandboxInvalidMessage":
                    raise CommandError(22, f"invalid BSON in message: {request.command[name]}")
                raise CommandError(59, f"no such command: '{name}'")
            reply = await handler(request, conn)
            reply["ok"] = 1.0
            if wc_error is not None:
                reply["writeConcernError"] = wc_error
                code = wc_error.get("code")
                labels = (
                    override
                    if override is not None
                    else self._labels(request, None, int(code) if isinstance(code, int) else None)
                )
                if labels:
                    reply["errorLabels"] = labels
        except CommandError as exc:
            if override is not None:
                exc.labels = list(override)
            else:
                for label in self._labels(request, exc.code):
                    if label not in exc.labels:
                        exc.labels.append(label)
            reply = exc.to_reply()
            if exc.code in _NOT_PRIMARY_CODES and "topologyVersion" not in reply:
                reply["topologyVersion"] = self.topology_version()
        except (CloseConnection, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("sandbox: command %s failed", name)
            reply = CommandError(
                1, f"sandbox internal error in {name}: {type(exc).__name__}: {exc}"
            ).to_reply()
        cluster_time = self.oplog.cluster_time
        reply["operationTime"] = cluster_time
        reply["$clusterTime"] = {"clusterTime": cluster_time, "signature": _ZERO_SIGNATURE}
        return reply
