#!/usr/bin/python3
"""Story: a client with a narrow filter sees few events, but its heartbeats carry the
newest position it has considered, so when it reconnects it resumes from near now instead
of from its last (old) match.

1. devmongo and changegate (--heartbeat 1, --journal-size 100) start. A reference SSE
   subscriber reads everything. A narrow SSE client (ns=hp.rare) and a narrow NDJSON
   client (same filter) connect.
2. One document goes to hp.rare (seq 0), then 300 to hp.common (seq 1..300): three times
   the journal.
3. The narrow SSE client gets seq 0, then heartbeats: a `: heartbeat` comment followed by
   an id-only block; within a few of them the id is the id of seq 300 (the newest event it
   considered, though it did not match) and it never goes back. The NDJSON client gets
   {"heartbeat": true, "lastEventId": <the id of seq 300>} the same way. A narrow
   long-poll (timeout=1) answers no events and that same lastEventId.
4. The narrow SSE client reconnects with the heartbeat's id (what a browser resends):
   after 2 more writes to hp.common and 1 to hp.rare (seq 301..303) it gets exactly seq
   303, and an unfiltered client resuming from the same id gets exactly 301..303: the
   position is a real one, from near now, served from the journal (no catch-up of the
   300 old events, no reset).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 300


def data_seqs(msgs, what):
    out = []
    for m in msgs:
        h.check(m.type == "message", "%s: got `event: %s` %s", what, m.type, m.data)
        out.append(h.seq_of(h.check_sse_event(m)))
    return out


def sse_heartbeat_ids(s, want, max_beats=6):
    """Heartbeat ids (comment + id-only block) until one equals `want`."""
    ids, prev = [], None
    deadline = time.monotonic() + (max_beats + 3) * h.SLOW
    while True:
        try:
            item = s.next_item(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise h.TestFailure("narrow SSE client: no heartbeat with id %s within %d "
                                "heartbeats; heartbeat ids seen: %r" % (want, max_beats, ids))
        h.check(item is not None, "narrow SSE stream ended (%s)", s.end_state)
        h.check(not isinstance(item, h.Message), "narrow SSE client got a message %r while "
                "only non-matching events were written", item)
        if isinstance(item, h.Comment):
            prev = item
            continue
        if isinstance(item, h.IdOnly):
            h.check(isinstance(prev, h.Comment) and prev.text == "heartbeat",
                    "an id-only block not preceded by ': heartbeat' (previous item %r)", prev)
            ids.append(item.last_event_id)
            h.check(len(ids) < 2 or ids[-1] >= ids[-2], "heartbeat ids went back: %r", ids)
            if item.last_event_id == want:
                return ids
            h.check(len(ids) < max_beats, "narrow SSE client: %d heartbeats, none with the "
                    "newest position %s: %r", len(ids), want, ids)
        prev = item


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--heartbeat", "1", "--journal-size", "100"])
    w = sc.writer(mongo.uri)
    narrow = [("ns", "hp.rare")]
    ref = sc.track(cg.sse())
    s = sc.track(cg.sse(params=narrow))
    nd = sc.track(cg.ndjson(params=narrow))

    w.insert_seq(0, 1, "hp", "rare")
    got = s.read_messages(1)
    h.check_sequence(data_seqs(got, "narrow SSE"), [0], "narrow SSE client, first event")
    h.check_sequence([h.seq_of(h.check_ndjson_event(o)) for o in nd.read_events(1)], [0],
                     "narrow NDJSON client, first event")
    ref_msgs = ref.read_messages(1)
    for start in range(1, N + 1, 50):
        w.insert_seq(start, 50, "hp", "common")
        ref_msgs += ref.read_messages(50)
    h.check_sequence(data_seqs(ref_msgs, "reference"), list(range(N + 1)), "reference")
    ids = [m.id_field for m in ref_msgs]
    newest = ids[N]
    h.say("seq 0 matched the narrow filter, then %d non-matching; newest id %s", N, newest)

    beats = sse_heartbeat_ids(s, newest)
    h.say("narrow SSE heartbeats: ids %s", " ".join(b[-8:] for b in beats))

    deadline = time.monotonic() + 10 * h.SLOW
    nd_ids = []
    while True:
        o = nd.next_obj(timeout=max(0.0, deadline - time.monotonic()))
        h.check(o is not None, "narrow NDJSON stream ended")
        h.check(h.is_heartbeat(o), "narrow NDJSON client got %r; expected heartbeats", o)
        h.check("lastEventId" in o, "NDJSON heartbeat without lastEventId after events: %r", o)
        nd_ids.append(o["lastEventId"])
        if o["lastEventId"] == newest:
            break
        h.check(len(nd_ids) < 6, "narrow NDJSON client: no heartbeat with %s: %r", newest,
                nd_ids)
    status, body, _ = cg.poll(timeout=1, params=narrow)
    h.check(status == 200 and body.get("events") == [] and body.get("lastEventId") == newest,
            "narrow long-poll answered %d %r; expected no events and lastEventId %s", status,
            json.dumps(body)[:300], newest)
    h.say("NDJSON heartbeat and the narrow long-poll carry the same position")

    s.close()
    s2 = sc.track(cg.sse(last_event_id=s.last_event_id, params=narrow))
    h.check(s.last_event_id == newest, "the SSE client's last event id is %r, not the "
            "heartbeat's %r", s.last_event_id, newest)
    u = sc.track(cg.sse(last_event_id=s.last_event_id))
    w.insert_seq(N + 1, 2, "hp", "common")
    w.insert_seq(N + 3, 1, "hp", "rare")
    h.check_sequence(data_seqs(s2.read_messages(1), "narrow SSE resumed"), [N + 3],
                     "narrow SSE client resumed from its heartbeat id")
    h.check_sequence(data_seqs(u.read_messages(3), "unfiltered from the heartbeat id"),
                     [N + 1, N + 2, N + 3], "unfiltered client from the heartbeat id")
    for c, what in ((s2, "narrow"), (u, "unfiltered")):
        extra = c.drain(0.5)
        h.check(not extra, "%s client got extra messages: %r", what, extra[:3])
    m = cg.metrics()
    h.check(m.value("changegate_catchup_streams_peak") == 0 and
            m.total("changegate_resets_total") == 0,
            "/metrics: catch-up peak %s, resets %s; resuming from a heartbeat id should need "
            "neither", m.value("changegate_catchup_streams_peak"),
            m.total("changegate_resets_total"))
    h.say("resuming from the heartbeat id: exactly the new events (narrow: %d, "
          "unfiltered: %d..%d), from the journal (no catch-up, no reset)", N + 3, N + 1, N + 3)


if __name__ == "__main__":
    h.run(story)
