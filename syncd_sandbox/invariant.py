"""The invariant syncd exists for, checked from the outside by an independent witness.

The checker reads MongoDB and the PDS (never syncd's state) and decides what
must be true from the platform's facts (``platform-facts.md``, written down in
:mod:`syncd_sandbox.platform`, :mod:`syncd_sandbox.images` and
:mod:`syncd_sandbox.thumbs`). It imports nothing from ``syncd``: a mistake
syncd and the world shared would be invisible to every test.

Once the system is quiet and syncd has caught up:

* every public, valid document has **exactly one** record, in its owner's
  repository (the ``art-guest`` account for documents without ``user``), equal
  to the record the platform would write: painting ``$type, slug, code,
  imageUrl, acUrl, when, ref`` plus ``recordingUrl`` exactly when the recording
  zip exists at one of its keys and ``thumbnail`` exactly when the image exists
  at one of its keys (a 512×512 ``contain``-on-black PNG, nearest-neighbour for
  small sources, at most 1,048,576 bytes, on the PDS); mood ``mood, when,
  ref``; piece ``slug, when, ref``; kidlisp ``code, source, acUrl, when, ref``;
  tape ``slug, code, acUrl, when, ref`` and ``video``: a ``video/mp4`` blob whose
  bytes, read back from the PDS, hash equal to the MP4 at the document's ``mp4``
  (read from the object store; a tape whose MP4 is missing, elsewhere, not an MP4,
  over 52,428,800 bytes or over the PDS's upload limit must have no record);
* no record exists for any other document (not public, over a published
  limit or otherwise invalid, owned by a user without an ATProto account, or
  gone);
* every record key is a TID;
* every back-reference (``atproto.rkey``; ``at.rkey`` on tapes) names that record
  (its ``uri``, when present, its URI), and a document without a record carries
  none (a non-TID value there is garbage from the source and is left alone).

A legacy record carrying ``mongoId`` instead of ``ref`` belongs to the
document it names: it is not an orphan, together with a ``ref`` record it is a
duplicate, and as the document's only record it is ``stale`` (syncd must
rewrite it with ``ref``).

``wait_until_quiet`` polls the checker until it holds (or fails with the last
report). syncd's ``/metrics`` is only used to know when it has caught up.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import httpx
from bson import CodecOptions, DatetimeConversion, ObjectId
from pymongo.database import Database

from syncd_sandbox import platform, thumbs
from syncd_sandbox.images import PaintingObjects, UnsafeKeyError, painting_objects

KINDS = (
    "missing",
    "duplicate",
    "orphan",
    "wrong_repo",
    "stale",
    "bad_backref",
    "nonpublic_published",
    "bad_rkey",
    "unverifiable",
)

# Expectation states
PUBLISH, HIDDEN, INVALID, NO_ACCOUNT, EXEMPT = (
    "publish",
    "hidden",
    "invalid",
    "no_account",
    "exempt",
)

_COLLECTION_OF = {nsid: coll for coll, nsid in platform.NSIDS.items()}
# Thumbnails that passed, by (blob CID, source sha256, declared mime type and size): the
# same blob of the same source is checked once per process, not on every poll.
_PASSED: set[tuple[str, str, Any, Any]] = set()
_PASSED_MAX = 4096


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
    image_size: tuple[int, int] | None = None  # the source image, when it exists and decodes
    backref: Any = None
    image: bytes | None = field(default=None, repr=False)  # the source image (paintings)
    image_url: str | None = None  # where it was found
    video: tuple[str, int] | None = None  # a tape's MP4: (sha256, size)


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

    def of_kind(self, kind: str) -> list[Violation]:
        return [v for v in self.violations if v.kind == kind]

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


def is_public(doc: Mapping[str, Any], collection: str = "paintings") -> bool:
    """platform-facts.md §4 (see :func:`syncd_sandbox.platform.not_public_reason`)."""
    return platform.is_public(collection, doc)


def expected_when(value: Any) -> str | None:
    try:
        return platform.when_string(value)
    except platform.Invalid:
        return None


def checker_db(db: Database[Any]) -> Database[Any]:
    """``db`` with codec options that can read any document (hostile dates, bad UTF-8).

    Invalid UTF-8 is read with ``surrogateescape``, so a text field that held it is
    recognisable (it does not encode back) and invalid. UUIDs stay ``Binary``."""
    return db.with_options(
        codec_options=CodecOptions(
            tz_aware=True,
            tzinfo=UTC,
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            unicode_decode_error_handler="surrogateescape",
        )
    )


class _Unverifiable(Exception):
    """The image store did not answer 200 or 404: nothing can be concluded yet."""


_MP4_HEAD = 64
_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Mp4:
    """What the object store holds at a tape's ``mp4``: nothing (404), elsewhere, or the
    bytes' sha256, size and first bytes."""

    status: str  # "ok" | "missing" | "elsewhere"
    sha256: str = ""
    size: int = 0
    head: bytes = b""


