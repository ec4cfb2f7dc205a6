#!/usr/bin/python3
"""Story: the watched collection is dropped and written again. MongoDB ends a
collection's change stream with `invalidate`; changegate passes the drop and the
invalidate on, continues with the recreated collection (startAfter), and every position,
including the invalidate's own, stays resumable: from the journal, from MongoDB (a
catch-up stream across or after the invalidate) and across a restart of changegate.

1. devmongo (--dbpath) and changegate --watch app.items --journal-size 20 start; an SSE
   subscriber A (no filter) and an SSE subscriber I (op=insert) connect.
2. seq 0..9 are inserted, the collection is dropped, seq 10..19 are inserted. A gets
   0..9, a `drop` event, an `invalidate` event, then 10..19, as data messages (an
   invalidate is an event like any other, with its own id); I gets 0..19 only.
3. Resuming from the invalidate's id while the journal holds it: exactly 10..19.
4. 40 more inserts (20..59) push the drop and invalidate out of the journal. Resuming
   from the invalidate's id (a catch-up stream that must start after it) gives exactly
   20..59... preceded by 10..19; resuming from seq 5 crosses the invalidate from MongoDB:
   6..9, drop, invalidate, 10..59. No reset anywhere.
5. The collection is dropped again and changegate is stopped right after the invalidate
   (its saved position is that invalidate); it starts again, is healthy and has not lost
   its position (changegate_watcher_history_lost 0); seq 60..64 are inserted, and a
   subscriber resuming from the second invalidate gets exactly 60..64.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DB, COLL = "app", "items"


def kinds(msgs, what):
    """[seq | "drop" | "invalidate"] of data messages; fails on control messages."""
    out = []
    for m in msgs:
        h.check(m.type == "message", "%s: got `event: %s` %s; expected data only", what,
                m.type, m.data)
        ev = h.check_sse_event(m)
        op = ev.get("operationType")
        out.append(h.seq_of(ev) if op == "insert" else op)
    return out


def drop(w):
    w.coll(DB, COLL).drop()


def story(sc):
    dbpath = sc.mkdir("devmongo-db")
    mongo = sc.devmongo(dbpath=dbpath)
    cg = sc.changegate(mongo.uri, watch="%s.%s" % (DB, COLL),
                       args=["--journal-size", "20"])
    w = sc.writer(mongo.uri)
    a = sc.track(cg.sse())
    i = sc.track(cg.sse(params={"op": "insert"}))

    w.insert_seq(0, 10, DB, COLL)
    drop(w)
    w.insert_seq(10, 10, DB, COLL)
    msgs = a.read_messages(22)
    want = list(range(10)) + ["drop", "invalidate"] + list(range(10, 20))
    h.check_sequence(kinds(msgs, "A"), want, "A across the drop")
    inv = msgs[11].id_field
    pos5 = msgs[5].id_field
    h.check_sequence(kinds(i.read_messages(20), "I"), list(range(20)), "op=insert across the drop")
    h.say("A got 0..9, drop, invalidate (id %s), 10..19; op=insert got 0..19", inv)

    r = sc.track(cg.sse(last_event_id=inv))
    h.check_sequence(kinds(r.read_messages(10), "from the invalidate"), list(range(10, 20)),
                     "resumed from the invalidate (journal)")
    r.close()

    w.insert_seq(20, 40, DB, COLL)
    h.check_sequence(kinds(a.read_messages(40), "A"), list(range(20, 60)), "A after the drop")
    r = sc.track(cg.sse(last_event_id=inv))
    h.check_sequence(kinds(r.read_messages(50), "from the invalidate (catch-up)"),
                     list(range(10, 60)), "resumed from the invalidate, beyond the journal")
    extra = r.drain(0.3)
    h.check(not extra, "extra messages after 59: %r", extra[:3])
    r.close()
    r = sc.track(cg.sse(last_event_id=pos5))
    h.check_sequence(kinds(r.read_messages(56), "from seq 5 (catch-up)"),
                     list(range(6, 10)) + ["drop", "invalidate"] + list(range(10, 60)),
                     "resumed from seq 5, across the invalidate, from MongoDB")
    r.close()
    m = cg.metrics()
    h.check(m.value("changegate_catchup_events_total") > 0,
            "the resumes beyond the journal did not use catch-up streams: %r",
            m.value("changegate_catchup_events_total"))
    h.check(m.total("changegate_resets_total") == 0, "resets were sent: %s",
            m.total("changegate_resets_total"))
    h.say("from the invalidate beyond the journal: 10..59; from seq 5: 6..9, drop, "
          "invalidate, 10..59; no reset")

    drop(w)
    tail_msgs = a.read_messages(2)
    tail = kinds(tail_msgs, "A")
    h.check(tail == ["drop", "invalidate"], "A after the second drop: %r", tail)
    inv2 = tail_msgs[1].id_field
    time.sleep(1.5)  # the watcher saves its position at least once a second
    cg.stop()
    cg.start()
    m = cg.metrics()
    h.check(m.value("changegate_watcher_history_lost") == 0,
            "changegate lost its position when restarted after an invalidate")
    r = sc.track(cg.sse(last_event_id=inv2))
    w.insert_seq(60, 5, DB, COLL)
    h.check_sequence(kinds(r.read_messages(5), "after the restart"), list(range(60, 65)),
                     "resumed from the second invalidate after a restart")
    extra = r.drain(0.3)
    h.check(not extra, "extra messages after 64: %r", extra[:3])
    h.say("restarted right after an invalidate: position kept, 60..64 from the invalidate")


if __name__ == "__main__":
    h.run(story)
