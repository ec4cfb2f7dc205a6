#!/usr/bin/python3
"""$match after $changeStream, through pymongo: exactly the expected events arrive.

Each case opens a change stream whose pipeline is one $match stage (operators $in, $regex,
$exists, dotted paths into fullDocument, $or, $elemMatch, null), then the test writes a
fixed set of documents (inserts, an update, a delete). The events each stream must
deliver are computed here from the written documents by hand-written Python predicates
(not by devmongo's matcher or mongomock). A last insert that every stream lets through
(the filter is wrapped as {$or: [END, filter]}) proves nothing else is still coming, as
change streams deliver events in oplog order.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bson.int64 import Int64  # noqa: E402

from devmongo_testlib import Check, DevMongo, main_guard, next_change  # noqa: E402

check = Check("test_match_stage")

END_ID = "zz-end"

DOCS = [
    {"_id": 1, "owner": "alice", "status": "paid", "qty": 5, "tags": ["red", "blue"],
     "addr": {"city": "Oslo", "zip": "0150"}, "items": [{"sku": "A1", "n": 2}, {"sku": "B7", "n": 9}]},
    {"_id": 2, "owner": "bob", "status": "new", "qty": Int64(12), "tags": ["green"],
     "addr": {"city": "Bergen"}, "items": [{"sku": "A1", "n": 10}]},
    {"_id": 3, "owner": "Alicia", "status": "PAID", "qty": 7.5, "tags": [], "items": []},
    {"_id": 4, "owner": None, "status": "shipped", "addr": {"city": "oslo"},
     "items": [{"sku": "C3", "n": 1}, {"sku": "A1", "n": 4}]},
    {"_id": 5, "status": "new", "qty": "5", "tags": "red", "addr": None},
    {"_id": 6, "owner": "carol", "status": "cancelled", "qty": 0, "tags": ["blue", "red"],
     "items": [{"sku": "B7"}], "addr": {"city": "Oslo", "geo": {"lat": 59.9}}},
]
UPDATE = (2, {"status": "paid"})  # updateOne({_id: 2}, {$set: {status: "paid"}})
DELETE = 3


def expected_events():
    """The change events the writes produce, as the test models them (default fullDocument:
    inserts carry it, updates and deletes do not)."""
    evs = [{"operationType": "insert", "documentKey": {"_id": d["_id"]}, "fullDocument": d} for d in DOCS]
    evs.append({"operationType": "update", "documentKey": {"_id": UPDATE[0]},
                "updateDescription": {"updatedFields": dict(UPDATE[1]), "removedFields": []}})
    evs.append({"operationType": "delete", "documentKey": {"_id": DELETE}})
    return evs


def full(ev):
    return ev.get("fullDocument") or {}


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# (name, $match filter, independent predicate over a modelled event)
CASES = [
    ("$in on a dotted path",
     {"operationType": "insert", "fullDocument.status": {"$in": ["paid", "new"]}},
     lambda ev: ev["operationType"] == "insert" and full(ev).get("status") in ("paid", "new")),
    ("$regex with $options i",
     {"fullDocument.owner": {"$regex": "^ali", "$options": "i"}},
     lambda ev: isinstance(full(ev).get("owner"), str) and re.match("(?i)ali", full(ev)["owner"]) is not None),
    ("$exists false (null is not missing)",
     {"operationType": "insert", "fullDocument.owner": {"$exists": False}},
     lambda ev: ev["operationType"] == "insert" and "owner" not in full(ev)),
    ("$exists true two levels down, with $in on an array",
     {"fullDocument.tags": {"$in": ["red"]}, "fullDocument.addr.geo.lat": {"$exists": True}},
     lambda ev: ("red" == full(ev).get("tags") or "red" in (full(ev).get("tags") or []))
     and isinstance(full(ev).get("addr"), dict) and "lat" in (full(ev)["addr"].get("geo") or {})),
    ("equality on a dotted path into fullDocument",
     {"fullDocument.addr.city": "Oslo"},
     lambda ev: isinstance(full(ev).get("addr"), dict) and full(ev)["addr"].get("city") == "Oslo"),
    ("$or of a range (int64 and double) and an array element",
     {"$or": [{"fullDocument.qty": {"$gte": 7}}, {"fullDocument.tags": "green"}]},
     lambda ev: (is_num(full(ev).get("qty")) and full(ev)["qty"] >= 7)
     or "green" in (full(ev).get("tags") if isinstance(full(ev).get("tags"), list) else [])),
    ("$elemMatch on an array of subdocuments",
     {"fullDocument.items": {"$elemMatch": {"sku": "A1", "n": {"$gt": 3}}}},
     lambda ev: any(isinstance(i, dict) and i.get("sku") == "A1" and is_num(i.get("n")) and i["n"] > 3
                    for i in (full(ev).get("items") or []))),
    ("$in on operationType",
     {"operationType": {"$in": ["update", "delete"]}},
     lambda ev: ev["operationType"] in ("update", "delete")),
    ("updateDescription.updatedFields",
     {"updateDescription.updatedFields.status": "paid"},
     lambda ev: ev.get("updateDescription", {}).get("updatedFields", {}).get("status") == "paid"),
    ("null matches null and missing (events without fullDocument too)",
     {"fullDocument.owner": None},
     lambda ev: full(ev).get("owner") is None),
    ("$nor with $regex and $exists",
     {"$nor": [{"fullDocument.status": {"$regex": "^(new|PAID)$"}}, {"fullDocument": {"$exists": False}}]},
     lambda ev: "fullDocument" in ev and full(ev).get("status") not in ("new", "PAID")),
]


def event_key(ev):
    return (ev["operationType"], ev["documentKey"]["_id"])


def test_match_stages(dm):
    c = dm.client()
    coll = c.matchstage.items
    coll.insert_one({"_id": 0})  # the collection exists before the streams open
    streams = []
    for name, filt, _ in CASES:
        pipeline = [{"$match": {"$or": [{"documentKey._id": END_ID}, filt]}}]
        streams.append(coll.watch(pipeline))
    for d in DOCS:
        coll.insert_one(d)
    coll.update_one({"_id": UPDATE[0]}, {"$set": UPDATE[1]})
    coll.delete_one({"_id": DELETE})
    coll.insert_one({"_id": END_ID})

    model = expected_events()
    for (name, filt, pred), stream in zip(CASES, streams):
        want = [event_key(ev) for ev in model if pred(ev)]
        got = []
        while True:
            ev = next_change(stream, timeout=10.0)
            if ev is None:
                check.ok(False, "%s: stream ended or timed out before the end marker (got %r)" % (name, got))
                break
            if ev["documentKey"]["_id"] == END_ID:
                break
            got.append(event_key(ev))
        check.eq(got, want, "%s %r" % (name, filt))
        check.ok(bool(want), "%s: the case expects at least one event" % name)
        stream.close()


def test_invalid_match_is_refused(dm):
    c = dm.client()
    coll = c.matchstage.bad
    coll.insert_one({"_id": 1})
    check.raises(lambda: coll.watch([{"$match": {"fullDocument.a": {"$nosuchop": 1}}}]).try_next(),
                 2, "unknown operator in $match")
    check.raises(lambda: coll.watch([{"$match": {"$or": []}}]).try_next(),
                 2, "$or with an empty array in $match")


def main():
    with DevMongo() as dm:
        check.run(test_match_stages, dm)
        check.run(test_invalid_match_is_refused, dm)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
