#!/usr/bin/python3
"""Story: a client that disconnects at the web server is dropped by changegate when the
web server lets go of its FastCGI request: behind nginx at once, so the subscriber
gauges and --max-subscribers stay true with no heartbeat to reveal it; behind lighttpd
and Apache, which notice a departed client only when they next write to it, within a
few heartbeats.

1. devmongo and changegate A start: `--listen fcgi:unix:<socket_dir>/changegate.sock
   --fcgi-socket-owner :www-data`, its HTTP listener for /metrics, `--heartbeat 300` (no
   heartbeat comes during the scenario) and `--max-subscribers 3`. nginx runs in front of
   it with the example configuration. Nothing is written: every request below parks.
2. Through nginx, on raw sockets: an SSE stream, an NDJSON stream and a long-poll
   (timeout=120). Each stream shows its head; changegate_subscribers{transport} on A's
   direct /metrics is 1 for sse, ndjson and poll. A fourth request through nginx gets
   503 too_many_subscribers.
3. The three clients close their sockets. Within 10 s (a bound, not a measurement; the
   heartbeat is 300 s away, the poll's deadline 120 s) the three gauges are 0 and
   changegate_drops_total{reason="client_gone"} rose by exactly 3.
4. --max-subscribers has freed up: three new streams through nginx (SSE, NDJSON, SSE) are
   admitted and each gets the next write; a fourth is refused again. They close, and the
   gauges return to 0.
5. changegate B (`--heartbeat 2`, its own socket) behind lighttpd, then behind Apache:
   an SSE and an NDJSON stream and a long-poll (timeout=6) through the web server, the
   gauges 1/1/1 on B's /metrics; the clients close. The two streams' gauges fall to 0
   within a few heartbeats (a bounded wait of 5 heartbeats) and client_gone rises by at
   least 2. The poll is over by its deadline at the latest: lighttpd and Apache write
   nothing to a client before the answer's head, so they learn it left only then (the
   scenario says which way it went).
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import webservers  # noqa: E402

PREFIX = "/changegate"
TRANSPORTS = ("sse", "ndjson", "poll")
SLOW_HEARTBEAT = 2           # changegate B's --heartbeat, for lighttpd and Apache
SHORT_POLL = 6               # the long-poll's timeout behind lighttpd and Apache
BEATS = 5                    # heartbeats within which they must have let go of a stream


class Raw:
    """A GET through the web server on a raw socket; read_until() collects its bytes."""

    def __init__(self, port, path, headers=()):
        self.path = path
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10 * h.SLOW)
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
            path, "".join("%s: %s\r\n" % kv for kv in headers))).encode())
        self.data = b""

    def read_until(self, needle, what, timeout=10):
        self.sock.settimeout(timeout * h.SLOW)
        try:
            while needle not in self.data:
                chunk = self.sock.recv(65536)
                h.check(chunk, "%s: the connection closed before %r; got %r", what, needle,
                        self.data[:300])
                self.data += chunk
        except socket.timeout:
            raise h.TestFailure("%s: no %r within %ss; got %r" % (what, needle, timeout,
                                                                 self.data[:300]))
        return self.data

    def status(self):
        return int(self.data.split(b" ", 2)[1])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def counts(cg):
    """({transport: subscribers}, drops_total{client_gone}) from changegate's /metrics."""
    m = cg.metrics()
    return ({t: m.value("changegate_subscribers", transport=t) for t in TRANSPORTS},
            m.value("changegate_drops_total", reason="client_gone"))


def wait_gauges(cg, want, what, timeout, gone=None):
    """Waits until the gauges are `want` (and client_gone is `gone`, when given)."""
    t0 = time.monotonic()

    def done():
        g, d = counts(cg)
        return g == want and (gone is None or d == gone)
    try:
        h.wait_until(done, timeout * h.SLOW, what, interval=0.05)
    except h.TestFailure as e:
        raise h.TestFailure("%s; gauges and client_gone now: %r (expected %r, %r)" % (
            e, counts(cg), want, gone))
    return time.monotonic() - t0


def open_three(ws, poll_timeout):
    """An SSE stream, an NDJSON stream and a long-poll through the web server."""
    sse = Raw(ws.port, PREFIX + "/events", [("Accept", "text/event-stream")])
    nd = Raw(ws.port, PREFIX + "/events", [("Accept", "application/x-ndjson")])
    poll = Raw(ws.port, PREFIX + "/poll?timeout=%d" % poll_timeout)
    sse.read_until(b"retry: 3000\n", "%s: SSE stream" % ws.name)
    h.check(sse.status() == 200, "%s: SSE stream answered %r", ws.name, sse.data[:200])
    nd.read_until(b"\r\n\r\n", "%s: NDJSON stream" % ws.name)
    h.check(nd.status() == 200, "%s: NDJSON stream answered %r", ws.name, nd.data[:200])
    return [sse, nd, poll]


def refused(ws, what):
    st, hd, body = h.request(ws.port, "GET", PREFIX + "/events",
                             headers={"Accept": "text/event-stream"}, timeout=10 * h.SLOW)
    doc = h.json_body(body, what) if st == 503 else None
    h.check(st == 503 and doc.get("error") == "too_many_subscribers" and hd.get("retry-after"),
            "%s: a fourth stream through %s answered %d %r; expected 503 too_many_subscribers "
            "with Retry-After", what, ws.name, st, body[:300])


