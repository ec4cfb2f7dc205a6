#!/usr/bin/python3
"""Story: the HTTP details that proxies, old clients and operators run into.

1. This test lowers its own soft open-files limit to 256 (the hard limit stays) and
   starts devmongo and changegate (--heartbeat 1), which inherits it: changegate raises
   its soft limit to the hard one at start (/proc/PID/limits).
2. An HTTP/1.0 client asks for /events. Before any event exists it gets the response
   head and the SSE preamble (`retry:`), so proxies pass the headers on at once:
   Content-Type text/event-stream, Cache-Control no-cache, X-Accel-Buffering no, no
   chunked encoding (HTTP/1.0 has none) and Connection: close. Then 3 inserts arrive as
   exactly 3 SSE messages, and a heartbeat comment follows while nothing happens.
3. An HTTP/1.0 /poll from the start of the stream gets a Content-Length answer with
   the 3 events, then the server closes the connection.
4. changegate is stopped (SIGTERM): the HTTP/1.0 stream ends with EOF (a clean end).
5. The test lowers its hard open-files limit to 512 and starts a second changegate
   (default --max-subscribers 10000): it starts, /healthz answers 200, and its log
   warns that the open-files limit (512) is below --max-subscribers + 100.
"""
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def nofile_limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise h.TestFailure("no 'Max open files' in /proc/%d/limits" % pid)


class Raw10:
    """An HTTP/1.0 request on a raw socket; collects everything the server sends."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20 * h.SLOW)
        self.sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
        self.data = b""
        self.eof = False

    def read_until(self, pred, what):
        deadline = time.monotonic() + 20 * h.SLOW
        while not pred(self.data):
            h.check(not self.eof, "%s: the connection ended first: %r", what, self.data[-300:])
            h.check(time.monotonic() < deadline, "%s: not within 20 s: %r", what,
                    self.data[-300:])
            chunk = self.sock.recv(65536)
            if not chunk:
                self.eof = True
            self.data += chunk

    def head_and_body(self):
        head, _, body = self.data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        return lines[0], headers, body


def story(sc):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--heartbeat", "1"])
    cg_soft, cg_hard = nofile_limits(cg.proc.pid)
    h.check(cg_soft == cg_hard, "changegate kept a soft open-files limit of %s (hard %s)",
            cg_soft, cg_hard)
    h.say("started with a soft open-files limit of 256: changegate raised it to %s", cg_soft)

    s = Raw10(cg.port, "/events")
    s.read_until(lambda d: b"\r\n\r\n" in d and b"retry:" in d.partition(b"\r\n\r\n")[2],
                 "the head and preamble of an HTTP/1.0 stream")
    status, hd, body = s.head_and_body()
    h.check(status.split()[1] == "200", "HTTP/1.0 /events: %r", status)
    h.check(hd.get("content-type", "").startswith("text/event-stream"), "Content-Type %r",
            hd.get("content-type"))
    h.check(hd.get("cache-control") == "no-cache", "Cache-Control %r", hd.get("cache-control"))
    h.check(hd.get("x-accel-buffering") == "no", "X-Accel-Buffering %r",
            hd.get("x-accel-buffering"))
    h.check("chunked" not in hd.get("transfer-encoding", ""), "chunked encoding sent to an "
            "HTTP/1.0 client: %r", hd)
    h.check(hd.get("connection", "").lower() == "close", "Connection %r (expected close: "
            "HTTP/1.0 ends the body by closing)", hd.get("connection"))
    h.check(body.startswith(b": changegate\nretry: "), "preamble %r", body[:60])
    h.say("HTTP/1.0 stream: head and preamble before any event, no chunking, Connection: "
          "close")

    w = sc.writer(mongo.uri)
    w.insert_seq(0, 3, "hd", "docs")
    s.read_until(lambda d: d.count(b"\ndata: ") >= 3 and d.endswith(b"\n\n"), "3 events")
    parser = h.SSEParser()
    items = parser.feed(s.head_and_body()[2])
    msgs = [i for i in items if isinstance(i, h.Message)]
    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in msgs], [0, 1, 2],
                     "HTTP/1.0 SSE events")
    n = len(s.data)
    s.read_until(lambda d: b": heartbeat" in d[n:], "a heartbeat comment")
    h.say("3 inserts as exactly 3 SSE messages, then a heartbeat comment")

    p = Raw10(cg.port, "/poll?timeout=5&lastEventId=" + msgs[0].id_field)
    p.read_until(lambda d: False if not p.eof else True, "the poll answer and close")
    status, hd, body = p.head_and_body()
    h.check(status.split()[1] == "200", "HTTP/1.0 /poll: %r", status)
    h.check(hd.get("content-length") == str(len(body)), "Content-Length %r for %d body bytes",
            hd.get("content-length"), len(body))
    answer = h.json_body(body, "HTTP/1.0 poll")
    h.check_sequence([h.seq_of(e) for e in answer["events"]], [1, 2], "HTTP/1.0 poll events")
    h.say("HTTP/1.0 poll: Content-Length answer with the 2 events after the first, then close")

    cg.stop()
    s.read_until(lambda d: False if not s.eof else True, "the stream's end at SIGTERM")
    h.say("SIGTERM: the HTTP/1.0 stream ended with EOF")

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))
    cg2 = sc.changegate(mongo.uri, name="changegate-lowfd")
    status, hj = cg2.health_json()
    h.check(status == 200, "/healthz of a changegate with 512 open files: %d %r", status, hj)
    warn = [ln for ln in cg2.stderr().splitlines() if "open-files limit is 512" in ln]
    h.check(warn and " warn: " in warn[0], "no warning about the open-files limit of 512 in "
            "the log")
    h.say("hard limit 512: it runs, and warns: %s", warn[0].split(" warn: ", 1)[1][:120])


if __name__ == "__main__":
    h.run(story)
