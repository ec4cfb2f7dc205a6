#!/usr/bin/python3
"""Story: one subscriber stops reading; the others are not held back, and the slow one
is told when it lost continuity instead of silently missing events.

1. devmongo and changegate (--journal-size 200) start. A "stalled" SSE subscriber and an
   NDJSON one connect and then read nothing; a "good" SSE subscriber reads everything.
2. 1000 documents of ~20 kB are inserted (20 MB, far more than the socket buffers and the
   journal hold), then a small sentinel document.
3. The good subscriber receives all 1000 and the sentinel in order while the others are
   stalled. (Under CG_WRAPPER, where changegate itself can fall behind its journal, it
   must reach a sentinel with every gap announced by a reset.)
4. The stalled subscribers then read what they were sent: events with no gap except
   right after a reset (SSE `event: reset` / NDJSON {"reset": ...}, with a reason and a
   lastEventId), never going back; unless they got everything, a reset. Three more inserts
   then arrive on all three, exactly.
5. changegate is healthy and exits 0.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 1000
PAD = "s" * 20000


def check_with_resets(items, what):
    """items: [('event', seq) | ('reset', data)]. Events follow each other without a gap
    except right after a reset, and never go back. Returns (events, resets)."""
    prev, resets, events, after_reset = None, 0, 0, True
    for i, (kind, val) in enumerate(items):
        if kind == "reset":
            h.check(isinstance(val, dict) and val.get("reason") and val.get("lastEventId"),
                    "%s: malformed reset %r", what, val)
            resets += 1
            after_reset = True
            continue
        if prev is None and not resets:
            h.check(val == 0, "%s: the first event is seq %r, expected 0 (a gap without a "
                    "reset)" % (what, val))
        elif after_reset:
            h.check(prev is None or val > prev, "%s: seq %r after a reset went back from %r",
                    what, val, prev)
        else:
            h.check(val == prev + 1, "%s: seq %r follows %r without a reset in between "
                    "(item %d: a silent gap or repeat)", what, val, prev, i)
        prev, after_reset, events = val, False, events + 1
    return events, resets, prev


def runs(items):
    """A short picture of a sequence: runs of consecutive seqs and the resets."""
    out = []
    for kind, val in items:
        if kind == "event" and out and isinstance(out[-1], list) and out[-1][1] == val - 1:
            out[-1][1] = val
        else:
            out.append([val, val] if kind == "event" else "reset")
    return " ".join("%d..%d" % tuple(r) if isinstance(r, list) else r for r in out) or "nothing"


def sse_items(msgs):
    items = []
    for m in msgs:
        if m.type == "reset":
            d = m.json()
            h.check(m.id_field == d.get("lastEventId"), "reset id %r != data.lastEventId %r",
                    m.id_field, d.get("lastEventId"))
            items.append(("reset", d))
        else:
            items.append(("event", h.seq_of(h.check_sse_event(m))))
    return items


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--journal-size", "200"])
    stalled = sc.track(cg.sse())
    stalled_nd = sc.track(cg.ndjson())
    good = sc.track(cg.sse())
    w = sc.writer(mongo.uri)

    def burst():
        w.insert_seq(0, N, "slow", "docs", PAD)
        w.insert_seq(N, 1, "slow", "docs")      # a small sentinel after the burst
    writer = sc.thread(burst)
    # The good subscriber reads, while the burst goes on, until it has a sentinel. (A reset
    # continues "from now": should one skip the sentinel too, as can happen under valgrind
    # where changegate itself falls behind its journal, another sentinel is written.)
    nxt = N + 1
    got = []
    while not got or got[-1].type != "message" or h.seq_of(got[-1].json()) < N:
        try:
            m = good.next_message(timeout=10 * h.SLOW)
        except TimeoutError:
            h.check(not writer.is_alive(), "the writer is stuck")
            h.check(nxt - N < 5, "the good subscriber got no sentinel after %d of them; it "
                    "got %s" % (nxt - N, runs(sse_items(got))))
            w.insert_seq(nxt, 1, "slow", "docs")
            nxt += 1
            continue
        h.check(m is not None, "the good subscriber's stream ended")
        got.append(m)
    writer.join(30)
    items = sse_items(got)
    events, resets, last = check_with_resets(items, "good subscriber")
    if not h.WRAPPER:
        # At full speed changegate outruns devmongo by far: a reader that keeps up gets
        # everything, in order, without a reset.
        h.check_sequence([x if x[0] == "event" else ("reset", x[1].get("reason")) for x in items],
                         [("event", i) for i in range(N + 1)],
                         "the good subscriber while two others were stalled")
    h.say("the good subscriber got %s while two others read nothing", runs(items))

    items = sse_items(stalled.drain(quiet=1.5, timeout=40))
    events, resets, last = check_with_resets(items, "stalled SSE subscriber")
    h.check(resets or last == nxt - 1, "stalled SSE subscriber: %d events, no reset, last "
            "seq %r", events, last)
    h.say("stalled SSE subscriber: %s", runs(items))

    nd_items = []
    while True:
        try:
            o = stalled_nd.next_obj(timeout=1.5)
        except TimeoutError:
            break
        if o is None:
            break
        if h.is_heartbeat(o):
            continue
        if "reset" in o:
            h.check(set(o) == {"reset"}, "NDJSON reset line %r has extra keys", o)
            nd_items.append(("reset", o["reset"]))
        else:
            nd_items.append(("event", h.seq_of(h.check_ndjson_event(o))))
    events, resets, last = check_with_resets(nd_items, "stalled NDJSON subscriber")
    h.check(resets or last == nxt - 1, "stalled NDJSON subscriber: %d events, no reset, "
            "last seq %r", events, last)
    h.say("stalled NDJSON subscriber: %s", runs(nd_items))

    w.insert_seq(nxt, 3, "slow", "docs")
    for what, got in (("SSE", [h.seq_of(m.json()) for m in stalled.read_messages(3)]),
                      ("NDJSON", [h.seq_of(o["event"]) for o in stalled_nd.read_events(3)]),
                      ("good", [h.seq_of(m.json()) for m in good.read_messages(3)])):
        h.check_sequence(got, [nxt, nxt + 1, nxt + 2], "%s subscriber after catching up" % what)
    status, _, body = cg.health()
    h.check(status == 200, "/healthz answered %d after the stall: %r", status, body)
    h.say("all three subscribers got the next 3 events; /healthz 200")


if __name__ == "__main__":
    h.run(story)
