"""A few live changes for the demo (dev/test only): insert, edit, soft delete, and a
tape whose MP4 conversion completes, and a
user without an ATProto account getting one (the platform's way: the PDS account,
then ``users.atproto``), whose earlier documents syncd then publishes.

``python -m syncd_sandbox.demo_live --dir DIR`` acts on a running sandbox world
so a newcomer watching ``syncd run`` sees the change stream being mirrored.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from pymongo import MongoClient

from syncd_sandbox.seed import store_url, write_tape_file
from syncd_sandbox.world import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    world = World.load(args.dir)
    client: MongoClient[dict[str, object]] = MongoClient(world.mongo_uri, tz_aware=True)
    db = client[world.database]
    owner = db.moods.find_one({"deleted": {"$ne": True}})
    if owner is None:
        print("demo_live: no moods seeded")
        return 0
    new = db.moods.insert_one(
        {"user": owner["user"], "mood": "feeling live", "when": datetime.now(UTC)}
    ).inserted_id
    print(f"\n== live: inserted mood {new}")
    time.sleep(1)
    db.moods.update_one({"_id": new}, {"$set": {"mood": "feeling live (edited)"}})
    print(f"== live: edited mood {new}")
    victim = db.moods.find_one(
        {"_id": {"$ne": new}, "deleted": {"$ne": True}, "atproto.rkey": {"$exists": True}}
    )
    if victim is not None:
        db.moods.update_one({"_id": victim["_id"]}, {"$set": {"deleted": True}})
        print(f"== live: soft-deleted mood {victim['_id']} (its record goes away)")
    time.sleep(1)
    doc = db.moods.find_one({"_id": new}) or {}
    backref = doc.get("atproto")
    uri = backref.get("uri") if isinstance(backref, dict) else None
    print(f"== live: back-reference written by syncd: {uri}")
    tape = db.tapes.find_one({"mp4Status": "processing", "nuked": {"$ne": True}})
    if tape is not None:
        # The platform's converter finished: the MP4 is stored and the tape says so.
        root = world.info["images"]["root"]
        user = tape.get("user")
        sub = user if isinstance(user, str) else None
        obj, mp4 = write_tape_file(root, sub, str(tape["slug"]), 256_000, 9)
        db.tapes.update_one(
            {"_id": tape["_id"]},
            {"$set": {"mp4Status": "complete", "mp4": store_url(obj, world.image_base_url)}},
        )
        print(f"== live: tape {tape['_id']} converted ({mp4.size:,} byte MP4): published now")
        time.sleep(2)
        at = (db.tapes.find_one({"_id": tape["_id"]}) or {}).get("at")
        tape_uri = at.get("uri") if isinstance(at, dict) else None
        print(f"== live: the tape's back-reference (in `at`): {tape_uri}")
    waiting = next((n for n, a in world.accounts.items() if not a.has_atproto), None)
    if waiting is not None:
        sub = world.accounts[waiting].sub
        count = sum(db[c].count_documents({"user": sub}) for c in ("moods", "paintings"))
        acc = world.account("create", waiting)
        print(
            f"== live: {waiting} got an ATProto account ({acc.handle}): syncd publishes the "
            f"{count} documents they already had (an account backfill; see syncd status)"
        )
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
