#!/usr/bin/python3
"""Change streams through pymongo 3.11 and raw aggregate/getMore commands: every event
type on collection, database and cluster streams, invalidation, updateLookup, pre-images,
resumeAfter/startAfter/startAtOperationTime, postBatchResumeToken, user pipelines and the
errors a real server gives."""

import re

from bson.int64 import Int64

from devmongo_testlib import Check, DevMongo, main_guard, next_change

check = Check("test_change_streams")
TOKEN_RE = re.compile(r"^[0-9A-F]+$")


def drain(stream, n, what):
    """Read exactly n events; record a failure if fewer arrive."""
    out = []
    for _ in range(n):
        ev = next_change(stream)
        if ev is None:
            check.ok(False, "%s: only %d of %d events arrived" % (what, len(out), n))
            break
        out.append(ev)
    return out


def ops(events):
    return [e["operationType"] for e in events]


def agg(db, target, stage, pipeline=(), **kw):
    return db.command("aggregate", target, pipeline=[{"$changeStream": stage}] + list(pipeline),
                      cursor={}, **kw)


def get_more(db, cursor, coll, max_time=200):
    return db.command("getMore", Int64(cursor["id"]), collection=coll, maxTimeMS=max_time)["cursor"]


def test_collection_stream(c):
    coll = c.cs.coll
    with coll.watch() as s:
        coll.insert_one({"_id": 1, "a": 1})
        coll.update_one({"_id": 1}, {"$set": {"b": 2}, "$unset": {"a": ""}})
        coll.replace_one({"_id": 1}, {"r": 1})
        coll.delete_one({"_id": 1})
        c.cs.other.insert_one({"_id": "not for this stream"})
        coll.drop()
        evs = drain(s, 6, "collection stream")
        check.eq(ops(evs), ["insert", "update", "replace", "delete", "drop", "invalidate"],
                 "collection stream event types")
        if len(evs) == 6:
            ins, upd, rep, dele, drop, inv = evs
            check.eq(ins["fullDocument"], {"_id": 1, "a": 1}, "insert fullDocument")
            check.eq(ins["ns"], {"db": "cs", "coll": "coll"}, "insert ns")
            check.eq(ins["documentKey"], {"_id": 1}, "insert documentKey")
            check.eq(upd["updateDescription"], {"updatedFields": {"b": 2}, "removedFields": ["a"],
                                                "truncatedArrays": []}, "updateDescription")
            check.ok("fullDocument" not in upd, "update without updateLookup has no fullDocument")
            check.eq(rep["fullDocument"], {"_id": 1, "r": 1}, "replace fullDocument")
            check.eq(dele["documentKey"], {"_id": 1}, "delete documentKey")
            check.eq(drop["ns"], {"db": "cs", "coll": "coll"}, "drop ns")
            check.ok("ns" not in inv, "invalidate has no ns")
            for e in evs:
                check.ok(set(e) >= {"_id", "operationType", "clusterTime", "wallTime"},
                         "common fields in %s" % e["operationType"])
            tokens = [e["_id"]["_data"] for e in evs]
            check.ok(all(TOKEN_RE.match(t) for t in tokens), "tokens are upper-case hex: %r" % tokens)
            check.eq(tokens, sorted(set(tokens)), "token order is event order")
            times = [e["clusterTime"] for e in evs]
            check.ok(all(a < b for a, b in zip(times, times[1:-1])), "clusterTime strictly increases")
        check.ok(next_change(s, 1) is None and not s.alive, "stream is closed after invalidate")


def test_rename_invalidates(c):
    coll = c.cs.ren
    coll.insert_one({"_id": 1})
    with coll.watch() as s:
        coll.rename("ren2")
        evs = drain(s, 2, "rename")
        check.eq(ops(evs), ["rename", "invalidate"], "rename invalidates a collection stream")
        if evs:
            check.eq(evs[0].get("to"), {"db": "cs", "coll": "ren2"}, "rename event 'to'")


