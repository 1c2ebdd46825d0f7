from pathlib import Path

import pytest
from bson import ObjectId

from syncd.state import StateStore


def test_position_round_trip_survives_reopen(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    assert s.load_position() is None
    s.save_position({"_data": "8263A1"}, (1700000000, 5))
    s.close()
    s = StateStore(tmp_path)
    pos = s.load_position()
    assert (
        pos is not None and pos.token == {"_data": "8263A1"} and pos.cluster_time == (1700000000, 5)
    )
    assert oct((tmp_path / "syncd.sqlite3").stat().st_mode & 0o777) == "0o600"


def test_backfill_progress_and_finish(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    s.begin_backfill((10, 1), ["moods", "pieces"], reason="first_start")
    oid = ObjectId()
    s.save_backfill_progress("moods", oid, "objectid", 500, False)
    p = s.backfill_progress()
    assert p["moods"].last_id == oid and p["moods"].scanned == 500 and not p["pieces"].done
    s.finish_backfill()
    assert s.backfill_start_time() is None
    pos = s.load_position()
    assert pos is not None and pos.token is None and pos.cluster_time == (10, 1)


def test_transaction_rolls_back_together(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    with pytest.raises(RuntimeError), s.transaction():
        s.ledger_put(
            "moods",
            "k",
            did="d",
            nsid="n",
            rkey="r",
            cid=None,
            fingerprint=None,
            blob_cid=None,
            pending=True,
        )
        s.dead_letter("moods", "k2", "bad", "x")
        raise RuntimeError("boom")
    assert s.ledger_get("moods", "k") is None
    assert s.dead_letters() == []


def test_ledger_iteration_pages(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    with s.transaction():
        for i in range(2500):
            s.ledger_put(
                "moods",
                f"{i:05d}",
                did="d",
                nsid="n",
                rkey=f"r{i}",
                cid="c",
                fingerprint="f",
                blob_cid=None,
                pending=False,
            )
    keys = [e.doc_key for e in s.ledger_iter(collection="moods", batch=700)]
    assert keys == sorted(keys) and len(keys) == 2500
    assert s.ledger_counts() == [("moods", "d", 2500)]


def test_dead_letters_count_attempts(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    s.dead_letter("moods", "a", "missing_mood", "no mood")
    s.dead_letter("moods", "a", "missing_mood", "no mood")
    [d] = s.dead_letters()
    assert d.attempts == 2 and s.dead_letter_counts() == {"moods": 1}
    s.clear_dead_letter("moods", "a")
    assert s.dead_letter_counts() == {}
