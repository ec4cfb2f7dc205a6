#!/usr/bin/python3
"""History loss: with a small --oplog-size, resuming from a point that fell off the oplog
fails with 286 ChangeStreamHistoryLost (label NonResumableChangeStreamError), an open
cursor that fell behind gets 136 CappedPositionLost, and after a restart without
--dbpath old tokens are history lost too (like a real server whose oplog rolled over)."""

from bson.int64 import Int64
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
    check.raises(lambda: c.hl.command("getMore", Int64(cur["id"]), collection="c", maxTimeMS=100), 136,
                 "getMore after the cursor's position rolled off")
    check.raises(lambda: c.hl.command("getMore", Int64(cur["id"]), collection="c", maxTimeMS=100), 43,
                 "that cursor is gone afterwards")


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
        c.hl2.c.insert_one({"_id": 2})
        check.raises(lambda: agg(c.hl2, "c", {"resumeAfter": ev["_id"]}), 286,
                     "old token after an in-memory restart", label="NonResumableChangeStreamError")
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
