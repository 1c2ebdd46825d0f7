"""syncd's mappings and the witness agree on every hostile document, without a daemon.

The daemon-level property test (``test_hostile_documents.py``) sees a disagreement only
when hypothesis happens to draw it among 200 documents, and then after a minute of
subprocesses. Here the same strategies drive both sides directly, thousands of times a
second: syncd's ownership, mapping and lexicon validation on one side, the witness's
reading of the platform's facts (``syncd_sandbox.platform``, which imports nothing from
``syncd``) on the other. They must reach the same state -- publish, hidden or invalid --
and, when they publish, the same record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings

from syncd import lexicon
from syncd.images.settings import ImageSettings
from syncd.lexicon import LexiconError
from syncd.mappings import MAPPINGS, MappingContext, MappingError
from syncd.ownership import standing
from syncd_sandbox import platform
from syncd_sandbox.images import UnsafeKeyError, painting_objects
from tests.hostile.strategies import documents

#: The sandbox's image settings: a document's ``bucket`` changes the path, not the host.
CTX = MappingContext(
    images=ImageSettings(
        url_template="http://127.0.0.1:9/{bucket}/{key}",
        recording_template="http://127.0.0.1:9/{bucket}/{key}",
        allowed_hosts=("http://127.0.0.1:9",),
    )
)
SUBS = {"alice": "auth0|alice", "bob": "auth0|bob", "carol": "auth0|carol"}
SUBS["unknown"] = "auth0|nobody-knows-me"
#: Owners with an account: the three users (carol too, here) and guests (the art account).
ACCOUNTS = {None, *SUBS.values()} - {SUBS["unknown"]}


def syncd_says(collection: str, doc: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    s = standing(collection, doc)
    if s.invalid is not None:
        return "invalid", None
    if s.hidden is not None:
        return "hidden", None
    if s.owner not in ACCOUNTS:
        return "no_account", None
    try:
        draft = MAPPINGS[collection].draft(doc, CTX)
    except MappingError:
        return "invalid", None
    record = {"$type": draft.nsid, **draft.fields}
    try:
        lexicon.validate(draft.nsid, record)
    except LexiconError:
        return "invalid", None
    return "publish", record


def witness_says(collection: str, doc: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    try:
        owner = platform.owner_of(collection, doc)
    except platform.Invalid:
        return "invalid", None
    if platform.not_public_reason(collection, doc) is not None:
        return "hidden", None
    if owner not in ACCOUNTS:
        return "no_account", None
    try:
        record = platform.record_for(collection, doc)
    except platform.Invalid:
        return "invalid", None
    if collection == "paintings":
        try:
            painting_objects(owner, record["slug"], doc.get("bucket"))
        except UnsafeKeyError:
            return "invalid", None
    return "publish", record


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(documents(SUBS))
def test_syncd_and_the_witness_agree_on_hostile_documents(item: tuple[str, dict[str, Any]]) -> None:
    collection, doc = item
    if doc.get("user") == "absent":
        del doc["user"]
    ours, theirs = syncd_says(collection, doc), witness_says(collection, doc)
    assert ours[0] == theirs[0], f"syncd: {ours[0]}, witness: {theirs[0]}: {doc!r:.400}"
    assert ours[1] == theirs[1]
