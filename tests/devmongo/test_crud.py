#!/usr/bin/python3
"""CRUD through pymongo 3.11: insert, find with the query operators changegate uses,
update operators and upsert, replace, delete, duplicate keys, and namespace commands."""

from bson.int64 import Int64
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from devmongo_testlib import Check, DevMongo, main_guard

check = Check("test_crud")


def ids(cursor):
    return sorted(d["_id"] for d in cursor)


def test_insert_find(c):
    coll = c.crud.items
    r = coll.insert_one({"x": 1})
    check.ok(r.inserted_id is not None, "insert_one assigns an _id")
    coll.delete_many({})
    coll.insert_many([
        {"_id": 1, "n": 1, "s": "a", "tags": ["red", "blue"], "sub": {"k": 1}},
        {"_id": 2, "n": Int64(2), "s": "b", "tags": ["green"], "sub": {"k": 2}},
        {"_id": 3, "n": 3.0, "s": "c", "arr": [{"k": 5}, {"k": 6}]},
        {"_id": 4, "n": None, "s": "d"},
        {"_id": 5, "s": "e", "flag": True},
    ])
    cases = [
        ({}, [1, 2, 3, 4, 5]),
        ({"n": 2}, [2]),                         # int32 query matches int64
        ({"n": 3}, [3]),                         # int matches double
        ({"n": {"$gt": 1}}, [2, 3]),
        ({"n": {"$gte": 1, "$lt": 3}}, [1, 2]),
        ({"n": {"$lte": 2.5}}, [1, 2]),
        ({"n": {"$ne": 2}}, [1, 3, 4, 5]),
        ({"n": {"$in": [1, 3]}}, [1, 3]),
        ({"n": {"$nin": [1, 3]}}, [2, 4, 5]),
        ({"n": None}, [4, 5]),                   # null matches missing
        ({"n": {"$exists": False}}, [5]),
        ({"n": {"$exists": True}}, [1, 2, 3, 4]),
        ({"tags": "blue"}, [1]),                 # equality against array elements
        ({"tags": ["green"]}, [2]),              # whole-array equality
        ({"sub.k": 2}, [2]),                     # dotted path into a subdocument
        ({"arr.k": 6}, [3]),                     # dotted path through an array
        ({"arr.1.k": 6}, [3]),                   # array index in a path
        ({"$or": [{"s": "a"}, {"s": "e"}]}, [1, 5]),
        ({"$and": [{"n": {"$gt": 0}}, {"s": {"$ne": "b"}}]}, [1, 3]),
        ({"$nor": [{"s": "a"}, {"n": {"$exists": False}}]}, [2, 3, 4]),
        ({"n": {"$not": {"$gt": 1}}}, [1, 4, 5]),
        ({"flag": 1}, []),                       # true is not 1
        ({"s": {"$regex": "^[ab]$"}}, [1, 2]),
        ({"tags": {"$size": 2}}, [1]),
        ({"arr": {"$elemMatch": {"k": {"$gt": 5}}}}, [3]),
    ]
    for q, want in cases:
        check.eq(ids(coll.find(q)), want, "find %r" % (q,))
    check.eq([d["_id"] for d in coll.find({}, sort=[("_id", -1)], limit=2)], [5, 4], "find sort/limit")
    check.eq(list(coll.find({"_id": 1}, {"s": 1, "_id": 0})), [{"s": "a"}], "find projection")
    check.eq(coll.count_documents({"n": {"$gte": 2}}), 2, "count_documents")
    check.eq(coll.estimated_document_count(), 5, "estimated_document_count")
    check.eq(sorted(coll.distinct("s")), ["a", "b", "c", "d", "e"], "distinct")
    # more than one batch: getMore on a find cursor
    coll.insert_many([{"_id": 100 + i} for i in range(250)])
    check.eq(len(list(coll.find({"_id": {"$gte": 100}}, batch_size=50))), 250, "find across getMore batches")