def _origin(url: str) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port


class _Http:
    def __init__(self, pds_url: str, client: httpx.Client | None) -> None:
        self.pds_url = pds_url.rstrip("/")
        self.client = client or httpx.Client(timeout=15.0, trust_env=False)
        self._own = client is None
        self.cache: dict[str, tuple[int, bytes | None]] = {}
        self.mp4_cache: dict[str, _Mp4] = {}

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

    def _hash(self, chunks: Iterator[bytes]) -> tuple[str, int, bytes]:
        digest, size, head = hashlib.sha256(), 0, b""
        for chunk in chunks:
            if len(head) < _MP4_HEAD:
                head = (head + chunk)[:_MP4_HEAD]
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size, head

    def blob_digest(self, did: str, cid: str) -> tuple[str, int] | None:
        """(sha256, size) of a blob read back with getBlob (streamed), or None."""
        url = f"{self.pds_url}/xrpc/com.atproto.sync.getBlob"
        with self.client.stream("GET", url, params={"did": did, "cid": cid}) as r:
            if r.status_code != 200:
                return None
            sha, size, _ = self._hash(r.iter_bytes(_STREAM_CHUNK))
        return sha, size

    def mp4(self, url: str, store_origin: tuple[str, str, int | None]) -> _Mp4:
        """A tape's MP4, read from the object store only (redirects followed within it);
        hashed as it streams. Raises :class:`_Unverifiable` when the store cannot say."""
        hit = self.mp4_cache.get(url)
        if hit is not None:
            return hit
        current = url
        for _ in range(4):
            try:
                if _origin(current) != store_origin:
                    out = _Mp4("elsewhere")
                    break
            except (httpx.InvalidURL, TypeError, ValueError):
                out = _Mp4("elsewhere")
                break
            try:
                with self.client.stream("GET", current) as r:
                    if r.status_code in (301, 302, 303, 307, 308):
                        current = str(r.url.join(r.headers.get("Location", "")))
                        continue
                    if r.status_code in (404, 410):
                        out = _Mp4("missing")
                        break
                    if r.status_code != 200:
                        raise _Unverifiable(f"GET {current}: {r.status_code}")
                    sha, size, head = self._hash(r.iter_raw(_STREAM_CHUNK))
                    out = _Mp4("ok", sha, size, head)
                    break
            except httpx.HTTPError as exc:
                raise _Unverifiable(f"GET {current}: {type(exc).__name__}") from None
        else:
            out = _Mp4("elsewhere")  # a redirect loop: no MP4 the platform could read
        self.mp4_cache[url] = out
        return out

    def get_blob(self, did: str, cid: str) -> bytes | None:
        r = self.client.get(
            f"{self.pds_url}/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}
        )
        return r.content if r.status_code == 200 else None

    def fetch(self, url: str, *, head: bool = False, attempts: int = 3) -> tuple[int, bytes | None]:
        """(status, body) of a 200 or 404; raises :class:`_Unverifiable` otherwise."""
        key = ("HEAD " if head else "GET ") + url
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        status = 0
        for attempt in range(attempts):
            try:
                r = self.client.request("HEAD" if head else "GET", url)
                status = r.status_code
                if status in (200, 404):
                    out = (status, None if head or status != 200 else r.content)
                    self.cache[key] = out
                    return out
            except httpx.HTTPError:
                status = 0
            time.sleep(0.05 * (attempt + 1))
        raise _Unverifiable(f"{'HEAD' if head else 'GET'} {url}: {status or 'no answer'}")


