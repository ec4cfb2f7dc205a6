#!/usr/bin/python3
"""Story: positions are global to the deployment, so a client can move between
changegate instances (same devmongo, same --watch, same --pipeline) and get exactly the
rest, even when its position is one the other instance's watcher has not reached yet.

1. devmongo starts; gateway A (default journal) and gateway B (--journal-size 50, appname
   cgB in its MongoDB URI so a fail point can target it) start, both with
   --pipeline [{"$match": {"ns.db": "tg"}}]. A reference SSE subscriber on A.
2. 400 inserts (seq 0..399) into tg.docs (and, in between, 40 into other.docs, which the
   pipeline drops).
3. An SSE client reads 200 from A, disconnects, reconnects to B with its Last-Event-ID:
   exactly seq 200..399 (B's journal holds only the last 50: B must catch up). An NDJSON
   client moves from A (after 120) to B the same way; a long-poll loop on B from A's
   position after 300 gets 300..399. A client that read 390 from B moves to A: 390..399.
   Gateway E, started only now (fresh state dir: it has never seen any of them), serves
   a client with A's position after 100: exactly 100..399.
4. The "ahead" case: a fail point blocks B's next getMore for 8 s (failCommand,
   {times: 1}, appName cgB, blockConnection): B's watcher is held at seq 399. 3,000 more
   (400..3,399) are written and read on A. /poll on B with a filter that matches
   nothing shows B's newest known position, which must be older than the clients' (the
   premise of this step).
5. While B's watcher is held: client C connects to B with the id of seq 2,400, client D
   with the id of seq 3,399 (the newest), and a long-poll loop from the id of seq 2,400.
   100 live writes follow (3,400..3,499). C and the loop get exactly 2,401..3,499 and D
   exactly 3,400..3,499: none lost, none repeated, no reset.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N1 = 400
N2 = 3000
LIVE = 100
PIPELINE = json.dumps([{"$match": {"ns.db": "tg"}}])
NEVER = json.dumps({"fullDocument.never": "matches"})


def data_seqs(msgs, what):
    out = []
    for i, m in enumerate(msgs):
        if m.type != "message":
            raise h.TestFailure("%s: message %d (after seq %s) is `event: %s` %s; expected "
                                "only data messages" % (what, i, out[-1] if out else None,
                                                        m.type, m.data))
        out.append(h.seq_of(h.check_sse_event(m)))
    return out


def nd_seqs(objs, what):
    out = []
    for o in objs:
        h.check("reset" not in o, "%s: got %r after seq %s; expected only events", what, o,
                out[-1] if out else None)
        out.append(h.seq_of(h.check_ndjson_event(o)))
    return out


def poll_loop(cg, pos, count, what):
    events = []
    deadline = time.monotonic() + 40 * h.SLOW
    while len(events) < count:
        h.check(time.monotonic() < deadline, "%s: %d of %d events", what, len(events), count)
        status, body, _ = cg.poll(lastEventId=pos, timeout=3, limit=1000)
        h.check(status == 200, "%s: /poll answered %d %r after %d events", what, status, body,
                len(events))
        events += body["events"]
        pos = body["lastEventId"]
    return [h.seq_of(e) for e in events], pos


def write(w, start, count, interleave=0):
    tg, other = w.coll("tg", "docs"), w.coll("other", "docs")
    for s in range(start, start + count, 100):
        tg.insert_many([{"seq": x} for x in range(s, min(start + count, s + 100))])
        if interleave:
            other.insert_many([{"seq": -1, "noise": i} for i in range(interleave)])


def story(sc):
    mongo = sc.devmongo()
    common = ["--pipeline", PIPELINE]
    a = sc.changegate(mongo.uri, name="changegate-A", args=common)
    b = sc.changegate(mongo.uri + "&appname=cgB", name="changegate-B",
                      args=common + ["--journal-size", "50"])
    w = sc.writer(mongo.uri)
    ref = sc.track(a.sse())
    c1 = sc.track(a.sse())
    n1 = sc.track(a.ndjson())
    c4 = sc.track(b.sse())

    write(w, 0, N1, interleave=10)
    ref_msgs = ref.read_messages(N1)
    h.check_sequence(data_seqs(ref_msgs, "reference on A"), list(range(N1)), "reference on A")
    ids = [m.id_field for m in ref_msgs]

    # 3. A -> B, B -> A.
    got = c1.read_messages(200)
    h.check_sequence(data_seqs(got, "client on A"), list(range(200)), "client on A")
    c1.close()
    c1b = sc.track(b.sse(last_event_id=got[-1].id))
    rest = c1b.read_messages(N1 - 200)
    h.check_sequence(data_seqs(rest, "client moved A -> B"), list(range(200, N1)),
                     "SSE client moved from A (after seq 199) to B")
    h.check_sequence([m.id_field for m in rest], ids[200:], "its ids on B vs A's")
    h.say("SSE client: 200 from A, then exactly 200..%d from B", N1 - 1)

    objs = n1.read_events(120)
    h.check_sequence(nd_seqs(objs, "NDJSON on A"), list(range(120)), "NDJSON client on A")
    n1.close()
    n1b = sc.track(b.ndjson(last_event_id=objs[-1]["id"]))
    h.check_sequence(nd_seqs(n1b.read_events(N1 - 120), "NDJSON A -> B"),
                     list(range(120, N1)), "NDJSON client moved from A to B")
    h.say("NDJSON client: 120 from A, then exactly 120..%d from B", N1 - 1)

    seqs, _ = poll_loop(b, ids[299], N1 - 300, "long-poll on B from A's position")
    h.check_sequence(seqs, list(range(300, N1)), "long-poll on B from A's position after 299")

    got = c4.read_messages(390)
    h.check_sequence(data_seqs(got, "client on B"), list(range(390)), "client on B")
    c4.close()
    c4a = sc.track(a.sse(last_event_id=got[-1].id))
    h.check_sequence(data_seqs(c4a.read_messages(N1 - 390), "client B -> A"),
                     list(range(390, N1)), "client moved from B (after 389) to A")
    for s, what in ((c1b, "A->B SSE"), (c4a, "B->A SSE")):
        extra = s.drain(0.3)
        h.check(not extra, "%s client got extra messages: %r", what, extra[:3])
    h.say("long-poll on B from A's position, and a client from B to A: exactly the rest")
    for s in (c1b, n1b, c4a):
        s.close()

    # Gateway E starts after all that: none of these events ever passed its watcher.
    e = sc.changegate(mongo.uri, name="changegate-E", args=common)
    e1 = sc.track(e.sse(last_event_id=ids[99]))
    h.check_sequence(data_seqs(e1.read_messages(N1 - 100), "client moved A -> new E"),
                     list(range(100, N1)), "client moved from A (after 99) to E, started later")
    extra = e1.drain(0.3)
    h.check(not extra, "the client on E got extra messages: %r", extra[:3])
    e1.close()
    e.stop()
    h.say("a gateway started after the writes served A's position exactly")

    # 4. The "ahead" case: hold B's watcher inside a blocked getMore.
    h.fail_command(mongo.uri, {"times": 1}, failCommands=["getMore"], appName="cgB",
                   blockConnection=True, blockTimeMS=8000)
    held_at = time.monotonic()
    time.sleep(1.0)     # B's watcher's current getMore (500 ms) ends; the next one is held
    write(w, N1, N2)
    more = ref.read_messages(N2, timeout=30)
    h.check_sequence(data_seqs(more, "reference on A"), list(range(N1, N1 + N2)),
                     "reference on A, second burst")
    ids += [m.id_field for m in more]
    status, body, _ = b.poll(timeout=1, params=[("filter", NEVER)])
    h.check(status == 200 and isinstance(body.get("lastEventId"), str),
            "/poll on B answered %d %r", status, body)
    b_head = body["lastEventId"]
    mid = 2400
    h.check(b_head < ids[mid], "premise: B's newest known position %s should be older than "
            "seq %d's %s (devmongo positions order as strings); the fail point did not hold "
            "B's watcher", b_head, mid, ids[mid])
    h.say("B's watcher is held at %s (seq 399 is %s), before seq %d", b_head, ids[N1 - 1], mid)

    c = sc.track(b.sse(last_event_id=ids[mid]))
    d = sc.track(b.sse(last_event_id=ids[-1]))
    poller = sc.thread(poll_loop, b, ids[mid], N1 + N2 + LIVE - mid - 1, "ahead long-poll")
    h.check(time.monotonic() - held_at < 7, "the clients connected to B %.1fs after the fail "
            "point was set; B's watcher may no longer be held (machine too slow?)",
            time.monotonic() - held_at)
    write(w, N1 + N2, LIVE)
    total = N1 + N2 + LIVE
    live = ref.read_messages(LIVE)
    h.check_sequence(data_seqs(live, "reference"), list(range(N1 + N2, total)), "reference, live")
    c_got = c.read_messages(total - mid - 1, timeout=30)
    h.check_sequence(data_seqs(c_got, "C (ahead of B's watcher)"), list(range(mid + 1, total)),
                     "client C on B from seq %d (ahead of B's watcher)" % mid)
    h.check_sequence([m.id_field for m in c_got], ids[mid + 1:] + [m.id_field for m in live],
                     "C's ids vs A's")
    d_got = d.read_messages(LIVE, timeout=30)
    h.check_sequence(data_seqs(d_got, "D (at the head, ahead of B's watcher)"),
                     list(range(N1 + N2, total)), "client D on B from the newest position")
    pseqs, _ = poller.join(40 * h.SLOW)
    h.check_sequence(pseqs, list(range(mid + 1, total)), "long-poll on B from seq %d" % mid)
    for s, what in ((c, "C"), (d, "D")):
        extra = s.drain(0.5)
        h.check(not extra, "%s got extra messages: %r", what, extra[:3])
    h.fail_command(mongo.uri, "off")
    h.say("ahead of B's watcher: C got %d..%d, D %d..%d, the poll loop the same as C",
          mid + 1, total - 1, N1 + N2, total - 1)


if __name__ == "__main__":
    h.run(story)
