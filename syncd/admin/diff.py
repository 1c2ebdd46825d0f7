"""Compare one repository collection with the documents it should mirror. Pure: no I/O.

Inputs: the records ``listRecords`` returned for one (account, NSID), the
account's documents in the matching collection (as :class:`DocState`), syncd's
ledger rows for that account and collection, and the keys ``syncd wipe``
remembered. Output: a :class:`CollectionReport` listing every difference and the
fix for each:

- **missing**: a public document without a record → publish it (create);
- **orphan**: a record whose ``ref`` points to no public document of this
  account (deleted, hidden, unpublishable, owned by someone else, no ``ref``)
  → delete it;
- **duplicate**: several records for one ``ref`` → keep one (the one at the key
  syncd would use, else the earliest) and delete the rest;
- **stale**: the record's mirrored fields differ from what the document produces
  today → update it through the publish path;
- **blob**: a painting whose ``thumbnail`` is not a blob within the lexicon
  limits, whose blob CID differs from the one the ledger recorded, whose
  thumbnail was made the old way (not the platform's 512x512), or which was
  published without one while its image was missing and the image exists now →
  update (the writer makes and uploads the thumbnail again, the record's other
  fields unchanged); a tape whose ``video`` is missing, not a ``video/mp4`` blob
  within the lexicon's 52,428,800 bytes, or not the blob the ledger recorded →
  update (the MP4 is fetched and, unless the account has it, uploaded again);
- **ledger**: syncd's ledger row is missing, pending or wrong → rewrite it
  (or drop it for a document that has no record here);
- **backref**: the document's back-reference (``atproto.rkey``/``uri``/``cid``;
  ``at.*`` on tapes) does not name its record → set it (or unset it on a document
  that must have no record).

The key syncd would use for a document: the document's ``atproto.rkey`` when it
is a valid TID and a record of this document sits there (the platform's inline
writers and the old scripts wrote it; permalinks use it), else its ledger row's
key, else the key ``syncd wipe`` remembered, else ``derive_rkey(when, _id)`` --
the writer's planner's order, extended by the wiped keys. A record counts as a
document's when its ``ref`` -- or, on the earliest mood records, ``mongoId`` --
names it; a legacy ``mongoId`` record that is kept is rewritten with ``ref``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from syncd import lexicon
from syncd.admin.inventory import DocState, RepoRecord
from syncd.lexicon import LexiconError
from syncd.mappings import MappingContext
from syncd.mappings.paintings import Paintings
from syncd.mappings.tapes import Tapes
from syncd.rkey import backref_rkey, decode_tid, free_key, is_tid, preferred_keys
from syncd.state import LedgerEntry

MISSING, ORPHAN, DUPLICATE, STALE, BLOB, LEDGER, BACKREF = (
    "missing",
    "orphan",
    "duplicate",
    "stale",
    "blob",
    "ledger",
    "backref",
)
KINDS = (MISSING, ORPHAN, DUPLICATE, STALE, BLOB, LEDGER, BACKREF)

PAINTING_NSID = Paintings.nsid
TAPE_NSID = Tapes.nsid
# Record fields the writer adds besides the mapping's fields.
_WRITER_FIELDS = {
    PAINTING_NSID: frozenset({"thumbnail", "recordingUrl"}),
    TAPE_NSID: frozenset({"video"}),
}
# The record field holding the blob syncd tracks in the ledger (``blob_cid``).
BLOB_FIELDS = {PAINTING_NSID: "thumbnail", TAPE_NSID: "video"}
THUMBNAIL_MIME_TYPES = ("image/png", "image/jpeg")


@dataclass(frozen=True)
class Difference:
    kind: str
    collection: str
    did: str
    rkey: str | None
    doc_key: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Publish:
    """A write through the publish path (router → writer) for one document.

    ``create``: the record is missing; ``pin`` means the ledger is set (pending)
    at ``rkey`` first, so the writer upserts exactly there; otherwise the writer
    chooses the key itself (``rkey`` is then the derived key it will choose) and
    ``drop_ledger`` says this account's stale ledger row goes first.
    ``update``: the record at ``rkey`` is stale; the ledger is pointed at it with
    an unknown fingerprint, so the writer updates it.
    """

    doc_key: str
    action: str  # "create" | "update"
    rkey: str
    pin: bool = False
    drop_ledger: bool = False
    record_cid: str | None = None
    blob_cid: str | None = None
    # Blob CIDs to forget first, so the writer uploads the thumbnail again (the PDS
    # deletes a blob once no record references it; the state store cannot tell).
    forget_blobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class LedgerRepair:
    """Point the ledger row at the record that exists (content already right)."""

    doc_key: str
    rkey: str
    cid: str
    fingerprint: str
    blob_cid: str | None


@dataclass(frozen=True)
class BackrefSet:
    doc_key: str
    rkey: str
    uri: str
    cid: str


@dataclass
class CollectionReport:
    did: str
    collection: str
    nsid: str
    records: int = 0
    documents: int = 0
    public: int = 0
    differences: list[Difference] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # record keys (orphans, duplicates)
    publish: list[Publish] = field(default_factory=list)
    ledger_repairs: list[LedgerRepair] = field(default_factory=list)
    ledger_drops: list[str] = field(default_factory=list)  # doc keys (this account's rows)
    backref_sets: list[BackrefSet] = field(default_factory=list)
    backref_unsets: list[str] = field(default_factory=list)  # doc keys
    doc_ids: dict[str, Any] = field(default_factory=dict)  # doc key → _id, for fixes
    # The key each public document's record has (kept) or will get (created).
    keys: dict[str, str] = field(default_factory=dict)
    # Blob CIDs referenced only by records in ``deletes`` (forgotten once they are gone).
    deleted_blobs: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for d in self.differences:
            out[d.kind] += 1
        return out

    @property
    def total(self) -> int:
        return len(self.differences)

    def restrict(self, kinds: Iterable[str]) -> CollectionReport:
        """The part of this report (and of its fixes) that concerns ``kinds`` only."""
        keep = set(kinds)
        out = CollectionReport(
            self.did,
            self.collection,
            self.nsid,
            self.records,
            self.documents,
            self.public,
            doc_ids=self.doc_ids,
            keys=self.keys,
        )
        out.differences = [d for d in self.differences if d.kind in keep]
        if MISSING in keep:
            out.publish += [p for p in self.publish if p.action == "create"]
        if keep & {STALE, BLOB}:
            out.publish += [p for p in self.publish if p.action == "update"]
        if keep & {ORPHAN, DUPLICATE}:
            out.deletes = list(self.deletes)
            out.deleted_blobs = list(self.deleted_blobs)
        if LEDGER in keep:
            out.ledger_repairs = list(self.ledger_repairs)
            out.ledger_drops = list(self.ledger_drops)
        if BACKREF in keep:
            out.backref_sets = list(self.backref_sets)
            out.backref_unsets = list(self.backref_unsets)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "collection": self.collection,
            "nsid": self.nsid,
            "records": self.records,
            "documents": self.documents,
            "public": self.public,
            "differences": self.counts(),
            "total": self.total,
        }


def _age(rkey: str) -> tuple[int, int, str]:
    """Sort key: TIDs by their time, other keys after them, lexically."""
    return (0, decode_tid(rkey), rkey) if is_tid(rkey) else (1, 0, rkey)


def record_uri(did: str, nsid: str, rkey: str) -> str:
    return f"at://{did}/{nsid}/{rkey}"


def adopted_key(state: DocState) -> str | None:
    """The key the document names (:func:`syncd.rkey.named_key`)."""
    return backref_rkey(state.backref)


def key_candidates(
    state: DocState,
    nsid: str,
    entry: LedgerEntry | None,
    wiped: tuple[str, str] | None,
) -> list[str]:
    """The keys syncd would use for ``state``'s record, most preferred first."""
    return preferred_keys(
        named=adopted_key(state),
        ledger=entry.rkey if entry is not None and entry.nsid == nsid else None,
        wiped=wiped[1] if wiped is not None and wiped[0] == nsid else None,
        derived=state.derived_rkey,
    )


