"""A steady stream of mixed source changes across several accounts (seeded RNG).

Inserts in all four collections, content updates, hard deletes, soft deletes
(``nuked``; ``deleted`` for moods), privacy flips (``private``), restores, and
owner changes, across the given owners (include the guest ``None`` and a user
without an ATProto account). Painting images are written where the image
server serves them before the document is inserted, as the platform does.

MongoDB may be faulted or down while the generator runs: failed operations are
counted and skipped (MongoDB stays the truth the invariant is checked against).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import PyMongoError

from syncd_sandbox.seed import (
    make_kidlisp,
    make_mood,
    make_painting,
    make_piece,
    short_code,
    write_painting_files,
)

COLLECTIONS = ("paintings", "moods", "pieces", "kidlisp")
WORDS = ("sun", "rain", "paint", "blue", "happy", "tired", "🌈", "code", "kid", "lisp", "ok")


class LoadGenerator:
    """``step()`` one random change; ``start(rate)``/``stop()`` run it in a thread."""

    def __init__(
        self,
        db: Database[Any],
        image_dir: str | Path,
        owners: Sequence[str | None],
        *,
        seed: int = 0,
        paintings: bool = True,
    ) -> None:
        self.db = db
        self.image_dir = Path(image_dir)
        self.owners = list(owners)
        self.rng = random.Random(seed)
        self.paintings = paintings
        self.ids: dict[str, list[ObjectId]] = {c: [] for c in COLLECTIONS}
        self.counts: Counter[str] = Counter()
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _owner(self, collection: str) -> str | None:
        owner = self.rng.choice(self.owners)
        if owner is None and collection == "moods":  # every mood has a user
            owner = next(o for o in self.owners if o is not None)
        return owner

    def _insert(self, collection: str) -> None:
        owner = self._owner(collection)
        n = self.rng.randrange(1_000_000)
        doc: dict[str, Any]
        if collection == "paintings":
            slug = f"load.{n}.{self.rng.randrange(1 << 30):x}"
            doc = make_painting(owner, slug, short_code(self.rng))
            write_painting_files(
                self.image_dir,
                owner,
                slug,
                width=self.rng.choice((40, 64, 700)),
                height=self.rng.choice((40, 80, 600)),
                seed=n,
                recording=self.rng.random() < 0.2,
            )
        elif collection == "moods":
            assert owner is not None
            doc = make_mood(owner, f"{self.rng.choice(WORDS)} {n}")
        elif collection == "pieces":
            doc = make_piece(owner, f"piece-{n}", code=self.rng.choice((None, f"p{n % 999}")))
        else:
            doc = make_kidlisp(owner, short_code(self.rng), f"(wipe {self.rng.choice(WORDS)})")
        if self.rng.random() < 0.1:
            doc["private"] = True
        self.db[collection].insert_one(doc)
        self.ids[collection].append(doc["_id"])
        self.counts[f"insert:{collection}"] += 1

    def step(self) -> str:
        """Make one change; returns its kind."""
        choices = [c for c in COLLECTIONS if self.paintings or c != "paintings"]
        collection = self.rng.choice(choices)
        ids = self.ids[collection]
        r = self.rng.random()
        try:
            if not ids or r < 0.4:
                self._insert(collection)
                return "insert"
            doc_id = self.rng.choice(ids)
            coll = self.db[collection]
            if r < 0.6:
                field = {
                    "paintings": "code",
                    "moods": "mood",
                    "pieces": "slug",
                    "kidlisp": "source",
                }[collection]
                value = (
                    short_code(self.rng)
                    if field == "code"
                    else f"{self.rng.choice(WORDS)} {self.rng.randrange(10**6)}"
                )
                coll.update_one({"_id": doc_id}, {"$set": {field: value}})
                kind = "update"
            elif r < 0.7:
                coll.delete_one({"_id": doc_id})
                ids.remove(doc_id)
                kind = "delete"
            elif r < 0.8:
                flag = "deleted" if collection == "moods" else "nuked"
                coll.update_one({"_id": doc_id}, {"$set": {flag: True}})
                kind = "soft_delete"
            elif r < 0.92:
                coll.update_one({"_id": doc_id}, {"$set": {"private": self.rng.random() < 0.5}})
                kind = "privacy_flip"
            else:
                coll.update_one(
                    {"_id": doc_id}, {"$unset": {"nuked": "", "deleted": "", "private": ""}}
                )
                kind = "restore"
        except PyMongoError:
            self.errors += 1
            return "error"
        self.counts[kind] += 1
        return kind

    def run_for(self, seconds: float, rate: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            self.step()
            time.sleep(1.0 / rate)

    def start(self, rate: float = 20.0) -> LoadGenerator:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(1.0 / rate)

        self._thread = threading.Thread(target=loop, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
