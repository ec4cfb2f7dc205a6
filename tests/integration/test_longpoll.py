#!/usr/bin/python3
"""Story: a client that cannot stream reads everything through GET /poll.

1. devmongo and changegate start. An idle first poll (no position, timeout=1) answers
   200 with no events and a lastEventId: the current position.
2. A writer thread inserts 500 documents while the client loops on
   /poll?lastEventId=<last>&limit=37; every answer has at most 37 events; together they
   are exactly seq 0..499, in order, no gap, no repeat. The final lastEventId is the last
   event's resume token.
   Re-reading from the start without limit gives at most 100 (the default), oldest first.
3. An idle poll (timeout=1) from there answers no events and a lastEventId; 3 more inserts
   are then read from that lastEventId: exactly those 3.
4. A poll without a position that is waiting when a write happens returns that write.
5. A narrow filter (ns=elsewhere) times out empty but its lastEventId moves forward:
   resuming unfiltered from it yields only events written afterwards.
6. One poll with limit=1000 (the maximum) from the start returns all 506 events.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 500
LIMIT = 37


def poll_ok(cg, **kw):
    status, body, hdrs = cg.poll(**kw)
    h.check(status == 200, "/poll %r answered %d: %r", kw, status, body)
    h.check(isinstance(body, dict) and isinstance(body.get("events"), list)
            and isinstance(body.get("lastEventId"), str) and body["lastEventId"],
            "/poll answer lacks events/lastEventId: %r", body)
    ctype = hdrs.get("content-type", "")
    h.check(ctype.split(";")[0].strip() == "application/json",
            "/poll Content-Type is %r, expected application/json", ctype)
    return body


def poll_until(cg, pos, count, limit=None, params=()):
    """Loop on /poll from pos until `count` events came; returns (events, last position)."""
    events = []
    polls = 0
    deadline = time.monotonic() + 40 * h.SLOW
    while len(events) < count:
        h.check(time.monotonic() < deadline, "poll loop: %d of %d events after %d polls",
                len(events), count, polls)
        body = poll_ok(cg, lastEventId=pos, timeout=5, limit=limit, params=params)
        polls += 1
        if limit is not None:
            h.check(len(body["events"]) <= limit, "poll answered %d events with limit=%d",
                    len(body["events"]), limit)
        if body["events"]:
            h.check(body["lastEventId"] == h.position_of(body["events"][-1]),
                    "poll's lastEventId %r is not its last event's token %r",
                    body["lastEventId"], body["events"][-1]["_id"])
        events += body["events"]
        pos = body["lastEventId"]
    return events, pos, polls


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)
    w = sc.writer(mongo.uri)

    first = poll_ok(cg, timeout=1)
    h.check(first["events"] == [], "idle poll without a position returned events: %r",
            first["events"][:2])
    start = first["lastEventId"]
    h.say("idle poll answered empty with lastEventId %s", start)

    writer = sc.thread(w.insert_seq, 0, N, "shop", "orders")
    events, pos, polls = poll_until(cg, start, N, limit=LIMIT)
    writer.join(30)
    seqs = [h.seq_of(e) for e in events]
    h.check_sequence(seqs, list(range(N)), "long-poll loop")
    ids = [h.position_of(e) for e in events]
    h.check(len(set(ids)) == N, "positions are not unique")
    h.say("long-poll loop read %d events in %d polls, in order", N, polls)

    # Without limit: at most the default 100, the oldest first.
    body = poll_ok(cg, lastEventId=start, timeout=5)
    n = len(body["events"])
    h.check(1 <= n <= 100, "poll without limit returned %d events (default limit 100)", n)
    h.check_sequence([h.seq_of(e) for e in body["events"]], list(range(n)),
                     "poll without limit from the start")
    h.say("without limit a poll returns %d events, the oldest first", n)

    idle = poll_ok(cg, lastEventId=pos, timeout=1)
    h.check(idle["events"] == [], "poll after the last event should be empty: %r",
            idle["events"][:2])
    after_idle = idle["lastEventId"]
    w.insert_seq(N, 3, "shop", "orders")
    more, pos, _ = poll_until(cg, after_idle, 3)
    h.check_sequence([h.seq_of(e) for e in more], [N, N + 1, N + 2],
                     "events after an empty poll's lastEventId")
    h.say("empty poll's lastEventId resumed exactly at the next 3 events")

    # A poll without a position, already waiting, gets the next write.
    waiting = sc.thread(lambda: cg.poll(timeout=20), name="poll-no-position")
    time.sleep(0.5 * h.SLOW)   # let it be waiting before the write
    w.insert_seq(N + 3, 1, "shop", "orders")
    status, body, _ = waiting.join(40 * h.SLOW)
    h.check(status == 200 and [h.seq_of(e) for e in body["events"]] == [N + 3],
            "waiting poll without a position answered %d %r (expected the event seq %d)",
            status, body, N + 3)
    h.say("a waiting poll without position got the next write")

    # A narrow filter moves forward on an empty answer.
    narrow = poll_ok(cg, lastEventId=ids[0], timeout=1, params=[("ns", "elsewhere")])
    h.check(narrow["events"] == [], "ns=elsewhere matched events: %r", narrow["events"][:2])
    moved = narrow["lastEventId"]
    h.check(moved != ids[0], "an empty filtered poll did not move lastEventId forward")
    w.insert_seq(N + 4, 2, "shop", "orders")
    rest, _, _ = poll_until(cg, moved, 2)
    h.check_sequence([h.seq_of(e) for e in rest], [N + 4, N + 5],
                     "unfiltered poll from a filtered empty answer's lastEventId")
    h.say("an empty filtered poll moved the position past everything already written")

    # The largest answer the contract allows: limit=1000 over the 506 events so far.
    body = poll_ok(cg, lastEventId=start, timeout=5, limit=1000)
    h.check_sequence([h.seq_of(e) for e in body["events"]], list(range(N + 6)),
                     "poll with limit=1000 from the start")
    h.say("limit=1000 from the start answered all %d events in one response", N + 6)


if __name__ == "__main__":
    h.run(story)
