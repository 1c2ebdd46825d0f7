"""Command handlers of the MongoDB sandbox (dev/test only; never a production option).

Each handler takes the decoded request and the connection and returns the reply body;
failures are raised as :class:`~.errors.CommandError`. The dispatcher in
:mod:`.server` adds ``ok``, ``operationTime`` and ``$clusterTime``.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import bson
from bson.binary import Binary
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from mongomock import filtering as mm_filtering

from .changestream import ChangeStreamCursor, parse_spec, resume_position
from .errors import CommandError, WriteFailure
from .faults import FAULT_KINDS
from .limits import MAX_USER_SIZE, insert_too_large
from .oplog import KIND_INVALIDATE, TokenError, decode_token_fragment, encode_token, time_key
from .pipeline import normalize_pipeline
from .storage import Change, check_update, simple_id
from .wire import DECODE_OPTIONS, MAX_MESSAGE_SIZE, Request

if TYPE_CHECKING:
    from .connection import Connection
    from .server import MongoSandbox

Handler = Callable[[Request, "Connection"], Awaitable[dict[str, Any]]]

VERSION = "7.0.14"  # the default (maxWireVersion 21); see MongoSandbox.version
MAX_BSON_OBJECT_SIZE = MAX_USER_SIZE
MAX_WRITE_BATCH_SIZE = 100_000
DEFAULT_FIRST_BATCH = 101
DEFAULT_CHANGE_STREAM_BATCH = 1000
DEFAULT_AWAIT_MS = 1000
#: A change stream that returned events less than this long ago counts as busy ...
HOT_STREAM_S = 0.05
#: ... and, once woken by a write, waits this long for more before replying.
COALESCE_S = 0.002


class FindCursor:
    """A materialised query result handed out batch by batch."""

    is_change_stream = False

    def __init__(self, cursor_id: int, ns: str, docs: list[RawBSONDocument]) -> None:
        self.id = cursor_id
        self.ns = ns
        self.docs = docs
        self.pos = 0
        self.last_used = time.monotonic()

    def next_batch(self, batch_size: int) -> list[RawBSONDocument]:
        limit = batch_size if batch_size > 0 else len(self.docs)
        out: list[RawBSONDocument] = []
        size = 0
        while self.pos < len(self.docs) and len(out) < limit:
            doc = self.docs[self.pos]
            if out and size + len(doc.raw) > MAX_BSON_OBJECT_SIZE:
                break
            out.append(doc)
            size += len(doc.raw)
            self.pos += 1
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.docs)


def _coll_name(value: Any, command: str) -> str:
    if not isinstance(value, str) or not value or "$" in value or "\x00" in value:
        raise CommandError(73, f"Invalid namespace specified for {command}: {value!r}")
    return value


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise CommandError(14, f"expected a number, got {value!r}") from exc


def _count_documents_shape(pipeline: list[Any]) -> tuple[dict[str, Any], int, int] | None:
    """(filter, skip, limit) if ``pipeline`` is what pymongo's ``count_documents`` sends."""
    match: dict[str, Any] = {}
    skip = limit = 0
    stages = list(pipeline)
    if not stages or stages[-1] != {"$group": {"_id": 1, "n": {"$sum": 1}}}:
        return None
    stages.pop()
    if stages and isinstance(stages[0], dict) and set(stages[0]) == {"$match"}:
        if not isinstance(stages[0]["$match"], dict):
            return None
        match = stages.pop(0)["$match"]
    if stages and isinstance(stages[0], dict) and set(stages[0]) == {"$skip"}:
        skip = _int(stages.pop(0)["$skip"])
    if stages and isinstance(stages[0], dict) and set(stages[0]) == {"$limit"}:
        limit = _int(stages.pop(0)["$limit"])
    if stages:
        return None
    return match, skip, limit


