#!/usr/bin/python3
"""Story: a client connects to /events and then never reads while events keep flowing.
changegate's memory stays flat, everyone else gets every event, the stalled client is
disconnected after --write-timeout without progress, and it can later resume with the
last id it fully received and get exactly the rest.

1. devmongo and changegate (--write-timeout 5, CG_WRITE_TIMEOUT; --journal-size 2000)
   start. The stalled client connects (4 kB receive buffer), gets its response, and
   reads nothing from then on. A good SSE client reads everything.
2. A writer inserts ~1,000 documents of 1 kB per second (CG_STALL_RATE) for 60 s
   (CG_STALL_SECONDS), then a sentinel.
3. Every 2 s changegate's VmRSS and /healthz "subscribers" are sampled. The last RSS
   sample must be within 20% + 5 MB of the one taken 10 s into the flow.
4. The good client receives every event and the sentinel, in order, no reset.
5. By the end of the flow /healthz counts 1 subscriber (the good one) and /metrics one
   write_timeout drop: the server has
   disconnected the stalled client. The stalled client now reads: complete events seq
   0..k in order, no reset, then the connection ends (EOF or reset).
6. It reconnects with the id of seq k (the last event it fully received) and gets
   exactly k+1..the sentinel.
"""
import os
import select
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WRITE_TIMEOUT = int(os.environ.get("CG_WRITE_TIMEOUT", "5"))
SECONDS = float(os.environ.get("CG_STALL_SECONDS", "60"))
RATE = int(os.environ.get("CG_STALL_RATE", "1000"))
N = int(SECONDS * RATE)
PAD = "p" * 1000
TICK = 0.1
SAMPLE_EVERY = 2.0
BASELINE_AT = 10.0