def _accounts(db: Database[Any], users_collection: str) -> dict[str, tuple[str, str] | None]:
    """Every ``users`` entry: sub -> (did, password) of its ATProto account, or None."""
    return {str(u["_id"]): platform.account_of(u) for u in db[users_collection].find({})}


def _first_image(http: _Http, objects: PaintingObjects, template: str) -> tuple[str, bytes] | None:
    for obj in objects.images:
        url = obj.url(template)
        status, body = http.fetch(url)
        if status == 200:
            return url, body or b""
    return None


def _has_recording(http: _Http, objects: PaintingObjects, template: str) -> bool:
    found = False
    unsure: _Unverifiable | None = None
    for obj in objects.recordings:
        try:
            if http.fetch(obj.url(template), head=True)[0] == 200:
                found = True
                break
        except _Unverifiable as exc:
            unsure = exc
    if not found and unsure is not None:
        raise unsure
    return found


def expectation_for(
    collection: str,
    doc: Mapping[str, Any],
    *,
    users: Mapping[str, tuple[str, str] | None],
    image_url_template: str,
    guest_id: str = platform.GUEST_USER_ID,
    exempt_dids: frozenset[str] = frozenset(),
    http: _Http,
    pds_blob_limit: int | None = None,
) -> Expectation:
    """Decide, from the platform's facts alone, what the PDS must hold for ``doc``.

    Raises :class:`_Unverifiable` when the image store cannot say whether a file exists.
    """
    doc_id = doc.get("_id")
    ref = str(doc_id) if isinstance(doc_id, ObjectId) else None
    at = doc.get(platform.backref_field(collection))
    backref = at.get("rkey") if isinstance(at, Mapping) else None

    def exp(state: str, reason: str = "", did: str | None = None, **kw: Any) -> Expectation:
        return Expectation(collection, doc_id, ref, state, did, reason, backref=backref, **kw)

    try:
        owner = platform.owner_of(collection, doc)
    except platform.Invalid as exc:
        return exp(INVALID, exc.reason)
    account = users.get(guest_id if owner is None else owner)
    did = account[0] if account else None
    if did is not None and did in exempt_dids:
        return exp(EXEMPT, "exempt account", did)
    hidden = platform.not_public_reason(collection, doc)
    if hidden is not None:
        return exp(HIDDEN, f"not public: {hidden}", did)
    if did is None:
        known = (guest_id if owner is None else owner) in users
        return exp(NO_ACCOUNT, "no ATProto account" if known else "unknown user")
    try:
        record = platform.record_for(collection, doc)
    except platform.Invalid as exc:
        return exp(INVALID, exc.reason, did)
    if collection == "tapes":
        return _tape_expectation(doc, record, image_url_template, http, pds_blob_limit, exp, did)
    if collection != "paintings":
        return exp(PUBLISH, "", did, record=record)
    try:
        objects = painting_objects(owner, record["slug"], doc.get("bucket"))
    except UnsafeKeyError as exc:
        return exp(INVALID, f"image location: {exc}", did)
    found = _first_image(http, objects, image_url_template)
    if _has_recording(http, objects, image_url_template):
        record["recordingUrl"] = platform.painting_recording_url(record["code"])
        try:
            platform.check_limits(platform.PAINTING, record)
        except platform.Invalid as exc:
            return exp(INVALID, exc.reason, did)
    if found is None:
        return exp(PUBLISH, "image missing: no thumbnail", did, record=record)
    url, data = found
    img = thumbs.decode(data)
    if img is None:  # hostile, not missing: issue 13 keeps these dead letters
        return exp(INVALID, "image does not decode", did)
    return exp(PUBLISH, "", did, record=record, image_size=img.size, image=data, image_url=url)


