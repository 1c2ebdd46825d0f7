"""The firehose reader (syncd_sandbox/firehose.py) sees what a repository read cannot:
a record created and deleted again is two operations on the firehose, with the record."""

from __future__ import annotations

from syncd_sandbox.firehose import Firehose
from syncd_sandbox.pds import PdsHandle, new_tid, unique_handle

NSID = "computer.aesthetic.mood"


def test_firehose_shows_a_record_that_lived_for_a_moment(sandbox_pds: PdsHandle) -> None:
    with sandbox_pds.api() as api, Firehose(sandbox_pds.url) as hose:
        acct = api.create_account(unique_handle("hose"))
        rkey = new_tid()
        record = {"$type": NSID, "mood": "brief", "when": "2025-03-01T12:00:00.000Z", "ref": "r1"}
        api.procedure(
            "com.atproto.repo.putRecord",
            {"repo": acct.did, "collection": NSID, "rkey": rkey, "record": record},
            token=acct.access_jwt,
        )
        api.procedure(
            "com.atproto.repo.deleteRecord",
            {"repo": acct.did, "collection": NSID, "rkey": rkey},
            token=acct.access_jwt,
        )
        assert api.get_record(acct.did, NSID, rkey) is None  # the repository forgot it
        ops = hose.wait_for(
            lambda ops: [o for o in ops if o.repo == acct.did and o.rkey == rkey][1:] and ops
        )
        mine = [o for o in ops if o.repo == acct.did and o.rkey == rkey]
    assert [o.action for o in mine] == ["create", "delete"]
    assert mine[0].collection == NSID and mine[0].cid is not None
    assert mine[0].record is not None and mine[0].record["mood"] == "brief"
    assert mine[0].record["ref"] == "r1"
    assert mine[1].cid is None and mine[1].record is None
    assert mine[0].seq < mine[1].seq
