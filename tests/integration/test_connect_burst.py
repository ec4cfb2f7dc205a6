#!/usr/bin/python3
"""Story: many browsers open the page at once. Every SSE subscriber gets its response
and the stream's first bytes on connect, even when nothing is happening in MongoDB.

1. devmongo and changegate (--max-subscribers 1000, --heartbeat 15) start; no writes.
2. 256 connections (BURST_N) are opened at once and their `GET /events` requests all
   sent before any answer is read (a burst, like a page reload across a fleet of
   browsers, or an event-loop client). 256 is the count that exposed a stall: with it,
   changegate e1d5d39 often answers none of them until the first change event.
3. Each must receive `200`, `Content-Type: text/event-stream` and the preamble
   `: changegate\\nretry: 3000\\n\\n` (the contract: "on connect the server first sends").
   The wait is bounded by 10 s, shorter than the heartbeat interval, so a heartbeat or
   a change event cannot be what unblocks them.
4. Then one write reaches all of them.
"""
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = int(os.environ.get("BURST_N", "256"))
PREAMBLE = b": changegate\nretry: 3000\n\n"


class Raw:
    """One connection read by hand: headers, then a chunked (or plain) body."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))      # completes in the background
        self.sent = False
        self.buf = b""
        self.head = None
        self.body = b""

    def send(self):
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        h.check(err == 0, "connect failed: %s", os.strerror(err))
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                          b"Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
                          b"User-Agent: changegate-burst\r\n\r\n" % self.port)
        self.sent = True

    def feed(self):
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            raise h.TestFailure("a subscriber's connection closed: %r" % (self.buf + self.body))
        self.buf += data
        if self.head is None and b"\r\n\r\n" in self.buf:
            self.head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if self.head is not None:
            if b"chunked" in self.head.lower():
                while True:          # decode complete chunks only
                    k = self.buf.find(b"\r\n")
                    if k < 0:
                        break
                    size = int(self.buf[:k].split(b";")[0], 16)
                    if len(self.buf) < k + 2 + size + 2:
                        break
                    self.body += self.buf[k + 2:k + 2 + size]
                    self.buf = self.buf[k + 2 + size + 2:]
            else:
                self.body, self.buf = self.body + self.buf, b""

    def ready(self):
        return self.head is not None and len(self.body) >= len(PREAMBLE)


def read_until(conns, done, seconds):
    """Reads whatever arrives on any connection until done(c) holds for each, or the
    time is up; returns the connections still waiting."""
    deadline = time.monotonic() + seconds
    waiting = set(conns)
    while waiting and time.monotonic() < deadline:
        r, _, _ = select.select([c.sock for c in waiting], [], [], 0.2)
        by_sock = {c.sock: c for c in waiting}
        for s in r:
            c = by_sock[s]
            c.feed()
            if done(c):
                waiting.discard(c)
    return waiting


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--max-subscribers", "1000", "--heartbeat", "15"])
    # All connections are started at once, and each request goes out as soon as its
    # connection is established, the way an event loop (or a crowd of browsers) does it.
    conns = [Raw(cg.port) for _ in range(N)]
    sc.closers.extend(c.sock.close for c in conns)
    deadline = time.monotonic() + 10 * h.SLOW
    unsent = list(conns)
    while unsent:
        h.check(time.monotonic() < deadline, "%d connections never got established", len(unsent))
        _, wr, _ = select.select([], [c.sock for c in unsent], [], 0.2)
        for c in [c for c in unsent if c.sock in set(wr)]:
            c.send()
        unsent = [c for c in unsent if not c.sent]
    h.say("%d requests sent before reading any answer", N)

    waiting = read_until(conns, lambda c: c.ready(), 10 * h.SLOW)
    if waiting:
        no_head = sum(1 for c in waiting if c.head is None)
        status, _, body = cg.health()
        raise h.TestFailure(
            "%d of %d subscribers got nothing usable within %.0fs of connecting (%d without "
            "even the response headers); /healthz: %d %s" % (
                len(waiting), N, 10 * h.SLOW, no_head, status, body[:200]))
    for c in conns:
        status_line = c.head.split(b"\r\n", 1)[0]
        h.check(status_line.startswith(b"HTTP/1.1 200"), "a subscriber got %r", status_line)
        h.check(b"content-type: text/event-stream" in c.head.lower(),
                "a subscriber's headers lack text/event-stream: %r", c.head)
        h.check(c.body.startswith(PREAMBLE), "a stream starts with %r", c.body[:60])
    h.say("all %d got 200, text/event-stream and the preamble on connect", N)

    w = sc.writer(mongo.uri)
    w.insert_seq(0, 1, "burst", "docs")
    waiting = read_until(conns, lambda c: b'"seq" : 0' in c.body or b'"seq":0' in c.body,
                         20 * h.SLOW)
    h.check(not waiting, "%d of %d subscribers did not get the first event", len(waiting), N)
    h.say("one write reached all %d", N)


if __name__ == "__main__":
    h.run(story)