def nginx_part(sc, mongo, sock):
    cg = sc.changegate(mongo.uri, name="changegate-a", args=fcgi_args(sock) + [
        "--heartbeat", "300", "--max-subscribers", "3"])
    w = sc.writer(mongo.uri)
    with webservers.nginx(sock, sc) as ws:
        clients = open_three(ws, 120)
        wait_gauges(cg, {"sse": 1, "ndjson": 1, "poll": 1}, "nginx: the three subscribers "
                    "counted", 10)
        _, gone0 = counts(cg)
        refused(ws, "with three parked")
        h.say("nginx: an SSE stream, an NDJSON stream and a long-poll (timeout=120) parked; "
              "a fourth refused with 503")

        for c in clients:
            c.close()
        took = wait_gauges(cg, {"sse": 0, "ndjson": 0, "poll": 0}, "nginx: the three "
                           "subscribers dropped after their clients closed", 10, gone0 + 3)
        h.say("nginx: the three clients closed; gauges 0 and client_gone +3 after %.2f s "
              "(heartbeat 300 s, poll deadline 120 s)", took)

        new = [sc.track(h.SSEClient(ws.port, PREFIX + "/events")),
               sc.track(h.NDJSONClient(ws.port, PREFIX + "/events")),
               sc.track(h.SSEClient(ws.port, PREFIX + "/events"))]
        wait_gauges(cg, {"sse": 2, "ndjson": 1, "poll": 0}, "nginx: the three new streams "
                    "counted", 10)
        refused(ws, "with three new streams")
        w.insert_seq(0, 1, "hangup", "docs")
        for i, s in enumerate(new):
            if isinstance(s, h.NDJSONClient):
                got = [h.seq_of(h.check_ndjson_event(o)) for o in s.read_events(1)]
            else:
                got = [h.seq_of(h.check_sse_event(m)) for m in s.read_messages(1)]
            h.check(got == [0], "nginx: new stream %d got %r, expected the write", i, got)
        h.say("nginx: --max-subscribers 3 freed up: three new streams admitted, each got the "
              "write; a fourth refused")
        for s in new:
            s.close()
        wait_gauges(cg, {"sse": 0, "ndjson": 0, "poll": 0}, "nginx: the new streams closed",
                    10, gone0 + 6)
    cg.stop()


def write_late_part(sc, mongo, sock, make):
    name = make.__name__
    cg = sc.changegate(mongo.uri, name="changegate-" + name, args=fcgi_args(sock) + [
        "--heartbeat", str(SLOW_HEARTBEAT), "--max-subscribers", "3"])
    with make(sock, sc) as ws:
        clients = open_three(ws, SHORT_POLL)
        wait_gauges(cg, {"sse": 1, "ndjson": 1, "poll": 1}, "%s: the three subscribers "
                    "counted" % ws.name, 10)
        _, gone0 = counts(cg)
        t0 = time.monotonic()
        for c in clients:
            c.close()

        def streams_gone():
            g, d = counts(cg)
            return g["sse"] == 0 and g["ndjson"] == 0 and d >= gone0 + 2
        h.wait_until(streams_gone, BEATS * SLOW_HEARTBEAT * h.SLOW,
                     "%s: the SSE and NDJSON subscribers to be dropped within %d heartbeats "
                     "of %d s (now %r)" % (ws.name, BEATS, SLOW_HEARTBEAT, counts(cg)))
        streams_took = time.monotonic() - t0
        wait_gauges(cg, {"sse": 0, "ndjson": 0, "poll": 0}, "%s: the long-poll over by its "
                    "deadline (%d s)" % (ws.name, SHORT_POLL), SHORT_POLL + 10)
        poll_took = time.monotonic() - t0
        _, gone = counts(cg)
        h.check(gone - gone0 in (2, 3), "%s: client_gone rose by %d, expected 2 or 3",
                ws.name, gone - gone0)
        h.say("%s (--heartbeat %d): streams dropped %.2f s after their clients closed; the "
              "long-poll (timeout=%d) ended after %.2f s, %s", ws.name, SLOW_HEARTBEAT,
              streams_took, SHORT_POLL, poll_took,
              "counted as client_gone" if gone - gone0 == 3 else
              "answered at its deadline (the web server had not passed the departure on)")
    cg.stop()


def fcgi_args(sock):
    """Listen on sock; as root, for the web servers' group (www-data), as the example
    configurations say."""
    args = ["--listen", "fcgi:unix:" + sock, "--allow-public-unauthenticated"]
    if webservers.WORKER_USER:
        args += ["--fcgi-socket-owner", ":" + webservers.group_of(webservers.WORKER_USER)]
    return args


def story(sc):
    mongo = sc.devmongo()
    sockets = webservers.socket_dir(sc)
    nginx_part(sc, mongo, os.path.join(sockets, "changegate.sock"))
    for make in (webservers.lighttpd, webservers.apache):
        write_late_part(sc, mongo, os.path.join(sockets, "changegate-%s.sock"
                                                % make.__name__), make)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 90 * h.SLOW))