def _tape_expectation(
    doc: Mapping[str, Any],
    record: dict[str, Any],
    template: str,
    http: _Http,
    pds_blob_limit: int | None,
    exp: Callable[..., Expectation],
    did: str,
) -> Expectation:
    """A converted tape has a record whose video is its MP4 -- when the MP4 can be one."""
    store = _origin(template.replace("{bucket}", "b").replace("{key}", "k"))
    mp4 = http.mp4(str(doc["mp4"]), store)
    if mp4.status == "elsewhere":
        return exp(INVALID, "mp4 is not in the platform's object store", did)
    if mp4.status == "missing":
        return exp(INVALID, "mp4 missing from the object store", did)
    if not platform.sniffed_as_mp4(mp4.head):
        return exp(INVALID, "mp4 is not an MP4 the PDS reads as video/mp4", did)
    if mp4.size > platform.VIDEO_MAX_BYTES:
        return exp(INVALID, f"mp4 of {mp4.size} bytes is over the lexicon's maxSize", did)
    if pds_blob_limit is not None and mp4.size > pds_blob_limit:
        return exp(INVALID, f"mp4 of {mp4.size} bytes is over the PDS's upload limit", did)
    return exp(PUBLISH, "", did, record=record, video=(mp4.sha256, mp4.size))


def _config_value(config: Any, section: str, name: str) -> Any:
    return getattr(getattr(config, section, None), name, None)


Held = tuple[str, str, str, dict[str, Any]]  # (did, rkey, uri, value)


def check_invariant(
    db: Database[Any],
    pds_url: str,
    *,
    config: Any = None,
    image_url_template: str | None = None,
    collections: Sequence[str] | None = None,
    users_collection: str = platform.USERS,
    guest_user_id: str = platform.GUEST_USER_ID,
    extra_dids: Iterable[str] = (),
    exempt_dids: Iterable[str] = (),
    http_client: httpx.Client | None = None,
    pds_blob_limit: int | None = None,
) -> InvariantReport:
    """Read MongoDB (``db``, sync pymongo) and the PDS and list every violation.

    ``image_url_template`` (``http://HOST:PORT/{bucket}/{key}``) says where the object
    store is; ``collections`` which collections are mirrored (default: all four). Both
    may instead come from ``config`` (anything with ``images.url_template`` and
    ``mongo.collections``, e.g. the world's loaded ``syncd.toml``); plain parameters win.

    Repositories scanned: every DID in ``users`` plus ``extra_dids`` (accounts that
    lost their ``users`` entry). Documents owned by ``exempt_dids`` (accounts made
    unwritable on purpose) and the records in those repositories are not checked.
    ``pds_blob_limit``: the PDS's upload limit (a tape whose MP4 is over it has no record).
    """
    template = image_url_template or _config_value(config, "images", "url_template")
    if not isinstance(template, str) or "{key}" not in template:
        raise ValueError("check_invariant needs image_url_template (or a config that has one)")
    wanted = collections or _config_value(config, "mongo", "collections") or platform.COLLECTIONS
    colls = [c for c in wanted if c in platform.NSIDS]
    db = checker_db(db)
    exempt = frozenset(exempt_dids)
    users = _accounts(db, users_collection)
    dids = {a[0] for a in users.values() if a is not None}
    dids.update(extra_dids)
    http = _Http(pds_url, http_client)
    report = InvariantReport()
    try:
        held = _read_pds(http, sorted(dids - exempt), colls, report)
        seen: set[tuple[str, str]] = set()
        for coll in colls:
            for doc in db[coll].find({}):
                _check_document(
                    coll,
                    doc,
                    held,
                    seen,
                    users,
                    template,
                    guest_user_id,
                    exempt,
                    http,
                    report,
                    pds_blob_limit,
                )
        for (nsid, ident), recs in held.items():
            if (nsid, ident) in seen:
                continue
            for did, rkey, _, _ in recs:
                report.violations.append(
                    Violation(
                        "orphan",
                        _COLLECTION_OF[nsid],
                        ident,
                        did,
                        f"record {rkey}: no such document",
                    )
                )
    finally:
        http.close()
    return report


