"""BSON size limits on stored documents (issue 16, point 3), sandbox and real server.

A document may be at most 16 MiB (``BSONObjMaxUserSize``, 16 777 216 bytes). pymongo
leaves acknowledged writes to the server, which refuses: an insert with code 2 ("object
to insert too large"), an update or replacement whose result is too large with 17419, an
upsert whose new document is too large with 17420 -- and stores nothing.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from pymongo import InsertOne, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure, WriteError

Doc = dict[str, Any]
LIMIT = 16 * 1024 * 1024


def doc_of_size(size: int, _id: Any = 1, **extra: Any) -> Doc:
    """A document whose BSON is exactly ``size`` bytes."""
    doc: Doc = {"_id": _id, **extra, "pad": ""}
    doc["pad"] = "x" * (size - len(bson.encode(doc)))
    assert len(bson.encode(doc)) == size
    return doc


def test_insert_at_the_limit_is_stored_one_byte_more_is_refused(db: Database[Doc]) -> None:
    coll = db["ins"]
    coll.insert_one(doc_of_size(LIMIT, _id=1))
    with pytest.raises(WriteError) as info:
        coll.insert_one(doc_of_size(LIMIT + 1, _id=2))
    assert info.value.code == 2
    assert "too large" in str(info.value)
    assert sorted(d["_id"] for d in coll.find({}, {"_id": 1})) == [1]


@pytest.mark.parametrize("ordered", [True, False])
def test_bulk_insert_refuses_only_the_oversized_document(db: Database[Doc], ordered: bool) -> None:
    coll = db["bulk"]
    ops = [InsertOne({"_id": 1}), InsertOne(doc_of_size(LIMIT + 10, _id=2)), InsertOne({"_id": 3})]
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(ops, ordered=ordered)
    details = info.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 2)]
    assert details["nInserted"] == (1 if ordered else 2)
    assert sorted(d["_id"] for d in coll.find()) == ([1] if ordered else [1, 3])


def test_update_whose_result_is_too_large_changes_nothing(db: Database[Doc]) -> None:
    coll = db["upd"]
    coll.insert_one({"_id": 1, "v": 0})
    big = "y" * (LIMIT - 100)
    coll.update_one({"_id": 1}, {"$set": {"a": big[: LIMIT // 2]}})
    with pytest.raises(WriteError) as info:
        coll.update_one({"_id": 1}, {"$set": {"b": big[: LIMIT // 2 + 1000]}, "$inc": {"v": 1}})
    assert info.value.code == 17419
    doc = coll.find_one({"_id": 1}, {"a": 0})
    assert doc == {"_id": 1, "v": 0}
    with pytest.raises(WriteError) as info:  # the same through the general (filter) path
        coll.update_many({"v": 0}, {"$set": {"b": big[: LIMIT // 2 + 1000]}})
    assert info.value.code == 17419
    assert coll.find_one({"_id": 1}, {"a": 0}) == {"_id": 1, "v": 0}


def test_replacement_too_large_is_refused(db: Database[Doc]) -> None:
    coll = db["rep"]
    coll.insert_one({"_id": 1, "v": 0})
    with pytest.raises(WriteError) as info:
        coll.replace_one({"_id": 1}, doc_of_size(LIMIT + 100, _id=1))
    assert info.value.code == 17419
    assert coll.find_one({"_id": 1}) == {"_id": 1, "v": 0}


def test_upsert_of_a_too_large_document_is_refused(db: Database[Doc]) -> None:
    coll = db["ups"]
    with pytest.raises(WriteError) as info:
        coll.update_one({"_id": 7}, {"$set": {"pad": "z" * (LIMIT + 10)}}, upsert=True)
    assert info.value.code == 17420
    assert coll.count_documents({}) == 0


def test_find_and_modify_too_large_is_refused(db: Database[Doc]) -> None:
    coll = db["fam"]
    coll.insert_one({"_id": 1, "v": 0})
    with pytest.raises(OperationFailure) as info:
        coll.find_one_and_update(
            {"_id": 1},
            {"$set": {"pad": "q" * (LIMIT + 10)}},
            return_document=ReturnDocument.AFTER,
        )
    assert info.value.code == 17419
    assert coll.find_one({"_id": 1}) == {"_id": 1, "v": 0}