def test_database_and_cluster_streams(c):
    db = c.csdb
    db.a.insert_one({"_id": 0})
    with db.watch() as ds, c.watch() as ks:
        db.a.insert_one({"_id": 1})
        db.b.insert_one({"_id": 2})
        c.csother.x.insert_one({"_id": 3})
        c.drop_database("csdb")
        c.csother.x.insert_one({"_id": 4})
        devs = drain(ds, 6, "database stream")
        check.eq(ops(devs), ["insert", "insert", "drop", "drop", "dropDatabase", "invalidate"],
                 "database stream: dropDatabase then invalidate")
        if len(devs) == 6:
            check.eq(devs[4]["ns"], {"db": "csdb"}, "dropDatabase ns")
            check.eq(sorted(e["ns"]["coll"] for e in devs[2:4]), ["a", "b"], "drop events for each collection")
        kevs = drain(ks, 7, "cluster stream")
        check.eq(ops(kevs), ["insert", "insert", "insert", "drop", "drop", "dropDatabase", "insert"],
                 "cluster stream sees every db and is not invalidated")
        if len(kevs) == 7:
            check.eq(kevs[-1]["fullDocument"], {"_id": 4}, "cluster stream continues after dropDatabase")


def test_update_lookup(c):
    coll = c.cs.lookup
    coll.insert_one({"_id": 1, "v": 0})
    coll.insert_one({"_id": 2, "v": 0})
    with coll.watch(full_document="updateLookup") as s:
        coll.update_one({"_id": 1}, {"$inc": {"v": 1}})
        coll.update_one({"_id": 1}, {"$inc": {"v": 1}})
        coll.update_one({"_id": 2}, {"$inc": {"v": 1}})
        coll.delete_one({"_id": 2})
        evs = drain(s, 4, "updateLookup")
        if len(evs) == 4:
            check.eq(evs[0]["fullDocument"], {"_id": 1, "v": 2}, "updateLookup gives the current document")
            check.eq(evs[2]["fullDocument"], None, "updateLookup of a since-deleted document is null")


def test_pre_images(c):
    db = c.cspre
    db.create_collection("p")
    db.command("collMod", "p", changeStreamPreAndPostImages={"enabled": True})
    db.create_collection("q")
    start = agg(db, "p", {})["cursor"]["postBatchResumeToken"]
    db.p.insert_one({"_id": 1, "v": 1})
    db.p.update_one({"_id": 1}, {"$set": {"v": 2}})
    db.p.delete_one({"_id": 1})
    cur = agg(db, "p", {"resumeAfter": start, "fullDocumentBeforeChange": "required",
                        "fullDocument": "whenAvailable"})["cursor"]
    evs = cur["firstBatch"]
    check.eq(ops(evs), ["insert", "update", "delete"], "pre-image stream events")
    if len(evs) == 3:
        check.eq(evs[1].get("fullDocumentBeforeChange"), {"_id": 1, "v": 1}, "update pre-image")
        check.eq(evs[1].get("fullDocument"), {"_id": 1, "v": 2}, "update post-image (whenAvailable)")
        check.eq(evs[2].get("fullDocumentBeforeChange"), {"_id": 1, "v": 2}, "delete pre-image")
    qstart = agg(db, "q", {})["cursor"]["postBatchResumeToken"]
    db.q.insert_one({"_id": 1})
    db.q.delete_one({"_id": 1})
    cur = agg(db, "q", {"resumeAfter": qstart, "fullDocumentBeforeChange": "whenAvailable"})["cursor"]
    check.eq([e.get("fullDocumentBeforeChange", "absent") for e in cur["firstBatch"]], ["absent", None],
             "whenAvailable without pre-images enabled gives null")
    check.raises(lambda: agg(db, "q", {"resumeAfter": qstart, "fullDocumentBeforeChange": "required"}),
                 47, "required pre-image missing")


