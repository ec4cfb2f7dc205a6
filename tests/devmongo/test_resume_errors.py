#!/usr/bin/python3
"""Resume and fault behaviours a "no event lost" client relies on, as stories. Each says
what mongod 6.0 does (the source is cited where devmongo implements it) and checks that
devmongo does exactly that: codes, codeNames, labels, message shapes, event sequences.

Never-issued tokens (devmongo_server/changestream.py, EnsureResumeTokenPresent):
 1. A well-formed token inside the oplog window that names no event opens a stream; the
    error comes at the first event of that stream after the token: 280
    ChangeStreamFatalError, label NonResumableChangeStreamError, "cannot resume stream;
    the resume token was not found. {_data: "<that event's token>"}", on the getMore
    (or on the aggregate when such an event already exists). The cursor is gone after.
 2. Entries of other namespaces decide nothing: they only move postBatchResumeToken on,
    and resuming from that high-water mark is not checked any more.
 3. An event token of another collection fails a collection stream the same way, and
    resumes a database stream that contains the event.
 4. pymongo: watch(resume_after=never issued) succeeds; try_next raises 280 at the next
    event instead of resuming.
Tokens from another deployment:
 5. A token of another devmongo running at the same time is inside the window: 280 at
    the first event after it.
 6. A token older than a new deployment's first oplog entry ("initiating set") is not
    history lost on mongod: event tokens get 280 at the first event, a high-water mark
    replays the whole oplog. Once the oplog has been trimmed, both get 286
    ChangeStreamHistoryLost at the aggregate.
 7. A token newer than anything written is accepted; the stream waits, writes before its
    time are not returned, and the first event after its time fails with 280. (A future
    startAtOperationTime is answered with a high-water mark, never a token of its own.)
 8. Tokens in mongod's own KeyString encoding are understood: an event token gets 280
    at the first event, a high-water mark resumes after its time.
Tokens that are not tokens (devmongo_server/oplog.py decode_token, keystring.py): mongod's
codes, at the aggregate, with no label and no "Executor error" context:
 9. wrong type 14, _data not a string 40647, bad _typeBits 40648, not hex 9
    FailedToParse, empty 40649, unknown KeyString type 50811 (also a devmongo token with
    its last byte changed), truncated 15 Overflow, clusterTime only 50796; the same for
    startAfter; pymongo's watch() raises them.
10. Lower-case hex is hex: a devmongo token in lower case resumes normally.
failCommand (devmongo_server/failpoints.py, as commands.cpp and error_labels.cpp):
11. Labels: errorLabels is used as given; without it a getMore error gets none (the fail
    point fires before the cursor is known), an aggregate opening a change stream gets
    ResumableChangeStreamError for retryable codes, 280/286 get
    NonResumableChangeStreamError; failGetMoreAfterCursorCheckout labels like a real getMore
    and, like any error once the cursor is checked out, deletes the cursor.
12. Modes: {times: N}, alwaysOn, off; configureFailPoint answers the previous count.
13. closeConnection drops the connection without a reply; blockConnection waits
    blockTimeMS first (and requires it: 72 InvalidOptions).
14. errorCode 13 on aggregate: Unauthorized, "Failing command via 'failCommand'
    failpoint" (mongod's failCommand message; a real authorization failure would say
    "not authorized on <db> to execute command { aggregate: ... }"), no label; pymongo's
    watch() raises it.
15. pymongo change streams resume by themselves, with no gap and no repeat, after a
    labelled resumable getMore error, 43 CursorNotFound and a closed connection (each time
    with one aggregate, resumeAfter the token it held: the last event's _id or a later
    postBatchResumeToken), and raise an unlabelled error to the application.
History loss and CappedPositionLost are in test_history_lost.py, resuming across a
--dbpath restart in test_dbpath_restart.py.
"""

import time

from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo import monitoring
from pymongo.errors import AutoReconnect, NotMasterError, OperationFailure

from devmongo_testlib import Check, DevMongo, main_guard, next_change

check = Check("test_resume_errors")

