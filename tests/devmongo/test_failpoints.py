#!/usr/bin/python3
"""configureFailPoint failCommand, as on mongod: {times: N}, alwaysOn and off; errorCode
and errorLabels; closeConnection; blockConnection; appName; and pymongo change streams
resuming (or not) exactly as the labels say."""

import time

from pymongo.errors import AutoReconnect, OperationFailure

from devmongo_testlib import Check, DevMongo, main_guard, next_change

check = Check("test_failpoints")


def fail(c, mode, **data):
    return c.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)


def off(c):
    c.admin.command("configureFailPoint", "failCommand", mode="off")


def test_times_and_always_on(c):
    fail(c, {"times": 2}, failCommands=["count"], errorCode=2)
    check.raises(lambda: c.fp.command("count", "x"), 2, "first failure")
    check.raises(lambda: c.fp.command("count", "x"), 2, "second failure")
    check.eq(c.fp.command("count", "x")["n"], 0, "third count succeeds ({times: 2} used up)")
    r = fail(c, "alwaysOn", failCommands=["insert", "configureFailPoint"], errorCode=8000,
             errorLabels=["SomeLabel"])
    check.ok("count" in r, "configureFailPoint returns count")
    for i in range(3):
        check.raises(lambda: c.fp.x.insert_one({"i": i}), 8000, "alwaysOn failure %d" % i, label="SomeLabel")
    check.eq(c.fp.command("ping")["ok"], 1.0, "commands not listed are unaffected")
    off(c)  # configureFailPoint is never failed, even when listed
    c.fp.x.insert_one({"i": "after"})
    check.eq(c.fp.x.count_documents({}), 1, "writes work after mode off")


def test_close_and_block(c):
    fail(c, {"times": 1}, failCommands=["ping"], closeConnection=True)
    try:
        c.admin.command("ping")
        check.ok(False, "closeConnection must drop the connection")
    except AutoReconnect:
        check.ok(True, "closeConnection gives a network error")
    check.eq(c.admin.command("ping")["ok"], 1.0, "next command works")
    fail(c, {"times": 1}, failCommands=["ping"], blockConnection=True, blockTimeMS=200)
    check.eq(c.admin.command("ping")["ok"], 1.0, "blocked command still succeeds")
    fail(c, "alwaysOn", failCommands=["ping"], errorCode=2, appName="someone-else")
    check.eq(c.admin.command("ping")["ok"], 1.0, "appName filter: other clients unaffected")
    off(c)


def test_change_stream_resume(c):
    coll = c.fp.cs
    with coll.watch(max_await_time_ms=200) as s:
        coll.insert_one({"_id": 1})
        check.eq(next_change(s)["documentKey"], {"_id": 1}, "first event")
        # Network error on getMore: pymongo resumes, nothing lost or repeated.
        fail(c, {"times": 1}, failCommands=["getMore"], closeConnection=True)
        coll.insert_one({"_id": 2})
        coll.insert_one({"_id": 3})
        got = [next_change(s), next_change(s)]
        check.eq([e and e["documentKey"]["_id"] for e in got], [2, 3], "resume after closeConnection")
        # Labelled resumable error: pymongo resumes.
        fail(c, {"times": 1}, failCommands=["getMore"], errorCode=6, errorLabels=["ResumableChangeStreamError"])
        coll.insert_one({"_id": 4})
        ev = next_change(s)
        check.eq(ev and ev["documentKey"]["_id"], 4, "resume after a ResumableChangeStreamError")
        # The same code without a label is not resumable on 4.4+ servers: surfaced.
        fail(c, {"times": 1}, failCommands=["getMore"], errorCode=6)
        coll.insert_one({"_id": 5})
        try:
            deadline = time.time() + 5
            while time.time() < deadline and s.try_next() is None:
                pass
            check.ok(False, "unlabelled getMore error must reach the application")
        except OperationFailure as e:
            check.eq(e.code, 6, "unlabelled error code")
    off(c)


def main():
    with DevMongo() as dm:
        c = dm.client()
        for t in (test_times_and_always_on, test_close_and_block, test_change_stream_resume):
            check.run(t, c)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