def stale_fields(
    value: Mapping[str, Any], fields: Mapping[str, Any], nsid: str, public_base_url: str
) -> list[str]:
    """Names of the record's fields that differ from what the document produces today."""
    out: list[str] = []
    if value.get("$type") != nsid:
        out.append("$type")
    for name, want in fields.items():
        if value.get(name) != want:
            out.append(name)
    extra = _WRITER_FIELDS.get(nsid, frozenset())
    for name in value:
        if name != "$type" and name not in fields and name not in extra:
            out.append(name)
    if nsid == PAINTING_NSID and "recordingUrl" in value and "code" in fields:
        ctx = MappingContext(public_base_url=public_base_url.rstrip("/"))
        if value["recordingUrl"] != Paintings.recording_url(fields, ctx):
            out.append("recordingUrl")
    return sorted(set(out))


def thumbnail_problem(value: Mapping[str, Any], max_bytes: int) -> str | None:
    """Why a painting record's ``thumbnail`` is not a valid blob, or None."""
    thumb = value.get("thumbnail")
    if thumb is None:
        return "no thumbnail"
    if not isinstance(thumb, Mapping) or thumb.get("$type") != "blob":
        return "thumbnail is not a blob"
    ref = thumb.get("ref")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("$link"), str) or not ref["$link"]:
        return "thumbnail has no ref.$link"
    if thumb.get("mimeType") not in THUMBNAIL_MIME_TYPES:
        return f"thumbnail mime type {thumb.get('mimeType')!r}"
    size = thumb.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return "thumbnail has no size"
    if size > max_bytes:
        return f"thumbnail of {size} bytes exceeds {max_bytes}"
    try:
        lexicon.validate(PAINTING_NSID, {"$type": PAINTING_NSID, "thumbnail": thumb})
    except LexiconError as exc:
        if exc.path.startswith("record.thumbnail"):
            return str(exc)
    return None