FAILPOINT_MSG = "Failing command via 'failCommand' failpoint"
NOT_FOUND = "cannot resume stream; the resume token was not found. "
HISTORY_LOST = "Resume of change stream was not possible, as the resume point may no longer be in the oplog."
NON_RESUMABLE = ["NonResumableChangeStreamError"]
RESUMABLE = ["ResumableChangeStreamError"]


# -- helpers ------------------------------------------------------------------------

def agg(db, target, stage, pipeline=(), **kw):
    return db.command("aggregate", target, pipeline=[{"$changeStream": stage}] + list(pipeline),
                      cursor=kw.pop("cursor", {}), **kw)["cursor"]


def get_more(db, cursor, coll, max_time=100):
    return db.command("getMore", Int64(cursor["id"]), collection=coll, maxTimeMS=max_time)["cursor"]


def token(t, i, kind=0x01):
    """A devmongo token: clusterTime (t, i) and kind (0x01 an event, 0xFF a high-water mark)."""
    return {"_data": "82%08X%08X%02X" % (t, i, kind)}


def ts_of(tok):
    data = tok["_data"]
    return int(data[2:10], 16), int(data[10:18], 16)


def fails(fn, what, code, code_name, labels=(), errmsg=None, prefix=None):
    """fn() must fail with exactly this code, codeName and errorLabels (and errmsg, or an
    errmsg starting with prefix). Returns the error reply, or None."""
    try:
        fn()
    except (OperationFailure, NotMasterError) as e:  # pymongo 3.11 raises NotMasterError for 91
        d = e.details or {}
        check.eq((d.get("code"), d.get("codeName"), d.get("errorLabels", [])),
                 (code, code_name, list(labels)), what)
        if errmsg is not None:
            check.eq(d.get("errmsg"), errmsg, what + " (errmsg)")
        if prefix is not None:
            check.ok(str(d.get("errmsg")).startswith(prefix),
                     "%s: errmsg %r does not start with %r" % (what, d.get("errmsg"), prefix))
        return d
    except Exception as e:  # noqa: BLE001
        check.ok(False, "%s: expected error %d, got %r" % (what, code, e))
        return None
    check.ok(False, "%s: expected error %d, got success" % (what, code))
    return None


def read_ids(stream, n, what):
    """Exactly n events' documentKey._id, then nothing more for 0.5 s."""
    got = []
    for _ in range(n):
        ev = next_change(stream)
        if ev is None:
            break
        got.append(ev["documentKey"]["_id"])
    extra = next_change(stream, 0.5)
    check.ok(extra is None, "%s: an event after the expected ones: %r" % (what, extra))
    return got


def fail_command(c, mode, **data):
    return c.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)


def fail_off(c):
    c.admin.command("configureFailPoint", "failCommand", mode="off")


def newest_event_token(db, coll):
    """Write one document and return its event's token (through a fresh stream)."""
    cur = agg(db, coll, {})
    db[coll].insert_one({})
    return get_more(db, cur, coll, 1000)["nextBatch"][0]["_id"]