def test_resume(c):
    coll = c.cs.res
    with coll.watch() as s:
        coll.insert_many([{"_id": i} for i in range(6)])
        evs = drain(s, 6, "resume source")
    if len(evs) != 6:
        return
    tok2 = evs[2]["_id"]
    with coll.watch(resume_after=tok2) as s:
        got = [e["documentKey"]["_id"] for e in drain(s, 3, "resumeAfter")]
        check.eq(got, [3, 4, 5], "resumeAfter gives exactly the later events")
        check.ok(next_change(s, 0.5) is None, "nothing more after resumeAfter")
    with coll.watch(start_after=tok2) as s:
        got = [e["documentKey"]["_id"] for e in drain(s, 3, "startAfter")]
        check.eq(got, [3, 4, 5], "startAfter gives exactly the later events")
    with coll.watch(start_at_operation_time=evs[2]["clusterTime"]) as s:
        got = [e["documentKey"]["_id"] for e in drain(s, 4, "startAtOperationTime")]
        check.eq(got, [2, 3, 4, 5], "startAtOperationTime includes the event at that time")
    # postBatchResumeToken: after filtered-out writes it moves forward; resuming from it
    # gives exactly what came later.
    db = c.cs
    cur = agg(db, "res", {})["cursor"]
    check.ok(cur["id"] != 0 and isinstance(cur["id"], Int64), "aggregate cursor id is a non-zero Int64")
    check.eq(cur["ns"], "cs.res", "aggregate cursor ns")
    pbrt0 = cur["postBatchResumeToken"]
    c.cs.unrelated.insert_one({"x": 1})
    nb = get_more(db, cur, "res")
    check.eq(nb["nextBatch"], [], "getMore on a quiet collection returns an empty batch")
    pbrt1 = nb["postBatchResumeToken"]
    check.ok(pbrt1["_data"] > pbrt0["_data"], "postBatchResumeToken advances past unrelated writes")
    coll.insert_one({"_id": "after"})
    r = agg(db, "res", {"resumeAfter": pbrt1})["cursor"]
    check.eq([e["documentKey"]["_id"] for e in r["firstBatch"]], ["after"], "resume from postBatchResumeToken")
    check.eq(r["postBatchResumeToken"], r["firstBatch"][-1]["_id"] if r["firstBatch"] else None,
             "postBatchResumeToken is the last event's _id once drained")
    db.command("killCursors", "res", cursors=[Int64(cur["id"])])


def test_invalidate_tokens(c):
    db = c.csinv
    db.t.insert_one({"_id": 1})
    cur = agg(db, "t", {})["cursor"]
    db.t.drop()
    nb = get_more(db, cur, "t")
    check.eq(ops(nb["nextBatch"]), ["drop", "invalidate"], "drop + invalidate in one getMore")
    check.eq(nb["id"], 0, "the batch with invalidate carries cursor id 0")
    if len(nb["nextBatch"]) == 2:
        drop_tok, inv_tok = nb["nextBatch"][0]["_id"], nb["nextBatch"][1]["_id"]
        check.raises(lambda: agg(db, "t", {"resumeAfter": inv_tok}), 260, "resumeAfter an invalidate token")
        db.t.insert_one({"_id": 2})
        r = agg(db, "t", {"startAfter": inv_tok})["cursor"]
        check.eq(ops(r["firstBatch"]), ["insert"], "startAfter an invalidate token continues after it")
        r = agg(db, "t", {"resumeAfter": drop_tok})["cursor"]
        check.eq(ops(r["firstBatch"]), ["invalidate"], "resumeAfter the drop gives the invalidate")
        check.eq(r["id"], 0, "that aggregate's cursor id is 0")


