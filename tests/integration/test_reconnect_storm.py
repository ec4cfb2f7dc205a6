#!/usr/bin/python3
"""Story: after an outage 2,000 clients reconnect at the same moment, each with its own
Last-Event-ID, some inside the in-memory journal and some far beyond it. Every one of
them gets exactly the events after its position, while changegate never runs more than
--max-catchup catch-up streams against MongoDB.

1. The open-files soft limit is raised (2,000 sockets here, as many in changegate).
   devmongo and changegate (--journal-size 1000, --max-catchup 16, --max-subscribers
   3000) start. A reference SSE subscriber reads a seed document (seq -1) and then 20,000
   inserts (seq 0..19,999), written 500 at a time, and records every event's id.
2. Positions for 2,000 clients (random, seed printed; CG_STORM_SEED reproduces): 1,800
   resume after an event among the newest 900 (inside the journal), 200 after an event
   beyond it (deeper ones rarer: depth 1,000..20,000, skewed), including the seed.
   (CG_STORM_CLIENTS, CG_STORM_DEEP and CG_STORM_EVENTS change the counts.)
3. All 2,000 connections are opened at once from one thread (epoll, raw sockets), each
   GET /events with its Last-Event-ID; once every request is out, a sentinel document
   (seq 20,000) is written.
4. Every client must answer 200 and receive exactly seq p+1..19,999 then the sentinel,
   each with the reference's id, with no `event: reset`. /metrics is sampled meanwhile
   (information: catch-up streams running and waiting).
5. At the end /metrics changegate_catchup_streams_peak is between 1 and 16, and
   changegate_catchup_waiting is back to 0.
"""
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CLIENTS = int(os.environ.get("CG_STORM_CLIENTS", "2000"))
DEEP = int(os.environ.get("CG_STORM_DEEP", "200"))
W = int(os.environ.get("CG_STORM_EVENTS", "20000"))
JOURNAL = 1000
MAX_CATCHUP = 16
SEED = int(os.environ.get("CG_STORM_SEED") or random.SystemRandom().randrange(1, 10 ** 9))

# One data message as changegate writes it: "id: <position>\ndata: <event on one line>".
EVENT = re.compile(rb'(?:^|\n)id: ?([0-9A-Fa-f]+)\ndata: ?[^\n]*?"seq" ?: ?(-?\d+)')
DATA_LINE = re.compile(rb'(?:^|\n)data:')
NAMED = re.compile(rb'(?:^|\n)event: ?([^\n]*)\n(?:id: ?([^\n]*)\n)?data: ?([^\n]*)')


class Client:
    """What one storm client expects and has seen so far."""

    def __init__(self, after, last_id):
        self.after = after          # resumes after seq `after` (-1: the seed)
        self.last_id = last_id
        self.next = after + 1       # the next seq it must receive
        self.count = 0
        self.error = None
        self.conn = None


