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


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(
        '[mongo]\nuri = "mongodb://127.0.0.1:1/?replicaSet=rs0"\ndatabase = "x"\n'
        f'[pds]\nurl = "http://127.0.0.1:1"\n[state]\ndirectory = "{tmp_path}"\n'
    )
    return path


@pytest.mark.parametrize("command", ["status", "reconcile"])
def test_corrupt_state_file_is_one_line_naming_the_file(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.cli import main
    from syncd.state import StateError

    (tmp_path / "syncd.sqlite3").write_bytes(b"not a database, just garbage " * 40)
    with pytest.raises(StateError, match=r"syncd\.sqlite3 is unreadable .*move it aside"):
        StateStore(tmp_path)
    assert main([command, "--config", str(_config(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("syncd: state error: state file ") and "syncd.sqlite3" in err[0]
    assert "Traceback" not in err[0]


def test_state_directory_that_cannot_be_made_is_a_state_error(tmp_path: Path) -> None:
    from syncd.state import StateError

    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot be opened"):
        StateStore(tmp_path / "file" / "state")


def test_status_shows_handles_next_to_dids(tmp_path: Path) -> None:
    from syncd.config import load
    from syncd.status import collect, render

    s = StateStore(tmp_path)
    for did in ("did:plc:aaa", "did:plc:bbb"):
        s.ledger_put(
            "moods",
            f"k-{did}",
            did=did,
            nsid="computer.aesthetic.mood",
            rkey="3kaaaaaaaaaa2",
            cid="c",
            fingerprint="f",
            blob_cid=None,
            pending=False,
        )
    s.set_meta("handle:did:plc:aaa", "jeffrey.at.aesthetic.computer")
    s.close()
    report = collect(load(_config(tmp_path)))
    assert report["handles"] == {
        "did:plc:aaa": "jeffrey.at.aesthetic.computer",
        "did:plc:bbb": None,
    }
    text = render(report)
    line = next(ln for ln in text.splitlines() if "did:plc:aaa" in ln)
    assert "jeffrey.at.aesthetic.computer" in line


def test_state_files_are_owner_only_from_the_first_byte(tmp_path: Path) -> None:
    import os

    old = os.umask(0)  # the worst case: everything would be world-readable
    try:
        directory = tmp_path / "state"
        s = StateStore(directory)
        s.save_session("did:plc:x", "access", "refresh")
        modes = {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}
        s.close()
    finally:
        os.umask(old)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert modes["syncd.sqlite3"] == 0o600
    assert {m for n, m in modes.items() if n.startswith("syncd.sqlite3")} == {0o600}, modes
    assert "syncd.sqlite3-wal" in modes


def test_dead_letter_counts_of_a_state_file_from_before_the_triggers(tmp_path: Path) -> None:
    """A state file written by a syncd without the counts table (its dead letters counted
    by nobody) is counted once when opened, and kept by the triggers from then on."""
    s = StateStore(tmp_path)
    for i in range(5):
        s.dead_letter("moods", f"m{i}", "r", "x")
    s._db.executescript(
        "DROP TRIGGER dead_letters_counted; DROP TRIGGER dead_letters_uncounted; "
        "DROP TABLE dead_letter_counts;"
    )
    s.dead_letter("moods", "m5", "r", "x")  # written as the old syncd wrote: uncounted
    s.dead_letter("pieces", "p0", "r", "x")
    s.close()
    s = StateStore(tmp_path)
    try:
        assert s.dead_letter_counts() == {"moods": 6, "pieces": 1}
        s.dead_letter("moods", "m0", "again", "y")  # the same document: counted once
        s.dead_letter("kidlisp", "k0", "r", "x")
        s.clear_dead_letter("pieces", "p0")
        with s.transaction():
            s._db.execute("DELETE FROM dead_letters WHERE collection = 'moods'")  # all at once
        assert s.dead_letter_counts() == {"kidlisp": 1}
    finally:
        s.close()