def blob_link(value: Mapping[str, Any], field: str) -> str | None:
    """The CID of the blob in the record's ``field``, if it names one."""
    blob = value.get(field)
    if isinstance(blob, Mapping):
        ref = blob.get("ref")
        if isinstance(ref, Mapping) and isinstance(ref.get("$link"), str):
            return str(ref["$link"])
    return None


def thumbnail_link(value: Mapping[str, Any]) -> str | None:
    return blob_link(value, "thumbnail")


def record_blob_link(nsid: str, value: Mapping[str, Any]) -> str | None:
    """The CID of the blob syncd tracks for a record of ``nsid`` (thumbnail, video)."""
    field = BLOB_FIELDS.get(nsid)
    return None if field is None else blob_link(value, field)


def video_problem(value: Mapping[str, Any]) -> str | None:
    """Why a tape record's ``video`` is not a valid blob (the lexicon's), or None."""
    video = value.get("video")
    if video is None:
        return "no video"
    # The other required fields are the mapping's business (stale): valid stand-ins here.
    probe = {"$type": TAPE_NSID, "slug": "s", "code": "c", "when": "2025-01-01T00:00:00.000Z"}
    try:
        lexicon.validate(TAPE_NSID, {**probe, "video": video})
    except LexiconError as exc:
        if exc.path.startswith("record.video"):
            return str(exc)
    return None


def _ledger_problem(
    entry: LedgerEntry | None,
    nsid: str,
    rec: RepoRecord,
    state: DocState,
    link: str | None,
) -> str | None:
    if entry is None:
        return "no ledger row"
    if entry.nsid != nsid or entry.rkey != rec.rkey:
        return f"ledger names key {entry.rkey}"
    if entry.pending:
        return "ledger row pending"
    if entry.fingerprint != state.fingerprint:
        return "ledger fingerprint differs"
    if entry.cid != rec.cid:
        return "ledger cid differs"
    if nsid in BLOB_FIELDS and entry.blob_cid != link:
        return "ledger blob cid differs"
    return None


