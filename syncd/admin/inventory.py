"""What exists on each side: a repository's records, and an account's documents.

Both sides are read per account and per collection, so memory is bounded by the
largest (account, collection) pair, and documents are reduced to the compact
:class:`DocState` the comparison needs (never kept whole).

Documents are selected with :func:`syncd.ownership.owner_filter`, the filter
``syncd backfill --account`` uses too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from syncd.ids import doc_key, ref_for
from syncd.mappings import MAPPINGS, MappingContext, MappingError
from syncd.mappings.base import when_of
from syncd.ownership import owner_filter, standing
from syncd.pds.sessions import Account
from syncd.rkey import RkeyError, derive_rkey

if TYPE_CHECKING:
    from syncd.engine import Engine

GUEST_ALIASES = ("art", "guest")


@dataclass(frozen=True)
class RepoRecord:
    """One record as ``listRecords`` returns it."""

    nsid: str
    rkey: str
    cid: str
    value: dict[str, Any]

    @property
    def ref(self) -> str | None:
        """The document this record is of: ``ref``, or ``mongoId`` on the earliest moods."""
        ref = self.value.get("ref") if "ref" in self.value else self.value.get("mongoId")
        return ref if isinstance(ref, str) else None

    @classmethod
    def from_listing(cls, nsid: str, item: dict[str, Any]) -> RepoRecord:
        uri = str(item.get("uri", ""))
        return cls(
            nsid=nsid,
            rkey=uri.rsplit("/", 1)[-1],
            cid=str(item.get("cid", "")),
            value=dict(item.get("value") or {}),
        )


@dataclass(frozen=True)
class DocState:
    """What the comparison needs to know about one source document."""

    key: str  # doc_key (the ObjectId as hex for every publishable document)
    ref: str | None  # what the record's `ref` would be
    hidden: str | None  # why it is not public (None: public)
    problem: str | None  # why a public document cannot be published (mapping error)
    fields: dict[str, Any] | None  # draft.fields: the record's mirrored fields
    fingerprint: str | None
    derived_rkey: str | None  # derive_rkey(when, _id): the key when nothing else is known
    backref: dict[str, Any] | None  # the document's back-reference, as stored
    doc_id: Any = None
    when: datetime | None = None  # for re-deriving a key with a salt (collisions)
    image_urls: tuple[str, ...] = ()  # a painting's image: its candidate URLs, in order
    backref_field: str = "atproto"  # where the back-reference lives (`at` on tapes)

    @property
    def publishable(self) -> bool:
        return self.hidden is None and self.problem is None and self.fields is not None


def doc_state(collection: str, doc: dict[str, Any], ctx: MappingContext) -> DocState:
    """Reduce a document to a :class:`DocState`, using the same mapping as the publish path."""
    where = standing(collection, doc)
    hidden = where.hidden
    problem: str | None = where.invalid.reason if where.invalid is not None else None
    fields: dict[str, Any] | None = None
    fingerprint: str | None = None
    image_urls: tuple[str, ...] = ()
    if where.public:
        try:
            draft = MAPPINGS[collection].draft(doc, ctx)
            fields, fingerprint = draft.fields, draft.fingerprint
            if draft.image is not None:
                image_urls = draft.image.image_urls
        except MappingError as exc:
            problem = exc.reason
    when: datetime | None
    try:
        when = when_of(doc)
        derived: str | None = derive_rkey(when, doc["_id"])
    except (MappingError, RkeyError):
        when, derived = None, None
    field = MAPPINGS[collection].backref
    at = doc.get(field)
    return DocState(
        key=doc_key(doc["_id"]),
        ref=ref_for(doc["_id"]),
        hidden=hidden,
        problem=problem,
        fields=fields,
        fingerprint=fingerprint,
        derived_rkey=derived,
        backref=dict(at) if isinstance(at, dict) else None,
        doc_id=doc["_id"],
        when=when,
        image_urls=image_urls,
        backref_field=field,
    )


async def resolve_account(engine: Engine, ident: str) -> Account | None:
    """``--account``: an ATProto handle or DID, or ``art``/``guest``/the guest user id."""
    if ident in (*GUEST_ALIASES, engine.config.mongo.guest_user_id):
        account, _ = await engine.accounts.resolve(None)
        if account is not None:
            return account
    return await engine.accounts.by_handle_or_did(ident)


async def all_accounts(engine: Engine) -> list[Account]:
    """Every account found in ``users`` with ``atproto.did`` (the guest account included)."""
    users = engine.db[engine.config.mongo.users_collection]
    guest = engine.config.mongo.guest_user_id
    out: dict[str, Account] = {}
    async for user in users.find({"atproto.did": {"$type": "string"}}, {"_id": 1}).sort("_id", 1):
        owner = None if user["_id"] == guest else user["_id"]
        if owner is not None and not isinstance(owner, str):
            continue
        account, _ = await engine.accounts.resolve(owner)
        if account is not None and account.did not in out:
            out[account.did] = account
    return list(out.values())


async def list_repo(
    engine: Engine,
    did: str,
    nsid: str,
    *,
    on_page: Callable[[int], None] | None = None,
) -> list[RepoRecord]:
    """Every record of ``nsid`` in ``did``'s repository (all pages of ``listRecords``)."""
    out: list[RepoRecord] = []
    cursor: str | None = None
    while True:
        page, cursor = await engine.repo.list_records(did, nsid, cursor=cursor, limit=100)
        out.extend(RepoRecord.from_listing(nsid, item) for item in page)
        if on_page is not None:
            on_page(len(page))
        if not cursor or not page:
            return out


async def account_documents(
    engine: Engine, collection: str, account: Account
) -> AsyncIterator[dict[str, Any]]:
    """The account's documents in ``collection``, in ``_id`` order, in bounded pages."""
    coll = engine.db[collection]
    async for doc in (
        coll.find(owner_filter(account))
        .sort("_id", 1)
        .batch_size(engine.config.mongo.scan_batch_size)
    ):
        yield doc


async def account_doc_states(
    engine: Engine, collection: str, account: Account
) -> dict[str, DocState]:
    return {
        s.key: s
        async for s in _states(engine, collection, account_documents(engine, collection, account))
    }


async def _states(
    engine: Engine, collection: str, docs: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[DocState]:
    async for doc in docs:
        yield doc_state(collection, doc, engine.mapping_ctx)
