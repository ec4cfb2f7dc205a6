#!/usr/bin/python3
"""Story: idle streams are kept alive, and a client whose position cannot be honoured is
told so and then carried on from now.

1. A first devmongo runs, a pymongo change stream on it yields a resume token, and it
   stops: that token is a well-formed position from another MongoDB run.
2. A second devmongo and changegate (--heartbeat 1) start; 3 documents are written and
   seen in changegate's journal (through a long-poll).
3. An idle SSE subscriber receives ': heartbeat' comments; an idle NDJSON subscriber
   receives {"heartbeat": true} lines.
4. An SSE client resuming from the foreign position first gets `event: reset` with
   {"reason", "lastEventId"} (the id field equal to lastEventId), none of the 3 older
   events, then the 5 events written after it connected. The NDJSON equivalent gets
   {"reset": {...}} then the same 5. Resuming from the reset's lastEventId gives those
   same 5 exactly.
5. A long-poll from the foreign position answers 410 {"error": "history_lost",
   "message", "lastEventId"}, and polling from that lastEventId gets what is new.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def wait_heartbeats(sse, count, timeout):
    beats, others = 0, []
    deadline = time.monotonic() + timeout * h.SLOW
    while beats < count:
        try:
            item = sse.next_item(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise h.TestFailure("idle SSE stream: %d of %d heartbeats in %ss; other items: %r" % (
                beats, count, timeout * h.SLOW, others[:5]))
        h.check(item is not None, "idle SSE stream ended (%s)", sse.end_state)
        if isinstance(item, h.Comment) and item.text == "heartbeat":
            beats += 1
        else:
            others.append(item)
    h.check(not any(isinstance(i, h.Message) for i in others),
            "an idle stream dispatched messages: %r", others)
    return beats


def check_reset_data(data, what):
    h.check(isinstance(data, dict) and isinstance(data.get("reason"), str) and data["reason"]
            and isinstance(data.get("lastEventId"), str) and data["lastEventId"],
            "%s: reset data lacks reason/lastEventId: %r", what, data)
    return data


def story(sc):
    foreign = h.foreign_position(sc, later=True)

    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--heartbeat", "1"])
    w = sc.writer(mongo.uri)
    # 3 older documents, and wait until changegate's journal has them (a long-poll from
    # before the writes returns them): "from now" then means after them.
    status, body, _ = cg.poll(timeout=1)
    h.check(status == 200, "first poll answered %d %r", status, body)
    pos, older = body["lastEventId"], []
    w.insert_seq(0, 3, "hb", "docs")
    deadline = time.monotonic() + 20 * h.SLOW
    while len(older) < 3 and time.monotonic() < deadline:
        status, body, _ = cg.poll(lastEventId=pos, timeout=2)
        h.check(status == 200, "poll answered %d %r", status, body)
        older += body["events"]
        pos = body["lastEventId"]
    h.check_sequence([h.seq_of(e) for e in older], [0, 1, 2], "the 3 older events (poll)")

    idle = sc.track(cg.sse())
    wait_heartbeats(idle, 2, timeout=15)
    h.say("idle SSE stream got heartbeat comments")

    nd = sc.track(cg.ndjson())
    beats = 0
    deadline = time.monotonic() + 15 * h.SLOW
    while beats < 2:
        o = nd.next_obj(max(0.0, deadline - time.monotonic()))
        h.check(h.is_heartbeat(o), "idle NDJSON stream sent %r, expected heartbeats", o)
        beats += 1
    h.say("idle NDJSON stream got {\"heartbeat\": true} lines")

    lost = sc.track(cg.sse(last_event_id=foreign))
    lost_nd = sc.track(cg.ndjson(last_event_id=foreign))
    reset = lost.next_message(timeout=15 * h.SLOW)
    h.check(reset is not None and reset.type == "reset",
            "resuming from a foreign position: first message %r, expected event: reset", reset)
    rdata = check_reset_data(reset.json(), "SSE reset")
    h.check(reset.id_field == rdata["lastEventId"],
            "reset's id field %r differs from its data.lastEventId %r", reset.id_field,
            rdata["lastEventId"])
    h.check(rdata["lastEventId"] != foreign, "reset names the foreign position as current")
    nreset = lost_nd.read_events(1)[0]
    h.check(set(nreset) == {"reset"}, "NDJSON: first line %r, expected {\"reset\": ...}", nreset)
    check_reset_data(nreset["reset"], "NDJSON reset")
    h.say("SSE and NDJSON resets: %s", rdata)

    w.insert_seq(3, 5, "hb", "docs")
    new = lost.read_messages(5)
    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in new], [3, 4, 5, 6, 7],
                     "SSE stream after the reset (the 3 older events must not appear)")
    h.check_sequence([h.seq_of(h.check_ndjson_event(o)) for o in lost_nd.read_events(5)],
                     [3, 4, 5, 6, 7], "NDJSON stream after the reset")
    again = sc.track(cg.sse(last_event_id=rdata["lastEventId"]))
    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in again.read_messages(5)],
                     [3, 4, 5, 6, 7], "resuming from the reset's lastEventId")
    idle_new = idle.read_messages(5)
    h.check_sequence([h.seq_of(m.json()) for m in idle_new], [3, 4, 5, 6, 7],
                     "the formerly idle stream")
    h.say("after the reset the stream carries on from now with the 5 new events")

    status, body, _ = cg.poll(lastEventId=foreign, timeout=2)
    h.check(status == 410, "poll from a foreign position answered %d %r, expected 410",
            status, body)
    h.check(body.get("error") == "history_lost" and isinstance(body.get("message"), str)
            and isinstance(body.get("lastEventId"), str) and body["lastEventId"],
            "410 body %r lacks error history_lost / message / lastEventId", body)
    pos = body["lastEventId"]
    w.insert_seq(8, 2, "hb", "docs")
    got = []
    deadline = time.monotonic() + 20 * h.SLOW
    while len(got) < 2 and time.monotonic() < deadline:
        status, b, _ = cg.poll(lastEventId=pos, timeout=2)
        h.check(status == 200, "poll from the 410's lastEventId answered %d %r", status, b)
        got += b["events"]
        pos = b["lastEventId"]
    h.check_sequence([h.seq_of(e) for e in got], [8, 9], "poll after history_lost")
    h.say("poll: 410 history_lost, then its lastEventId resumes with the new events")


if __name__ == "__main__":
    h.run(story)
