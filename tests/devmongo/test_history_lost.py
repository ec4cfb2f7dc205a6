#!/usr/bin/python3
"""History loss: with a small --oplog-size, resuming from a point that fell off the oplog
fails with 286 ChangeStreamHistoryLost (label NonResumableChangeStreamError), an open
cursor that fell behind gets 136 CappedPositionLost. After a restart without --dbpath
devmongo is a new deployment whose oplog still starts with "initiating set", and mongod
never calls a point before that history lost: an old event token opens a stream that
fails with 280 ChangeStreamFatalError at its first event instead."""

from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure

from devmongo_testlib import Check, DevMongo, main_guard, next_change

check = Check("test_history_lost")


def agg(db, coll, stage):
    return db.command("aggregate", coll, pipeline=[{"$changeStream": stage}], cursor={})


def test_small_oplog(dm):
    c = dm.client()
    coll = c.hl.c
    coll.insert_one({"_id": "first"})
    with coll.watch() as s:
        coll.insert_one({"_id": 0})
        first = next_change(s)
    check.ok(first is not None, "first event arrives")
    if first is None:
        return
    # Within the window, resuming works.
    r = agg(c.hl, "c", {"resumeAfter": first["_id"]})
    check.ok(r["ok"] == 1.0, "resume inside the oplog window")
    # Push the event off the 8-entry oplog.
    for i in range(1, 20):
        coll.insert_one({"_id": i})
    check.raises(lambda: agg(c.hl, "c", {"resumeAfter": first["_id"]}), 286, "resumeAfter a rolled-off token",
                 label="NonResumableChangeStreamError")
    check.raises(lambda: agg(c.hl, "c", {"startAfter": first["_id"]}), 286, "startAfter a rolled-off token")
    check.raises(lambda: agg(c.hl, "c", {"startAtOperationTime": first["clusterTime"]}), 286,
                 "startAtOperationTime before the oldest entry")
    # The same through pymongo's watch(): the error reaches the application.
    try:
        with coll.watch(resume_after=first["_id"]) as s:
            s.try_next()
        check.ok(False, "pymongo watch(resume_after=old) must fail")
    except OperationFailure as e:
        check.eq(e.code, 286, "pymongo sees ChangeStreamHistoryLost")
    # An open cursor whose position rolls off: CappedPositionLost on its next getMore.
    cur = agg(c.hl, "c", {})["cursor"]
    for i in range(20, 40):
        coll.insert_one({"_id": i})
    e = check.raises(lambda: c.hl.command("getMore", Int64(cur["id"]), collection="c", maxTimeMS=100), 136,
                     "getMore after the cursor's position rolled off")
    if e is not None:
        # mongod: no label (136 is in no retryable category, error_codes.yml), so drivers do
        # not resume; the message is the executor's, with getMore's context.
        check.eq((e.details.get("codeName"), e.details.get("errorLabels")), ("CappedPositionLost", None),
                 "136: codeName, no errorLabels")
        check.ok(e.details["errmsg"].startswith(
            "Executor error during getMore :: caused by :: CollectionScan died due to position in capped "
            "collection being deleted. Last seen record id: RecordId("), "136 errmsg: %r" % e.details["errmsg"])
    check.raises(lambda: c.hl.command("getMore", Int64(cur["id"]), collection="c", maxTimeMS=100), 43,
                 "that cursor is gone afterwards")
    # A pymongo stream that falls behind: 136 reaches the application, pymongo does not resume.
    s = coll.watch(max_await_time_ms=100)
    s.try_next()
    for i in range(40, 60):
        coll.insert_one({"_id": i})
    try:
        s.try_next()
        check.ok(False, "a pymongo stream that fell behind must raise 136")
    except OperationFailure as e:
        check.eq(e.code, 136, "pymongo raises CappedPositionLost")
    s.close()
    # The oplog is read when the pipeline first runs: with batchSize 0 the aggregate does
    # not read, and 286 comes with the first getMore.
    r = c.hl.command("aggregate", "c", pipeline=[{"$changeStream": {"resumeAfter": first["_id"]}}],
                     cursor={"batchSize": 0})["cursor"]
    check.eq(r["firstBatch"], [], "rolled-off token with batchSize 0: the aggregate succeeds")
    e = check.raises(lambda: c.hl.command("getMore", Int64(r["id"]), collection="c", maxTimeMS=100), 286,
                     "rolled-off token with batchSize 0: 286 at the first getMore",
                     label="NonResumableChangeStreamError")
    # The window's edge (mongod: the first entry's ts <= the resume point): with the 8
    # newest entries e0..e7, e0 is the oldest and still resumable; just before it is not.
    # (A stream left open on the newest entry would lose its position with 8 more writes:
    # read e0 with a stream, close it, then write the rest.)
    with coll.watch(max_await_time_ms=100) as s:
        coll.insert_one({"_id": "e0"})
        e0 = next_change(s)
    coll.insert_many([{"_id": "e%d" % i} for i in range(1, 8)])
    if e0 is not None:
        t0 = e0["clusterTime"]
        r = agg(c.hl, "c", {"startAtOperationTime": t0})["cursor"]
        check.eq([e["documentKey"]["_id"] for e in r["firstBatch"]], ["e%d" % i for i in range(8)],
                 "startAtOperationTime = the oldest entry's time")
        r = agg(c.hl, "c", {"resumeAfter": e0["_id"]})["cursor"]
        check.eq([e["documentKey"]["_id"] for e in r["firstBatch"]], ["e%d" % i for i in range(1, 8)],
                 "resumeAfter the oldest entry's event")
        check.raises(lambda: agg(c.hl, "c", {"startAtOperationTime": Timestamp(t0.time, t0.inc - 1)}), 286,
                     "startAtOperationTime just before the oldest entry")
    # An open cursor stands on the last entry it read: 7 writes keep that entry in the
    # 8-entry oplog; the 8th trims it, and the next getMore gets 136.
    cur = agg(c.hl, "c", {})["cursor"]
    coll.insert_many([{"_id": "f%d" % i} for i in range(7)])
    nb = c.hl.command("getMore", Int64(cur["id"]), collection="c", batchSize=3, maxTimeMS=100)["cursor"]
    check.eq([e["documentKey"]["_id"] for e in nb["nextBatch"]], ["f0", "f1", "f2"],
             "a cursor whose entry is still there reads on")
    coll.insert_many([{"_id": "g%d" % i} for i in range(3)])  # f2, its position, survives 3 more
    check.eq(len(c.hl.command("getMore", Int64(cur["id"]), collection="c", batchSize=1,
                              maxTimeMS=100)["cursor"]["nextBatch"]), 1, "still readable (on f3 now)")
    coll.insert_many([{"_id": "h%d" % i} for i in range(2)])  # f2 and f3 roll off; f4.. unread, still there
    check.raises(lambda: c.hl.command("getMore", Int64(cur["id"]), collection="c", maxTimeMS=100), 136,
                 "the entry the cursor last read rolled off (nothing unread lost): 136")

def test_restart_without_dbpath():
    dm = DevMongo().start()
    try:
        c = dm.client()
        with c.hl2.c.watch() as s:
            c.hl2.c.insert_one({"_id": 1})
            ev = next_change(s)
        port = dm.port
        check.eq(dm.stop(), 0, "clean stop")
        dm = DevMongo(port=port).start()
        c = dm.client()
        cur = agg(c.hl2, "c", {"resumeAfter": ev["_id"]})["cursor"]
        check.eq(cur["firstBatch"], [], "old token after an in-memory restart: the stream opens")
        c.hl2.c.insert_one({"_id": 2})
        e = check.raises(lambda: c.hl2.command("getMore", Int64(cur["id"]), collection="c", maxTimeMS=100),
                         280, "old token after an in-memory restart: 280 at the first event",
                         label="NonResumableChangeStreamError")
        check.ok(e is not None and "the resume token was not found" in str(e),
                 "the 280 says the resume token was not found: %s" % e)
    finally:
        dm.stop()
        dm.kill()


def main():
    with DevMongo("--oplog-size", "8") as dm:
        check.run(test_small_oplog, dm)
    check.run(test_restart_without_dbpath)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