def test_updates(c):
    coll = c.crud.upd
    coll.insert_one({"_id": 1, "a": 1, "b": {"c": 2}, "gone": True})
    r = coll.update_one({"_id": 1}, {"$inc": {"a": 5}, "$set": {"b.d": 3}, "$unset": {"gone": ""}})
    check.eq((r.matched_count, r.modified_count), (1, 1), "update_one counts")
    check.eq(coll.find_one({"_id": 1}), {"_id": 1, "a": 6, "b": {"c": 2, "d": 3}}, "$inc/$set/$unset result")
    r = coll.update_one({"_id": 1}, {"$set": {"a": 6}})
    check.eq((r.matched_count, r.modified_count), (1, 0), "no-op update: nModified 0")
    r = coll.update_one({"_id": 2}, {"$set": {"a": 1}})
    check.eq((r.matched_count, r.upserted_id), (0, None), "update without match")
    r = coll.update_one({"_id": 2, "k": "v"}, {"$set": {"a": 1}, "$setOnInsert": {"new": True}}, upsert=True)
    check.eq(r.upserted_id, 2, "upsert returns upserted _id")
    check.eq(coll.find_one({"_id": 2}), {"_id": 2, "k": "v", "a": 1, "new": True}, "upserted document")
    r = coll.update_one({"k": "w"}, {"$inc": {"n": 1}}, upsert=True)
    check.ok(r.upserted_id is not None, "upsert without _id generates one")
    r = coll.replace_one({"_id": 1}, {"z": 9})
    check.eq(r.modified_count, 1, "replace_one")
    check.eq(coll.find_one({"_id": 1}), {"_id": 1, "z": 9}, "replacement keeps _id")
    r = coll.update_many({}, {"$set": {"all": 1}})
    check.eq((r.matched_count, r.modified_count), (3, 3), "update_many")
    coll.update_one({"_id": 1}, {"$push": {"list": 1}})
    coll.update_one({"_id": 1}, {"$addToSet": {"list": 1}})
    coll.update_one({"_id": 1}, {"$push": {"list": {"$each": [2, 3]}}})
    check.eq(coll.find_one({"_id": 1})["list"], [1, 2, 3], "$push/$addToSet")
    try:
        coll.update_one({"_id": 1}, {"$set": {"_id": 5}})
        check.ok(False, "changing _id must fail")
    except OperationFailure as e:
        check.eq(e.code, 66, "changing _id: ImmutableField")
    try:
        coll.update_one({"_id": 1}, {"$inc": {"z": "x"}})
        check.ok(False, "$inc with a string must fail")
    except OperationFailure as e:
        check.eq(e.code, 14, "$inc non-numeric: TypeMismatch")
    doc = coll.find_one_and_update({"_id": 1}, {"$inc": {"z": 1}}, return_document=ReturnDocument.AFTER)
    check.eq(doc["z"], 10, "find_one_and_update returns the new document")


def test_duplicates_and_deletes(c):
    coll = c.crud.dup
    coll.insert_one({"_id": "k"})
    try:
        coll.insert_one({"_id": "k"})
        check.ok(False, "duplicate _id must fail")
    except DuplicateKeyError as e:
        check.eq(e.code, 11000, "duplicate key code")
        check.ok("E11000 duplicate key error" in str(e), "duplicate key message: %s" % e)
    try:
        coll.insert_many([{"_id": "a"}, {"_id": "k"}, {"_id": "b"}])
        check.ok(False, "ordered insert_many with a duplicate must fail")
    except BulkWriteError as e:
        check.eq(e.details["nInserted"], 1, "ordered insert stops at the duplicate")
        check.eq([(w["index"], w["code"]) for w in e.details["writeErrors"]], [(1, 11000)], "writeErrors")
    try:
        coll.insert_many([{"_id": "k"}, {"_id": "c"}], ordered=False)
    except BulkWriteError as e:
        check.eq(e.details["nInserted"], 1, "unordered insert continues after the duplicate")
    check.eq(ids(coll.find()), ["a", "c", "k"], "documents after duplicate errors")
    check.eq(coll.delete_one({"_id": "a"}).deleted_count, 1, "delete_one")
    check.eq(coll.delete_many({}).deleted_count, 2, "delete_many")
    check.eq(coll.delete_one({"_id": "zz"}).deleted_count, 0, "delete_one without match")


def test_namespaces(c):
    db = c.crudns
    db.create_collection("made")
    try:
        db.command("create", "made")
        check.ok(False, "creating an existing collection must fail")
    except OperationFailure as e:
        check.eq(e.code, 48, "create existing: NamespaceExists")
    db.src.insert_one({"_id": 1})
    check.eq(sorted(db.list_collection_names()), ["made", "src"], "listCollections")
    db.src.rename("dst")
    check.eq(sorted(db.list_collection_names()), ["dst", "made"], "renameCollection")
    check.eq(db.dst.find_one(), {"_id": 1}, "renamed collection keeps documents")
    try:
        c.admin.command("renameCollection", "crudns.nope", to="crudns.x")
        check.ok(False, "renaming a missing collection must fail")
    except OperationFailure as e:
        check.eq(e.code, 26, "rename missing: NamespaceNotFound")
    try:
        db.command("drop", "nope")
        check.ok(False, "dropping a missing collection must fail (6.0 behaviour)")
    except OperationFailure as e:
        check.eq(e.code, 26, "drop missing: NamespaceNotFound")
    db.drop_collection("made")
    check.eq(db.list_collection_names(), ["dst"], "drop")
    c.drop_database("crudns")
    check.ok("crudns" not in c.list_database_names(), "dropDatabase")
    db.idx.create_index("a")
    check.eq(sorted(ix["name"] for ix in db.idx.list_indexes()), ["_id_", "a_1"], "createIndexes/listIndexes")


def main():
    with DevMongo() as dm:
        c = dm.client()
        for t in (test_insert_find, test_updates, test_duplicates_and_deletes, test_namespaces):
            check.run(t, c)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
