#!/usr/bin/python3
"""Story: a browser-like client drops its SSE connection after k events and reconnects
with what it last saw; it gets exactly the rest: no gap, no repeat.

1. devmongo and changegate start; a reference subscriber and two resuming clients
   subscribe to /events; 300 inserts {seq: 0..299} are written.
2. Client A reads 70 events and disconnects; client B reads 151 and disconnects.
3. A reconnects with the `Last-Event-ID` header, B with `?lastEventId=`; each receives
   exactly seq 70..299 / 151..299 with the same ids the reference subscriber saw.
4. While A's and B's reconnections are open, 50 more inserts arrive live on both, in order.
5. The header wins over the query parameter: a client sending both (header = event 200,
   query = event 10) gets 201.. only. NDJSON resumes the same way (header) from event 250.
6. Resuming from the very last event id gives nothing old, only what comes next.
7. With --journal-size 50, resuming from 110 events back either catches up exactly or
   starts with `event: reset` and continues from now; never a silent gap.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 300
MORE = 50


def seqs_of(msgs):
    return [h.seq_of(h.check_sse_event(m)) for m in msgs]


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)

    ref = sc.track(cg.sse())
    a = sc.track(cg.sse())
    b = sc.track(cg.sse())
    w = sc.writer(mongo.uri)
    w.insert_seq(0, N, db="app", coll="feed")

    ref_msgs = ref.read_messages(N)
    h.check_sequence(seqs_of(ref_msgs), list(range(N)), "reference subscriber")
    ids = [m.id_field for m in ref_msgs]
    h.check(len(set(ids)) == N, "ids are not unique")

    ka, kb = 70, 151
    got_a = a.read_messages(ka)
    got_b = b.read_messages(kb)
    h.check_sequence(seqs_of(got_a), list(range(ka)), "A before disconnect")
    h.check_sequence(seqs_of(got_b), list(range(kb)), "B before disconnect")
    h.check(a.last_event_id == ids[ka - 1], "A's last event id %r is not event %d's id",
            a.last_event_id, ka - 1)
    a.close()
    b.close()
    h.say("A disconnected after %d events, B after %d", ka, kb)

    a2 = sc.track(cg.sse(last_event_id=got_a[-1].id))
    b2 = sc.track(cg.sse(params=[("lastEventId", got_b[-1].id)]))
    rest_a = a2.read_messages(N - ka)
    rest_b = b2.read_messages(N - kb)
    h.check_sequence(seqs_of(rest_a), list(range(ka, N)), "A resumed with Last-Event-ID")
    h.check_sequence([m.id_field for m in rest_a], ids[ka:], "A's resumed ids")
    h.check_sequence(seqs_of(rest_b), list(range(kb, N)), "B resumed with ?lastEventId=")
    h.check_sequence([m.id_field for m in rest_b], ids[kb:], "B's resumed ids")
    h.say("A got %d..%d and B got %d..%d after resuming", ka, N - 1, kb, N - 1)

    w.insert_seq(N, MORE, db="app", coll="feed")
    live_ref = ref.read_messages(MORE)
    h.check_sequence(seqs_of(live_ref), list(range(N, N + MORE)), "reference, live part")
    h.check_sequence(seqs_of(a2.read_messages(MORE)), list(range(N, N + MORE)), "A, live part")
    h.check_sequence(seqs_of(b2.read_messages(MORE)), list(range(N, N + MORE)), "B, live part")
    ids += [m.id_field for m in live_ref]
    total = N + MORE
    h.say("the resumed streams carry on live with %d more", MORE)

    # The header wins over the query parameter.
    c = sc.track(cg.sse(last_event_id=ids[200], params=[("lastEventId", ids[10])]))
    got_c = c.read_messages(total - 201)
    h.check_sequence(seqs_of(got_c), list(range(201, total)),
                     "header Last-Event-ID (event 200) and ?lastEventId= (event 10) together")
    c.close()

    nd = sc.track(cg.ndjson(last_event_id=ids[250]))
    objs = nd.read_events(total - 251)
    h.check_sequence([h.seq_of(h.check_ndjson_event(o)) for o in objs], list(range(251, total)),
                     "NDJSON resumed with Last-Event-ID")
    nd.close()

    # Resuming from the newest id: nothing old, then the next write.
    d = sc.track(cg.sse(last_event_id=ids[-1]))
    w.insert_seq(total, 1, db="app", coll="feed")
    got_d = d.read_messages(1)
    h.check_sequence(seqs_of(got_d), [total], "resume from the newest id, then one write")
    h.say("header beats query; NDJSON resumes; resuming at the head waits for new events")

    for s, what in ((a2, "A"), (b2, "B"), (ref, "reference"), (d, "D")):
        extra = s.drain(0.3)
        if s is not d:
            extra = extra[1:] if extra and h.seq_of(h.check_sse_event(extra[0])) == total else extra
        h.check(not extra, "%s got unexpected extra messages: %r", what, extra[:3])

    # A position that has left a small journal (--journal-size 50) but is still in
    # MongoDB's oplog: either changegate catches up (exactly the missed events) or it says
    # `event: reset` first and continues from now. Silently skipping events is a bug.
    small = h.Changegate(sc, mongo.uri, name="changegate-small", args=["--journal-size", "50"])
    small.start()
    s_ref = sc.track(small.sse())
    # Written in batches of 20, each read before the next: a burst larger than the
    # journal may overrun even a fast reader (it then gets `reset`, too_slow), which is
    # not what this reference subscriber is for.
    small_msgs = []
    for start in range(1000, 1120, 20):
        w.insert_seq(start, 20, db="app", coll="feed")
        small_msgs += s_ref.read_messages(20)
    small_ids = [m.id_field for m in small_msgs]
    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in small_msgs], list(range(1000, 1120)),
                     "small-journal reference subscriber")
    old = sc.track(small.sse(last_event_id=small_ids[9]))    # 110 events ago, journal keeps 50
    first = old.next_message(timeout=15 * h.SLOW)
    h.check(first is not None, "resume from outside the journal: the stream ended")
    if first.type == "reset":
        rd = first.json()
        h.check(isinstance(rd, dict) and rd.get("reason") and rd.get("lastEventId")
                and first.id_field == rd["lastEventId"], "malformed reset %r", first)
        w.insert_seq(1120, 3, db="app", coll="feed")
        after = old.read_messages(3)
        h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in after], [1120, 1121, 1122],
                         "after the reset for a position outside the journal")
        h.say("resume from outside a 50-event journal: reset (%s), then new events", rd["reason"])
    else:
        rest = [first] + old.read_messages(109)
        h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in rest], list(range(1010, 1120)),
                         "catch-up from a position outside the journal (no reset was sent)")
        h.say("resume from outside a 50-event journal: caught up with all 110 missed events")
    old.close()
    small.stop()


if __name__ == "__main__":
    h.run(story)
