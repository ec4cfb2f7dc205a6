#!/usr/bin/python3
"""Story: /metrics is valid Prometheus text (promtool, from Debian's prometheus package,
says so) and its counters move exactly as events flow to subscribers of each transport.

1. devmongo and changegate (--max-subscribers 3) start. /metrics passes
   `promtool check metrics`; every family the README lists is there.
2. An SSE, an NDJSON and a long-poll subscriber connect: changegate_subscribers counts
   one per transport. A fourth is refused (503): drops_total{too_many_subscribers} 1.
3. 20 inserts. The SSE and NDJSON subscribers read all 20, the poll answers with them:
   events_received_total grew by 20, deliveries_total by 20 per transport, and
   sent_bytes_total by at least the bytes each client received (SSE, NDJSON: everything
   they read; poll: the answer's body). journal_events counts them; the watcher's lag
   is a number.
4. The SSE and NDJSON clients close their sockets: subscribers fall to 0 per transport,
   drops_total{client_gone} is 2. promtool still accepts the page.
"""
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

FAMILIES = ("changegate_subscribers", "changegate_events_received_total",
            "changegate_deliveries_total", "changegate_sent_bytes_total",
            "changegate_drops_total", "changegate_resets_total", "changegate_journal_events",
            "changegate_journal_capacity", "changegate_catchup_streams",
            "changegate_catchup_streams_peak", "changegate_catchup_waiting",
            "changegate_catchup_events_total", "changegate_watcher_streaming",
            "changegate_watcher_history_lost", "changegate_watcher_lag_seconds")


def promtool(cg, when):
    status, _, body = h.request(cg.port, "GET", "/metrics")
    h.check(status == 200, "/metrics answered %d", status)
    p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       timeout=30)
    h.check(p.returncode == 0, "promtool check metrics (%s) failed (%d): %s %s", when,
            p.returncode, p.stdout.decode()[:500], p.stderr.decode()[:500])


class Raw:
    """A raw GET whose received bytes (after the head) are counted."""

    def __init__(self, port, path, accept):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20 * h.SLOW)
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n\r\n"
                           % (path, accept)).encode())
        self.data = b""

    def read_until(self, count_of, n):
        while self.data.count(count_of) < n:
            chunk = self.sock.recv(65536)
            h.check(chunk, "connection ended with %d of %d", self.data.count(count_of), n)
            self.data += chunk

    def body_bytes(self):
        """Body bytes received, without chunked framing."""
        _, _, rest = self.data.partition(b"\r\n\r\n")
        total = 0
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            total += min(size, len(rest))
            rest = rest[size + 2:]
        return total


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--max-subscribers", "3", "--heartbeat", "300"])
    promtool(cg, "at start")
    m0 = cg.metrics()
    for f in FAMILIES:
        h.check(m0.has(f), "/metrics lacks %s", f)
    h.say("promtool accepts /metrics; all %d families present", len(FAMILIES))

    sse = Raw(cg.port, "/events", "text/event-stream")
    nd = Raw(cg.port, "/events", "application/x-ndjson")
    sse.read_until(b"retry:", 1)
    deadline = time.monotonic() + 20 * h.SLOW
    while cg.metrics().total("changegate_subscribers") < 2:
        h.check(time.monotonic() < deadline, "the two streams are not counted")
        time.sleep(0.05)
    m_before = cg.metrics()
    result = {}

    def long_poll():
        result["poll"] = h.poll(cg.port, timeout=60, limit=1000, http_timeout=80 * h.SLOW)
    import threading
    t = threading.Thread(target=long_poll)
    t.start()
    while cg.metrics().total("changegate_subscribers") < 3:
        h.check(time.monotonic() < deadline, "the poll is not counted")
        time.sleep(0.05)
    m = cg.metrics()
    for tr in ("sse", "ndjson", "poll"):
        h.check(m.value("changegate_subscribers", transport=tr) == 1,
                "changegate_subscribers{transport=%s} is %s", tr,
                m.value("changegate_subscribers", transport=tr))
    status, body, _ = cg.poll(timeout=1)
    h.check(status == 503, "a fourth subscriber got %d", status)
    m = cg.metrics()
    h.check(m.value("changegate_drops_total", reason="too_many_subscribers") == 1,
            "drops_total{too_many_subscribers} is %s",
            m.value("changegate_drops_total", reason="too_many_subscribers"))
    h.say("one subscriber per transport; a fourth refused and counted")

    w = sc.writer(mongo.uri)
    w.insert_seq(0, 20, "mt", "docs")
    sse.read_until(b"\ndata: ", 20)
    nd.read_until(b'"event":', 20)
    t.join(80 * h.SLOW)
    status, pbody, _ = result["poll"]
    h.check(status == 200 and len(pbody["events"]) >= 1, "the poll answered %d %r", status,
            str(pbody)[:200])
    n_poll = len(pbody["events"])
    m1 = cg.metrics()

    def grew(name, **labels):
        return m1.value(name, **labels) - m_before.value(name, **labels)
    h.check(grew("changegate_events_received_total") == 20, "events_received_total grew by %s",
            grew("changegate_events_received_total"))
    for tr, want in (("sse", 20), ("ndjson", 20), ("poll", n_poll)):
        h.check(grew("changegate_deliveries_total", transport=tr) == want,
                "deliveries_total{%s} grew by %s, expected %d", tr,
                grew("changegate_deliveries_total", transport=tr), want)
    for tr, c in (("sse", sse), ("ndjson", nd)):
        got = c.body_bytes()
        sent = m1.value("changegate_sent_bytes_total", transport=tr)
        h.check(sent >= got > 0, "sent_bytes_total{%s} is %s but the client received %d body "
                "bytes", tr, sent, got)
    h.check(m1.value("changegate_sent_bytes_total", transport="poll") > 0,
            "sent_bytes_total{poll} did not move")
    h.check(m1.value("changegate_journal_events") >= 20, "journal_events is %s",
            m1.value("changegate_journal_events"))
    lag = m1.value("changegate_watcher_lag_seconds")
    h.check(lag == lag and lag > -5, "watcher_lag_seconds is %r", lag)
    h.say("20 inserts: received +20, deliveries sse +20 ndjson +20 poll +%d, bytes cover what "
          "clients got, lag %.3f s", n_poll, lag)

    sse.sock.close()
    nd.sock.close()
    deadline = time.monotonic() + 20 * h.SLOW
    while cg.metrics().total("changegate_subscribers") != 0:
        h.check(time.monotonic() < deadline, "subscribers did not fall to 0: %r",
                cg.metrics().total("changegate_subscribers"))
        time.sleep(0.05)
    m2 = cg.metrics()
    h.check(m2.value("changegate_drops_total", reason="client_gone") == 2,
            "drops_total{client_gone} is %s, expected 2",
            m2.value("changegate_drops_total", reason="client_gone"))
    promtool(cg, "at the end")
    h.say("the streams closed: subscribers 0, drops_total{client_gone} 2; promtool accepts it")


if __name__ == "__main__":
    h.run(story)
