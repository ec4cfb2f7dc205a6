#!/usr/bin/python3
"""Story: clients that leave while their request is parked (a long-poll waiting for an
event, an idle SSE or NDJSON stream) are cleaned up when they leave, not when the poll's
deadline or the next heartbeat comes round, so subscriber counts and --max-subscribers
stay true.

1. devmongo and changegate (--heartbeat 300, --max-subscribers 3) start. Nothing is
   written: every request below parks.
2. A long-poll (timeout=120), an SSE stream and an NDJSON stream subscribe: /healthz
   counts 3, and a fourth request gets 503 too_many_subscribers. Both streams have their
   answer's head already, long before any heartbeat could come: the SSE stream its
   `: changegate` preamble, the NDJSON stream an opening {"heartbeat": true} line.
3. The three clients close their sockets. Within 20 s (far less than the poll's 120 s
   and the heartbeat's 300 s) /healthz counts 0, and three new subscribers are accepted.
4. A client that shuts down only its sending side while its long-poll waits gets its
   answer at once: 200, no events, a lastEventId; and one write later, the new SSE
   subscribers get exactly that write.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def raw_get(port, path, headers=()):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
        path, "".join("%s: %s\r\n" % kv for kv in headers))
    s.sendall(head.encode())
    return s


def read_head_and_first_line(s):
    """The answer's head and the first line of its body (chunked or not)."""
    s.settimeout(20 * h.SLOW)
    data = b""
    while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1].count(b"\n") >= 2:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def subscribers(cg):
    status, body = cg.health_json()
    h.check(status == 200, "/healthz answered %d %r", status, body)
    return body["subscribers"]


def wait_subscribers(cg, n, what):
    deadline = time.monotonic() + 20 * h.SLOW
    seen = None
    while time.monotonic() < deadline:
        seen = subscribers(cg)
        if seen == n:
            return
        time.sleep(0.1)
    raise h.TestFailure("%s: /healthz still counts %s subscribers after 20 s, expected %d"
                        % (what, seen, n))


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--heartbeat", "300", "--max-subscribers", "3"])
    poll = raw_get(cg.port, "/poll?timeout=120")
    sse = raw_get(cg.port, "/events", [("Accept", "text/event-stream")])
    nd = raw_get(cg.port, "/events?format=ndjson")
    wait_subscribers(cg, 3, "three parked subscribers")
    status, body, headers = cg.poll(timeout=1)
    h.check(status == 503 and body.get("error") == "too_many_subscribers",
            "a fourth subscriber got %d %r; expected 503 too_many_subscribers", status, body)
    h.say("a long-poll, an SSE and an NDJSON stream are parked; a fourth gets 503")
    for s, want in ((sse, b": changegate\n"), (nd, b'{"heartbeat":true')):
        got = read_head_and_first_line(s)
        h.check(got.startswith(b"HTTP/1.1 200 ") and want in got,
                "a parked stream's first bytes are %r; expected a 200 head and %r", got, want)
    h.say("both streams answered at once: 200, the SSE preamble, the NDJSON opening heartbeat")

    for s in (poll, sse, nd):
        s.close()
    wait_subscribers(cg, 0, "after the three clients closed their sockets")
    h.say("all three closed: /healthz counts 0 (not at the poll's deadline or the next "
          "heartbeat)")

    half = raw_get(cg.port, "/poll?timeout=120")
    wait_subscribers(cg, 1, "a new long-poll")
    half.shutdown(socket.SHUT_WR)
    half.settimeout(20 * h.SLOW)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = half.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise h.TestFailure("a long-poll whose client shut down its sending side got no "
                            "answer in 20 s: %r" % data[:300])
    half.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.1 200"), "half-closed long-poll answered %r", head[:100])
    if b"chunked" in head.lower():
        payload = b"".join(payload.split(b"\r\n")[1::2])
    answer = json.loads(payload.decode())
    h.check(answer.get("events") == [] and isinstance(answer.get("lastEventId"), str),
            "half-closed long-poll answer %r", answer)
    h.say("a long-poll whose client shut down its sending side: answered at once %s", answer)

    subs = [sc.track(cg.sse()) for _ in range(3)]
    w = sc.writer(mongo.uri)
    w.insert_seq(0, 1, "hu", "docs")
    for i, s in enumerate(subs):
        got = [h.seq_of(h.check_sse_event(m)) for m in s.read_messages(1)]
        h.check(got == [0], "new subscriber %d got %r", i, got)
    h.say("three new subscribers accepted, each got the write")


if __name__ == "__main__":
    h.run(story)