def _read_pds(
    http: _Http, dids: Sequence[str], colls: Sequence[str], report: InvariantReport
) -> dict[tuple[str, str], list[Held]]:
    """What the PDS holds: (nsid, ref or legacy mongoId) -> records."""
    held: dict[tuple[str, str], list[Held]] = {}
    for did in dids:
        for coll in colls:
            nsid = platform.NSIDS[coll]
            for rec in http.list_records(did, nsid):
                report.records_checked += 1
                value = rec.get("value") or {}
                uri = str(rec.get("uri", ""))
                rkey = uri.rsplit("/", 1)[-1]
                ident = platform.record_identity(value)
                if not platform.is_tid(rkey):
                    report.violations.append(
                        Violation(
                            "bad_rkey", coll, str(ident), did, f"record key {rkey!r} is not a TID"
                        )
                    )
                held.setdefault((nsid, str(ident)), []).append((did, rkey, uri, value))
    return held


def _check_document(
    coll: str,
    doc: Mapping[str, Any],
    held: Mapping[tuple[str, str], list[Held]],
    seen: set[tuple[str, str]],
    users: Mapping[str, tuple[str, str] | None],
    template: str,
    guest_user_id: str,
    exempt: frozenset[str],
    http: _Http,
    report: InvariantReport,
    pds_blob_limit: int | None = None,
) -> None:
    nsid = platform.NSIDS[coll]
    report.documents_checked += 1
    key = platform.doc_key(doc.get("_id"))
    try:
        e = expectation_for(
            coll,
            doc,
            users=users,
            image_url_template=template,
            guest_id=guest_user_id,
            exempt_dids=exempt,
            http=http,
            pds_blob_limit=pds_blob_limit,
        )
    except _Unverifiable as exc:
        report.violations.append(Violation("unverifiable", coll, key, None, str(exc)))
        if isinstance(doc.get("_id"), ObjectId):
            seen.add((nsid, str(doc["_id"])))
        return
    report.expectations[(coll, key)] = e
    if e.ref is not None:
        seen.add((nsid, e.ref))
    have = held.get((nsid, e.ref), []) if e.ref is not None else []
    if e.state == EXEMPT:
        return
    if e.state != PUBLISH:
        for did, rkey, _, _ in have:
            kind = "nonpublic_published" if e.state == HIDDEN else "orphan"
            report.violations.append(Violation(kind, coll, key, did, f"record {rkey} ({e.reason})"))
        if platform.is_tid(e.backref):
            report.violations.append(
                Violation(
                    "bad_backref",
                    coll,
                    key,
                    None,
                    f"{platform.backref_field(coll)}.rkey={e.backref!r} but no record may "
                    f"exist ({e.reason})",
                )
            )
        return
    report.expected_records += 1
    mine = [h for h in have if h[0] == e.did]
    for did, rkey, _, _ in have:
        if did != e.did:
            report.violations.append(
                Violation("wrong_repo", coll, key, did, f"record {rkey}; owner is {e.did}")
            )
    if not mine:
        report.violations.append(Violation("missing", coll, key, e.did, e.reason))
        return
    if len(mine) > 1:
        report.violations.append(
            Violation("duplicate", coll, key, e.did, f"rkeys {[h[1] for h in mine]}")
        )
        return
    did, rkey, uri, value = mine[0]
    problem = _compare(e, value, did, http, report)
    if problem:
        report.violations.append(Violation("stale", coll, key, did, f"record {rkey}: {problem}"))
    field_name = platform.backref_field(coll)
    at = doc.get(field_name)
    at_uri = at.get("uri") if isinstance(at, Mapping) else None
    if e.backref != rkey or at_uri not in (None, uri):
        report.violations.append(
            Violation(
                "bad_backref",
                coll,
                key,
                did,
                f"{field_name}.rkey={e.backref!r} uri={at_uri!r}; record {uri}",
            )
        )


