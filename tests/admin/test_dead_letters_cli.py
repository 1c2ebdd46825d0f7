"""``syncd dead-letters list|retry``, ``--help`` of every admin command, progress output."""

from __future__ import annotations

import io

import pytest

from syncd.admin.progress import Reporter
from syncd.cli import main
from syncd_sandbox.seed import make_mood
from syncd_sandbox.testing import SandboxWorld
from tests.admin.helpers import assert_converged, syncd, syncd_json


def test_dead_letters_list_and_retry_after_the_data_is_fixed(world: SandboxWorld) -> None:
    # Its "PNG" is not an image (a missing one would be published without thumbnail).
    painting = world.add_painting("alice", data=b"<html>not a png</html>")
    empty = make_mood(world.sub("alice"), "")
    world.insert("moods", empty)
    syncd(world, "backfill")

    listed = syncd_json(world, "dead-letters", "list")
    by_id = {d["id"]: d for d in listed["dead_letters"]}
    assert set(by_id) == {str(painting["_id"]), str(empty["_id"])}
    assert by_id[str(empty["_id"])]["reason"] == "missing_mood"
    assert by_id[str(empty["_id"])]["attempts"] == 1
    text = syncd(world, "dead-letters", "list", "--collection", "moods").stdout
    assert "missing_mood" in text and str(painting["_id"]) not in text

    # Dry run: lists, retries nothing.
    dry = syncd_json(world, "dead-letters", "retry", "--all")
    assert dry["apply"] is False and len(dry["selected"]) == 2 and not dry["cleared"]

    # Fix the painting's image only: it clears, the mood is recorded again.
    world.write_image("alice", painting["slug"])
    out = syncd_json(world, "dead-letters", "retry", "--all", "--apply", expect=1)
    assert out["cleared"] == [{"collection": "paintings", "id": str(painting["_id"])}]
    (still,) = out["still_dead"]
    assert still["id"] == str(empty["_id"]) and still["attempts"] == 2

    world.db.moods.update_one({"_id": empty["_id"]}, {"$set": {"mood": "fixed"}})
    syncd(world, "dead-letters", "retry", "--id", f"moods/{empty['_id']}", "--apply")
    assert syncd_json(world, "dead-letters", "list")["count"] == 0
    assert_converged(world)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["reconcile"], ["missing", "orphan", "duplicate", "stale", "blob", "--apply", "--check"]),
        (["wipe"], ["applyWrites", "restore", "--apply", "--account"]),
        (["restore"], ["same keys", "idempotent", "--apply"]),
        (["dead-letters", "list"], ["redacted", "--collection"]),
        (["dead-letters", "retry"], ["--id", "--all", "--apply", "attempts"]),
    ],
)
def test_help_explains_each_command(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split()).lower()
    for word in words:
        assert word.lower() in text, word


def test_wipe_and_restore_require_an_account(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("wipe", "restore"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--config", "/nonexistent"])
        assert exc.value.code == 2
    assert "--account" in capsys.readouterr().err


def test_plain_progress_lines() -> None:
    out = io.StringIO()
    with Reporter("reconcile", mode="plain", stream=out, interval=0.0) as rep:
        task = rep.task("deleting alice moods", 3)
        task.advance(2)
        task.advance()
        task.done()
    lines = out.getvalue().splitlines()
    assert lines[0] == "reconcile: deleting alice moods 0/3 (start)"
    assert lines[-1] == "reconcile: deleting alice moods 3/3 (done)"
    quiet = io.StringIO()
    with Reporter("x", mode="off", stream=quiet) as rep:
        rep.task("t", 1).done()
    assert quiet.getvalue() == ""


def test_rich_progress_bar_renders() -> None:
    out = io.StringIO()
    with Reporter("reconcile", mode="rich", stream=out) as rep:
        task = rep.task("publishing", 2)
        task.advance(2)
        task.done()
    assert "publishing" in out.getvalue()