def data_seqs(msgs, what):
    out = []
    for i, m in enumerate(msgs):
        if m.type != "message":
            raise h.TestFailure("%s: message %d (after seq %s) is `event: %s` %s; expected only "
                                "data messages" % (what, i, out[-1] if out else None, m.type,
                                                   m.data))
        out.append(h.seq_of(h.check_sse_event(m)))
    return out


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--write-timeout", str(WRITE_TIMEOUT),
                                        "--journal-size", "2000", "--heartbeat", "5"])
    w = sc.writer(mongo.uri)

    stalled = h.RawSSE(cg.port, rcvbuf=4096)
    sc.closers.append(stalled.close)
    deadline = time.monotonic() + 10 * h.SLOW
    while stalled.status is None and not stalled.ended:    # its response head, then no more
        h.check(time.monotonic() < deadline, "the stalled client got no response head")
        if stalled.want_write():
            select.select([], [stalled.sock], [], 0.5)
            stalled.on_writable()
        else:
            select.select([stalled.sock], [], [], 0.5)
            stalled.on_readable()
    h.check(stalled.status == 200, "the stalled client's GET /events answered %s (%s)",
            stalled.status, stalled.end_state)
    good = sc.track(cg.sse())
    hj = h.wait_until(lambda: (lambda b: b[1] if b[0] == 200 and b[1].get("subscribers") == 2
                               else None)(cg.health_json()),
                      10 * h.SLOW, "/healthz to count the 2 subscribers")
    h.say("stalled client and good client connected; /healthz %s", hj)

    flow_start = [None]
    flow_end = threading.Event()

    def writer():
        coll = w.coll("stall", "docs")
        per_tick = max(1, int(RATE * TICK))
        t0 = flow_start[0] = time.monotonic()
        seq = 0
        k = 0
        while seq < N:
            delay = t0 + k * TICK - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n = min(per_tick, N - seq)
            coll.insert_many([{"seq": s, "pad": PAD} for s in range(seq, seq + n)])
            seq += n
            k += 1
        coll.insert_one({"seq": N})     # the sentinel
        flow_end.set()
        return time.monotonic() - t0

    samples = []        # (seconds into the flow, rss kB, subscribers)

    def sampler():
        while not flow_end.is_set():
            if flow_start[0] is not None:
                rss = cg.rss_kb()
                st, body = cg.health_json()
                subs = body.get("subscribers") if st == 200 and isinstance(body, dict) else None
                samples.append((time.monotonic() - flow_start[0], rss, subs))
            flow_end.wait(SAMPLE_EVERY)
        return samples

    wt = sc.thread(writer)
    st = sc.thread(sampler)

    got = good.read_messages(N + 1, timeout=SECONDS + 60)
    took = wt.join(60)
    st.join(10)
    h.check_sequence(data_seqs(got, "good client"), list(range(N + 1)),
                     "the good client while another one stalled")
    h.say("flow: %d events of 1 kB in %.1fs; the good client got all of them and the sentinel",
          N, took)
    for t, rss, subs in samples:
        h.say("  t=%5.1fs  VmRSS %7d kB  subscribers %s", t, rss, subs)

    # 3. Memory.
    h.check(len(samples) >= 3 and samples[-1][0] > BASELINE_AT + SAMPLE_EVERY,
            "too few RSS samples (%d) for a %.0fs flow", len(samples), SECONDS)
    base = next(s for s in samples if s[0] >= BASELINE_AT)
    last = samples[-1]
    limit = base[1] * 1.2 + 5 * 1024
    if h.WRAPPER:
        h.say("RSS not asserted under CG_WRAPPER (base %d kB, last %d kB)", base[1], last[1])
    else:
        h.check(last[1] <= limit, "changegate's RSS grew from %d kB (t=%.0fs) to %d kB "
                "(t=%.0fs), over the limit %d kB (20%% + 5 MB)", base[1], base[0], last[1],
                last[0], limit)
        h.say("RSS flat: %d kB at t=%.0fs, %d kB at t=%.0fs (limit %d kB)", base[1], base[0],
              last[1], last[0], limit)

    # 5. The stalled client was disconnected by the server.
    dropped = next((s for s in samples if s[2] == 1), None)
    hj = h.wait_until(lambda: (lambda b: b if b[0] == 200 and b[1].get("subscribers") == 1
                               else None)(cg.health_json()),
                      (WRITE_TIMEOUT + 10) * h.SLOW,
                      "/healthz to count only the good subscriber (the stalled one "
                      "disconnected after --write-timeout %ds)" % WRITE_TIMEOUT)
    h.say("the server disconnected the stalled client (subscribers 1 %s)",
          "from t=%.0fs of the flow" % dropped[0] if dropped else "after the flow")
    subs = cg.metrics().total("changegate_subscribers")
    h.check(subs == 1, "/metrics changegate_subscribers (summed over its labels) is %s, "
            "expected 1", subs)
    timeouts = cg.metrics().value("changegate_drops_total", reason="write_timeout")
    h.check(timeouts == 1, "/metrics changegate_drops_total{reason=\"write_timeout\"} is %s, "
            "expected 1 (the stalled client)", timeouts)

    deadline = time.monotonic() + 20 * h.SLOW
    while not stalled.ended:
        h.check(time.monotonic() < deadline, "the stalled client's connection is still open "
                "after reading %d bytes: the server did not close it", stalled.body_bytes)
        select.select([stalled.sock], [], [], 0.5)
        stalled.on_readable()
    parser = h.SSEParser()
    items = parser.feed(bytes(stalled.body), final=True)
    msgs = [i for i in items if isinstance(i, h.Message)]
    h.check(stalled.status == 200, "the stalled client's request answered %s", stalled.status)
    h.check(msgs, "the stalled client received no complete event at all")
    seqs = data_seqs(msgs, "stalled client")
    h.check_sequence(seqs, list(range(len(seqs))), "what the stalled client received")
    k = seqs[-1]
    h.check(k < N, "the stalled client received everything: it was never stalled "
            "(raise CG_STALL_RATE or CG_STALL_SECONDS)")
    h.say("the stalled client, reading at last: seq 0..%d complete, then %s (%d bytes)", k,
          stalled.end_state, stalled.body_bytes)

    # 6. Resume.
    t0 = time.monotonic()
    again = sc.track(cg.sse(last_event_id=msgs[-1].id_field))
    rest = again.read_messages(N - k, timeout=90)
    h.check_sequence(data_seqs(rest, "stalled client resumed"), list(range(k + 1, N + 1)),
                     "the stalled client resumed after seq %d" % k)
    extra = again.drain(0.5)
    h.check(not extra, "the resumed client got extra messages: %r", extra[:3])
    h.say("resumed after seq %d: exactly %d..%d in %.1fs", k, k + 1, N, time.monotonic() - t0)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or (SECONDS + 150) * h.SLOW))
