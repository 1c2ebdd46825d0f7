"""The invariant syncd exists for, checked from the outside (MongoDB and the PDS, never syncd's state).

Once the system is quiet and syncd has caught up:

* every public, valid document has **exactly one** record, in its owner's
  repository (the guest account for documents without ``user``), with the
  content it would produce now (for paintings: a thumbnail blob that exists,
  decodes, is at most 102,400 bytes and at most 512 px, with the source's
  aspect ratio, and ``recordingUrl`` exactly when the recording zip exists);
* no record exists for any other document (not public, invalid, owned by a
  user without an ATProto account, or gone);
* every ``atproto.rkey`` back-reference in MongoDB names that record, and a
  document without a record carries none (a non-TID value there is garbage
  from the source, not a reference, and is left alone).

How "the content it would produce now" is computed -- and why partly with
syncd's own code: the record's *fields* are built with ``syncd.mappings``
(the field mapping is specified by the platform and unit-tested on its own;
re-implementing it here would only copy it). Everything that decides *whether*
and *where* a record must exist is decided here independently: visibility
(:func:`is_public`), ownership (read from ``users``), the ``ref``/``when``
cross-check (computed from ``_id`` and ``when`` directly), whether the painting
image and recording exist (fetched here over HTTP), and the thumbnail checks
(the blob is read back from the PDS and decoded with Pillow). A mapping or
lexicon rejection (``MappingError``/``LexiconError``) means "invalid: no record
may exist"; the hostile-input tests check separately that each such document is
dead-lettered with a reason.

``wait_until_quiet`` polls the checker until it holds (or fails with the last
report). syncd's ``/metrics`` is only used to know when it has caught up.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from bson import CodecOptions, DatetimeConversion, ObjectId
from PIL import Image
from pymongo.database import Database

from syncd import lexicon
from syncd.config import Config
from syncd.images.urls import painting_source_from_doc
from syncd.mappings import MAPPINGS, MappingContext, MappingError
from syncd.rkey import is_tid

KINDS = (
    "missing",
    "duplicate",
    "orphan",
    "wrong_repo",
    "stale",
    "bad_backref",
    "nonpublic_published",
)
HIDING_FLAGS = ("nuked", "deleted", "private", "draft", "hidden")
THUMB_MAX_BYTES = 102_400
THUMB_MAX_SIDE = 512
_PLACEHOLDER_BLOB = {
    "$type": "blob",
    "ref": {"$link": "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    "mimeType": "image/png",
    "size": 1,
}

# Expectation states
PUBLISH, HIDDEN, INVALID, NO_ACCOUNT, EXEMPT = (
    "publish",
    "hidden",
    "invalid",
    "no_account",
    "exempt",
)


@dataclass(frozen=True)
class Violation:
    kind: str
    collection: str
    doc: str
    did: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.collection}/{self.doc} did={self.did} {self.detail}"


@dataclass(frozen=True)
class Expectation:
    """What must be true on the PDS for one source document."""

    collection: str
    doc_id: Any
    ref: str | None
    state: str
    did: str | None = None
    reason: str = ""
    record: dict[str, Any] | None = None  # expected value, without the thumbnail
    image_size: tuple[int, int] | None = None
    backref: Any = None


@dataclass
class InvariantReport:
    violations: list[Violation] = field(default_factory=list)
    documents_checked: int = 0
    records_checked: int = 0
    expected_records: int = 0
    blobs_checked: int = 0
    expectations: dict[tuple[str, str], Expectation] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.violations:
            out[v.kind] = out.get(v.kind, 0) + 1
        return out

    def summary(self, limit: int = 20) -> str:
        head = (
            f"{len(self.violations)} violation(s) {self.by_kind()} over "
            f"{self.documents_checked} documents / {self.records_checked} records"
        )
        return "\n".join([head, *(f"  {v}" for v in self.violations[:limit])])

    def keys_in_state(self, state: str) -> set[tuple[str, str]]:
        return {k for k, e in self.expectations.items() if e.state == state}


class InvariantViolation(AssertionError):
    def __init__(self, report: InvariantReport, message: str = "") -> None:
        super().__init__(f"{message}\n{report.summary()}".strip())
        self.report = report


def is_public(doc: Mapping[str, Any]) -> bool:
    """The source system's visibility rule, written down independently of syncd."""
    if any(doc.get(flag) for flag in HIDING_FLAGS):
        return False
    vis = doc.get("visibility")
    return vis is None or vis == "public"