class Commands:
    """The command table of one sandbox."""

    def __init__(self, sandbox: MongoSandbox) -> None:
        self.sb = sandbox
        self.table: dict[str, Handler] = {
            "hello": self.hello,
            "ismaster": self.hello,
            "isMaster": self.hello,
            "ping": self.ping,
            "buildInfo": self.build_info,
            "buildinfo": self.build_info,
            "serverStatus": self.server_status,
            "getParameter": self.get_parameter,
            "hostInfo": self.host_info,
            "whatsmyuri": self.whatsmyuri,
            "connectionStatus": self.connection_status,
            "getCmdLineOpts": self.get_cmd_line_opts,
            "replSetGetStatus": self.repl_set_get_status,
            "getLog": self.get_log,
            "endSessions": self.ok,
            "killAllSessions": self.ok,
            "refreshSessions": self.ok,
            "startSession": self.start_session,
            "abortTransaction": self.no_transactions,
            "commitTransaction": self.no_transactions,
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "find": self.find,
            "getMore": self.get_more,
            "killCursors": self.kill_cursors,
            "count": self.count,
            "distinct": self.distinct,
            "aggregate": self.aggregate,
            "findAndModify": self.find_and_modify,
            "findandmodify": self.find_and_modify,
            "createIndexes": self.create_indexes,
            "listIndexes": self.list_indexes,
            "dropIndexes": self.drop_indexes,
            "deleteIndexes": self.drop_indexes,
            "listCollections": self.list_collections,
            "listDatabases": self.list_databases,
            "create": self.create,
            "drop": self.drop,
            "dropDatabase": self.drop_database,
            "renameCollection": self.rename_collection,
            "collMod": self.coll_mod,
            "dbStats": self.db_stats,
            "collStats": self.coll_stats,
            "configureFailPoint": self.configure_fail_point,
            "sandboxFault": self.sandbox_fault,
        }

    # -- helpers -------------------------------------------------------------------------
    def _new_cursor_id(self) -> int:
        while True:
            cid = random.randint(1, 2**62)
            if cid not in self.sb.cursors:
                return cid

    def _cursor_reply(
        self,
        ns: str,
        docs: list[Any],
        cursor_id: int,
        first: bool,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        cursor: dict[str, Any] = {"firstBatch" if first else "nextBatch": docs}
        if extra:
            cursor.update(extra)
        cursor["id"] = bson.int64.Int64(cursor_id)
        cursor["ns"] = ns
        return {"cursor": cursor}

    def _batch_reply(
        self, ns: str, docs: list[RawBSONDocument], batch_size: int, single_batch: bool = False
    ) -> dict[str, Any]:
        cursor = FindCursor(0, ns, docs)
        first = cursor.next_batch(batch_size)
        cursor_id = 0
        if not cursor.exhausted and not single_batch:
            cursor_id = self._new_cursor_id()
            cursor.id = cursor_id
            self.sb.cursors[cursor_id] = cursor
        return self._cursor_reply(ns, first, cursor_id, True)

    def _scan(self, cursor: ChangeStreamCursor, limit: int, command: str) -> list[Any]:
        try:
            return cursor.scan(self.sb.oplog, self.sb.storage, limit, command)
        finally:
            self.sb.opcounters["query"] += cursor.lookups
            cursor.lookups = 0

    def _retry_key(self, req: Request) -> tuple[bytes, int] | None:
        cmd = req.command
        lsid = cmd.get("lsid")
        txn = cmd.get("txnNumber")
        if not isinstance(lsid, dict) or txn is None or "id" not in lsid:
            return None
        lsid_id = lsid["id"]
        raw = bytes(lsid_id) if isinstance(lsid_id, bytes | Binary) else repr(lsid_id).encode()
        return raw, int(txn)

    # -- handshake and diagnostics -----------------------------------------------------------
    async def hello(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        if conn.app_name is None and isinstance(cmd.get("client"), dict):
            app = cmd["client"].get("application")
            if isinstance(app, dict) and isinstance(app.get("name"), str):
                conn.app_name = app["name"]
        tv = cmd.get("topologyVersion")
        max_await = cmd.get("maxAwaitTimeMS")
        if isinstance(tv, dict) and max_await is not None:
            await self.sb.wait_topology_change(tv, _int(max_await) / 1000.0)
        return self.sb.hello_reply(conn, legacy=req.name.lower() == "ismaster")

    async def ok(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {}

    async def ping(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {}

    async def start_session(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {"id": {"id": Binary(os.urandom(16), 4)}, "timeoutMinutes": 30}

    async def no_transactions(self, req: Request, conn: Connection) -> dict[str, Any]:
        raise CommandError(
            20, "multi-document transactions are not supported by the MongoDB sandbox"
        )

    async def build_info(self, req: Request, conn: Connection) -> dict[str, Any]:
        version = self.sb.version
        parts = [int(p) for p in version.split(".")] + [0]
        return {
            "version": version,
            "gitVersion": "sandbox",
            "versionArray": parts,
            "bits": 64,
            "debug": False,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "storageEngines": ["sandbox"],
            "modules": [],
            "sandbox": True,
        }

    async def server_status(self, req: Request, conn: Connection) -> dict[str, Any]:
        sb = self.sb
        return {
            "host": sb.advertised,
            "version": sb.version,
            "process": "mongod (syncd sandbox)",
            "pid": bson.int64.Int64(os.getpid()),
            "uptime": time.time() - sb.started_at,
            "localTime": datetime.datetime.now(datetime.UTC),
            "connections": {"current": len(sb.connections), "totalCreated": sb.total_connections},
            "repl": {"setName": sb.set_name, "isWritablePrimary": True, "primary": sb.advertised},
            "storageEngine": {"name": "sandbox", "persistent": sb.data_dir is not None},
            "opcounters": {k: bson.int64.Int64(v) for k, v in sb.opcounters.items()},
            "metrics": {
                "commands": {
                    name: {"total": bson.int64.Int64(n), "failed": bson.int64.Int64(0)}
                    for name, n in sorted(sb.command_totals.items())
                }
            },
            "sandbox": True,
        }

    async def get_parameter(self, req: Request, conn: Connection) -> dict[str, Any]:
        params = {
            "featureCompatibilityVersion": {"version": self.sb.version.rsplit(".", 1)[0]},
            "enableTestCommands": True,
            "logLevel": 0,
        }
        cmd = req.command
        if cmd.get("getParameter") == "*":
            return params
        return {k: v for k, v in params.items() if k in cmd}

    async def host_info(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {
            "system": {
                "currentTime": datetime.datetime.now(datetime.UTC),
                "hostname": platform.node(),
                "cpuArch": platform.machine(),
                "numCores": os.cpu_count() or 1,
            },
            "os": {"type": platform.system(), "name": platform.platform()},
            "extra": {},
        }

    async def whatsmyuri(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {"you": conn.peer}

    async def connection_status(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}}

    async def get_cmd_line_opts(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {
            "argv": ["syncd-sandbox-mongo"],
            "parsed": {"replication": {"replSet": self.sb.set_name}},
        }

    async def get_log(self, req: Request, conn: Connection) -> dict[str, Any]:
        return {"names": [], "log": [], "totalLinesWritten": 0}

    async def repl_set_get_status(self, req: Request, conn: Connection) -> dict[str, Any]:
        sb = self.sb
        now = datetime.datetime.now(datetime.UTC)
        optime = {"ts": sb.oplog.cluster_time, "t": bson.int64.Int64(1)}
        return {
            "set": sb.set_name,
            "date": now,
            "myState": 1,
            "term": bson.int64.Int64(1),
            "members": [
                {
                    "_id": 0,
                    "name": sb.advertised,
                    "health": 1.0,
                    "state": 1,
                    "stateStr": "PRIMARY",
                    "optime": optime,
                    "self": True,
                }
            ],
        }

    async def db_stats(self, req: Request, conn: Connection) -> dict[str, Any]:
        st = self.sb.storage
        names = st.collection_names(req.db)
        objects = sum(st.count(req.db, n, {}) for n in names)
        return {"db": req.db, "collections": len(names), "objects": objects}

    async def coll_stats(self, req: Request, conn: Connection) -> dict[str, Any]:
        name = _coll_name(req.command.get("collStats"), "collStats")
        return {"ns": f"{req.db}.{name}", "count": self.sb.storage.count(req.db, name, {})}

    # -- writes --------------------------------------------------------------------------
    async def _write(
        self, req: Request, body: Callable[[], tuple[dict[str, Any], list[tuple[str, str, Change]]]]
    ) -> dict[str, Any]:
        """Run a write command body once per (lsid, txnNumber); commit its changes."""
        if req.command.get("startTransaction") or req.command.get("autocommit") is False:
            raise CommandError(
                20, "multi-document transactions are not supported by the MongoDB sandbox"
            )
        key = self._retry_key(req)
        if key is not None:
            cached = self.sb.retry_cache.get(key)
            if cached is not None:
                return dict(cached)
        reply, changes = body()
        if changes:
            req.wrote = True
            self.sb.commit_changes(changes)
            await self.sb.durable()
        if key is not None:
            # A copy: the dispatcher adds to the reply (``writeConcernError`` of a fail
            # point), and a retry must get the write's own result, not the failure's.
            self.sb.remember_retry(key, dict(reply))
        return reply

    async def insert(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("insert"), "insert")
        docs = cmd.get("documents") or []
        raws = req.raw_sequences.get("documents")
        ordered = cmd.get("ordered", True)
        if len(docs) > MAX_WRITE_BATCH_SIZE:
            raise CommandError(16, "Write batch sizes must be between 1 and 100000")

        def body() -> tuple[dict[str, Any], list[tuple[str, str, Change]]]:
            storage = self.sb.storage
            errors: list[dict[str, Any]] = []
            changes: list[tuple[str, str, Change]] = []
            for i, doc in enumerate(docs):
                self.sb.opcounters["insert"] += 1  # every document tried, as mongod counts
                if not isinstance(doc, dict):
                    errors.append({"index": i, "code": 2, "errmsg": "document must be an object"})
                    if ordered:
                        break
                    continue
                raw = raws[i] if raws is not None else None
                size = len(raw) if raw is not None else len(bson.encode(doc))
                if size > MAX_USER_SIZE:
                    errors.append({"index": i, "code": 2, "errmsg": insert_too_large(size)})
                    if ordered:
                        break
                    continue
                try:
                    ch = storage.insert_one(db, name, doc, raw)
                except WriteFailure as exc:
                    errors.append(exc.to_write_error(i))
                    if ordered:
                        break
                    continue
                changes.append((db, name, ch))
            reply: dict[str, Any] = {"n": len(changes)}
            if errors:
                reply["writeErrors"] = errors
            return reply, changes

        return await self._write(req, body)

    async def update(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("update"), "update")
        stmts = cmd.get("updates") or []
        ordered = cmd.get("ordered", True)

        def body() -> tuple[dict[str, Any], list[tuple[str, str, Change]]]:
            storage = self.sb.storage
            errors: list[dict[str, Any]] = []
            changes: list[tuple[str, str, Change]] = []
            n = modified = 0
            upserted: list[dict[str, Any]] = []
            for i, stmt in enumerate(stmts):
                self.sb.opcounters["update"] += 1  # one per statement
                try:
                    if not isinstance(stmt, dict) or "q" not in stmt or "u" not in stmt:
                        raise WriteFailure(9, "update statement needs 'q' and 'u'")
                    out = storage.update(
                        db,
                        name,
                        stmt.get("q") or {},
                        stmt["u"],
                        upsert=bool(stmt.get("upsert", False)),
                        multi=bool(stmt.get("multi", False)),
                        array_filters=stmt.get("arrayFilters"),
                    )
                except WriteFailure as exc:
                    errors.append(exc.to_write_error(i))
                    if ordered:
                        break
                    continue
                # ``n`` counts matched and upserted documents (pymongo's matched_count
                # is ``n`` less the upserts).
                n += out.matched + (0 if out.upserted_id is None else 1)
                modified += out.modified
                if out.upserted_id is not None:
                    upserted.append({"index": i, "_id": out.upserted_id})
                changes.extend((db, name, ch) for ch in out.changes)
            reply: dict[str, Any] = {"n": n, "nModified": modified}
            if upserted:
                reply["upserted"] = upserted
            if errors:
                reply["writeErrors"] = errors
            return reply, changes

        return await self._write(req, body)

    async def delete(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("delete"), "delete")
        stmts = cmd.get("deletes") or []
        ordered = cmd.get("ordered", True)

        def body() -> tuple[dict[str, Any], list[tuple[str, str, Change]]]:
            storage = self.sb.storage
            errors: list[dict[str, Any]] = []
            changes: list[tuple[str, str, Change]] = []
            n = 0
            for i, stmt in enumerate(stmts):
                self.sb.opcounters["delete"] += 1  # one per statement
                try:
                    if not isinstance(stmt, dict) or "q" not in stmt:
                        raise WriteFailure(9, "delete statement needs 'q'")
                    limit = _int(stmt.get("limit"), 0)
                    if limit not in (0, 1):
                        raise WriteFailure(9, "The limit field in delete objects must be 0 or 1")
                    out = storage.delete(db, name, stmt.get("q") or {}, limit)
                except WriteFailure as exc:
                    errors.append(exc.to_write_error(i))
                    if ordered:
                        break
                    continue
                n += len(out)
                changes.extend((db, name, ch) for ch in out)
            reply: dict[str, Any] = {"n": n}
            if errors:
                reply["writeErrors"] = errors
            return reply, changes

        return await self._write(req, body)

    async def find_and_modify(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db = req.db
        name = _coll_name(cmd.get("findAndModify", cmd.get("findandmodify")), "findAndModify")
        query = cmd.get("query") or {}
        sort = cmd.get("sort") or None
        remove = bool(cmd.get("remove", False))
        update = cmd.get("update")
        new = bool(cmd.get("new", False))
        upsert = bool(cmd.get("upsert", False))
        fields = cmd.get("fields") or None
        if remove and (update is not None or new or upsert):
            raise CommandError(9, "Cannot specify both an update and remove=true")
        if not remove and update is None:
            raise CommandError(9, "Either an update or remove=true must be specified")
        if cmd.get("arrayFilters"):
            raise CommandError(2, "arrayFilters are not supported by the sandbox (mongomock)")
        try:
            check_update(update)
        except WriteFailure as exc:
            raise CommandError(exc.code, exc.errmsg) from exc

        def body() -> tuple[dict[str, Any], list[tuple[str, str, Change]]]:
            storage = self.sb.storage
            found = storage.find(db, name, query, sort=sort, limit=1)
            old = bson.decode(found[0].raw, DECODE_OPTIONS) if found else None
            changes: list[Change] = []
            last_error: dict[str, Any] = {"n": 0}
            value: dict[str, Any] | None = None
            try:
                if remove:
                    if old is not None:
                        changes = storage.delete(db, name, {"_id": old["_id"]}, 1)
                        last_error = {"n": len(changes)}
                        value = old
                else:
                    if old is not None:
                        only_id = simple_id(query)[0] or not query
                        spec = {"_id": old["_id"]} if only_id else {**query, "_id": old["_id"]}
                        out = storage.update(db, name, spec, update, upsert=False)
                        changes = out.changes
                        last_error = {"n": 1, "updatedExisting": True}
                        target_id = old["_id"]
                    elif upsert:
                        out = storage.update(db, name, query, update, upsert=True)
                        changes = out.changes
                        last_error = {"n": 1, "updatedExisting": False, "upserted": out.upserted_id}
                        target_id = out.upserted_id
                    else:
                        target_id = None
                    if new and target_id is not None:
                        current = storage.get(db, name, target_id)
                        value = dict(current) if current is not None else None
                    else:
                        value = old
            except WriteFailure as exc:
                errmsg = exc.errmsg
                if exc.code in (17419, 17420):
                    errmsg = f"Plan executor error during findAndModify :: caused by :: {errmsg}"
                raise CommandError(exc.code, errmsg, extra=exc.extra) from exc
            if value is not None and fields:
                value = storage.project(db, name, value, fields)
            encoded = RawBSONDocument(bson.encode(value)) if value is not None else None
            reply = {"lastErrorObject": last_error, "value": encoded}
            return reply, [(db, name, ch) for ch in changes]

        return await self._write(req, body)

    # -- reads ---------------------------------------------------------------------------
    async def find(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("find"), "find")
        limit = _int(cmd.get("limit"), 0)
        single = bool(cmd.get("singleBatch", False)) or limit < 0
        docs = self.sb.storage.find(
            db,
            name,
            cmd.get("filter") or {},
            projection=cmd.get("projection") or None,
            sort=cmd.get("sort") or None,
            skip=_int(cmd.get("skip"), 0),
            limit=abs(limit),
        )
        batch = cmd.get("batchSize")
        batch_size = DEFAULT_FIRST_BATCH if batch is None else _int(batch)
        if limit and (batch is None or batch_size > abs(limit)):
            batch_size = abs(limit)
        if batch is not None and batch_size == 0:
            cursor_id = self._new_cursor_id()
            self.sb.cursors[cursor_id] = FindCursor(cursor_id, f"{db}.{name}", docs)
            return self._cursor_reply(f"{db}.{name}", [], cursor_id, True)
        return self._batch_reply(f"{db}.{name}", docs, batch_size, single)

    async def get_more(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        cursor_id = _int(cmd.get("getMore"))
        cursor = self.sb.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        batch = cmd.get("batchSize")
        cursor.last_used = time.monotonic()
        req.change_stream = cursor.is_change_stream
        checkout = self.sb.faults.fail_get_more
        data = checkout.take("getMore", conn.app_name) if checkout.mode != "off" else None
        if data is not None:
            raise CommandError(
                _int(data.get("errorCode"), 1),
                "Hit the 'failGetMoreAfterCursorCheckout' failpoint",
            )
        if isinstance(cursor, FindCursor):
            docs = cursor.next_batch(_int(batch, 0))
            if cursor.exhausted:
                self.sb.cursors.pop(cursor_id, None)
                cursor_id = 0
            return self._cursor_reply(cursor.ns, docs, cursor_id, False)
        assert isinstance(cursor, ChangeStreamCursor)
        faults = self.sb.faults
        if faults.fail_getmore > 0:
            faults.fail_getmore -= 1
            raise CommandError(
                faults.fail_getmore_code,
                "sandboxFault failGetMore: injected change stream getMore failure",
                labels=["ResumableChangeStreamError"],
            )
        limit = _int(batch, 0) or DEFAULT_CHANGE_STREAM_BATCH
        wait_ms = _int(cmd.get("maxTimeMS"), DEFAULT_AWAIT_MS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000.0
        while True:
            try:
                events = self._scan(cursor, limit, "getMore")
            except CommandError:
                # A getMore that fails kills its cursor, as on a real server.
                self.sb.cursors.pop(cursor_id, None)
                raise
            if events or cursor.exhausted:
                break
            remaining = deadline - loop.time()
            if remaining <= 0 or self.sb.cursors.get(cursor_id) is not cursor:
                break
            if await self.sb.oplog.wait_for_append(remaining):
                # A busy stream (events in its last reply, moments ago) waits a moment
                # for more writes, so a stream that keeps up gets batches rather than one
                # event per round trip; a quiet stream answers at once.
                hot = loop.time() - cursor.last_events_at < HOT_STREAM_S
                await asyncio.sleep(COALESCE_S if hot else 0)
        if events:
            cursor.last_events_at = loop.time()
        reply_id = cursor_id
        if cursor.exhausted:
            self.sb.cursors.pop(cursor_id, None)
            reply_id = 0
        return self._cursor_reply(
            cursor.ns,
            events,
            reply_id,
            False,
            {"postBatchResumeToken": cursor.post_batch_resume_token()},
        )

    async def kill_cursors(self, req: Request, conn: Connection) -> dict[str, Any]:
        ids = req.command.get("cursors") or []
        killed, missing = [], []
        for cid in ids:
            if self.sb.cursors.pop(int(cid), None) is not None:
                killed.append(cid)
            else:
                missing.append(cid)
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": missing,
            "cursorsAlive": [],
            "cursorsUnknown": [],
        }

    async def count(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("count"), "count")
        skip = _int(cmd.get("skip"), 0)
        limit = abs(_int(cmd.get("limit"), 0))
        n = self.sb.storage.count(db, name, cmd.get("query") or {})
        n = max(0, n - skip)
        if limit:
            n = min(n, limit)
        return {"n": n}

    async def distinct(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("distinct"), "distinct")
        key = cmd.get("key")
        if not isinstance(key, str):
            raise CommandError(14, "distinct key must be a string")
        try:
            values = self.sb.storage.coll(db, name).distinct(key, cmd.get("query") or None)
        except Exception as exc:
            raise CommandError(2, f"distinct failed in the sandbox: {exc}") from exc
        # A server returns them in BSON order (numbers, strings, objects, ...).
        return {"values": sorted(values, key=mm_filtering.BsonComparable)}

    async def aggregate(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        target = cmd.get("aggregate")
        pipeline = cmd.get("pipeline")
        if not isinstance(pipeline, list):
            raise CommandError(14, "'pipeline' option must be specified as an array")
        cursor_opts = cmd.get("cursor")
        batch = cursor_opts.get("batchSize") if isinstance(cursor_opts, dict) else None
        if pipeline and isinstance(pipeline[0], dict) and "$changeStream" in pipeline[0]:
            return self._open_change_stream(req, target, pipeline, batch)
        if not isinstance(target, str):
            raise CommandError(
                115,
                "database-level aggregation (other than $changeStream) is not supported by the sandbox",
            )
        name = _coll_name(target, "aggregate")
        for stage in pipeline:
            if isinstance(stage, dict) and "$changeStream" in stage:
                raise CommandError(
                    40602, "$changeStream is only valid as the first stage in a pipeline."
                )
            if isinstance(stage, dict) and ("$out" in stage or "$merge" in stage):
                raise CommandError(115, "$out/$merge are not supported by the sandbox")
        pipeline = normalize_pipeline(pipeline)
        counted = _count_documents_shape(pipeline)
        try:
            if counted is not None:
                match, skip, limit = counted
                n = max(0, self.sb.storage.count(req.db, name, match) - skip)
                if limit:
                    n = min(n, limit)
                results = [{"_id": 1, "n": n}] if n else []
            else:
                results = list(self.sb.storage.coll(req.db, name).aggregate(pipeline))
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(2, f"aggregation failed in the sandbox (mongomock): {exc}") from exc
        docs = [RawBSONDocument(bson.encode(d)) for d in results]
        batch_size = DEFAULT_FIRST_BATCH if batch is None else _int(batch)
        if batch is not None and batch_size == 0:
            cursor_id = self._new_cursor_id()
            self.sb.cursors[cursor_id] = FindCursor(cursor_id, f"{req.db}.{name}", docs)
            return self._cursor_reply(f"{req.db}.{name}", [], cursor_id, True)
        return self._batch_reply(f"{req.db}.{name}", docs, batch_size)

    def _open_change_stream(
        self, req: Request, target: Any, pipeline: list[Any], batch: Any
    ) -> dict[str, Any]:
        db = req.db
        options = pipeline[0]["$changeStream"]
        if not isinstance(options, dict):
            raise CommandError(14, "$changeStream stage must be an object")
        if not isinstance(target, str) and target != 1:
            raise CommandError(73, "aggregate target must be a collection name or 1")
        read_concern = req.command.get("readConcern")
        level = read_concern.get("level") if isinstance(read_concern, dict) else None
        if level is not None and level != "majority":
            # Change streams read majority-committed data; an explicit other level is refused.
            raise CommandError(
                72, f"Read concern {level!r} is not supported for $changeStream (only 'majority')"
            )
        spec = parse_spec(db, target, options, pipeline[1:], self.sb.supports_split_event)
        oplog = self.sb.oplog
        starts = [
            k
            for k in ("resumeAfter", "startAfter", "startAtOperationTime")
            if options.get(k) is not None
        ]
        if len(starts) > 1:
            raise CommandError(
                40674, "Only one type of resume option is allowed, but multiple were found."
            )
        resume_split = None
        start_token = None
        try:
            if options.get("resumeAfter") is not None or options.get("startAfter") is not None:
                after = options.get("resumeAfter")
                key, fragment = decode_token_fragment(after or options["startAfter"])
                if after is not None and key[3] == KIND_INVALIDATE:
                    raise CommandError(
                        260,
                        "Attempting to resume a change stream using 'resumeAfter' is not allowed "
                        "from an invalidate notification.",
                    )
                if fragment is not None and not spec.split:
                    raise CommandError(
                        280,
                        "To resume from a split event, the $changeStream pipeline must include a "
                        "$changeStreamSplitLargeEvent stage",
                    )
                position, resume_split = resume_position(key, fragment)
                start_token = {"_data": encode_token(key, fragment)}
            elif options.get("startAtOperationTime") is not None:
                ts = options["startAtOperationTime"]
                if not isinstance(ts, Timestamp):
                    raise CommandError(14, "startAtOperationTime must be a Timestamp")
                position = time_key(ts)
            else:
                position = oplog.last_key
        except TokenError as exc:
            raise CommandError(260, str(exc)) from exc
        if oplog.is_lost(position):
            raise CommandError(
                286,
                "Resume of change stream was not possible, as the resume point may no longer be "
                "in the oplog.",
            )
        if spec.scope == "collection":
            ns = f"{db}.{target}"
        else:
            ns = f"{db}.$cmd.aggregate"
        cursor_id = self._new_cursor_id()
        cursor = ChangeStreamCursor(cursor_id, spec, position, ns, resume_split, start_token)
        limit = DEFAULT_FIRST_BATCH if batch is None else _int(batch)
        events = self._scan(cursor, limit, "aggregate") if limit > 0 else []
        reply_id = cursor_id
        if cursor.exhausted:
            reply_id = 0
        else:
            self.sb.cursors[cursor_id] = cursor
        return self._cursor_reply(
            ns, events, reply_id, True, {"postBatchResumeToken": cursor.post_batch_resume_token()}
        )

    # -- DDL -----------------------------------------------------------------------------
    async def create_indexes(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("createIndexes"), "createIndexes")
        indexes = cmd.get("indexes")
        if not isinstance(indexes, list) or not indexes:
            raise CommandError(2, "Must specify at least one index to create")
        created = not self.sb.storage.exists(db, name)
        before, after = self.sb.storage.create_indexes(db, name, indexes)
        self.sb.journal_records([{"t": "idx", "db": db, "coll": name, "specs": indexes}])
        await self.sb.durable()
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": after,
            "createdCollectionAutomatically": created,
        }

    async def list_indexes(self, req: Request, conn: Connection) -> dict[str, Any]:
        db, name = req.db, _coll_name(req.command.get("listIndexes"), "listIndexes")
        if not self.sb.storage.exists(db, name):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        docs = [RawBSONDocument(bson.encode(d)) for d in self.sb.storage.list_indexes(db, name)]
        return self._batch_reply(f"{db}.{name}", docs, 0)

    async def drop_indexes(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db = req.db
        name = _coll_name(cmd.get("dropIndexes", cmd.get("deleteIndexes")), "dropIndexes")
        if not self.sb.storage.exists(db, name):
            raise CommandError(26, f"ns not found {db}.{name}")
        index = cmd.get("index", "*")
        self.sb.storage.drop_indexes(db, name, index)
        self.sb.journal_records([{"t": "dropIdx", "db": db, "coll": name, "index": index}])
        await self.sb.durable()
        return {}

    async def list_collections(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db = req.db
        storage = self.sb.storage
        out = []
        for name in storage.collection_names(db):
            info = {
                "name": name,
                "type": "collection",
                "options": dict(storage.options.get((db, name), {})),
                "info": {"readOnly": False},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
            filt = cmd.get("filter")
            if filt and not mm_filtering.filter_applies(filt, info):
                continue
            if cmd.get("nameOnly"):
                info = {"name": name, "type": "collection"}
            out.append(RawBSONDocument(bson.encode(info)))
        return self._batch_reply(f"{db}.$cmd.listCollections", out, 0)

    async def list_databases(self, req: Request, conn: Connection) -> dict[str, Any]:
        storage = self.sb.storage
        dbs = []
        for name in storage.database_names():
            info: dict[str, Any] = {"name": name}
            if not req.command.get("nameOnly"):
                info.update({"sizeOnDisk": 0, "empty": False})
            filt = req.command.get("filter")
            if filt and not mm_filtering.filter_applies(filt, info):
                continue
            dbs.append(info)
        return {"databases": dbs, "totalSize": 0}

    async def create(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("create"), "create")
        if self.sb.storage.exists(db, name):
            raise CommandError(48, f"Collection {db}.{name} already exists.")
        options = {
            k: v
            for k, v in cmd.items()
            if k
            not in (
                "create",
                "$db",
                "lsid",
                "$clusterTime",
                "$readPreference",
                "writeConcern",
                "txnNumber",
                "apiVersion",
                "apiStrict",
                "apiDeprecationErrors",
                "comment",
            )
        }
        self.sb.storage.create(db, name, options)
        self.sb.journal_records([{"t": "create", "db": db, "coll": name, "options": options}])
        await self.sb.durable()
        return {}

    async def coll_mod(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        db, name = req.db, _coll_name(cmd.get("collMod"), "collMod")
        if not self.sb.storage.exists(db, name):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        options = {
            k: v
            for k, v in cmd.items()
            if k
            in (
                "changeStreamPreAndPostImages",
                "validator",
                "validationLevel",
                "validationAction",
                "expireAfterSeconds",
            )
        }
        self.sb.storage.coll_mod(db, name, options)
        self.sb.journal_records([{"t": "collMod", "db": db, "coll": name, "options": options}])
        await self.sb.durable()
        return {}

    async def drop(self, req: Request, conn: Connection) -> dict[str, Any]:
        db, name = req.db, _coll_name(req.command.get("drop"), "drop")
        if not self.sb.storage.exists(db, name):
            return {}
        nindexes = len(self.sb.storage.list_indexes(db, name))
        self.sb.apply_ddl("drop", db, name)
        await self.sb.durable()
        return {"nIndexesWas": nindexes, "ns": f"{db}.{name}"}

    async def drop_database(self, req: Request, conn: Connection) -> dict[str, Any]:
        db = req.db
        if self.sb.storage.collection_names(db):
            self.sb.apply_ddl("dropDatabase", db, "")
            await self.sb.durable()
        return {"dropped": db}

    async def rename_collection(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        src, dst = cmd.get("renameCollection"), cmd.get("to")
        if not isinstance(src, str) or not isinstance(dst, str) or "." not in src or "." not in dst:
            raise CommandError(73, "renameCollection needs full namespaces 'db.coll'")
        sdb, scoll = src.split(".", 1)
        ddb, dcoll = dst.split(".", 1)
        storage = self.sb.storage
        if not storage.exists(sdb, scoll):
            raise CommandError(26, f"Source collection {src} does not exist")
        if storage.exists(ddb, dcoll):
            if not cmd.get("dropTarget"):
                raise CommandError(48, f"target namespace exists: {dst}")
            self.sb.apply_ddl("drop", ddb, dcoll)
        self.sb.apply_ddl("rename", sdb, scoll, to={"db": ddb, "coll": dcoll})
        await self.sb.durable()
        return {}

    # -- faults --------------------------------------------------------------------------
    async def configure_fail_point(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        if req.db != "admin":
            raise CommandError(13, "configureFailPoint may only be run against the admin database.")
        name = cmd.get("configureFailPoint")
        data = cmd.get("data") or {}
        if not isinstance(data, dict):
            raise CommandError(14, "failpoint data must be an object")
        faults = self.sb.faults
        if name == "failCommand":
            point, commands = faults.fail_command, None
        elif name == "failGetMoreAfterCursorCheckout":
            point, commands = faults.fail_get_more, ["getMore"]
        else:
            raise CommandError(
                2,
                f"Cannot find failpoint named {name!r} (the sandbox has failCommand and "
                "failGetMoreAfterCursorCheckout)",
            )
        count = point.times_entered
        point.configure(cmd.get("mode", "off"), data, commands)
        return {"count": count}

    async def sandbox_fault(self, req: Request, conn: Connection) -> dict[str, Any]:
        cmd = req.command
        if req.db != "admin":
            raise CommandError(13, "sandboxFault may only be run against the admin database.")
        kind = cmd.get("sandboxFault")
        sb = self.sb
        faults = sb.faults
        if kind == "dropConnections":
            dropped = sb.drop_connections(except_conn=conn)
            return {"dropped": dropped}
        if kind == "failGetMore":
            faults.fail_getmore = _int(cmd.get("n"), 1)
            faults.fail_getmore_code = _int(cmd.get("code"), 6)
            return {"armed": faults.fail_getmore, "code": faults.fail_getmore_code}
        if kind == "notWritablePrimary":
            faults.not_writable_primary = _int(cmd.get("n"), 1)
            return {"armed": faults.not_writable_primary}
        if kind == "truncateOplog":
            keep = _int(cmd.get("keep"), 0)
            dropped = sb.truncate_oplog(keep)
            await sb.durable()
            return {"dropped": dropped, **sb.status()}
        if kind == "pause":
            seconds = float(cmd.get("seconds", 1.0))
            loop = asyncio.get_running_loop()
            faults.paused_until = max(faults.paused_until, loop.time() + seconds)
            return {"pausedForSeconds": seconds}
        if kind == "status":
            return sb.status()
        raise CommandError(
            2, f"unknown sandboxFault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
        )


__all__ = [
    "MAX_BSON_OBJECT_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_WRITE_BATCH_SIZE",
    "VERSION",
    "Commands",
]
