#!/usr/bin/python3
"""Story: changegate is restarted (SIGTERM, same state dir, same port) in the middle of a
write burst; clients that resume with their last id get every event exactly once.

1. devmongo and changegate start. Subscriber A stays connected (SSE); subscriber B (SSE)
   reads 40 events and goes away; subscriber N (NDJSON) stays connected.
2. A writer thread inserts 600 documents at a steady pace, never pausing.
3. Once A has seen 150 events, changegate gets SIGTERM: A's and N's streams must end
   cleanly (the terminating chunk, no reset) and the process must exit 0.
4. changegate starts again with the same state dir on the same port while the writer is
   still writing (writes made while it was down must not be lost).
5. A and N reconnect with their last id (A: Last-Event-ID header, N: ?lastEventId=), B
   reconnects with the id it had before the restart; each ends up with seq 0..599
   exactly once, in order.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 600


def reconnect(fn, what, timeout=20):
    """Call fn() until the daemon accepts the connection (it may still be starting)."""
    deadline = time.monotonic() + timeout * h.SLOW
    while True:
        try:
            return fn()
        except (ConnectionRefusedError, ConnectionResetError, h.TestFailure) as e:
            if time.monotonic() > deadline:
                raise h.TestFailure("%s: could not reconnect: %r" % (what, e))
            time.sleep(0.1)


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)
    w = sc.writer(mongo.uri)

    a = sc.track(cg.sse())
    b = sc.track(cg.sse())
    n = sc.track(cg.ndjson())

    def write_burst():
        c = w.coll("app", "burst")
        t0 = time.monotonic()
        for seq in range(N):
            # ~4 ms apart: the burst outlasts the restart.
            delay = t0 + seq * 0.004 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c.insert_one({"seq": seq, "ts_us": int(time.time() * 1e6)})
    writer = sc.thread(write_burst)

    b_msgs = b.read_messages(40)
    b_last = b_msgs[-1].id
    b.close()
    a_msgs = a.read_messages(150, timeout=30)
    h.say("A has %d events, B left after 40; SIGTERM to changegate while writing", len(a_msgs))

    cg.proc.send_signal(h.signal.SIGTERM)
    # A's open stream must end cleanly: whatever was in flight, then the end of the body.
    a_msgs += a.drain(quiet=30, timeout=30)
    h.check(a.ended, "A's SSE stream did not end after SIGTERM")
    h.check(a.end_state == "chunked-end" or (a.end_state == "eof" and not a.http.chunked),
            "A's SSE stream ended uncleanly after SIGTERM: %s (chunked=%s)", a.end_state,
            a.http.chunked)
    n_objs = []
    while True:
        o = n.next_obj(timeout=30)
        if o is None:
            break
        if not h.is_heartbeat(o):
            n_objs.append(o)
    h.check(n.end_state == "chunked-end" or (n.end_state == "eof" and not n.http.chunked),
            "N's NDJSON stream ended uncleanly after SIGTERM: %s", n.end_state)
    rc = cg.stop(signalled=True)        # asserts exit status 0
    h.check(writer.is_alive(), "the writer finished before the restart; the burst is too short")
    h.say("streams ended cleanly (%s), changegate exited %s; A has %d, N has %d",
          a.end_state, rc, len(a_msgs), len(n_objs))
    a_last, n_last = a.last_event_id, n_objs[-1]["id"]
    a.close()
    n.close()

    time.sleep(0.3)       # writes land while changegate is down
    cg.start()            # same port, same state dir
    h.say("changegate restarted on the same port with the same state dir")

    a2 = sc.track(reconnect(lambda: cg.sse(last_event_id=a_last), "A"))
    n2 = sc.track(reconnect(lambda: cg.ndjson(params=[("lastEventId", n_last)]), "N"))
    b2 = sc.track(reconnect(lambda: cg.sse(last_event_id=b_last), "B"))
    writer.join(60)
    h.say("writer done; reading the rest")

    a_msgs += a2.read_messages(N - len(a_msgs), timeout=30)
    b_msgs += b2.read_messages(N - len(b_msgs), timeout=30)
    n_objs += n2.read_events(N - len(n_objs), timeout=30)
    for what, s in (("A", a2), ("B", b2)):
        extra = s.drain(0.5)
        h.check(not extra, "%s got extra messages: %r", what, extra[:3])

    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in a_msgs], list(range(N)),
                     "A across the restart (Last-Event-ID)")
    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in b_msgs], list(range(N)),
                     "B: left before the restart, resumed after it")
    h.check_sequence([h.seq_of(h.check_ndjson_event(o)) for o in n_objs], list(range(N)),
                     "N across the restart (NDJSON, ?lastEventId=)")
    ids = [m.id_field for m in a_msgs]
    h.check(len(set(ids)) == N, "ids across the restart are not unique")
    h.check_sequence([m.id_field for m in b_msgs], ids, "B's ids vs A's ids")
    h.say("A, B and N each got seq 0..%d exactly once across the restart", N - 1)


if __name__ == "__main__":
    h.run(story)
