from __future__ import annotations

import base64
import hashlib

import libipld
from hypothesis import given
from hypothesis import strategies as st

from syncd.images.cid import blob_cid, blob_cid_bytes


def by_hand(data: bytes) -> str:
    """From the spec: 'b' + base32lower(0x01 0x55 0x12 0x20 + sha256(data)), no padding."""
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def test_pinned_values() -> None:
    # The well-known CIDv1 raw sha2-256 of the empty byte string.
    assert blob_cid(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert by_hand(b"") == blob_cid(b"")
    assert blob_cid(b"hello world") == by_hand(b"hello world")
    assert blob_cid(b"hello world").startswith("bafkrei")


def test_structure() -> None:
    data = b"\x89PNG thumbnail"
    decoded = libipld.decode_cid(blob_cid(data))
    assert decoded["version"] == 1
    assert decoded["codec"] == 0x55
    assert decoded["hash"]["code"] == 0x12
    assert decoded["hash"]["size"] == 32
    assert decoded["hash"]["digest"] == hashlib.sha256(data).digest()
    assert len(blob_cid_bytes(data)) == 36


@given(st.binary(max_size=2048))
def test_matches_the_spec_for_any_bytes(data: bytes) -> None:
    assert blob_cid(data) == by_hand(data)
