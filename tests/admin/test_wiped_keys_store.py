"""The state store's memory of wiped record keys (used by restore)."""

from __future__ import annotations

from pathlib import Path

from syncd.state import StateStore


def test_wiped_keys_roundtrip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.wiped_key_put("moods", "a", "did:plc:x", "computer.aesthetic.mood", "3kaaaaaaaaaa2")
    store.wiped_key_put("moods", "a", "did:plc:x", "computer.aesthetic.mood", "3kbbbbbbbbbb2")
    store.wiped_key_put("moods", "a", "did:plc:y", "computer.aesthetic.mood", "3kcccccccccc2")
    assert store.wiped_keys("moods", "did:plc:x") == {
        "a": ("computer.aesthetic.mood", "3kbbbbbbbbbb2")
    }
    store.wiped_key_clear("moods", "a", "did:plc:x")
    assert store.wiped_keys("moods", "did:plc:x") == {}
    assert store.wiped_keys("moods", "did:plc:y") == {
        "a": ("computer.aesthetic.mood", "3kcccccccccc2")
    }
    store.close()
    # An existing store gains the table on open (additive schema, no migration).
    assert StateStore(tmp_path).wiped_keys("moods", "did:plc:y")
