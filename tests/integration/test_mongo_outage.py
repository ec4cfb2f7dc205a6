#!/usr/bin/python3
"""Story: MongoDB goes away for 5 seconds (CG_OUTAGE_SECONDS) and comes back on the same port; changegate
rides it out by itself.

1. devmongo (with --dbpath, so its oplog survives a restart) and changegate start; an
   SSE client subscribes and stays connected for the whole story, reconnecting with its
   Last-Event-ID if its stream ever ends.
2. 200 inserts are written and received.
3. devmongo is stopped (SIGTERM). While it is down, /healthz answers 503 with JSON
   {"error": "not_ready", "message": <a reason>}; changegate keeps running.
4. After 5 s (CG_OUTAGE_SECONDS: minutes work the same) devmongo restarts on the same port from the same dbpath. /healthz goes back
   to 200 {"status": "ok"} without anyone touching changegate.
5. 200 more inserts; the client ends up with seq 0..399 exactly once, in order.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N1, N2 = 200, 200
DOWN = float(os.environ.get("CG_OUTAGE_SECONDS", "5"))


class Resilient:
    """An SSE subscriber that reconnects with its last id when its stream ends."""

    def __init__(self, sc, cg):
        self.sc, self.cg = sc, cg
        self.msgs, self.reconnects, self.resets = [], 0, []
        self.s = sc.track(cg.sse())

    def read(self, n, timeout=40):
        deadline = time.monotonic() + timeout * h.SLOW
        while len(self.msgs) < n:
            h.check(time.monotonic() < deadline, "subscriber: %d of %d events (%d reconnects)",
                    len(self.msgs), n, self.reconnects)
            try:
                m = self.s.next_message(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                continue
            if m is None:
                self._reconnect(deadline)
                continue
            if m.type == "reset":
                self.resets.append(m)
                continue
            self.msgs.append(m)
        return self.msgs

    def _reconnect(self, deadline):
        last = self.s.last_event_id or None
        self.s.close()
        while True:
            try:
                self.s = self.sc.track(self.cg.sse(last_event_id=last))
                self.reconnects += 1
                h.say("subscriber reconnected with Last-Event-ID %s", last)
                return
            except (OSError, h.TestFailure) as e:
                h.check(time.monotonic() < deadline, "subscriber could not reconnect: %r", e)
                time.sleep(0.2)


def story(sc):
    dbpath = sc.mkdir("devmongo-db")
    mongo = sc.devmongo(dbpath=dbpath)
    cg = sc.changegate(mongo.uri)
    sub = Resilient(sc, cg)

    w = sc.writer(mongo.uri)
    w.insert_seq(0, N1, "app", "outage")
    sub.read(N1)
    w.close()
    h.say("%d events before the outage received", N1)

    mongo.stop()
    down_at = time.monotonic()
    h.say("devmongo stopped; polling /healthz")
    body = cg.wait_health(503, timeout=20)
    h.check(body.get("error") == "not_ready", "/healthz 503 body %r lacks error not_ready", body)
    h.check(isinstance(body.get("message"), str) and body["message"].strip(),
            "/healthz 503 body %r gives no reason", body)
    h.say("/healthz: 503 %s", body)
    # Keep polling through the outage: changegate must stay up and keep answering 503.
    while time.monotonic() - down_at < DOWN:
        h.check(cg.proc.alive(), "changegate died while MongoDB was down (status %s)",
                cg.proc.popen.returncode)
        status, _, b = cg.health()
        h.check(status == 503, "/healthz answered %d while MongoDB is down: %r", status, b)
        time.sleep(0.25)

    mongo.start()
    h.say("devmongo back on port %d with the same dbpath after %.0f s", mongo.port,
          time.monotonic() - down_at)
    body = cg.wait_health(200, timeout=40)
    h.check(body.get("status") == "ok", "/healthz 200 body %r lacks status ok", body)
    h.say("/healthz back to 200 %s", body)

    w = sc.writer(mongo.uri)
    w.insert_seq(N1, N2, "app", "outage")
    msgs = sub.read(N1 + N2)
    extra = sub.s.drain(0.5)
    h.check(not extra, "extra events after the last write: %r", extra[:3])
    h.check(not sub.resets, "the subscriber got reset(s) across the outage: %r", sub.resets)
    seqs = [h.seq_of(h.check_sse_event(m)) for m in msgs]
    h.check_sequence(seqs, list(range(N1 + N2)), "events across the MongoDB outage")
    h.check(len({m.id for m in msgs}) == N1 + N2, "ids not unique across the outage")
    h.say("subscriber got %d events exactly once across the outage (%d reconnects)",
          N1 + N2, sub.reconnects)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or (DOWN + 55) * h.SLOW))