def expected_when(value: Any) -> str | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def checker_db(db: Database[Any]) -> Database[Any]:
    """``db`` with codec options that can read any document (hostile dates, bad UTF-8).

    UUIDs stay ``Binary`` (the default representation), as syncd reads them."""
    return db.with_options(
        codec_options=CodecOptions(
            tz_aware=True,
            tzinfo=UTC,
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            unicode_decode_error_handler="replace",
        )
    )


def _doc_key(doc_id: Any) -> str:
    from syncd.ids import doc_key

    return doc_key(doc_id)


class _Http:
    def __init__(self, pds_url: str, client: httpx.Client | None) -> None:
        self.pds_url = pds_url.rstrip("/")
        self.client = client or httpx.Client(timeout=15.0, trust_env=False)
        self._own = client is None
        self.image_cache: dict[str, tuple[int, bytes | None]] = {}

    def close(self) -> None:
        if self._own:
            self.client.close()

    def list_records(self, did: str, nsid: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": did, "collection": nsid, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            r = self.client.get(f"{self.pds_url}/xrpc/com.atproto.repo.listRecords", params=params)
            if r.status_code == 400 and "RepoNotFound" in r.text:
                return out
            r.raise_for_status()
            page = r.json()
            records = page.get("records", [])
            out.extend(records)
            cursor = page.get("cursor")
            if not cursor or not records:
                return out

    def get_blob(self, did: str, cid: str) -> bytes | None:
        r = self.client.get(
            f"{self.pds_url}/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}
        )
        return r.content if r.status_code == 200 else None

    def fetch(self, url: str, *, head: bool = False) -> tuple[int, bytes | None]:
        key = ("HEAD " if head else "GET ") + url
        hit = self.image_cache.get(key)
        if hit is not None:
            return hit
        try:
            r = self.client.request("HEAD" if head else "GET", url)
            out = (r.status_code, None if head else r.content)
        except httpx.HTTPError:
            out = (0, None)
        if out[0] in (200, 404):
            self.image_cache[key] = out
        return out


def _image_size(data: bytes | None) -> tuple[int, int] | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except Exception:
        return None


def _usable_accounts(db: Database[Any], users_collection: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for u in db[users_collection].find({}, {"atproto": 1}):
        out[str(u["_id"])] = u.get("atproto") if isinstance(u.get("atproto"), dict) else {}
    return out


def expectation_for(
    collection: str,
    doc: Mapping[str, Any],
    *,
    users: Mapping[str, Mapping[str, Any]],
    ctx: MappingContext,
    guest_id: str,
    exempt_dids: frozenset[str],
    http: _Http,
) -> Expectation:
    """Decide what the PDS must hold for ``doc``."""
    mapping = MAPPINGS[collection]
    doc_id = doc.get("_id")
    ref = str(doc_id) if isinstance(doc_id, ObjectId) else None
    at = doc.get("atproto")
    backref = at.get("rkey") if isinstance(at, dict) else None

    def exp(state: str, reason: str = "", did: str | None = None, **kw: Any) -> Expectation:
        return Expectation(collection, doc_id, ref, state, did, reason, backref=backref, **kw)

    try:
        owner = mapping.owner(doc)
    except MappingError as exc:
        return exp(INVALID, exc.reason)
    user = users.get(guest_id if owner is None else owner)
    did: str | None = None
    if user is not None:
        d, pw = user.get("did"), user.get("password")
        if isinstance(d, str) and d and isinstance(pw, str) and pw:
            did = d
    if did is not None and did in exempt_dids:
        return exp(EXEMPT, "exempt account", did)
    if not is_public(doc):
        return exp(HIDDEN, "not public", did)
    if did is None:
        return exp(NO_ACCOUNT, "unknown user" if user is None else "no ATProto account")
    try:
        draft = mapping.draft(doc, ctx)
    except MappingError as exc:
        return exp(INVALID, exc.reason, did)
    record: dict[str, Any] = {"$type": draft.nsid, **draft.fields}
    # Independent cross-checks of the two fields every record carries.
    if ref is None or record.get("ref") != ref:
        return exp(INVALID, "unsupported_id", did)
    if record.get("when") != expected_when(doc.get("when")):
        return exp(INVALID, "when", did)
    image_size: tuple[int, int] | None = None
    if collection == "paintings":
        try:
            src = painting_source_from_doc(doc, ctx.images)
        except Exception as exc:
            return exp(INVALID, f"image url: {exc}", did)
        status, data = http.fetch(src.image_url)
        if status != 200:
            return exp(INVALID, f"image HTTP {status}", did)
        image_size = _image_size(data)
        if image_size is None:
            return exp(INVALID, "image does not decode", did)
        if src.recording_url is not None and http.fetch(src.recording_url, head=True)[0] == 200:
            record["recordingUrl"] = MAPPINGS["paintings"].recording_url(draft.fields, ctx)  # type: ignore[attr-defined]
        probe = dict(record, thumbnail=_PLACEHOLDER_BLOB)
    else:
        probe = record
    try:
        lexicon.validate(draft.nsid, probe)
    except lexicon.LexiconError as exc:
        return exp(INVALID, f"lexicon: {exc}", did)
    return exp(PUBLISH, "", did, record=record, image_size=image_size)


def check_invariant(
    db: Database[Any],
    pds_url: str,
    *,
    config: Config,
    extra_dids: Iterable[str] = (),
    exempt_dids: Iterable[str] = (),
    http_client: httpx.Client | None = None,
) -> InvariantReport:
    """Read MongoDB (``db``, sync pymongo) and the PDS and list every violation.

    Repositories scanned: every DID in ``users`` plus ``extra_dids`` (accounts
    that lost their ``users`` entry). Documents owned by ``exempt_dids``
    (accounts made unwritable on purpose: wrong password, deactivated) and the
    records in those repositories are not checked.
    """
    db = checker_db(db)
    exempt = frozenset(exempt_dids)
    ctx = MappingContext(
        public_base_url=config.records.public_base_url.rstrip("/"), images=config.images
    )
    users = _usable_accounts(db, config.mongo.users_collection)
    dids = {str(a["did"]) for a in users.values() if isinstance(a.get("did"), str) and a["did"]}
    dids.update(extra_dids)
    http = _Http(pds_url, http_client)
    report = InvariantReport()
    try:
        # 1. What the PDS holds: (nsid, ref) -> [(did, rkey, uri, value)]
        held: dict[tuple[str, str], list[tuple[str, str, str, dict[str, Any]]]] = {}
        for did in sorted(dids - exempt):
            for coll in config.mongo.collections:
                nsid = MAPPINGS[coll].nsid
                for rec in http.list_records(did, nsid):
                    report.records_checked += 1
                    value = rec.get("value") or {}
                    ref = value.get("ref")
                    uri = str(rec.get("uri", ""))
                    rkey = uri.rsplit("/", 1)[-1]
                    held.setdefault((nsid, str(ref)), []).append((did, rkey, uri, value))
        # 2. What MongoDB says must be there.
        seen_refs: set[tuple[str, str]] = set()
        blob_ok: dict[tuple[str, str], str | None] = {}
        for coll in config.mongo.collections:
            nsid = MAPPINGS[coll].nsid
            for doc in db[coll].find({}):
                report.documents_checked += 1
                e = expectation_for(
                    coll,
                    doc,
                    users=users,
                    ctx=ctx,
                    guest_id=config.mongo.guest_user_id,
                    exempt_dids=exempt,
                    http=http,
                )
                key = _doc_key(doc.get("_id"))
                report.expectations[(coll, key)] = e
                if e.ref is not None:
                    seen_refs.add((nsid, e.ref))
                have = held.get((nsid, e.ref), []) if e.ref is not None else []
                if e.state == EXEMPT:
                    continue
                if e.state != PUBLISH:
                    for did, rkey, _, _ in have:
                        kind = "nonpublic_published" if e.state == HIDDEN else "orphan"
                        report.violations.append(
                            Violation(kind, coll, key, did, f"record {rkey} ({e.reason})")
                        )
                    if isinstance(e.backref, str) and is_tid(e.backref):
                        report.violations.append(
                            Violation(
                                "bad_backref",
                                coll,
                                key,
                                None,
                                f"atproto.rkey={e.backref!r} but no record ({e.reason})",
                            )
                        )
                    continue
                report.expected_records += 1
                mine = [h for h in have if h[0] == e.did]
                others = [h for h in have if h[0] != e.did]
                for did, rkey, _, _ in others:
                    report.violations.append(
                        Violation("wrong_repo", coll, key, did, f"record {rkey}; owner is {e.did}")
                    )
                if not mine:
                    report.violations.append(Violation("missing", coll, key, e.did, ""))
                    continue
                if len(mine) > 1:
                    report.violations.append(
                        Violation("duplicate", coll, key, e.did, f"rkeys {[h[1] for h in mine]}")
                    )
                    continue
                did, rkey, uri, value = mine[0]
                problem = _compare(e, value, did, http, blob_ok, report)
                if problem:
                    report.violations.append(Violation("stale", coll, key, did, problem))
                at = doc.get("atproto")
                if e.backref != rkey or (isinstance(at, dict) and at.get("uri") not in (None, uri)):
                    report.violations.append(
                        Violation(
                            "bad_backref",
                            coll,
                            key,
                            did,
                            f"atproto.rkey={e.backref!r} uri={at.get('uri') if isinstance(at, dict) else None!r}; record {uri}",
                        )
                    )
        # 3. Records with no document behind them.
        for (nsid, ref), recs in held.items():
            if (nsid, ref) in seen_refs:
                continue
            for did, rkey, _, _ in recs:
                report.violations.append(
                    Violation("orphan", nsid, ref, did, f"record {rkey}: no such document")
                )
    finally:
        http.close()
    return report


def _compare(
    e: Expectation,
    value: Mapping[str, Any],
    did: str,
    http: _Http,
    blob_ok: dict[tuple[str, str], str | None],
    report: InvariantReport,
) -> str | None:
    assert e.record is not None
    got = dict(value)
    thumb = got.pop("thumbnail", None)
    if got != e.record:
        diff = {
            k: (e.record.get(k), got.get(k))
            for k in set(got) | set(e.record)
            if e.record.get(k) != got.get(k)
        }
        return f"fields differ (expected, got): {str(diff)[:300]}"
    if e.collection != "paintings":
        return None if thumb is None else "unexpected thumbnail"
    if not isinstance(thumb, dict):
        return "no thumbnail blob"
    ref = thumb.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else None
    if not isinstance(cid, str):
        return f"thumbnail without a CID: {thumb!r:.100}"
    k = (did, cid)
    if k not in blob_ok:
        report.blobs_checked += 1
        blob_ok[k] = _check_thumbnail(http.get_blob(did, cid), thumb, e.image_size)
    return blob_ok[k]


def _check_thumbnail(
    data: bytes | None, thumb: Mapping[str, Any], source: tuple[int, int] | None
) -> str | None:
    if data is None:
        return "thumbnail blob not on the PDS"
    if len(data) > THUMB_MAX_BYTES:
        return f"thumbnail is {len(data)} bytes"
    if thumb.get("size") != len(data):
        return f"blob size {thumb.get('size')} != {len(data)}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt, (w, h) = im.format, im.size
    except Exception as exc:
        return f"thumbnail does not decode: {exc}"
    mime = {"PNG": "image/png", "JPEG": "image/jpeg"}.get(fmt or "")
    if mime is None or mime != thumb.get("mimeType"):
        return f"thumbnail format {fmt} vs mimeType {thumb.get('mimeType')}"
    if max(w, h) > THUMB_MAX_SIDE:
        return f"thumbnail is {w}x{h}"
    if source is not None:
        sw, sh = source
        if max(w, h) > max(sw, sh):
            return f"thumbnail {w}x{h} larger than the source {sw}x{sh}"
        if abs(w / h - sw / sh) > max(0.05 * sw / sh, 2.0 / min(w, h)):
            return f"thumbnail {w}x{h} does not keep the source's aspect {sw}x{sh}"
    return None


def metrics_caught_up(metrics_url: str, timeout: float = 2.0) -> bool:
    """syncd says it has nothing queued (``syncd_queue_depth`` 0) and its stream is open."""
    try:
        text = httpx.get(metrics_url, timeout=timeout, trust_env=False).text
    except httpx.HTTPError:
        return False
    depth = 0.0
    connected = False
    for line in text.splitlines():
        if line.startswith("syncd_queue_depth{"):
            depth += float(line.rsplit(" ", 1)[1])
        elif line.startswith("syncd_stream_connected"):
            connected = float(line.rsplit(" ", 1)[1]) == 1.0
    return connected and depth == 0


def wait_until_quiet(
    check: Callable[[], InvariantReport],
    *,
    timeout: float = 60.0,
    interval: float = 0.5,
    caught_up: Callable[[], bool] | None = None,
) -> InvariantReport:
    """Poll until syncd has caught up (if ``caught_up`` is given) and the invariant holds.

    Raises :class:`InvariantViolation` with the last report after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    report: InvariantReport | None = None
    while True:
        if caught_up is None or caught_up():
            report = check()
            if report.ok:
                return report
        if time.monotonic() > deadline:
            if report is None:
                report = check()
            raise InvariantViolation(report, f"not quiet after {timeout}s")
        time.sleep(interval)
