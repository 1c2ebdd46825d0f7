"""The platform's account lifecycle, end to end: accounts that appear, change and go away.

The real ``syncd run`` against the real PDS and the Mongo sandbox; the world does what
the platform does (``syncd_sandbox.accounts``: the PDS account first, then
``users.atproto``), and the world's independent invariant checker -- which reads
``users`` itself to decide owners -- says whether the mirror is right.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from syncd_sandbox.pds import unique_handle
from syncd_sandbox.seed import make_kidlisp, make_mood
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum, run_cli
from syncd_sandbox.testing import SandboxWorld

from .mirror import NSIDS, assert_mirrored

pytestmark = pytest.mark.slow

MOOD, KIDLISP = NSIDS["moods"], NSIDS["kidlisp"]


def status(world: SandboxWorld) -> dict[str, Any]:
    out = run_cli(world.config_path, "status", "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def status_text(world: SandboxWorld) -> str:
    return run_cli(world.config_path, "status").stdout


def seed_user(world: SandboxWorld, name: str, moods: int, kidlisp: int) -> list[dict[str, Any]]:
    sub = world.sub(name)
    assert sub
    docs = [make_mood(sub, f"{name} mood {i}") for i in range(moods)]
    docs_k = [make_kidlisp(sub, source=f"(ink {name} {i})") for i in range(kidlisp)]
    if docs:
        world.insert("moods", *docs)
    if docs_k:
        world.insert("kidlisp", *docs_k)
    return docs + docs_k


def published(world: SandboxWorld, who: str) -> int:
    return len(world.records_by_ref(who, MOOD)) + len(world.records_by_ref(who, KIDLISP))


def test_an_account_that_appears_gets_every_earlier_document(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """A user with 40 documents in two collections gains an account while syncd runs: all
    40 are published (exactly once, with their back-references), their skips clear."""
    world.add_user("carol", with_atproto=False)
    seed_user(world, "carol", 20, 20)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    skipped = status(world)["skipped"]
    assert skipped["moods"]["no_atproto_account"] == 20
    assert skipped["kidlisp"]["no_atproto_account"] == 20

    # The platform: the PDS account first, then users.atproto (timed from that update).
    carol = world.account("carol")
    created = world.api.create_account(unique_handle("carol"))
    started = time.monotonic()
    world.db.users.update_one(
        {"_id": carol.sub},
        {
            "$set": {
                "atproto": {
                    "did": created.did,
                    "handle": created.handle,
                    "password": created.password,
                }
            }
        },
    )
    world.accounts["carol"] = replace(
        carol, did=created.did, handle=created.handle, password=created.password
    )
    syncd.wait_until(lambda: published(world, "carol") == 40, 60, interval=0.05)
    seconds = time.monotonic() - started
    print(f"\n40 earlier documents published {seconds:.2f}s after users.atproto was set")
    syncd.wait_idle()
    assert_mirrored(world)  # exactly once, in carol's repository, named by back-references
    after = status(world)
    assert "no_atproto_account" not in after["skipped"].get("moods", {})
    assert "no_atproto_account" not in after["skipped"].get("kidlisp", {})
    assert after["accounts"]["backfills"] == []
    (finished,) = syncd.events("account_backfill_finished")
    assert finished["documents"] == 40 and finished["did"] == world.did("carol")
    m = syncd.metrics()
    assert metric_sum(m, "syncd_account_events_total", kind="appeared") == 1
    assert metric_sum(m, "syncd_account_backfill_documents_total") == 40
    assert metric_sum(m, "syncd_dead_letters") == 0


def test_sigkill_in_the_middle_of_an_account_backfill_resumes_exactly_once(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """SIGKILL while a user's account backfill runs; after the restart it resumes from
    its saved progress (not from the start) and every document has exactly one record."""
    world.write_config({"pipeline": {"queue_size": 100}})  # groups of 50: many steps
    world.add_user("carol", with_atproto=False)
    seed_user(world, "carol", 400, 400)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    world.create_account("carol")
    syncd.wait_until(lambda: published(world, "carol") >= 300, 60, interval=0.05)
    syncd.kill()
    before = published(world, "carol")
    mid = status(world)["accounts"]["backfills"]
    assert len(mid) == 1 and 0 < mid[0]["read"] < 800, mid  # progress was saved
    assert "account backfill:" in status_text(world)
    print(f"\nkilled with {before} of 800 published, {mid[0]['read']} read durably")
    assert before < 800
    syncd.start()
    syncd.wait_until(lambda: published(world, "carol") == 800, 120)
    syncd.wait_idle()
    (started,) = syncd.events("account_backfill_started")
    assert started["resumed"] is True and started["documents"] < 800
    assert_mirrored(world)  # exactly one record each (no duplicate from the replay)
    assert status(world)["accounts"]["backfills"] == []


def test_a_fixed_password_unparks_the_account_at_once(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """A wrong password in ``users`` parks the account; the fix in ``users`` publishes its
    parked documents within seconds (not at the next retry pass): once for a password wrong
    from the start, once for one that went wrong while syncd ran."""
    dave = world.add_user("dave")
    assert dave.password
    world.set_password("dave", "not-the-password")
    seed_user(world, "dave", 10, 5)
    syncd.start()
    syncd.wait_ready()

    def parked() -> bool:
        return any(p["did"] == dave.did for p in status(world)["parked"])

    syncd.wait_until(parked, 60, interval=0.3)
    assert published(world, "dave") == 0
    started = time.monotonic()
    world.set_password("dave", dave.password)
    syncd.wait_until(lambda: published(world, "dave") == 15, 30, interval=0.1)
    first = time.monotonic() - started
    syncd.wait_idle()
    assert not parked()

    # The platform breaks the password again while syncd runs; new documents park.
    world.set_password("dave", "wrong-again")
    sub = world.sub("dave")
    assert sub
    syncd.wait_until(lambda: len(syncd.events("account_credentials_changed")) == 2, 20)
    world.insert("moods", *[make_mood(sub, f"while broken {i}") for i in range(5)])
    syncd.wait_until(parked, 60, interval=0.3)
    assert published(world, "dave") == 15
    started = time.monotonic()
    world.set_password("dave", dave.password)
    syncd.wait_until(lambda: published(world, "dave") == 20, 30, interval=0.1)
    second = time.monotonic() - started
    print(
        f"\nparked documents published {first:.2f}s / {second:.2f}s after the password "
        "was fixed (wrong from the start / gone wrong while running)"
    )
    assert first < 15 and second < 15  # the parking waits 600 s, the retry pass 300 s
    syncd.wait_idle()
    assert_mirrored(world)
    assert status(world)["parked"] == []
    changes = syncd.events("account_credentials_changed")
    assert [c["did"] for c in changes] == [dave.did] * 3  # fixed, broken, fixed
    assert syncd.events("account_new") == []  # known since the first backfill: no appearance
    assert metric_sum(syncd.metrics(), "syncd_dead_letters") == 0


def test_a_deleted_account_then_a_new_one(world: SandboxWorld, syncd: SyncdProcess) -> None:
    """The platform deletes alice's account (the PDS first, users.atproto after): syncd keeps
    running, writes nothing for it, dead-letters nothing, says so in status; alice's
    documents lose their back-references. Later she gets a new account (a new DID): her
    public documents are published there."""
    seed_user(world, "alice", 6, 4)
    seed_user(world, "bob", 3, 0)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_until(lambda: published(world, "alice") == 10, 30)
    syncd.wait_idle()
    old = world.account("alice")
    assert old.did
    # The PDS account goes first; a change made before users says so meets the refusal.
    world.api.delete_account(old.did)
    sub = world.sub("alice")
    assert sub
    world.insert("moods", make_mood(sub, "written while the account was being deleted"))
    syncd.wait_until(
        lambda: any(g["did"] == old.did for g in status(world)["accounts"]["gone"]), 30
    )
    # Then users loses atproto (what world.delete_account does, in that order).
    world.db.users.update_one({"_id": sub}, {"$unset": {"atproto": ""}})
    world.accounts["alice"] = type(old)(old.name, old.sub)
    syncd.wait_until(
        lambda: (
            world.db.moods.count_documents({"user": sub, "atproto.rkey": {"$exists": True}}) == 0
        ),
        30,
    )
    world.insert("moods", *[make_mood(sub, f"after the deletion {i}") for i in range(3)])
    world.insert("moods", make_mood(world.sub("bob") or "", "bob carries on"))
    syncd.wait_until(lambda: len(world.records_by_ref("bob", MOOD)) == 4, 30)
    syncd.wait_idle()
    report = status(world)
    (gone,) = [g for g in report["accounts"]["gone"] if g["did"] == old.did]
    assert gone["reason"] == "removed_from_users" and gone["ledger_rows_kept"] >= 10
    assert report["dead_letters"]["counts"] == {}
    # Skips, not dead letters: the 6 + 3 moods and 4 kidlisp (their back-references went,
    # each change routed as a skip), and the one the PDS refused (the account was gone).
    assert report["skipped"]["moods"] == {"no_atproto_account": 9, "account_gone": 1}
    assert report["skipped"]["kidlisp"] == {"no_atproto_account": 4}
    assert "gone:" in status_text(world)
    assert_mirrored(world)  # no record may exist, no back-reference either
    assert syncd.alive
    # reconcile never tries to re-create records into the repository that is not there.
    plan = run_cli(world.config_path, "reconcile", "--json")
    assert plan.returncode == 0, plan.stderr
    assert old.did not in {a["did"] for a in json.loads(plan.stdout)["accounts"]}
    refused = run_cli(world.config_path, "restore", "--account", old.did, "--apply")
    assert refused.returncode == 2 and "is gone (removed_from_users)" in refused.stderr

    fresh = world.create_account("alice")
    assert fresh.did and fresh.did != old.did
    syncd.wait_until(lambda: published(world, "alice") == 14, 60)
    syncd.wait_idle()
    assert_mirrored(world)  # in the new repository, with back-references to it
    dead = status(world)["dead_letters"]["counts"]
    assert dead == {}, dead
    m = syncd.metrics()
    assert metric_sum(m, "syncd_account_events_total", kind="gone") == 1
    assert metric_sum(m, "syncd_account_events_total", kind="appeared") == 1
    assert metric_sum(m, "syncd_accounts_gone") == 1


def test_two_users_naming_one_did_publish_neither(world: SandboxWorld, syncd: SyncdProcess) -> None:
    """A DID two ``users`` documents name: neither user's documents are written (held as
    retryable ``did_conflict`` dead letters that say why), the records the DID holds stay;
    once one user lets go of it, the other's held documents are published at once."""
    alice_docs = seed_user(world, "alice", 3, 0)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_until(lambda: published(world, "alice") == 3, 30)
    syncd.wait_idle()
    before = {ref: r["value"] for ref, r in world.records_by_ref("alice", MOOD).items()}
    erin = world.add_user("erin", with_atproto=False)
    seed_user(world, "erin", 2, 0)
    alice = world.account("alice")
    # The platform's mistake: erin's users entry names alice's account.
    world.db.users.update_one(
        {"_id": erin.sub},
        {"$set": {"atproto": {"did": alice.did, "handle": alice.handle, "password": "x"}}},
    )
    world.insert(
        "moods",
        make_mood(alice.sub, "alice during the conflict"),
        make_mood(erin.sub, "erin during the conflict"),
    )
    world.db.moods.update_one({"_id": alice_docs[0]["_id"]}, {"$set": {"mood": "edited"}})

    def conflicts() -> list[Any]:
        return [d for d in status(world)["dead_letters"]["recent"] if d["reason"] == "did_conflict"]

    syncd.wait_until(lambda: len(conflicts()) == 5, 30, interval=0.3)
    syncd.wait_idle()
    # Nothing was written: alice's three records are exactly as they were.
    after = {ref: r["value"] for ref, r in world.records_by_ref("alice", MOOD).items()}
    assert after == before
    for d in conflicts():
        assert d["retryable"] and erin.sub in d["detail"] and alice.sub in d["detail"], d
    report = status(world)
    assert (
        report["accounts"]["did_conflicts"] and alice.did in report["accounts"]["did_conflicts"][0]
    )
    assert "DID conflict:" in status_text(world)
    assert report["accounts"]["gone"] == []

    # Erin lets go of it: alice's held documents are published at once, erin's are skips.
    world.db.users.update_one({"_id": erin.sub}, {"$unset": {"atproto": ""}})
    syncd.wait_until(lambda: published(world, "alice") == 4, 30)
    syncd.wait_until(
        lambda: (
            world.records_by_ref("alice", MOOD)[str(alice_docs[0]["_id"])]["value"]["mood"]
            == "edited"
        ),
        30,
    )
    syncd.wait_idle()
    assert_mirrored(world)
    final = status(world)
    assert final["dead_letters"]["counts"] == {} and final["accounts"]["gone"] == []
    assert final["skipped"]["moods"] == {"no_atproto_account": 3}


