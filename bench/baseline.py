"""The "before" column: the approach of the Node scripts syncd replaces, in Python.

As the seed report and source-system.md describe ``sync-atproto.mjs`` /
``media-atproto.mjs``: load each collection whole (``find().toArray()``), then
ten documents at a time (``Promise.all`` of a batch of 10, then the next batch),
and for each document:

1. look up the owner's ``atproto`` credentials (the guest ``art-guest`` when the
   document has no ``user``) and log in: ``createSession``;
2. build the record (the platform's shapes: ``mood`` text, ``acUrl``, ``imageUrl``...);
3. for a painting, fetch the image, make a 512 px thumbnail ("/api/pixel/512:contain")
   and ``uploadBlob`` it;
4. ``createRecord`` with no record key (the PDS assigns one);
5. write the key back: ``updateOne({_id}, {$set: {"atproto.rkey": rkey}})``.

Not crippled: one pooled HTTP client (keep-alive, as Node's fetch), async MongoDB,
thumbnails in worker threads (Pillow releases the GIL), and no artificial delays.
A failed document is counted and skipped (the scripts logged and moved on).

Run: ``python -m bench.baseline --config SYNCD_TOML [--collections ...]``; prints one
JSON line with counts and timings.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from typing import Any

import httpx
from PIL import Image
from pymongo import AsyncMongoClient

from syncd.config import load
from syncd.images.urls import painting_source_from_doc

NSID = {
    "paintings": "computer.aesthetic.painting",
    "moods": "computer.aesthetic.mood",
    "pieces": "computer.aesthetic.piece",
    "kidlisp": "computer.aesthetic.kidlisp",
}
ORDER = ("moods", "pieces", "kidlisp", "paintings")
BATCH = 10
SITE = "https://aesthetic.computer"


def iso(dt: Any) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def build_record(coll: str, doc: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"$type": NSID[coll], "when": iso(doc["when"]), "ref": str(doc["_id"])}
    if coll == "moods":
        rec["mood"] = doc["mood"]
    elif coll == "pieces":
        rec["slug"] = doc["slug"]
    elif coll == "kidlisp":
        rec.update(code=doc["code"], source=doc["source"], acUrl=f"{SITE}/{doc['code']}")
    else:
        rec.update(
            slug=doc["slug"],
            code=doc["code"],
            imageUrl=f"{SITE}/media/paintings/{doc['code']}",
            acUrl=f"{SITE}/#{doc['code']}",
        )
    return rec


def thumbnail_png(data: bytes, side: int = 512) -> bytes:
    with Image.open(io.BytesIO(data)) as src:
        im: Image.Image = src.convert("RGBA") if src.mode not in ("RGB", "RGBA") else src
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()


class Baseline:
    def __init__(self, config_path: str) -> None:
        self.config = load(config_path, environ={})
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.config.mongo.uri, tz_aware=True
        )
        self.db = self.mongo[self.config.mongo.database]
        self.http = httpx.AsyncClient(
            base_url=self.config.pds.url.rstrip("/"),
            timeout=60.0,
            limits=httpx.Limits(max_connections=BATCH * 2, max_keepalive_connections=BATCH * 2),
        )
        self.images = httpx.AsyncClient(timeout=60.0)
        self.counts: dict[str, int] = {"created": 0, "failed": 0, "sessions": 0, "blobs": 0}
        self.errors: dict[str, int] = {}

    async def _xrpc(self, method: str, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        resp = await self.http.post(f"/xrpc/{method}", headers=headers, **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method}: HTTP {resp.status_code} {resp.text[:120]}")
        return resp.json()

    async def create_media_record(self, coll: str, doc: dict[str, Any]) -> None:
        owner = doc.get("user") or self.config.mongo.guest_user_id
        user = await self.db[self.config.mongo.users_collection].find_one({"_id": owner})
        atp = (user or {}).get("atproto") or {}
        if not atp.get("did"):
            return  # no ATProto account: not mirrored
        session = await self._xrpc(
            "com.atproto.server.createSession",
            json={"identifier": atp.get("handle") or atp["did"], "password": atp["password"]},
        )
        self.counts["sessions"] += 1
        token, did = session["accessJwt"], session["did"]
        record = build_record(coll, doc)
        if coll == "paintings":
            url = painting_source_from_doc(doc, self.config.images).image_url
            resp = await self.images.get(url)
            resp.raise_for_status()
            thumb = await asyncio.to_thread(thumbnail_png, resp.content)
            blob = await self._xrpc(
                "com.atproto.repo.uploadBlob",
                token,
                content=thumb,
                headers={"Content-Type": "image/png"},
            )
            self.counts["blobs"] += 1
            record["thumbnail"] = blob["blob"]
        out = await self._xrpc(
            "com.atproto.repo.createRecord",
            token,
            json={"repo": did, "collection": NSID[coll], "record": record},
        )
        rkey = out["uri"].rsplit("/", 1)[1]
        await self.db[coll].update_one({"_id": doc["_id"]}, {"$set": {"atproto.rkey": rkey}})
        self.counts["created"] += 1

    async def run(self, collections: list[str]) -> dict[str, Any]:
        started = time.monotonic()
        per: dict[str, float] = {}
        for coll in collections:
            t0 = time.monotonic()
            query = {
                "nuked": {"$ne": True},
                "deleted": {"$ne": True},
                "atproto.rkey": {"$exists": False},
            }
            docs = await self.db[coll].find(query).to_list()  # the whole collection
            for i in range(0, len(docs), BATCH):
                batch = docs[i : i + BATCH]
                results = await asyncio.gather(
                    *(self.create_media_record(coll, d) for d in batch), return_exceptions=True
                )
                for r in results:
                    if isinstance(r, BaseException):
                        self.counts["failed"] += 1
                        key = str(r)[:80]
                        self.errors[key] = self.errors.get(key, 0) + 1
            per[coll] = round(time.monotonic() - t0, 2)
        return {
            **self.counts,
            "seconds": round(time.monotonic() - started, 3),
            "per_collection_s": per,
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])[:5]),
        }

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.images.aclose()
        await self.mongo.close()


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    b = Baseline(args.config)
    try:
        return await b.run(args.collections.split(","))
    finally:
        await b.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline")
    ap.add_argument("--config", required=True)
    ap.add_argument("--collections", default=",".join(ORDER))
    args = ap.parse_args(argv)
    print(json.dumps(asyncio.run(amain(args))))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