def story(sc):
    h.raise_nofile(CLIENTS * 2 + 500)
    h.say("seed %d (CG_STORM_SEED=%d reproduces): %d clients, %d beyond the journal, "
          "%d events", SEED, SEED, CLIENTS, DEEP, W)
    rng = random.Random(SEED)
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=[
        "--journal-size", str(JOURNAL), "--max-catchup", str(MAX_CATCHUP),
        "--max-subscribers", str(CLIENTS + 1000), "--heartbeat", "5"])
    w = sc.writer(mongo.uri)
    coll = w.coll("storm", "docs")

    ref = sc.track(cg.sse())
    coll.insert_one({"seq": -1})
    seed_msg = ref.read_messages(1)[0]
    ids = {}
    ids[-1] = seed_msg.id_field
    t0 = time.monotonic()
    for start in range(0, W, 500):
        coll.insert_many([{"seq": s} for s in range(start, min(W, start + 500))])
        for m in ref.read_messages(min(500, W - start)):
            ev = h.check_sse_event(m)
            ids[h.seq_of(ev)] = m.id_field
    h.check(sorted(ids) == list(range(-1, W)), "the reference subscriber missed events")
    h.say("reference: %d events and their ids in %.1fs", W, time.monotonic() - t0)
    ref.close()

    # 2. Positions.
    inside = CLIENTS - DEEP
    afters = [rng.randrange(W - 900, W) for _ in range(inside)]
    deep_lo, deep_hi = JOURNAL + 1, W          # depth: events between the position and W
    for i in range(DEEP):
        if i < 2:
            afters.append(-1)                  # before every write: the seed's id
        else:
            depth = deep_lo + int((deep_hi - deep_lo) * rng.random() ** 2)
            afters.append(W - depth)
    rng.shuffle(afters)
    clients = [Client(a, ids[a]) for a in afters]
    expected_total = sum(W - c.after for c in clients)     # events + the sentinel each
    h.say("positions: %d inside the journal, %d beyond (deepest %d events back); %d events "
          "to deliver", inside, DEEP, W - min(afters), expected_total)

    # 3. The storm.
    by_conn = {}
    for c in clients:
        c.conn = h.RawSSE(cg.port, last_event_id=c.last_id, tag=c)
        by_conn[c.conn] = c
    sc.closers.extend(c.conn.close for c in clients)
    h.say("%d connections opening", len(clients))

    def on_data(conn, data):
        c = conn.tag
        if c.error:
            return
        found = EVENT.findall(data)
        n_data = len(DATA_LINE.findall(data))
        if n_data != len(found):
            named = NAMED.search(data)
            c.error = ("a message that is not a data event with a seq: %r" % (
                named.group(0)[:300] if named else data[:300]))
            return
        nxt = c.next
        for pos, seq in found:
            seq = int(seq)
            if seq != nxt or seq > W:
                c.error = "expected seq %d, got seq %d (after %d events)" % (nxt, seq, c.count)
                return
            if seq < W and pos.decode() != ids[seq]:
                c.error = "seq %d has id %s, the reference saw %s" % (seq, pos.decode(),
                                                                      ids[seq])
                return
            nxt += 1
            c.count += 1
        c.next = nxt

    def finished(conn):
        c = conn.tag
        return c.error is not None or c.next > W or conn.status not in (None, 200)

    samples = []

    def tick():
        try:
            m = cg.metrics()
            samples.append((m.value("changegate_catchup_streams"),
                            m.value("changegate_catchup_waiting")))
        except (OSError, h.TestFailure) as e:
            samples.append(("?", repr(e)[:80]))

    # Send every request first (the storm), then write the sentinel, then read it all.
    t0 = time.monotonic()
    pending = h.pump([c.conn for c in clients], on_data,
                     lambda conn: not conn.want_write(), 20 * h.SLOW)
    h.check(not pending, "%d of %d requests could not be sent", len(pending), len(clients))
    h.say("%d requests sent in %.2fs; writing the sentinel", len(clients), time.monotonic() - t0)
    coll.insert_one({"seq": W})
    left = h.pump([c.conn for c in clients], on_data, finished, 240 * h.SLOW, tick=tick)
    took = time.monotonic() - t0
    delivered = sum(c.count for c in clients)
    h.say("storm over in %.1fs: %d events delivered (%.0f/s); /metrics samples (catch-up "
          "streams, waiting): %s", took, delivered, delivered / took if took else 0,
          " ".join("%s/%s" % s for s in samples[:40]))

    # 4. Verdict per client.
    bad = []
    statuses = {}
    for c in clients:
        statuses[c.conn.status] = statuses.get(c.conn.status, 0) + 1
        if c.conn.status != 200:
            bad.append((c, "answered %s" % c.conn.status))
        elif c.error:
            bad.append((c, c.error))
        elif c.next <= W:
            bad.append((c, "stopped at seq %d of %d (%d events; stream %s)" % (
                c.next - 1, W, c.count, c.conn.end_state or "still open")))
    deep_bad = sum(1 for c, _ in bad if c.after < W - JOURNAL)
    for c, why in bad[:15]:
        h.say("  client after seq %d (%s): %s", c.after,
              "beyond the journal" if c.after < W - JOURNAL else "inside the journal", why)
    h.check(not bad, "%d of %d clients did not get exactly their events (%d of them beyond "
            "the journal, %d inside); statuses %r; %d still open at the deadline",
            len(bad), len(clients), deep_bad, len(bad) - deep_bad, statuses, len(left))
    h.say("all %d clients got exactly the events after their position, then the sentinel",
          len(clients))
    for c in clients:
        c.conn.close()

    # 5. Metrics.
    m = h.wait_until(lambda: (lambda m: m if m.value("changegate_catchup_waiting") == 0
                              else None)(cg.metrics()),
                     20 * h.SLOW, "changegate_catchup_waiting to be 0")
    peak = m.value("changegate_catchup_streams_peak")
    h.check(1 <= peak <= MAX_CATCHUP, "changegate_catchup_streams_peak is %s; expected 1..%d "
            "(--max-catchup)", peak, MAX_CATCHUP)
    resets = m.total("changegate_resets_total")
    h.check(resets == 0, "changegate_resets_total is %s", resets)
    h.say("/metrics: catch-up peak %d (limit %d), none waiting, no resets", peak, MAX_CATCHUP)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 300 * h.SLOW))
