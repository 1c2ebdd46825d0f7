"""Owners syncd cannot write for: no ATProto account, unknown user, wrong password,
deactivated PDS account, taken-down PDS account. Each is skipped, its account parked with a
clear reason (a wrong password: its documents wait by key, not as dead letters: they are
not the documents' fault), or its account is gone (the PDS refuses it: deactivated, taken
down; its documents are skips); every other account is unaffected."""

from __future__ import annotations

import sqlite3

from syncd_sandbox import tally
from syncd_sandbox.accounts import WorldAccount, store_user
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood


def test_bad_accounts_are_isolated(rig: Rig) -> None:
    w = rig.world
    carol = w.add_user("carol", with_atproto=False)
    dave = w.add_user("dave")
    erin = w.add_user("erin")
    frank = w.add_user("frank")
    assert dave.did and erin.did and frank.did
    # dave's stored password is wrong; erin deactivated her account; frank was taken down.
    store_user(w.db, WorldAccount("dave", dave.sub, dave.did, dave.handle, "not-the-password"))
    w.api.deactivate_account(w.access_token("erin"))
    w.api.takedown(frank.did)
    rig.exempt_dids.update({dave.did, erin.did, frank.did})

    docs = {
        name: make_mood(sub, f"mood of {name}")
        for name, sub in [
            ("alice", w.sub("alice")),
            ("carol", carol.sub),
            ("unknown", "auth0|unknown-user"),
            ("dave", dave.sub),
            ("erin", erin.sub),
            ("frank", frank.sub),
        ]
    }
    w.insert("moods", *docs.values())
    w.insert("kidlisp", make_kidlisp(w.sub("bob")), make_kidlisp(None))
    rig.syncd.start()
    rig.wait_quiet(40)
    # Nothing reached the unwritable repositories.
    for acc in (dave, erin, frank):
        assert acc.did
        try:
            assert w.list_records(acc.did, "computer.aesthetic.mood") == []
        except Exception as exc:  # a taken-down repo is not readable at all
            assert "Could not find repo" in str(exc) or "Repo" in str(exc), exc
    db = sqlite3.connect(w.state_dir / "syncd.sqlite3")
    try:
        dead = dict(db.execute("SELECT doc_key, reason || ': ' || detail FROM dead_letters"))
        skipped = dict(db.execute("SELECT doc_key, reason FROM skipped"))
        parked = dict(db.execute("SELECT did, reason FROM parked_accounts"))
        waiting = {r[0] for r in db.execute("SELECT doc_key FROM parked")}
        gone = dict(db.execute("SELECT did, reason FROM gone_accounts"))
    finally:
        db.close()
    key = {name: str(doc["_id"]) for name, doc in docs.items()}
    assert skipped[key["carol"]] == "no_atproto_account"
    assert skipped[key["unknown"]] == "unknown_user"
    assert "auth" in parked.get(dave.did, "") and dave.did not in gone
    assert key["dave"] in waiting and key["dave"] not in dead
    for acc, name in ((erin, "erin"), (frank, "frank")):
        reason = gone.get(acc.did or "", "")
        clear = ("AccountDeactivated", "AccountTakedown", "RepoDeactivated", "RepoTakendown")
        assert reason.startswith("refused: ") and any(w in reason for w in clear), (name, reason)
        assert skipped[key[name]] == "account_gone" and key[name] not in dead, name
        assert acc.did not in parked and key[name] not in waiting, name
    print(
        f"\nbad-account reasons: dave parked ({parked.get(dave.did)}), "
        f"erin gone ({gone.get(erin.did)}), frank gone ({gone.get(frank.did)})"
    )
    tally.count("bad_documents", 5)
    assert rig.syncd.exited_unexpectedly() is None
    assert rig.syncd.stop() == 0
