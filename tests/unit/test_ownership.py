"""Ownership and visibility, table-driven: the one verdict the daemon and admin share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from syncd.ownership import owner_filter, standing, verdict
from syncd.pds.sessions import Account

ACCOUNT = Account(sub="auth0|a", did="did:plc:a", handle="a.test", password="pw")
GUEST = Account(sub=None, did="did:plc:art", handle="art.test", password="pw")
WHEN = datetime(2025, 1, 1, tzinfo=UTC)


def doc(**fields: Any) -> dict[str, Any]:
    return {"_id": ObjectId(), "when": WHEN, **fields}


# collection, document fields, account resolved?, -> (kind, reason) or None (publish)
CASES = [
    ("moods", {"user": "auth0|a", "mood": "hi"}, True, None),
    ("moods", {"user": "auth0|a", "mood": "hi", "deleted": True}, True, ("hidden", "deleted")),
    ("moods", {"mood": "hi"}, True, ("dead", "missing_owner")),  # every mood has a user
    ("moods", {"user": 5, "mood": "hi"}, True, ("dead", "bad_owner")),
    ("moods", {"user": "auth0|a", "mood": "hi"}, False, ("skip", "no_atproto_account")),
    ("paintings", {"slug": "x", "code": "c"}, True, None),  # guest content
    ("paintings", {"user": "auth0|a", "status": "wip"}, True, ("skip", "wip")),
    ("paintings", {"user": "auth0|a", "status": "wip"}, False, ("skip", "wip")),
    ("paintings", {"user": "auth0|a", "nuked": True, "status": "wip"}, True, ("hidden", "nuked")),
    ("pieces", {"user": "auth0|a", "status": "wip"}, True, None),  # `status` only on paintings
    ("pieces", {"slug": "p", "visibility": "unlisted"}, True, ("hidden", "visibility=unlisted")),
    ("kidlisp", {"code": "k", "private": True}, True, ("hidden", "private")),
    ("kidlisp", {"code": "k", "hidden": 1}, False, ("hidden", "hidden")),  # privacy first
    ("kidlisp", {"code": "k", "draft": True}, True, ("hidden", "draft")),
]


@pytest.mark.parametrize(("collection", "fields", "has_account", "want"), CASES)
def test_verdict(
    collection: str, fields: dict[str, Any], has_account: bool, want: tuple[str, str] | None
) -> None:
    where = standing(collection, doc(**fields))
    account = (ACCOUNT if "user" in fields else GUEST) if has_account else None
    problem = verdict(where, account, "no_atproto_account")
    assert (None if problem is None else (problem.kind, problem.reason)) == want
    assert where.public == (problem is None or (problem.kind == "skip" and where.hidden is None))


def test_owner_is_the_user_sub_or_none_for_guests() -> None:
    assert standing("pieces", doc(user="auth0|a", slug="p")).owner == "auth0|a"
    assert standing("pieces", doc(slug="p")).owner is None
    assert standing("pieces", doc(user=None, slug="p")).owner is None


def test_owner_filter_matches_the_owner_rule() -> None:
    assert owner_filter(ACCOUNT) == {"user": "auth0|a"}
    assert owner_filter(GUEST) == {"user": None}  # matches a missing `user` too
