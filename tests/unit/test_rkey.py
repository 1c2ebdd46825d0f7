from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from syncd.rkey import (
    RkeyError,
    decode_tid,
    derive_rkey,
    encode_tid,
    free_key,
    is_tid,
    named_key,
    preferred_keys,
)


def test_same_document_same_key_every_time() -> None:
    oid = ObjectId()
    when = datetime(2023, 8, 21, 19, 42, 3, 43000, tzinfo=UTC)
    assert derive_rkey(when, oid) == derive_rkey(when, oid)
    assert is_tid(derive_rkey(when, oid))


def test_documents_in_the_same_millisecond_rarely_collide_and_salt_separates_them() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    ids = [ObjectId() for _ in range(2000)]
    keys = {derive_rkey(when, i) for i in ids}
    assert len(keys) >= 1990  # ~2^20 keys per millisecond: collisions are rare, not impossible
    assert derive_rkey(when, ids[0], 1) != derive_rkey(when, ids[0])
    assert derive_rkey(when, ids[0], 1) == derive_rkey(when, ids[0], 1)


def test_key_sorts_with_when() -> None:
    oid = ObjectId()
    early = derive_rkey(datetime(2020, 1, 1, tzinfo=UTC), oid)
    late = derive_rkey(datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=1), oid)
    assert early < late


def test_naive_datetimes_are_utc() -> None:
    oid = ObjectId()
    assert derive_rkey(datetime(2022, 5, 5), oid) == derive_rkey(
        datetime(2022, 5, 5, tzinfo=UTC), oid
    )


def test_a_when_no_tid_can_say_is_keyed_by_the_ids_time() -> None:
    # The platform publishes a document of 1960 or 9000 all the same; a TID says
    # 1970..2255 only, so such a document's key comes from when its _id was made.
    oid = ObjectId.from_datetime(datetime(2024, 6, 1, tzinfo=UTC))
    for when in (datetime(1960, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)):
        key = derive_rkey(when, oid)
        assert is_tid(key) and key == derive_rkey(when, oid)  # stable
        micros = decode_tid(key) >> 10
        assert abs(micros / 1e6 - oid.generation_time.timestamp()) < 1
    assert derive_rkey(datetime(1960, 1, 1, tzinfo=UTC), oid, 1) != derive_rkey(
        datetime(1960, 1, 1, tzinfo=UTC), oid
    )
    with pytest.raises(RkeyError):
        derive_rkey(datetime(1960, 1, 1, tzinfo=UTC), "string-id")


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_tid_round_trip(value: int) -> None:
    tid = encode_tid(value)
    assert len(tid) == 13 and is_tid(tid)
    assert decode_tid(tid) == value


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({"atproto": {"rkey": "3kabcdefghij2"}}, "3kabcdefghij2"),
        ({"atproto": {"rkey": "not-a-tid"}}, None),
        ({"atproto": {"rkey": 12}}, None),
        ({"atproto": "3kabcdefghij2"}, None),
        ({"atproto": None}, None),
        ({}, None),
        (None, None),
    ],
)
def test_named_key_is_a_valid_tid_in_atproto_rkey(doc: Any, want: str | None) -> None:
    assert named_key(doc, "atproto") == want


def test_named_key_reads_the_field_the_mapping_names() -> None:
    """Tapes keep their back-reference in ``at`` (platform-facts §5), not ``atproto``."""
    doc = {"at": {"rkey": "3kabcdefghij2"}, "atproto": {"rkey": "3kabcdefghij3"}}
    assert named_key(doc, "at") == "3kabcdefghij2"
    assert named_key(doc, "atproto") == "3kabcdefghij3"
    assert named_key({"atproto": {"rkey": "3kabcdefghij3"}}, "at") is None


def test_free_key_salts_past_keys_other_documents_hold() -> None:
    when = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    oid = ObjectId()
    first = derive_rkey(when, oid)
    assert free_key(when, oid, lambda k: False) == first
    held = {first, derive_rkey(when, oid, 1)}
    assert free_key(when, oid, held.__contains__) == derive_rkey(when, oid, 2)


def test_preferred_keys_order_named_ledger_wiped_derived() -> None:
    assert preferred_keys(named="n", ledger="l", wiped="w", derived="d") == ["n", "l", "w", "d"]
    assert preferred_keys(named=None, ledger="d", wiped=None, derived="d") == ["d"]
    assert preferred_keys(named=None, ledger=None, wiped=None, derived=None) == []