def _backref_problem(state: DocState, uri: str, rec: RepoRecord) -> str | None:
    at, field = state.backref or {}, state.backref_field
    if at.get("rkey") != rec.rkey:
        return f"{field}.rkey is {at.get('rkey')!r}"
    if at.get("uri") != uri:
        return f"{field}.uri differs"
    if at.get("cid") not in (None, rec.cid):
        return f"{field}.cid differs"
    return None


def _has_backref(state: DocState) -> bool:
    at = state.backref or {}
    return any(at.get(k) is not None for k in ("rkey", "uri", "cid"))


def compare(
    *,
    did: str,
    collection: str,
    nsid: str,
    records: Sequence[RepoRecord],
    docs: Mapping[str, DocState],
    ledger: Mapping[str, LedgerEntry],
    wiped: Mapping[str, tuple[str, str]] | None = None,
    public_base_url: str = "https://aesthetic.computer",
    thumbnail_max_bytes: int = 1_048_576,
    thumbnails: Mapping[str, str] | None = None,
) -> CollectionReport:
    """Everything that differs between ``records`` and ``docs`` (see the module doc).

    ``ledger``: this account's rows for ``collection`` (doc key → row);
    ``thumbnails``: painting record key → why its thumbnail must be made again (made
    the old way, or its image was missing and exists now), as the caller found out.
    """
    wiped = wiped or {}
    thumbnails = thumbnails or {}
    report = CollectionReport(did, collection, nsid, records=len(records), documents=len(docs))
    diffs = report.differences

    def add(kind: str, rkey: str | None, doc_key: str | None, detail: str) -> None:
        diffs.append(Difference(kind, collection, did, rkey, doc_key, detail))

    by_ref: dict[str | None, list[RepoRecord]] = {}
    for rec in records:
        by_ref.setdefault(rec.ref, []).append(rec)
    docs_by_ref = {s.ref: s for s in docs.values() if s.ref is not None}
    report.doc_ids = {s.key: s.doc_id for s in docs.values()}
    report.public = sum(1 for s in docs.values() if s.hidden is None)

    # 1. Which record (if any) each document keeps; everything else goes.
    kept: dict[str, RepoRecord] = {}
    for ref, group in sorted(by_ref.items(), key=lambda kv: kv[0] or ""):
        state = docs_by_ref.get(ref) if ref is not None else None
        if state is None or not state.publishable:
            if ref is None:
                why = "record has no ref"
            elif state is None:
                why = f"no document {ref} of this account"
            elif state.hidden is not None:
                why = f"document is not public ({state.hidden})"
            else:
                why = f"document cannot be published ({state.problem})"
            for rec in sorted(group, key=lambda r: _age(r.rkey)):
                add(ORPHAN, rec.rkey, state.key if state else None, why)
                report.deletes.append(rec.rkey)
            continue
        candidates = key_candidates(state, nsid, ledger.get(state.key), wiped.get(state.key))
        ordered = sorted(group, key=lambda r: _age(r.rkey))
        keep = next((r for k in candidates for r in ordered if r.rkey == k), ordered[0])
        kept[state.key] = keep
        for rec in ordered:
            if rec is not keep:
                add(
                    DUPLICATE,
                    rec.rkey,
                    state.key,
                    f"another record for ref {ref}; keeping {keep.rkey}",
                )
                report.deletes.append(rec.rkey)

    # 2. Public documents: missing, stale, blob, ledger and back-reference checks.
    claimed = {rec.rkey for rec in kept.values()}
    for state in sorted(docs.values(), key=lambda s: s.key):
        entry = ledger.get(state.key)
        if not state.publishable:
            if entry is not None:
                add(
                    LEDGER,
                    entry.rkey,
                    state.key,
                    "ledger row for a document that must have no record",
                )
                report.ledger_drops.append(state.key)
            if _has_backref(state):
                add(
                    BACKREF,
                    None,
                    state.key,
                    "back-reference on a document that must have no record",
                )
                report.backref_unsets.append(state.key)
            continue
        found = kept.get(state.key)
        if found is None:
            report.publish.append(
                _plan_create(state, nsid, entry, wiped.get(state.key), claimed, add)
            )
            continue
        rec = found
        report.keys[state.key] = rec.rkey
        uri = record_uri(did, nsid, rec.rkey)
        assert state.fields is not None and state.fingerprint is not None
        changed = stale_fields(rec.value, state.fields, nsid, public_base_url)
        link = record_blob_link(nsid, rec.value)
        blob = None
        if nsid == TAPE_NSID:
            blob = video_problem(rec.value)
            if blob is None and entry is not None and entry.blob_cid not in (None, link):
                blob = f"ledger blob {entry.blob_cid} differs from the record's {link}"
        if nsid == PAINTING_NSID:
            if link is None and "thumbnail" not in rec.value:
                # Published without a thumbnail (the image was missing): a difference only
                # once the image exists (the caller looked: ``thumbnails``).
                blob = thumbnails.get(rec.rkey)
            else:
                blob = thumbnail_problem(rec.value, thumbnail_max_bytes) or thumbnails.get(rec.rkey)
            if blob is None and entry is not None and entry.blob_cid not in (None, link):
                blob = f"ledger blob {entry.blob_cid} differs from the record's {link}"
        if changed:
            add(STALE, rec.rkey, state.key, "differs: " + ", ".join(changed))
        if blob:
            add(BLOB, rec.rkey, state.key, blob)
        backref = _backref_problem(state, uri, rec)
        if changed or blob:
            report.publish.append(
                Publish(
                    state.key,
                    "update",
                    rec.rkey,
                    record_cid=rec.cid,
                    blob_cid=link if blob is None else None,
                    forget_blobs=tuple(
                        sorted({c for c in (link, entry and entry.blob_cid) if c}) if blob else ()
                    ),
                )
            )
            if backref:
                add(BACKREF, rec.rkey, state.key, backref)
            continue
        ledger_problem = _ledger_problem(entry, nsid, rec, state, link)
        if ledger_problem:
            add(LEDGER, rec.rkey, state.key, ledger_problem)
            report.ledger_repairs.append(
                LedgerRepair(
                    state.key,
                    rec.rkey,
                    rec.cid,
                    state.fingerprint,
                    link if nsid in BLOB_FIELDS else None,
                )
            )
        if backref:
            add(BACKREF, rec.rkey, state.key, backref)
            report.backref_sets.append(BackrefSet(state.key, rec.rkey, uri, rec.cid))

    for p in report.publish:
        if p.action == "create":
            report.keys[p.doc_key] = p.rkey
    if nsid in BLOB_FIELDS and report.deletes:
        gone = set(report.deletes)
        still = {record_blob_link(nsid, r.value) for r in records if r.rkey not in gone}
        report.deleted_blobs = sorted(
            {link for r in records if r.rkey in gone and (link := record_blob_link(nsid, r.value))}
            - still
        )

    # 3. Ledger rows of this account for documents it no longer has.
    for key in sorted(set(ledger) - set(docs)):
        add(LEDGER, ledger[key].rkey, key, "ledger row for a document gone from this account")
        report.ledger_drops.append(key)
    return report


def _plan_create(
    state: DocState,
    nsid: str,
    entry: LedgerEntry | None,
    wiped: tuple[str, str] | None,
    claimed: set[str],
    add: Any,
) -> Publish:
    candidates = key_candidates(state, nsid, entry, wiped)
    chosen = next((k for k in candidates if k not in claimed), None)
    if chosen is None:
        assert state.when is not None  # a publishable document has a valid `when`
        chosen = free_key(state.when, state.doc_id, claimed.__contains__)
    claimed.add(chosen)
    # The writer picks adopted-or-derived by itself; pin the ledger when that is not the key.
    writer_choice = adopted_key(state) or state.derived_rkey
    pin = chosen != writer_choice or (entry is not None and entry.nsid == nsid)
    # A ledger row at the derived key: dropping it lets the writer batch a create.
    drop = False
    if entry is not None and chosen == state.derived_rkey and adopted_key(state) is None:
        pin, drop = False, True
    add(MISSING, chosen, state.key, f"no record; publish at {chosen}")
    return Publish(state.key, "create", chosen, pin=pin, drop_ledger=drop)
