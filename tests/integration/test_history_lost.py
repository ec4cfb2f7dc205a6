#!/usr/bin/python3
"""Story: a position MongoDB can no longer resume from (it fell off a small oplog, or it
was never issued) is answered with a reset (SSE, NDJSON) or 410 (long-poll) naming the
current position; the client carries on from there with exactly the new events, and the
gateway stays healthy for everyone else.

1. A first devmongo runs just long enough to give a resume token: a well-formed position
   from another MongoDB instance. Then devmongo (--oplog-size 200) and changegate
   (--journal-size 50, --heartbeat 1) start; a reference SSE subscriber R reads
   everything, and so does a second gateway for the first 51 writes (see 5). seq 0 is
   written: its id is P_old. Then seq 1..509, in batches of 50 that R reads before the
   next (the watcher itself must not fall off the small oplog). P_old is now out of the
   oplog and the journal.
2. An SSE client with Last-Event-ID P_old gets first `event: reset`, data
   {"reason": "history_lost", "lastEventId": X}, id field X, where X is not P_old. An
   NDJSON client gets {"reset": {"reason": "history_lost", "lastEventId": ...}}. /poll
   from P_old answers 410 {"error": "history_lost", "message", "lastEventId"}.
3. 5 live writes (510..514): the SSE and NDJSON clients get exactly those after their
   reset, a poll loop from the 410's lastEventId gets exactly those, and so does an SSE
   client resuming from X (X is the current position: nothing old follows it).
4. /healthz is 200 with "subscribers"; R received everything with no reset; /metrics
   counts the history_lost resets (changegate_resets_total{reason="history_lost"} >= 2)
   and changegate_watcher_history_lost is 0.
5. The second gateway, stopped after seq 50, starts again: its saved position has left
   the oplog, so /metrics says changegate_watcher_history_lost 1; it is healthy and a
   new subscriber gets the next writes.
6. Positions that were never issued here, each over SSE, NDJSON and /poll: the one from
   the other devmongo instance; the id of seq 505 (inside the oplog and the journal)
   with its last hex digit changed; one with a clusterTime far in the future. Each gets
   either a 400 JSON error with a message, or a reset / 410 first, then only events
   written afterwards: never a crash, never events served as if the position were
   real, never a client left waiting with heartbeats alone. R is still served and
   /healthz still 200 at the end.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

OPLOG = 200
N = 510


def data_seqs(msgs, what):
    out = []
    for i, m in enumerate(msgs):
        h.check(m.type == "message", "%s: message %d is `event: %s` %s; expected data only",
                what, i, m.type, m.data)
        out.append(h.seq_of(h.check_sse_event(m)))
    return out


def check_reset(data, what, reason="history_lost"):
    h.check(isinstance(data, dict) and isinstance(data.get("lastEventId"), str)
            and data["lastEventId"] and isinstance(data.get("reason"), str) and data["reason"],
            "%s: reset data lacks reason/lastEventId: %r", what, data)
    if reason:
        h.check(data["reason"] == reason, "%s: reset reason %r, expected %r", what,
                data["reason"], reason)
    return data


def sse_reset(msg, what, reason="history_lost"):
    h.check(msg is not None, "%s: the stream ended before any message", what)
    if msg.type == "message":
        raise h.TestFailure("%s: the first message is a data message (%r): events were served "
                            "as if the position had been issued; expected `event: reset` "
                            "(or a 400)" % (what, msg))
    h.check(msg.type == "reset", "%s: first message is %r; expected `event: reset`", what, msg)
    data = check_reset(msg.json(), what, reason)
    h.check(msg.id_field == data["lastEventId"], "%s: reset id field %r differs from its "
            "data.lastEventId %r", what, msg.id_field, data["lastEventId"])
    return data


def poll_410(cg, pos, what, reason_ok=("history_lost",)):
    status, body, _ = cg.poll(lastEventId=pos, timeout=2)
    h.check(status == 410, "%s: /poll answered %d %r; expected 410", what, status, body)
    h.check(isinstance(body, dict) and body.get("error") in reason_ok
            and isinstance(body.get("message"), str) and body["message"].strip()
            and isinstance(body.get("lastEventId"), str) and body["lastEventId"],
            "%s: 410 body %r lacks error %s / message / lastEventId", what, body,
            "|".join(reason_ok))
    return body


def poll_until(cg, pos, count, what):
    events = []
    deadline = time.monotonic() + 20 * h.SLOW
    while len(events) < count:
        h.check(time.monotonic() < deadline, "%s: %d of %d events", what, len(events), count)
        status, body, _ = cg.poll(lastEventId=pos, timeout=2)
        h.check(status == 200, "%s: /poll answered %d %r", what, status, body)
        events += body["events"]
        pos = body["lastEventId"]
    return [h.seq_of(e) for e in events], pos


def first_nd(nd):
    """The first NDJSON line that is not a heartbeat."""
    return nd.read_events(1)[0]


def never_issued(sc, cg, w, ref, pos, what, seq_next):
    """A position that was never issued, over SSE, NDJSON and /poll; returns the outcome."""
    s = sc.track(cg.sse(last_event_id=pos, expect_status=None))
    nd = sc.track(cg.ndjson(last_event_id=pos, expect_status=None))
    outcome = []
    if s.status == 400:
        err = h.json_body(s.http.read_all(5), "SSE 400")
        h.check(isinstance(err, dict) and err.get("error") and err.get("message"),
                "SSE %s: 400 body %r lacks error/message", what, err)
        outcome.append("SSE 400 %s" % err["error"])
        s = None
    else:
        h.check(s.status == 200, "SSE %s: answered %d", what, s.status)
        try:
            first = s.next_message(timeout=15 * h.SLOW)
        except TimeoutError:
            raise h.TestFailure(
                "SSE %s: 200, then for 15 s neither a reset nor an event, only %r: the "
                "client is left waiting (a catch-up retrying a position MongoDB rejects, or "
                "waiting for a position it will never reach?)" % (what, s.items[-4:]))
        rs = sse_reset(first, "SSE %s" % what, reason=None)
        outcome.append("SSE reset %s" % rs["reason"])
    if nd.status == 400:
        err = h.json_body(nd.http.read_all(5), "NDJSON 400")
        h.check(isinstance(err, dict) and err.get("error") and err.get("message"),
                "NDJSON %s: 400 body %r lacks error/message", what, err)
        outcome.append("NDJSON 400 %s" % err["error"])
        nd = None
    else:
        h.check(nd.status == 200, "NDJSON %s: answered %d", what, nd.status)
        o = first_nd(nd)
        h.check(isinstance(o, dict) and set(o) == {"reset"}, "NDJSON %s: first line %r, "
                "expected {\"reset\": ...} (or a 400)", what, o)
        outcome.append("NDJSON reset %s" % check_reset(o["reset"], "NDJSON %s" % what,
                                                        reason=None)["reason"])
    status, pbody, _ = cg.poll(lastEventId=pos, timeout=2)
    h.check(status in (400, 410), "/poll %s answered %d %r; expected 410 or 400", what,
            status, pbody)
    h.check(isinstance(pbody, dict) and pbody.get("error") and pbody.get("message"),
            "/poll %s: %d body %r lacks error/message", what, status, pbody)
    if status == 410:
        h.check(isinstance(pbody.get("lastEventId"), str) and pbody["lastEventId"],
                "/poll %s: 410 without lastEventId: %r", what, pbody)
    outcome.append("poll %d %s" % (status, pbody["error"]))
    w.insert_seq(seq_next, 2, "hl", "docs")
    new = [seq_next, seq_next + 1]
    if s is not None:
        h.check_sequence(data_seqs(s.read_messages(2), "SSE after the reset"), new,
                         "SSE %s, after its reset" % what)
        s.close()
    if nd is not None:
        h.check_sequence([h.seq_of(h.check_ndjson_event(o)) for o in nd.read_events(2)],
                         new, "NDJSON %s, after its reset" % what)
        nd.close()
    if status == 410:
        got, _ = poll_until(cg, pbody["lastEventId"], 2, "poll from the 410 (%s)" % what)
        h.check_sequence(got, new, "poll from the 410's lastEventId (%s)" % what)
    h.say("%s: %s; then only the new events", what, ", ".join(outcome))
    return ref.read_messages(2)


def story(sc):
    foreign = h.foreign_position(sc)
    mongo = sc.devmongo(oplog_size=OPLOG)
    cg = sc.changegate(mongo.uri, args=["--journal-size", "50", "--heartbeat", "1"])
    w = sc.writer(mongo.uri)
    ref = sc.track(cg.sse())
    # A second gateway sees the first 51 events, then stops: it saves its position.
    cg2 = sc.changegate(mongo.uri, name="changegate-2")
    r2 = sc.track(cg2.sse())
    w.insert_seq(0, 1, "hl", "docs")
    ref_msgs = ref.read_messages(1)
    for start in range(1, N, 50):
        count = min(50, N - start)
        w.insert_seq(start, count, "hl", "docs")
        ref_msgs += ref.read_messages(count)
        if r2 is not None:
            h.check_sequence(data_seqs(r2.read_messages(start + count), "changegate-2"),
                             list(range(start + count)), "changegate-2's subscriber")
            r2.close()
            r2 = None
            cg2.stop()
    h.check_sequence(data_seqs(ref_msgs, "reference"), list(range(N)), "reference subscriber")
    ids = [m.id_field for m in ref_msgs]
    p_old = ids[0]
    h.say("%d written; P_old = %s has left the %d-entry oplog and the 50-event journal",
          N, p_old, OPLOG)

    # 2. history lost over SSE, NDJSON, long-poll.
    s = sc.track(cg.sse(last_event_id=p_old))
    nd = sc.track(cg.ndjson(last_event_id=p_old))
    r = sse_reset(s.next_message(timeout=15 * h.SLOW), "SSE from P_old")
    h.check(r["lastEventId"] != p_old, "the SSE reset names P_old as the current position")
    o = first_nd(nd)
    h.check(isinstance(o, dict) and set(o) == {"reset"}, "NDJSON from P_old: first line %r, "
            "expected {\"reset\": {...}}", o)
    rn = check_reset(o["reset"], "NDJSON reset")
    h.check(rn["lastEventId"] != p_old, "the NDJSON reset names P_old as the current position")
    body = poll_410(cg, p_old, "long-poll from P_old")
    h.check(body["lastEventId"] != p_old, "the 410 names P_old as the current position")
    h.say("SSE reset %s; NDJSON reset %s; /poll 410 %s", r, rn, body)
    x = sc.track(cg.sse(last_event_id=r["lastEventId"]))

    # 3. Live writes after the reset.
    w.insert_seq(N, 5, "hl", "docs")
    live = list(range(N, N + 5))
    h.check_sequence(data_seqs(s.read_messages(5), "SSE after the reset"), live,
                     "SSE client after its history_lost reset")
    h.check_sequence([h.seq_of(h.check_ndjson_event(o)) for o in nd.read_events(5)], live,
                     "NDJSON client after its history_lost reset")
    seqs, _ = poll_until(cg, body["lastEventId"], 5, "poll loop from the 410's lastEventId")
    h.check_sequence(seqs, live, "poll loop from the 410's lastEventId")
    h.check_sequence(data_seqs(x.read_messages(5), "resume from the reset's id"), live,
                     "SSE resumed from the reset's lastEventId")
    ref_msgs += ref.read_messages(5)
    ids += [m.id_field for m in ref_msgs[-5:]]
    for c, what in ((s, "SSE"), (x, "resumed-from-X")):
        extra = c.drain(0.3)
        h.check(not extra, "%s client got extra messages: %r", what, extra[:3])
    h.say("after the reset / 410: exactly the %d new events on SSE, NDJSON and poll", len(live))
    for c in (s, nd, x):
        c.close()
    seq_next = N + 5

    # 4. Still healthy for everyone.
    status, hj = cg.health_json()
    h.check(status == 200 and hj.get("status") == "ok", "/healthz answered %d %r", status, hj)
    h.check(isinstance(hj.get("subscribers"), int) and hj["subscribers"] >= 1,
            "/healthz has no usable subscribers count: %r", hj)
    h.check_sequence(data_seqs(ref_msgs, "reference"), list(range(seq_next)),
                     "reference subscriber through all of it")
    m = cg.metrics()
    lost = m.total("changegate_resets_total", reason="history_lost")
    h.check(lost >= 2, "changegate_resets_total{reason=\"history_lost\"} is %s; at least the "
            "SSE and NDJSON resets from P_old (2) should be counted", lost)
    h.check(m.value("changegate_watcher_history_lost") == 0,
            "changegate_watcher_history_lost is %s on a gateway that never lost its position",
            m.value("changegate_watcher_history_lost"))
    h.say("/healthz %s; reference got 0..%d with no reset; history_lost resets counted: %d",
          hj, seq_next - 1, lost)

    # 5. The second gateway's own saved position (seq 50) is gone from the oplog.
    cg2.start()
    m2 = cg2.metrics()
    h.check(m2.value("changegate_watcher_history_lost") == 1,
            "changegate_watcher_history_lost is %s on a gateway whose saved position fell "
            "off the oplog while it was down", m2.value("changegate_watcher_history_lost"))
    r2 = sc.track(cg2.sse())
    w.insert_seq(seq_next, 2, "hl", "docs")
    h.check_sequence(data_seqs(r2.read_messages(2), "changegate-2 after restart"),
                     [seq_next, seq_next + 1], "a new subscriber of the restarted gateway")
    ref_msgs += ref.read_messages(2)
    seq_next += 2
    r2.close()
    cg2.stop()
    h.say("a gateway whose saved position was lost starts anyway, says so in /metrics "
          "(changegate_watcher_history_lost 1), and streams new events")

    # 6. Positions that were never issued here.
    real = ids[505]
    altered = real[:-1] + ("0" if real[-1] != "0" else "1")
    future = real[:2] + "7FFFFFF0" + real[10:]
    for pos, what in ((foreign, "a position from another devmongo instance"),
                      (altered, "a real position with its last digit changed"),
                      (future, "a position from the future")):
        h.check(pos not in ids, "test bug: %s is a real id", pos)
        ref_msgs += never_issued(sc, cg, w, ref, pos, what, seq_next)
        seq_next += 2
    h.check_sequence(data_seqs(ref_msgs, "reference"), list(range(seq_next)),
                     "reference subscriber at the end")
    status, hj = cg.health_json()
    h.check(status == 200 and hj.get("status") == "ok", "/healthz answered %d %r at the end",
            status, hj)
    h.say("the reference subscriber got 0..%d; /healthz 200", seq_next - 1)


if __name__ == "__main__":
    h.run(story)