def test_other_users_are_not_held_up_and_order_per_document_holds(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """While carol's account backfill (2,000 documents) runs: alice's new documents are
    published long before it ends, and carol's own documents edited, hidden and deleted
    meanwhile end as their newest state (the backfill's older read never wins)."""
    world.write_config({"pipeline": {"queue_size": 100}})  # groups of 50: a long backfill
    world.add_user("carol", with_atproto=False)
    carol_docs = seed_user(world, "carol", 1500, 500)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    alice = world.sub("alice")
    assert alice

    rng = random.Random(17)
    edits: list[str] = []
    stop = threading.Event()

    def edit_carols_documents() -> None:
        moods = [d for d in carol_docs if "mood" in d]
        while not stop.is_set():
            doc = rng.choice(moods)
            kind = rng.choice(["edit", "edit", "hide", "show", "delete"])
            if kind == "edit":
                world.db.moods.update_one(
                    {"_id": doc["_id"]}, {"$set": {"mood": f"edit {rng.random()}"}}
                )
            elif kind == "hide":
                world.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"private": True}})
            elif kind == "show":
                world.db.moods.update_one({"_id": doc["_id"]}, {"$unset": {"private": ""}})
            else:
                world.db.moods.delete_one({"_id": doc["_id"]})
            edits.append(kind)
            time.sleep(0.01)

    editor = threading.Thread(target=edit_carols_documents)
    world.create_account("carol")
    editor.start()
    try:
        syncd.wait_until(lambda: syncd.events("account_backfill_started"), 20, interval=0.05)
        inserted = time.monotonic()
        theirs = [make_mood(alice, f"alice meanwhile {i}") for i in range(5)]
        world.insert("moods", *theirs)
        refs = {str(d["_id"]) for d in theirs}
        syncd.wait_until(
            lambda: refs <= set(world.records_by_ref("alice", MOOD)), 60, interval=0.05
        )
        alice_seconds = time.monotonic() - inserted
        alice_done = not syncd.events("account_backfill_finished")
        time.sleep(1.0)
    finally:
        stop.set()
        editor.join()
    (finished,) = syncd.wait_until(lambda: syncd.events("account_backfill_finished"), 120)
    syncd.wait_idle(120)
    print(
        f"\nalice's 5 documents published {alice_seconds:.2f}s after insertion, "
        f"{'before' if alice_done else 'AFTER'} carol's backfill ended "
        f"({finished['seconds']}s, {finished['documents']} documents, "
        f"{finished['left_to_newer_changes']} left to newer changes, {len(edits)} edits)"
    )
    assert alice_done  # nobody waits for carol's backfill
    assert_mirrored(world)  # every carol document as it is now, exactly once


