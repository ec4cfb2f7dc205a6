#!/usr/bin/python3
"""--dbpath durability: stop devmongo and start it again on the same port with the same
directory; documents survive, clusterTime keeps increasing, and change streams resume
with no gap and no repeat, from a saved event token (resumeAfter and startAfter), from a
saved postBatchResumeToken, and for a pymongo stream left open across the restart (it
sees a network error and resumes by itself, as after a mongod restart)."""

import shutil
import tempfile
import time

from devmongo_testlib import Check, DevMongo, main_guard, next_change

check = Check("test_dbpath_restart")


def test_restart(dbpath):
    dm = DevMongo("--dbpath", dbpath).start()
    port = dm.port
    try:
        c = dm.client()
        coll = c.dur.c
        coll.insert_many([{"_id": i} for i in range(3)])
        with coll.watch() as s:
            coll.insert_one({"_id": 3})
            ev3 = next_change(s)
        coll.insert_one({"_id": 4})           # written after the saved token, before the restart
        c.dur.c.update_one({"_id": 0}, {"$set": {"x": 1}})
        before = c.admin.command("ping")["operationTime"]
        # A postBatchResumeToken saved before the restart by a client that read everything:
        # after an unrelated write it is a high-water mark, not an event's _id.
        c.dur.unrelated.insert_one({})
        hwm = c.dur.command("aggregate", "c", pipeline=[{"$changeStream": {"resumeAfter": ev3["_id"]}}],
                            cursor={})["cursor"]["postBatchResumeToken"]
        check.ok(hwm["_data"].endswith("FF"), "that postBatchResumeToken is a high-water mark: %r" % hwm)
        # A stream that stays open across the restart.
        live = coll.watch(max_await_time_ms=200)
        check.eq(dm.stop(), 0, "clean stop with --dbpath")

        dm = DevMongo("--dbpath", dbpath, port=port).start()
        c = dm.client()
        coll = c.dur.c
        check.eq(sorted(d["_id"] for d in coll.find()), [0, 1, 2, 3, 4], "documents survive the restart")
        check.eq(coll.find_one({"_id": 0}), {"_id": 0, "x": 1}, "updates survive the restart")
        after = c.admin.command("ping")["operationTime"]
        check.ok(after > before, "clusterTime keeps increasing across the restart (%r > %r)" % (after, before))
        coll.insert_one({"_id": 5})
        with coll.watch(resume_after=ev3["_id"]) as s:
            got = []
            for _ in range(3):
                e = next_change(s)
                got.append(e and (e["operationType"], e["documentKey"]["_id"]))
            check.eq(got, [("insert", 4), ("update", 0), ("insert", 5)],
                     "resume from a token saved before the restart")
            check.ok(next_change(s, 0.5) is None, "nothing after them (no repeat)")
        with coll.watch(resume_after=hwm) as s:
            e = next_change(s)
            check.eq(e and e["documentKey"]["_id"], 5,
                     "resume from a postBatchResumeToken saved before the restart: the next event")
            check.ok(next_change(s, 0.5) is None, "and nothing else (no repeat)")
        with coll.watch(start_after=ev3["_id"]) as s:
            got = [next_change(s) for _ in range(3)]
            check.eq([e and e["documentKey"]["_id"] for e in got], [4, 0, 5],
                     "startAfter a token saved before the restart")
        e = next_change(live, 10)
        check.eq(e and e["documentKey"]["_id"], 5, "stream left open across the restart resumes by itself")
        live.close()
    finally:
        dm.stop()
        dm.kill()


def test_periodic_save(dbpath):
    """A devmongo killed with SIGKILL keeps what it saved periodically (every 2 s)."""
    dm = DevMongo("--dbpath", dbpath).start()
    port = dm.port
    try:
        c = dm.client()
        c.dur2.c.insert_one({"_id": "kept"})
        time.sleep(3)  # let the periodic save run (not a timing assertion: it only waits)
        dm.kill()
        dm = DevMongo("--dbpath", dbpath, port=port).start()
        check.eq(dm.client().dur2.c.find_one(), {"_id": "kept"}, "state saved periodically survives SIGKILL")
    finally:
        dm.stop()
        dm.kill()


def main():
    for t in (test_restart, test_periodic_save):
        d = tempfile.mkdtemp(prefix="devmongo-test-")
        try:
            check.run(t, d)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