def test_pipelines(c):
    db = c.cspipe
    cur = agg(db, "p", {}, [{"$match": {"operationType": "insert", "fullDocument.n": {"$gte": 2},
                                        "fullDocument.tag": {"$in": ["x", "y"]}}}])["cursor"]
    proj = agg(db, "p", {}, [{"$project": {"operationType": 1, "fullDocument.n": 1}}])["cursor"]
    excl = agg(db, "p", {}, [{"$project": {"fullDocument": 0, "ns": 0}}])["cursor"]
    db.p.insert_many([{"_id": 1, "n": 1, "tag": "x"}, {"_id": 2, "n": 2, "tag": "x"},
                      {"_id": 3, "n": Int64(3), "tag": "z"}, {"_id": 4, "n": 4.5, "tag": "y"}])
    db.p.update_one({"_id": 2}, {"$set": {"n": 9}})
    got = get_more(db, cur, "p")["nextBatch"]
    check.eq([e["documentKey"]["_id"] for e in got], [2, 4], "$match after $changeStream")
    got = get_more(db, proj, "p")["nextBatch"]
    if got:
        check.eq(set(got[0]), {"_id", "operationType", "fullDocument"}, "$project inclusion keeps _id")
        check.eq(got[0]["fullDocument"], {"n": 1}, "$project inclusion of a dotted path")
    got = get_more(db, excl, "p")["nextBatch"]
    if got:
        check.ok("fullDocument" not in got[0] and "ns" not in got[0] and "documentKey" in got[0],
                 "$project exclusion")
    check.raises(lambda: agg(db, "p", {}, [{"$bogus": {}}]), 40324, "unknown stage")
    bad = agg(db, "p", {}, [{"$project": {"_id": 0}}])["cursor"]
    db.p.insert_one({"_id": 10})
    check.raises(lambda: get_more(db, bad, "p"), 280, "pipeline removing _id", label="NonResumableChangeStreamError")


def test_errors(c):
    db = c.cserr
    tok = agg(db, "e", {})["cursor"]["postBatchResumeToken"]
    db.e.insert_one({"_id": 1})
    r = agg(db, "e", {"resumeAfter": tok})["cursor"]
    ts = r["firstBatch"][0]["clusterTime"]
    check.raises(lambda: agg(db, "e", {"resumeAfter": tok, "startAtOperationTime": ts}), 40674,
                 "resume token and startAtOperationTime together")
    # A well-formed token for which no event exists: as on mongod the aggregate succeeds
    # and the stream fails at its first event after the token (test_resume_errors.py has
    # the details).
    data = r["firstBatch"][0]["_id"]["_data"]
    fake = {"_data": data[:10] + "%08X" % (int(data[10:18], 16) + 1) + data[18:]}
    cur = agg(db, "e", {"resumeAfter": fake})["cursor"]
    check.eq((cur["firstBatch"], cur["postBatchResumeToken"]), ([], fake),
             "token with no such event: empty first batch, the token as postBatchResumeToken")
    db.e.insert_one({"_id": 2})
    check.raises(lambda: get_more(db, cur, "e"), 280, "token with no such event: the next event fails",
                 label="NonResumableChangeStreamError")
    check.raises(lambda: db.command("getMore", Int64(12345), collection="e"), 43, "getMore unknown cursor")
    kc = db.command("killCursors", "e", cursors=[Int64(999)])
    check.eq((kc["cursorsKilled"], kc["cursorsNotFound"], kc["cursorsAlive"], kc["cursorsUnknown"]),
             ([], [999], [], []), "killCursors of an unknown id is not an error")
    r = agg(c.nosuchdb, "nosuchcoll", {})
    check.ok(r["cursor"]["id"] != 0, "watching a namespace that does not exist succeeds")
    r = agg(db, 1, {})
    check.eq(r["cursor"]["ns"], "cserr.$cmd.aggregate", "database stream ns")
    r = agg(c.admin, 1, {"allChangesForCluster": True})
    check.eq(r["cursor"]["ns"], "admin.$cmd.aggregate", "cluster stream ns")
    check.raises(lambda: db.command("aggregate", "e", pipeline=[{"$changeStream": {}}], cursor={},
                                    fullDocument="updateLookup"), 40415,
                 "stage option given at the command's top level")


def main():
    with DevMongo() as dm:
        c = dm.client()
        for t in (test_collection_stream, test_rename_invalidates, test_database_and_cluster_streams,
                  test_update_lookup, test_pre_images, test_resume, test_invalidate_tokens,
                  test_pipelines, test_errors):
            check.run(t, c)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