def test_an_account_without_its_password_is_published_once_it_has_one(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """``atproto.did`` arrives before ``atproto.password``: no account syncd can write for
    yet (the documents stay skips); the password arriving is the account appearing."""
    world.add_user("gus", with_atproto=False)
    seed_user(world, "gus", 4, 2)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    gus = world.account("gus")
    created = world.api.create_account(unique_handle("gus"))
    world.db.users.update_one(
        {"_id": gus.sub}, {"$set": {"atproto": {"did": created.did, "handle": created.handle}}}
    )
    world.accounts["gus"] = replace(gus, did=created.did, handle=created.handle)
    syncd.wait_until(
        lambda: metric_sum(syncd.metrics(), "syncd_account_events_total", kind="unchanged") == 1,
        20,
    )
    syncd.wait_idle()
    assert published(world, "gus") == 0
    world.db.users.update_one({"_id": gus.sub}, {"$set": {"atproto.password": created.password}})
    world.accounts["gus"] = replace(world.accounts["gus"], password=created.password)
    syncd.wait_until(lambda: published(world, "gus") == 6, 30)
    syncd.wait_idle()
    assert_mirrored(world)
    assert status(world)["skipped"].get("moods", {}) == {}


def pds_writes(syncd: SyncdProcess) -> float:
    m = syncd.metrics()
    return sum(
        metric_sum(m, "syncd_pds_requests_total", method=f"com.atproto.{method}")
        for method in (
            "repo.applyWrites",
            "repo.putRecord",
            "repo.deleteRecord",
            "repo.uploadBlob",
            "server.createSession",
        )
    )


def test_profile_and_handle_changes_cost_nothing_and_a_new_did_moves_the_records(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """An email or a profile field never reaches syncd; a new handle writes nothing (status
    shows it); the account re-created under a new DID (the old one deleted) gets every
    public document, with back-references to it, and the old DID is gone (replaced)."""
    docs = seed_user(world, "alice", 5, 3)
    world.db.moods.update_one({"_id": docs[0]["_id"]}, {"$set": {"private": True}})
    syncd.start()
    syncd.wait_ready()
    syncd.wait_until(lambda: published(world, "alice") == 7, 30)
    syncd.wait_idle()
    alice = world.account("alice")
    assert alice.did
    before = pds_writes(syncd)
    events = metric_sum(syncd.metrics(), "syncd_events_total", collection="users")
    world.db.users.update_one(
        {"_id": alice.sub}, {"$set": {"email": "alice@example.test", "profile.bio": "hi"}}
    )
    world.db.users.update_one({"_id": alice.sub}, {"$set": {"atproto.handle": "alice3.test"}})
    syncd.wait_until(
        lambda: metric_sum(syncd.metrics(), "syncd_account_events_total", kind="handle") == 1, 20
    )
    syncd.wait_idle()
    m = syncd.metrics()
    assert metric_sum(m, "syncd_events_total", collection="users") == events + 1  # not the email
    assert pds_writes(syncd) == before  # no write, no login
    assert "alice3.test" in status_text(world)

    # Re-created: a new PDS account, the old one deleted, users names the new one.
    created = world.api.create_account(unique_handle("alice"))
    world.api.delete_account(alice.did)
    world.db.users.update_one(
        {"_id": alice.sub},
        {
            "$set": {
                "atproto": {
                    "did": created.did,
                    "handle": created.handle,
                    "password": created.password,
                }
            }
        },
    )
    world.accounts["alice"] = replace(
        alice, did=created.did, handle=created.handle, password=created.password
    )
    syncd.wait_until(lambda: published(world, "alice") == 7, 60)
    syncd.wait_idle()
    assert_mirrored(world)  # in the new repository, back-references naming it
    report = status(world)
    (gone,) = report["accounts"]["gone"]
    assert gone["did"] == alice.did and gone["reason"] == "replaced_by_new_did"
    assert report["dead_letters"]["counts"] == {}
    rows = [per.get(created.did, 0) for per in report["records"].values()]
    assert sum(rows) == 7  # the ledger followed the documents
    assert metric_sum(syncd.metrics(), "syncd_account_events_total", kind="recreated") == 1


def test_account_changes_lost_with_the_history_are_caught_up_by_the_rescan(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """While syncd is down, alice's account is deleted and carol gets one; then the oplog
    loses those events. The rescan takes the accounts as users shows them: alice's DID is
    gone (her back-references removed), carol's documents are published."""
    seed_user(world, "alice", 4, 0)
    world.add_user("carol", with_atproto=False)
    seed_user(world, "carol", 3, 2)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_until(lambda: published(world, "alice") == 4, 30)
    syncd.wait_idle()
    syncd.terminate()
    old = world.account("alice")
    world.delete_account("alice")
    world.create_account("carol")
    world.fault("truncateOplog", keep=1)
    syncd.start()
    syncd.wait_ready(60)
    syncd.wait_until(lambda: published(world, "carol") == 5, 60)
    syncd.wait_idle()
    assert syncd.events("history_lost") and syncd.events("accounts_resynced")
    assert_mirrored(world)  # alice: no record expected, no back-reference left
    (gone,) = status(world)["accounts"]["gone"]
    assert gone["did"] == old.did and gone["reason"] == "removed_from_users"
