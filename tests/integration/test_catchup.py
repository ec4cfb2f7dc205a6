#!/usr/bin/python3
"""Story: a client whose position is far older than the in-memory journal is caught up
from MongoDB, and handed over to the journal with no gap and no repeat; so is a
subscriber that read too slowly and fell out of the journal.

1. devmongo and changegate (--journal-size 1000) start. Subscriber A connects (SSE, small
   receive buffer), reads the one document written first (seq -1); its id is P0. From
   then on A reads nothing.
2. 50,000 small documents (seq 0..49,999) are written with insert_many, 1,000 at a time:
   50 times the journal. A's unread stream falls out of the journal.
3. Client B connects with Last-Event-ID P0: it receives exactly seq 0..49,999, in order,
   each id equal to its resume token, no `event: reset`. The catch-up rate (events/s,
   from connect to the last one) is printed as information.
4. A now reads: exactly seq 0..49,999 with B's ids, no reset (a slow subscriber is caught
   up, not reset).
5. A long-poll client loops on /poll?lastEventId=...&limit=1000 from P0: exactly the same
   sequence and ids; every answer's lastEventId is its last event's id.
6. 100 live writes (seq 50,000..50,099): A, B and the poll loop each get exactly those.
7. /metrics: changegate_catchup_streams_peak between 1 and 16 (--max-catchup default),
   changegate_catchup_streams back to 0, no changegate_resets_total.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = int(os.environ.get("CG_CATCHUP_EVENTS", "50000"))
BATCH = 1000
LIVE = 100
JOURNAL = 1000


def data_seqs(msgs, what, first_seq):
    """seqs of SSE data messages; fails naming the first `event: reset` (or other named
    message) instead of a confusing sequence mismatch."""
    out = []
    for i, m in enumerate(msgs):
        if m.type != "message":
            raise h.TestFailure("%s: message %d (after seq %s) is `event: %s` %s; expected only "
                                "data messages (a catch-up, not a reset)" % (
                                    what, i, out[-1] if out else first_seq - 1, m.type, m.data))
        out.append(h.seq_of(h.check_sse_event(m)))
    return out


def poll_loop(cg, pos, count, limit):
    """Polls from pos until `count` events came; returns (events, last lastEventId)."""
    events = []
    deadline = time.monotonic() + 60 * h.SLOW
    while len(events) < count:
        h.check(time.monotonic() < deadline, "poll loop: %d of %d events", len(events), count)
        status, body, _ = cg.poll(lastEventId=pos, timeout=5, limit=limit)
        h.check(status == 200, "/poll from an old position answered %d %r after %d events "
                "(a catch-up from MongoDB was expected)", status, body, len(events))
        h.check(isinstance(body.get("lastEventId"), str) and body["lastEventId"],
                "/poll answer without lastEventId: %r", body)
        got = body["events"]
        h.check(len(got) <= limit, "/poll gave %d events with limit=%d", len(got), limit)
        if got:
            h.check(body["lastEventId"] == h.position_of(got[-1]),
                    "/poll lastEventId %r is not its last event's id %r", body["lastEventId"],
                    got[-1]["_id"])
        events += got
        pos = body["lastEventId"]
    return events, pos


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--journal-size", str(JOURNAL)])
    w = sc.writer(mongo.uri)
    coll = w.coll("cu", "docs")

    a = sc.track(cg.sse())
    # A small receive buffer: A's unread stream backs up into changegate quickly.
    a.http.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    coll.insert_one({"seq": -1})
    first = a.read_messages(1)
    h.check(data_seqs(first, "A's first event", -1) == [-1], "A's first event is not seq -1")
    p0 = first[0].id_field
    h.say("A holds P0 = %s and stops reading", p0)

    t0 = time.monotonic()
    for start in range(0, N, BATCH):
        coll.insert_many([{"seq": s} for s in range(start, min(N, start + BATCH))], ordered=True)
    h.say("%d documents written in %.1fs (%d x the journal)", N, time.monotonic() - t0,
          N // JOURNAL)

    # 3. B resumes from P0.
    t0 = time.monotonic()
    b = sc.track(cg.sse(last_event_id=p0))
    b_msgs = b.read_messages(N, timeout=60)
    took = time.monotonic() - t0
    b_seqs = data_seqs(b_msgs, "B resuming from P0", 0)
    h.check_sequence(b_seqs, list(range(N)), "B resuming from P0 (%d events back)" % N)
    ids = [m.id_field for m in b_msgs]
    h.check(len(set(ids)) == N, "B's ids are not unique")
    h.say("B caught up %d events in %.2fs: %.0f events/s (information, not asserted)",
          N, took, N / took if took else float("inf"))

    # 4. A reads now.
    t0 = time.monotonic()
    a_msgs = a.read_messages(N, timeout=60)
    a_seqs = data_seqs(a_msgs, "A (stalled, fell out of the journal)", 0)
    h.check_sequence(a_seqs, list(range(N)), "A after falling out of the journal")
    h.check_sequence([m.id_field for m in a_msgs], ids, "A's ids vs B's")
    h.say("A, which fell out of the journal, got all %d in %.2fs, no reset", N,
          time.monotonic() - t0)

    # 5. A long-poll loop from P0.
    t0 = time.monotonic()
    p_events, p_pos = poll_loop(cg, p0, N, limit=1000)
    h.check_sequence([h.seq_of(e) for e in p_events], list(range(N)), "long-poll loop from P0")
    h.check_sequence([h.position_of(e) for e in p_events], ids, "long-poll ids vs B's")
    h.say("long-poll loop from P0 got the same %d events in %.2fs", N, time.monotonic() - t0)

    # 6. Live.
    coll.insert_many([{"seq": s} for s in range(N, N + LIVE)])
    live = list(range(N, N + LIVE))
    h.check_sequence(data_seqs(b.read_messages(LIVE), "B live", N), live, "B, live")
    h.check_sequence(data_seqs(a.read_messages(LIVE), "A live", N), live, "A, live")
    p_live, _ = poll_loop(cg, p_pos, LIVE, limit=1000)
    h.check_sequence([h.seq_of(e) for e in p_live], live, "long-poll, live")
    for s, what in ((a, "A"), (b, "B")):
        extra = s.drain(0.3)
        h.check(not extra, "%s got extra messages: %r", what, extra[:3])
    h.say("A, B and the poll loop then got the %d live writes exactly", LIVE)

    # 7. Metrics.
    m = h.wait_until(lambda: (lambda m: m if m.value("changegate_catchup_streams") == 0
                              else None)(cg.metrics()),
                     20 * h.SLOW, "changegate_catchup_streams to drop to 0")
    peak = m.value("changegate_catchup_streams_peak")
    h.check(1 <= peak <= 16, "changegate_catchup_streams_peak is %s; expected 1..16 (two "
            "streams and a poll loop were caught up, --max-catchup defaults to 16)", peak)
    resets = m.total("changegate_resets_total")
    h.check(resets == 0, "changegate_resets_total is %s; nobody should have been reset", resets)
    h.say("/metrics: catch-up peak %d, now 0, no resets", peak)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 120 * h.SLOW))