def _compare(
    e: Expectation, value: Mapping[str, Any], did: str, http: _Http, report: InvariantReport
) -> str | None:
    assert e.record is not None
    got = dict(value)
    if e.collection == "tapes":
        return _compare_video(e, got, did, http, report)
    thumb = got.pop("thumbnail", None)
    if got != e.record:
        diff = {
            k: (e.record.get(k), got.get(k))
            for k in sorted(set(got) | set(e.record))
            if e.record.get(k) != got.get(k)
        }
        return f"fields differ (expected, got): {str(diff)[:300]}"
    if e.image is None:
        return None if thumb is None else f"a thumbnail although {e.reason}"
    if not isinstance(thumb, Mapping):
        return "no thumbnail although the image exists"
    link = thumb.get("ref")
    cid = link.get("$link") if isinstance(link, Mapping) else None
    if not isinstance(cid, str) or thumb.get("$type") != "blob":
        return f"thumbnail is not a blob: {thumb!r:.100}"
    report.blobs_checked += 1
    blob = http.get_blob(did, cid)
    if blob is None:
        return "thumbnail blob not on the PDS"
    # A blob that passed for this source passes again if the record declares it the same.
    cache_key = (cid, hashlib.sha256(e.image).hexdigest(), thumb.get("mimeType"), thumb.get("size"))
    if cache_key in _PASSED:
        return None
    verdict = thumbs.check_thumbnail(blob, thumb, e.image)
    if verdict is None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.clear()
        _PASSED.add(cache_key)
    return verdict


def _fields_differ(e: Expectation, got: Mapping[str, Any]) -> str | None:
    assert e.record is not None
    if dict(got) == e.record:
        return None
    diff = {
        k: (e.record.get(k), got.get(k))
        for k in sorted(set(got) | set(e.record))
        if e.record.get(k) != got.get(k)
    }
    return f"fields differ (expected, got): {str(diff)[:300]}"


def _compare_video(
    e: Expectation, got: dict[str, Any], did: str, http: _Http, report: InvariantReport
) -> str | None:
    """A tape's record: its fields, and a video blob that is its MP4, byte for byte."""
    video = got.pop("video", None)
    differ = _fields_differ(e, got)
    if differ:
        return differ
    assert e.video is not None
    sha, size = e.video
    if not isinstance(video, Mapping) or video.get("$type") != "blob":
        return f"video is not a blob: {video!r:.100}"
    link = video.get("ref")
    cid = link.get("$link") if isinstance(link, Mapping) else None
    if not isinstance(cid, str):
        return "video blob has no ref.$link"
    if video.get("mimeType") != platform.VIDEO_MIME_TYPE or video.get("size") != size:
        return f"video declared {video.get('mimeType')!r}, {video.get('size')!r} bytes; the MP4 is {size}"
    report.blobs_checked += 1
    cache_key = (cid, sha, video.get("mimeType"), size)
    if cache_key in _PASSED:
        return None
    found = http.blob_digest(did, cid)
    if found is None:
        return "video blob not on the PDS"
    if found != (sha, size):
        return f"video blob ({found[1]} bytes, sha256 {found[0][:12]}) is not the MP4 ({size} bytes, sha256 {sha[:12]})"
    if len(_PASSED) >= _PASSED_MAX:
        _PASSED.clear()
    _PASSED.add(cache_key)
    return None


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