class Aggregates(monitoring.CommandListener):
    """Records the $changeStream stage of every aggregate a client sends."""

    def __init__(self):
        self.stages = []

    def started(self, event):
        if event.command_name == "aggregate":
            self.stages.append(event.command["pipeline"][0]["$changeStream"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


# -- never-issued tokens ------------------------------------------------------------

def story_never_issued_token(c):
    db = c.rne
    a = newest_event_token(db, "c")
    t, i = ts_of(a)
    ghost = token(t, i + 1)  # right after A: no entry has that time
    cur = agg(db, "c", {"resumeAfter": ghost})
    check.eq((cur["firstBatch"], cur["id"] != 0, cur["postBatchResumeToken"]), ([], True, ghost),
             "1: the aggregate succeeds, empty, with the token as postBatchResumeToken")
    nb = get_more(db, cur, "c")
    check.eq((nb["nextBatch"], nb["postBatchResumeToken"]), ([], ghost), "1: a quiet getMore: no error yet")
    db.c.insert_one({"_id": "B"})
    b_tok = agg(db, "c", {"resumeAfter": a})["firstBatch"][0]["_id"]
    fails(lambda: get_more(db, cur, "c"), "1: the first event after the token fails the getMore",
          280, "ChangeStreamFatalError", NON_RESUMABLE,
          errmsg='Executor error during getMore :: caused by :: %s{_data: "%s"}' % (NOT_FOUND, b_tok["_data"]))
    fails(lambda: get_more(db, cur, "c"), "1: that cursor is gone", 43, "CursorNotFound")
    # When an event after the token already exists, the aggregate itself fails.
    fails(lambda: agg(db, "c", {"resumeAfter": ghost}), "1: with an event already after it, the aggregate fails",
          280, "ChangeStreamFatalError", NON_RESUMABLE,
          errmsg='Executor error during aggregate command on namespace: rne.c :: caused by :: %s{_data: "%s"}'
          % (NOT_FOUND, b_tok["_data"]))
    fails(lambda: agg(db, "c", {"startAfter": ghost}), "1: startAfter checks the same",
          280, "ChangeStreamFatalError", NON_RESUMABLE)
    # The token's own event is found, and is not returned again.
    check.eq([e["documentKey"]["_id"] for e in agg(db, "c", {"resumeAfter": a})["firstBatch"]], ["B"],
             "1: a real token resumes with exactly the later events")


def story_other_namespaces_decide_nothing(c):
    db = c.rns
    a = newest_event_token(db, "c")
    t, i = ts_of(a)
    ghost = token(t, i + 1)
    cur = agg(db, "c", {"resumeAfter": ghost})
    db.other.insert_one({"_id": 1})
    nb = get_more(db, cur, "c")
    pbrt = nb["postBatchResumeToken"]
    check.ok(nb["nextBatch"] == [] and pbrt["_data"] > ghost["_data"],
             "2: another collection's write: no error, postBatchResumeToken moves past the token (%r)" % pbrt)
    db.c.insert_one({"_id": "B"})
    check.eq([e["documentKey"]["_id"] for e in agg(db, "c", {"resumeAfter": pbrt})["firstBatch"]], ["B"],
             "2: resuming from that high-water mark is not checked")
    fails(lambda: get_more(db, cur, "c"), "2: the stream itself still fails at its first event",
          280, "ChangeStreamFatalError", NON_RESUMABLE)


def story_token_of_another_collection(c):
    db = c.rnc
    x = newest_event_token(db, "x")
    cur = agg(db, "y", {"resumeAfter": x})
    check.eq(cur["firstBatch"], [], "3: a collection y stream from collection x's token opens")
    db.y.insert_one({"_id": 1})
    fails(lambda: get_more(db, cur, "y"), "3: and fails at y's first event", 280, "ChangeStreamFatalError",
          NON_RESUMABLE)
    check.eq([e["documentKey"]["_id"] for e in agg(db, 1, {"resumeAfter": x})["firstBatch"]], [1],
             "3: the database stream, which contains x's event, resumes from it")


def story_pymongo_never_issued(c):
    coll = c.rnp.c
    a = newest_event_token(c.rnp, "c")
    t, i = ts_of(a)
    ghost = token(t, i + 1)
    s = coll.watch(resume_after=ghost, max_await_time_ms=100)
    check.ok(s.try_next() is None, "4: pymongo watch(resume_after=never issued) opens, nothing to read")
    coll.insert_one({"_id": 1})
    try:
        deadline = time.time() + 5
        while time.time() < deadline and s.try_next() is None:
            pass
        check.ok(False, "4: pymongo must raise 280, not resume or wait")
    except OperationFailure as e:
        check.eq((e.code, (e.details or {}).get("errorLabels")), (280, NON_RESUMABLE),
                 "4: pymongo raises 280 at the next event")
    s.close()


# -- tokens from another deployment ---------------------------------------------------

def story_token_of_a_concurrent_deployment(c):
    with DevMongo() as other:
        foreign = newest_event_token(other.client().rfd, "c")
    db = c.rfd
    cur = agg(db, "c", {"resumeAfter": foreign})
    check.eq((cur["firstBatch"], cur["postBatchResumeToken"]), ([], foreign),
             "5: another running devmongo's token is inside our window: the stream opens")
    db.c.insert_one({"_id": 1})
    fails(lambda: get_more(db, cur, "c"), "5: 280 at our first event after it", 280, "ChangeStreamFatalError",
          NON_RESUMABLE, prefix="Executor error during getMore :: caused by :: " + NOT_FOUND)


def story_token_older_than_a_new_deployment():
    with DevMongo() as old:
        oc = old.client()
        old_event = newest_event_token(oc.rod, "c")
        old_hwm = agg(oc.rod, "c", {})["postBatchResumeToken"]
    time.sleep(0.05)
    with DevMongo("--oplog-size", "4") as dm:
        db = dm.client().rod
        cur = agg(db, "c", {"resumeAfter": old_event})
        check.eq(cur["firstBatch"], [], "6: an older deployment's token on a new one (nothing trimmed) opens")
        db.c.insert_one({"_id": 1})
        fails(lambda: get_more(db, cur, "c"), "6: and fails with 280 at the first event", 280,
              "ChangeStreamFatalError", NON_RESUMABLE)
        db.c.insert_one({"_id": 2})
        check.eq([e["documentKey"]["_id"] for e in agg(db, "c", {"resumeAfter": old_hwm})["firstBatch"]], [1, 2],
                 "6: an older high-water mark replays the whole (untrimmed) oplog")
        db.c.insert_many([{"_id": i} for i in range(3, 8)])  # the "initiating set" entry rolls off
        for what, tok in (("event token", old_event), ("high-water mark", old_hwm)):
            fails(lambda: agg(db, "c", {"resumeAfter": tok}), "6: after trimming, an older %s: 286" % what,
                  286, "ChangeStreamHistoryLost", NON_RESUMABLE,
                  errmsg="Executor error during aggregate command on namespace: rod.c :: caused by :: "
                  + HISTORY_LOST)


def story_token_from_the_future(c):
    db = c.rft
    t = int(time.time()) + 2
    future = token(t, 1)
    cur = agg(db, "c", {"resumeAfter": future})
    check.eq((cur["firstBatch"], cur["postBatchResumeToken"]), ([], future),
             "7: a token newer than anything written opens a stream")
    db.c.insert_one({"_id": "before"})
    nb = get_more(db, cur, "c")
    check.eq((nb["nextBatch"], nb["postBatchResumeToken"]), ([], future),
             "7: a write before the token's time is neither returned nor an error")
    while time.time() < t + 0.05:  # wait for the clock to pass the token (not a timing assertion)
        time.sleep(0.05)
    db.c.insert_one({"_id": "after"})
    fails(lambda: get_more(db, cur, "c"), "7: the first event after its time fails", 280,
          "ChangeStreamFatalError", NON_RESUMABLE)
    # startAtOperationTime in the future is no token: its postBatchResumeToken is the
    # high-water mark of the time just before, and resumes to the same events.
    t = int(time.time()) + 1
    cur = agg(db, "c", {"startAtOperationTime": Timestamp(t, 5)})
    check.eq(cur["postBatchResumeToken"], token(t, 4, 0xFF),
             "7: a future startAtOperationTime's postBatchResumeToken is a high-water mark")
    while time.time() < t + 0.05:
        time.sleep(0.05)
    db.c.insert_one({"_id": "later"})
    check.eq([e["documentKey"]["_id"] for e in agg(db, "c", {"resumeAfter": cur["postBatchResumeToken"]})
              ["firstBatch"]], ["later"], "7: resuming from it gives the events from that time on")


def story_mongod_encoded_tokens(c):
    db = c.rmt
    a = newest_event_token(db, "c")
    t, i = ts_of(a)
    ts_hex = "82%08X%08X" % (t, i + 1)
    uuid = "5A1004" + "11" * 16
    # v1 event token {clusterTime, version 1, tokenType 128, txnOpIndex 0, fromInvalidate
    # false, uuid, {_id: ObjectId}}, and a v1 high-water mark, as mongod encodes them.
    event = {"_data": ts_hex + "2B022C0100296E" + uuid + "46645F696400" + "AB" * 12 + "0004"}
    hwm = {"_data": ts_hex + "2B0229296E04"}
    cur = agg(db, "c", {"resumeAfter": event})
    check.eq(cur["firstBatch"], [], "8: a mongod event token opens a stream")
    db.c.insert_one({"_id": 1})
    fails(lambda: get_more(db, cur, "c"), "8: and fails at the first event", 280, "ChangeStreamFatalError",
          NON_RESUMABLE)
    check.eq([e["documentKey"]["_id"] for e in agg(db, "c", {"resumeAfter": hwm})["firstBatch"]], [1],
             "8: a mongod high-water mark resumes after its time")


# -- tokens that are not tokens -----------------------------------------------------------

def story_malformed_tokens(c):
    db = c.rbad
    good = newest_event_token(db, "c")["_data"]
    cases = [
        ("a string", good, 14, "TypeMismatch",
         "BSON field '$changeStream.resumeAfter' is the wrong type 'string', expected type 'object'"),
        ("_data a number", {"_data": 42}, 40647, "Location40647",
         "Bad resume token: _data of missing or of wrong type. Expected string, got {_data: 42}"),
        ("no _data", {}, 40647, "Location40647",
         "Bad resume token: _data of missing or of wrong type. Expected string, got {}"),
        ("_typeBits a string", {"_data": good, "_typeBits": "x"}, 40648, "Location40648", None),
        ("not hex", {"_data": "not hex!"}, 9, "FailedToParse", "resume token string was not a valid hex string"),
        ("odd length", {"_data": good[:-1]}, 9, "FailedToParse", "resume token string was not a valid hex string"),
        ("empty", {"_data": ""}, 40649, "Location40649", "invalid empty resume token"),
        ("random hex", {"_data": "DEADBEEF"}, 50811, "Location50811", "KeyString format error: Unknown type: 222"),
        ("truncated", {"_data": good[:10]}, 15, "Overflow", None),
        ("clusterTime only", {"_data": good[:18]}, 50796, "Location50796", "Resume Token does not contain version"),
        ("its kind byte changed", {"_data": good[:-2] + "00"}, 50811, "Location50811",
         "KeyString format error: Unknown type: 0"),
    ]
    for what, tok, code, name, msg in cases:
        fails(lambda: agg(db, "c", {"resumeAfter": tok}), "9: resumeAfter %s" % what, code, name, errmsg=msg)
    fails(lambda: agg(db, "c", {"startAfter": "x"}), "9: startAfter a string", 14, "TypeMismatch",
          errmsg="BSON field '$changeStream.startAfter' is the wrong type 'string', expected type 'object'")
    fails(lambda: agg(db, "c", {"startAfter": {"_data": "DEADBEEF"}}), "9: startAfter random hex",
          50811, "Location50811")
    try:
        c.rbad.c.watch(resume_after={"_data": "DEADBEEF"})
        check.ok(False, "9: pymongo watch() with a garbage token must raise")
    except OperationFailure as e:
        check.eq((e.code, (e.details or {}).get("errorLabels")), (50811, None), "9: pymongo watch() raises it")
    db.c.insert_one({"_id": "later"})
    got = agg(db, "c", {"resumeAfter": {"_data": good.lower()}})["firstBatch"]
    check.eq([e["documentKey"]["_id"] for e in got], ["later"], "10: a lower-case token resumes normally")


# -- failCommand ---------------------------------------------------------------------

def story_fail_command_labels(c):
    db = c.rfl
    cur = agg(db, "c", {})
    cases = [
        ("getMore 6 with errorLabels", "getMore", {"errorCode": 6, "errorLabels": RESUMABLE}, 6,
         "HostUnreachable", RESUMABLE),
        ("getMore 91 without errorLabels", "getMore", {"errorCode": 91}, 91, "ShutdownInProgress", []),
        ("getMore 43", "getMore", {"errorCode": 43}, 43, "CursorNotFound", []),
        ("getMore 280", "getMore", {"errorCode": 280}, 280, "ChangeStreamFatalError", NON_RESUMABLE),
        ("getMore 286 with errorLabels []", "getMore", {"errorCode": 286, "errorLabels": []}, 286,
         "ChangeStreamHistoryLost", []),
        ("change stream aggregate 91", "aggregate", {"errorCode": 91}, 91, "ShutdownInProgress", RESUMABLE),
        ("change stream aggregate 6 with errorLabels []", "aggregate", {"errorCode": 6, "errorLabels": []}, 6,
         "HostUnreachable", []),
        ("change stream aggregate 2", "aggregate", {"errorCode": 2}, 2, "BadValue", []),
    ]
    for what, cmd, data, code, name, labels in cases:
        fail_command(c, {"times": 1}, failCommands=[cmd], **data)
        run = (lambda: get_more(db, cur, "c")) if cmd == "getMore" else (lambda: agg(db, "c", {}))
        fails(run, "11: " + what, code, name, labels, errmsg=FAILPOINT_MSG)
    fail_command(c, {"times": 1}, failCommands=["aggregate"], errorCode=91)
    fails(lambda: db.command("aggregate", "c", pipeline=[], cursor={}), "11: plain aggregate 91", 91,
          "ShutdownInProgress", [])
    check.eq(get_more(db, cur, "c")["nextBatch"], [], "11: the cursor survives failCommand errors")
    c.admin.command("configureFailPoint", "failGetMoreAfterCursorCheckout", mode={"times": 1},
                    data={"errorCode": 91, "errorLabels": []})
    fails(lambda: get_more(db, cur, "c"), "11: failGetMoreAfterCursorCheckout 91 on a change stream", 91,
          "ShutdownInProgress", RESUMABLE, errmsg="Hit the 'failGetMoreAfterCursorCheckout' failpoint")
    fails(lambda: get_more(db, cur, "c"), "11: an error after checkout deletes the cursor", 43, "CursorNotFound")


def story_fail_command_modes(c):
    db = c.rfm
    before = fail_command(c, {"times": 2}, failCommands=["getMore"], errorCode=6).get("count")
    check.ok(isinstance(before, int), "12: configureFailPoint answers how often it was entered: %r" % before)
    cur = agg(db, "c", {})
    for n in (1, 2):
        fails(lambda: get_more(db, cur, "c"), "12: {times: 2}, failure %d" % n, 6, "HostUnreachable")
    check.eq(get_more(db, cur, "c")["nextBatch"], [], "12: {times: 2} used up: the third getMore works")
    r = fail_command(c, "alwaysOn", failCommands=["getMore"], errorCode=91)
    check.eq(r.get("count"), before + 2, "12: {times: 2} was entered twice")
    for n in range(3):
        fails(lambda: get_more(db, cur, "c"), "12: alwaysOn, failure %d" % n, 91, "ShutdownInProgress")
    fail_off(c)
    check.eq(get_more(db, cur, "c")["nextBatch"], [], "12: off: getMore works again")


def story_close_and_block(c):
    db = c.rfc
    cur = agg(db, "c", {})
    fail_command(c, {"times": 1}, failCommands=["getMore"], closeConnection=True)
    try:
        get_more(db, cur, "c")
        check.ok(False, "13: closeConnection must drop the connection")
    except AutoReconnect:
        check.ok(True, "13: closeConnection: a network error, no reply")
    check.eq(get_more(db, cur, "c")["nextBatch"], [], "13: the cursor is still there afterwards")
    fail_command(c, {"times": 1}, failCommands=["getMore"], blockConnection=True, blockTimeMS=300)
    t0 = time.monotonic()
    check.eq(get_more(db, cur, "c", 0)["nextBatch"], [], "13: a blocked getMore then runs normally")
    check.ok(time.monotonic() - t0 >= 0.3, "13: it was held for blockTimeMS")
    fail_command(c, {"times": 1}, failCommands=["getMore"], blockConnection=True, blockTimeMS=200, errorCode=91)
    t0 = time.monotonic()
    fails(lambda: get_more(db, cur, "c"), "13: block then fail", 91, "ShutdownInProgress")
    check.ok(time.monotonic() - t0 >= 0.2, "13: the error came after blockTimeMS")
    fail_command(c, {"times": 1}, failCommands=["getMore"], blockConnection=True)
    fails(lambda: get_more(db, cur, "c"), "13: blockConnection without blockTimeMS", 72, "InvalidOptions",
          errmsg="must specify 'blockTimeMS' when 'blockConnection' is true")
    fail_off(c)


def story_unauthorized(c):
    fail_command(c, {"times": 2}, failCommands=["aggregate"], errorCode=13)
    fails(lambda: agg(c.rfu, "c", {}), "14: errorCode 13 on aggregate", 13, "Unauthorized", [],
          errmsg=FAILPOINT_MSG)
    try:
        c.rfu.c.watch()
        check.ok(False, "14: pymongo watch() must raise Unauthorized")
    except OperationFailure as e:
        check.eq((e.code, (e.details or {}).get("codeName")), (13, "Unauthorized"), "14: pymongo watch() raises 13")
    fail_off(c)


def story_pymongo_resumes(dm):
    listener = Aggregates()
    c = dm.client(event_listeners=[listener])
    coll = c.rfp.c
    with coll.watch(max_await_time_ms=100) as s:
        coll.insert_one({"_id": 1})
        check.eq(read_ids(s, 1, "15: first"), [1], "15: first event")
        for n, (what, data) in enumerate((
                ("a ResumableChangeStreamError getMore", {"errorCode": 6, "errorLabels": RESUMABLE}),
                ("ShutdownInProgress labelled resumable", {"errorCode": 91, "errorLabels": RESUMABLE}),
                ("43 CursorNotFound (no label)", {"errorCode": 43}),
                ("closeConnection", {"closeConnection": True}))):
            first = 10 * (n + 1)
            coll.insert_many([{"_id": first}, {"_id": first + 1}])
            check.eq(read_ids(s, 2, "15: before " + what), [first, first + 1], "15: events before " + what)
            seen = s.resume_token  # the last event's _id, or a later postBatchResumeToken
            aggregates = len(listener.stages)
            fail_command(c, {"times": 1}, failCommands=["getMore"], **data)
            coll.insert_many([{"_id": first + 2}, {"_id": first + 3}])
            check.eq(read_ids(s, 2, "15: after " + what), [first + 2, first + 3],
                     "15: after %s pymongo resumed with no gap or repeat" % what)
            new = listener.stages[aggregates:]
            check.eq([st.get("resumeAfter") for st in new], [seen],
                     "15: one resume aggregate after %s, resumeAfter where the stream was" % what)
        # Unlabelled: not resumable on a 4.4+ server, the application sees it. (Not 91:
        # pymongo 3.11 takes "not master" codes such as 91 for a network error and resumes.)
        fail_command(c, {"times": 1}, failCommands=["getMore"], errorCode=6)
        coll.insert_one({"_id": 99})
        try:
            deadline = time.time() + 5
            while time.time() < deadline and s.try_next() is None:
                pass
            check.ok(False, "15: an unlabelled getMore error must reach the application")
        except OperationFailure as e:
            check.eq((e.code, (e.details or {}).get("errorLabels")), (6, None), "15: unlabelled 6 raised")
    fail_off(c)


def main():
    with DevMongo() as dm:
        c = dm.client()
        for story in (story_never_issued_token, story_other_namespaces_decide_nothing,
                      story_token_of_another_collection, story_pymongo_never_issued,
                      story_token_of_a_concurrent_deployment, story_token_from_the_future,
                      story_mongod_encoded_tokens, story_malformed_tokens,
                      story_fail_command_labels, story_fail_command_modes, story_close_and_block,
                      story_unauthorized):
            check.run(story, c)
        check.run(story_pymongo_resumes, dm)
    check.run(story_token_older_than_a_new_deployment)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
