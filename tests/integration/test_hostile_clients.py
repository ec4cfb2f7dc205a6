#!/usr/bin/python3
"""Story: hostile and broken clients get the documented answer or are cleaned up, the
gateway keeps serving its well-behaved subscribers exactly, and nothing leaks.

1. devmongo and changegate (--heartbeat 1, --max-subscribers 64) start. Two well-behaved
   subscribers stay connected throughout: an SSE stream of everything and an NDJSON
   stream of `ns=app.orders`. Ten orders are written; both receive them.
2. Requests at and beyond every limit, written byte for byte on raw sockets (http.client
   and urllib would normalise them): each answer's status, Content-Type application/json
   and body {"error": code, "message": non-empty} are checked, or, where a malformed head
   may also be dropped, that the connection closed cleanly (FIN) without an answer.
   - a 1 MB URL: 414 uri_too_long, read by the client after it sent the whole megabyte,
     then a clean close; 513 query parameters: 414 (512: answered normally);
   - 17 KiB of header fields, in one field or in seventeen, and 16 KiB + 1 byte: 431
     headers_too_large (exactly 16 KiB: answered normally); 101 header fields: 431 (100:
     answered normally);
   - PUT and POST: 405 method_not_allowed with an Allow header naming GET (RFC 9110 15.5.6);
   - invalid percent-encoding: `%G1` and a lone `%` are kept literally by the gateway
     (libmicrohttpd), so they must end up as a 400 from validation or as a literal that
     matches nothing, never as a value with the `%` dropped; a `%00` in a parameter's
     value or in the path must be refused, not cut the value short there (a `lastEventId`
     cut at `%00` would stream from a position the client did not send);
   - a Last-Event-ID header carrying a raw NUL, a bare CR, a bare LF followed by a
     non-header line, or an obsolete line folding (RFC 9112 5.2, RFC 9110 5.5: reject,
     or read the character as a space, which makes these values invalid): 400
     invalid_position or a clean close, never a crash and never an answer from another
     position; a bare LF that ends the header line is a line end, and the answer is
     exactly the events after the position; a CR LF decoded from `lastEventId` is never
     echoed into the answer's head;
   - a request line that is not HTTP: a JSON 400 or a clean close.
   These are checked one by one and every deviation is reported together at the end of
   the story (after the rest has run and changegate has exited), so one bug does not
   hide the others.
3. 5,000 connections (CG_HOSTILE_DROPS; waves of CG_HOSTILE_WAVE, 1,000) are opened and
   dropped half-way through their request head: nothing sent, part of the request line,
   part of a field, every field but no blank line, a Last-Event-ID cut short, 40 KB of a
   long URL, all but the final LF; closed with FIN or with RST (SO_LINGER 0). While each
   wave's connections are open (changegate holds every one that sent bytes: its open
   files say so), three orders are written and both subscribers receive exactly them. Afterwards /healthz is 200 and counts just the two, changegate holds no
   more file descriptors than before the waves, and a new subscriber works.
4. Clients that leave mid-response: 30 SSE and 10 NDJSON subscribers read 3 of 5 events
   and leave, half with RST and half with FIN; 10 long-polls waiting for the next event
   and 5 waiting (timeout=120) on a namespace that never gets writes leave; 1,000
   documents of 10 KB are written to app.big, 10 SSE subscribers of app.big with a 4 KiB
   receive buffer leave after 20 KB, and two /poll?limit=1000 answers (10 MB) are abandoned after 64 KB (RST, FIN),
   while a third is read whole and holds exactly the 1,000. A departure is noticed when the
   socket reports it or, at the latest, at the next write to it (a heartbeat, every second
   here), so the story waits, with a generous bound, until /healthz counts just the two.
5. No slot leaked: 62 new subscribers fill --max-subscribers 64 exactly, the next stream
   and the next poll get 503 too_many_subscribers with Retry-After; once they leave, the
   count is back to two, changegate's file descriptors are back to what they were, a
   final write reaches both subscribers and a new one, changegate exits 0 on SIGTERM
   (under CG_WRAPPER=valgrind: no leak, no invalid access), and its log has no sanitizer
   report.
"""
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DROPS = int(os.environ.get("CG_HOSTILE_DROPS", "5000"))
WAVE = int(os.environ.get("CG_HOSTILE_WAVE", "1000"))
MAX_SUBS = 64
GOOD = 2                     # the well-behaved SSE and NDJSON subscribers
BIG_DOCS = 1000
BIG_PAD = "x" * 10000

PARTIAL_HEADS = [
    ("nothing", b""),
    ("part of the request line", b"GET /ev"),
    ("part of a field", b"GET /events?ns=app.orders HTTP/1.1\r\nHo"),
    ("every field, no blank line",
     b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"),
    ("a Last-Event-ID cut short", b"GET /poll?timeout=30 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 82"),
    ("40 KB of a long URL", b"GET /events?x=" + b"a" * 40000),
    ("all but the final LF", b"GET /events HTTP/1.1\r\nHost: x\r\n\r"),
]


# --------------------------------------------------------------------------- raw HTTP

def rst_close(sock):
    """Close with RST instead of FIN (SO_LINGER on, timeout 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Answer:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    def __repr__(self):
        return "%d %s %r %r" % (self.status, self.reason, self.headers, self.body[:300])


class Raw:
    """One connection that sends exactly the bytes it is given and reads answers by hand."""

    def __init__(self, port, rcvbuf=None, timeout=10):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout * h.SLOW)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.end = None            # "fin" or "reset" once the server's side ended
        self.send_error = None
        self.received = 0

    def send(self, data):
        """All of data; a server that answers early and closes may refuse the rest (the
        answer is still there to read)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            self.send_error = e

    def _recv(self):
        if self.end:
            return False
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            self.end = "reset"
            return False
        except socket.timeout:
            raise h.TestFailure("no answer from :%d within %.0fs; so far %r" % (
                self.port, self.sock.gettimeout(), bytes(self.buf[:300])))
        if not d:
            self.end = "fin"
            return False
        self.received += len(d)
        self.buf += d
        return True

    def response(self, read_body=True):
        """The next answer (its body read by Content-Length; a streamed body, or any body
        when read_body is false, stays in buf), or None when the connection ended before
        any byte of one."""
        while b"\r\n\r\n" not in self.buf:
            if not self._recv():
                h.check(not self.buf, "the connection ended (%s) inside an answer's head: %r",
                        self.end, bytes(self.buf[:300]))
                return None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        h.check(len(parts) >= 2 and parts[0].startswith("HTTP/1.") and parts[1].isdigit(),
                "bad status line %r", lines[0])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        self.buf = bytearray(rest)
        if not read_body:
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n and self._recv():
                pass
            h.check(len(self.buf) >= n, "answer %s cut off after %d of %d body bytes (%s)",
                    lines[0], len(self.buf), n, self.end)
            body = bytes(self.buf[:n])
            del self.buf[:n]
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""             # a stream: the caller reads it
        else:
            while self._recv():
                pass
            body, self.buf = bytes(self.buf), bytearray()
        return Answer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body)

    def until_end(self):
        """Reads until the server's side ends; returns (how, bytes that came first)."""
        while self._recv():
            pass
        return self.end, bytes(self.buf)

    def sse_messages(self, want, timeout=10):
        """Up to `want` SSE data messages of a 200 chunked stream (the head already read by
        response()); returns them with how the stream ended, if it did."""
        parser = h.SSEParser()
        got = []
        raw = bytearray(self.buf)
        self.buf = bytearray()
        deadline = time.monotonic() + timeout * h.SLOW
        while len(got) < want and time.monotonic() < deadline:
            while True:        # de-chunk what is complete
                k = raw.find(b"\r\n")
                if k < 0:
                    break
                size = int(bytes(raw[:k]).split(b";")[0], 16)
                if size == 0:
                    return got, "chunked-end"
                if len(raw) < k + 2 + size + 2:
                    break
                got += [m for m in parser.feed(bytes(raw[k + 2:k + 2 + size]))
                        if isinstance(m, h.Message)]
                del raw[:k + 2 + size + 2]
            if len(got) >= want:
                break
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                return got, "reset"
            if not d:
                return got, "fin"
            raw += d
        return got, None

    def rst(self):
        rst_close(self.sock)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def exchange(port, data, rcvbuf=None):
    """Sends data on a new connection and reads one answer: (Raw, Answer or None)."""
    r = Raw(port, rcvbuf=rcvbuf)
    r.send(data)
    return r, r.response()


def get(path, fields=(("Host", "x"),), method="GET", body=b""):
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % kv for kv in fields)
    return head.encode("latin-1") + b"\r\n" + body


# --------------------------------------------------------------------------- checking

def is_json_error(ans, status, codes):
    """'' when ans is `status` application/json {"error": one of codes, "message": text},
    else what differs."""
    if ans.status != status:
        return "status %d %s, expected %d" % (ans.status, ans.reason, status)
    ctype = ans.headers.get("content-type", "")
    if ctype.split(";")[0].strip() != "application/json":
        return "Content-Type %r, expected application/json (body %r)" % (ctype, ans.body[:200])
    doc = ans.json()
    if not isinstance(doc, dict) or set(doc) != {"error", "message"}:
        return "body is not {\"error\", \"message\"}: %r" % ans.body[:300]
    if doc["error"] not in codes:
        return "error %r, expected %s" % (doc["error"], " or ".join(codes))
    if not isinstance(doc["message"], str) or not doc["message"].strip():
        return "empty message: %r" % doc
    return ""


def seqs_of_poll(ans):
    doc = ans.json()
    h.check(isinstance(doc, dict) and isinstance(doc.get("events"), list),
            "a 200 /poll answer is not {\"events\": [...]}: %r", ans.body[:300])
    return [(e.get("fullDocument") or {}).get("seq") for e in doc["events"]]


def fd_count(cg):
    return len(os.listdir("/proc/%d/fd" % cg.proc.pid))


def fd_listing(cg):
    out = []
    base = "/proc/%d/fd" % cg.proc.pid
    for fd in sorted(os.listdir(base), key=int):
        try:
            out.append("%s->%s" % (fd, os.readlink(os.path.join(base, fd))))
        except OSError:
            pass
    return out


def subscribers(cg):
    status, body = cg.health_json()
    h.check(status == 200, "/healthz answered %d %r", status, body)
    return body["subscribers"]


def wait_subscribers(cg, n, what, bound=60):
    """Waits (up to `bound` s, x5 under a wrapper) until /healthz counts n subscribers
    (a client that left is noticed at once, or at the latest at the next heartbeat: 1 s)."""
    seen = []

    def pred():
        cg._check_alive()
        v = subscribers(cg)
        if not seen or seen[-1] != v:
            seen.append(v)
        return v == n
    try:
        h.wait_until(pred, bound * h.SLOW, "/healthz to count %d subscribers %s" % (n, what),
                     interval=0.2)
    except h.TestFailure as e:
        raise h.TestFailure("%s; counts seen: %s" % (e, seen))


def wait_fds(cg, baseline, what, bound=60):
    """Waits until changegate holds no more file descriptors than at the baseline."""
    def pred():
        cg._check_alive()
        return fd_count(cg) <= baseline
    try:
        h.wait_until(pred, bound * h.SLOW, "changegate's open files to return to %d %s"
                     % (baseline, what), interval=0.2)
    except h.TestFailure as e:
        raise h.TestFailure("%s: it holds %d: %s" % (e, fd_count(cg), " ".join(fd_listing(cg))))


class Good:
    """The two well-behaved subscribers and what each must receive."""

    def __init__(self, sc, cg):
        self.sse = sc.track(cg.sse())
        self.nd = sc.track(cg.ndjson(params=[("ns", "app.orders")]))
        self.sse_positions = []

    def expect(self, orders, others=0, what=""):
        """orders: the app.orders seqs written since the last call, in order; others: how
        many other events (app.big) came in between, after them."""
        msgs = self.sse.read_messages(len(orders) + others, timeout=60)
        evs = [h.check_sse_event(m) for m in msgs]
        self.sse_positions += [m.id_field for m in msgs]
        got = [h.seq_of(e) for e in evs if e["ns"]["coll"] == "orders"]
        h.check_sequence(got, list(orders), "SSE subscriber, app.orders %s" % what)
        h.check(sum(1 for e in evs if e["ns"]["coll"] != "orders") == others,
                "SSE subscriber %s: %d other events, expected %d", what,
                sum(1 for e in evs if e["ns"]["coll"] != "orders"), others)
        objs = self.nd.read_events(len(orders), timeout=60)
        got = [h.seq_of(h.check_ndjson_event(o)) for o in objs]
        h.check_sequence(got, list(orders), "NDJSON subscriber (ns=app.orders) %s" % what)
        return evs


# --------------------------------------------------------------------------- 2. limits and errors

def limits_and_errors(cg, dev, pos, after):
    """pos: positions of app.orders seq 0..9; `after(i)`: the seqs after position i."""
    port = cg.port
    P, P2 = pos[3], pos[6]

    def error(what, data, status, codes):
        r, ans = exchange(port, data)
        try:
            if dev.expect(ans is not None, "%s: the connection ended (%s) without an answer, "
                          "expected %d %s", what, r.end, status, "/".join(codes)):
                diff = is_json_error(ans, status, codes)
                dev.expect(not diff, "%s: %s", what, diff)
                if not diff:
                    h.say("%-44s %d %s", what, ans.status, ans.json()["error"])
            return r, ans
        finally:
            r.close()

    def answered(what, data, status=200):
        r, ans = exchange(port, data)
        r.close()
        dev.expect(ans is not None and ans.status == status, "%s: answered %r, expected %d",
                   what, ans, status)
        if ans is not None and ans.status == status:
            h.say("%-44s %d (within the limit)", what, ans.status)
        return ans

    # 414: a 1 MB URL. The gate answers after the first 64 KiB and discards the rest; the
    # client sends all of it first and must still read the answer, then a clean close.
    r = Raw(port)
    r.send(get("/events?x=" + "a" * (1 << 20)))
    ans = r.response()
    if dev.expect(ans is not None, "1 MB URL: no answer (%s; sending: %r)", r.end, r.send_error):
        diff = is_json_error(ans, 414, ["uri_too_long"])
        dev.expect(not diff, "1 MB URL: %s", diff)
        how, extra = r.until_end()
        dev.expect(how == "fin" and not extra, "1 MB URL: after the 414 the connection ended "
                   "with %s and %r, expected a clean close", how, extra[:100])
        if not diff:
            h.say("%-44s %d %s, then a clean close", "1 MB URL", ans.status, ans.json()["error"])
    r.close()

    # 414: 513 query parameters; 512 are fine.
    error("513 query parameters", get("/events?" + "&".join(["ns=app.orders"] * 513)),
          414, ["uri_too_long"])
    answered("512 query parameters",
             get("/poll?timeout=0&" + "&".join(["ns=app.orders"] * 511)))

    # 431: header fields beyond 16 KiB together, or more than 100 of them.
    host = ("Host", "x")                       # 9 bytes with its CRLF
    error("17 KiB in one header field", get("/healthz", [host, ("X-Pad", "v" * 17 * 1024)]),
          431, ["headers_too_large"])
    error("17 KiB in 17 header fields",
          get("/healthz", [host] + [("X-Pad-%02d" % i, "v" * 1024) for i in range(17)]),
          431, ["headers_too_large"])
    pad = 16384 - 9 - len("X-Pad: \r\n")       # the fields then total exactly 16 KiB
    answered("exactly 16 KiB of header fields", get("/healthz", [host, ("X-Pad", "v" * pad)]))
    error("16 KiB + 1 byte of header fields", get("/healthz", [host, ("X-Pad", "v" * (pad + 1))]),
          431, ["headers_too_large"])
    error("101 header fields", get("/healthz", [host] + [("X-F%d" % i, "v") for i in range(100)]),
          431, ["headers_too_large"])
    answered("100 header fields", get("/healthz", [host] + [("X-F%d" % i, "v") for i in range(99)]))

    # 405 names what is allowed (RFC 9110 15.5.6: a 405 MUST carry Allow).
    for what, data in (("PUT /poll", get("/poll", [host, ("Content-Length", "0")], "PUT")),
                       ("POST /events with a body",
                        get("/events", [host, ("Content-Length", "3")], "POST", b"a=1"))):
        _, ans = error(what, data, 405, ["method_not_allowed"])
        if ans is not None:
            allow = [m.strip() for m in ans.headers.get("allow", "").split(",")]
            dev.expect("GET" in allow, "%s: 405 without an Allow header naming GET: %r", what,
                       ans.headers)

    def judge(what, data, status, codes, on_200=None, sse=False):
        """One request that must be refused: `status` JSON {"error": one of codes (any, when
        codes is None), "message"}, or, when `status` is None, a 400 of codes or a clean
        close without an answer. A 200 is described by on_200(answer) (or, for a stream,
        by its first event) in the deviation."""
        r, ans = exchange(port, data)
        try:
            if ans is None:
                if dev.expect(status is None and r.end == "fin", "%s: the connection ended "
                              "(%s) without an answer", what, r.end):
                    h.say("%-44s a clean close without an answer", what)
                return
            if ans.status == 200 and (on_200 or sse):
                if sse:
                    msgs, _ = r.sse_messages(1, timeout=3)
                    seen = ("a stream whose first event is seq %r (position %s)" % (
                        h.seq_of(msgs[0].json()), msgs[0].id_field) if msgs else
                        "a stream with no event within 3 s (it streams from now)")
                else:
                    seen = on_200(ans)
                dev.expect(False, "%s: 200, %s", what, seen)
                return
            want = status or 400
            if codes is None:
                codes = [(ans.json() or {}).get("error") or "<a code>"]
            diff = is_json_error(ans, want, codes)
            dev.expect(not diff, "%s: %s", what, diff)
            if not diff:
                h.say("%-44s %d %s", what, ans.status, ans.json()["error"])
        finally:
            r.close()

    def events_of(ans):
        return "events %r (after P: %r, after P2: %r, all: %r)" % (
            seqs_of_poll(ans), after(3), after(6), after(-1))

    # Invalid percent-encoding. libmicrohttpd keeps %G1 and a lone % as they are: then
    # validation refuses the value, or it is a literal that matches nothing.
    error("op=insert%G1", get("/poll?timeout=0&op=insert%G1"), 400, ["invalid_parameter"])
    error("lastEventId=%G1", get("/poll?timeout=0&lastEventId=%G1"), 400,
          ["invalid_position", "invalid_parameter"])
    error("lastEventId=%", get("/poll?timeout=0&lastEventId=%"), 400,
          ["invalid_position", "invalid_parameter"])
    for what, ns in (("ns=app% (a lone % at the end)", "app%"), ("ns=app%G1", "app%G1")):
        r, ans = exchange(port, get("/poll?timeout=0&limit=1000&lastEventId=%s&ns=%s"
                                    % (pos[0], ns)))
        r.close()
        if ans is not None and ans.status == 200:
            if dev.expect(seqs_of_poll(ans) == [], "%s: 200 with %s: the %% was dropped",
                          what, events_of(ans)):
                h.say("%-44s 200, a literal namespace: no events", what)
        else:
            diff = is_json_error(ans, 400, ["invalid_parameter"]) if ans else "no answer"
            dev.expect(not diff, "%s: %s", what, diff)
    # %00 decodes to a NUL byte: the value must be refused, not read up to the NUL.
    after_p0 = "/poll?timeout=0&limit=1000&lastEventId=%s" % pos[0]
    judge("lastEventId=<P>%00<P2>", get("/poll?timeout=0&limit=1000&lastEventId=%s%%00%s"
                                        % (P, P2)),
          400, ["invalid_position", "invalid_parameter"],
          lambda a: "the value was cut at the NUL: " + events_of(a))
    judge("ns=app%00zzz", get(after_p0 + "&ns=app%00zzz"), 400, ["invalid_parameter"],
          lambda a: "the value was cut at the NUL to ns=app: " + events_of(a))
    judge("filter={}%00junk", get(after_p0 + "&filter=%7B%7D%00junk"), 400,
          ["invalid_filter", "invalid_parameter"],
          lambda a: "the value was cut at the NUL to filter={}: " + events_of(a))
    # In the path: 404 (no such endpoint) or a 400 (README names no code for a bad path).
    r, ans = exchange(port, get("/poll%00/elsewhere?timeout=0"))
    r.close()
    diff = is_json_error(ans, 404, ["not_found"]) if ans else "no answer"
    if diff and ans is not None and ans.status == 400:
        diff = is_json_error(ans, 400, [(ans.json() or {}).get("error") or "<a code>"])
    if dev.expect(not diff, "GET /poll%%00/elsewhere: %s (cut at the NUL, the path is /poll)",
                  diff):
        h.say("%-44s %d %s", "GET /poll%00/elsewhere", ans.status, ans.json()["error"])
    # CR LF decoded from a parameter is refused and never reaches the answer's head.
    _, ans = error("lastEventId=<P>%0D%0AX-Injected:%201",
                   get("/poll?timeout=0&lastEventId=%s%%0D%%0AX-Injected:%%201" % P), 400,
                   ["invalid_position"])
    if ans is not None:
        dev.expect("x-injected" not in ans.headers, "a CR LF from lastEventId became a header "
                   "of the answer: %r", ans.headers)

    # Last-Event-ID with a raw NUL, a bare CR, a bare LF, an obsolete line folding: 400
    # invalid_position or a clean close (status None).
    poll_head = b"GET /poll?timeout=0&limit=1000 HTTP/1.1\r\nHost: x\r\n"
    sse_head = b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
    lei = b"Last-Event-ID: " + P.encode()
    P2b = P2.encode()
    judge("/poll, Last-Event-ID: P NUL P2", poll_head + lei + b"\0" + P2b + b"\r\n\r\n",
          None, ["invalid_position"], events_of)
    judge("/events, Last-Event-ID: P NUL P2", sse_head + lei + b"\0" + P2b + b"\r\n\r\n",
          None, ["invalid_position"], sse=True)
    judge("Last-Event-ID: P CR P2", poll_head + lei + b"\r" + P2b + b"\r\n\r\n",
          None, ["invalid_position"], events_of)
    # After a bare LF, P2 is a line of its own that is not a field: the head is malformed
    # (RFC 9112 5), and nothing ties that line to Last-Event-ID: any JSON 400 will do.
    judge("Last-Event-ID: P LF P2 (not a header line)", poll_head + lei + b"\n" + P2b
          + b"\r\n\r\n", None, None, events_of)
    judge("/poll, Last-Event-ID: P CRLF SP P2 (obs-fold)", poll_head + lei + b"\r\n " + P2b
          + b"\r\n\r\n", None, ["invalid_position"], events_of)
    judge("/events, Last-Event-ID: P CRLF HT P2 (obs-fold)", sse_head + lei + b"\r\n\t" + P2b
          + b"\r\n\r\n", None, ["invalid_position"], sse=True)
    # A bare LF that ends the field is a line end (RFC 9112 2.2): exactly the events after P.
    r, ans = exchange(port, poll_head + lei + b"\nX-Other: 1\r\n\r\n")
    r.close()
    if dev.expect(ans is not None and ans.status == 200 and seqs_of_poll(ans) == after(3),
                  "Last-Event-ID: P ended by a bare LF: %r, expected 200 with %r", ans and (
                      ans.status, seqs_of_poll(ans) if ans.status == 200 else ans.body[:200]),
                  after(3)):
        h.say("%-44s 200, exactly the events after P", "Last-Event-ID: P ended by a bare LF")
    # Not HTTP at all.
    judge("a request line that is not HTTP", b"HELLO\r\n\r\n", None, None)
    h.check(cg.proc.alive(), "changegate died during the bad requests")


# --------------------------------------------------------------------------- 3. half-way heads

def drop_wave(port, n, first):
    """Opens n connections, sends each part of a request head, returns them (open)."""
    socks = []
    for i in range(first, first + n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10 * h.SLOW)
        try:
            s.connect(("127.0.0.1", port))
        except OSError as e:
            s.close()
            for t in socks:
                t.close()
            raise h.TestFailure("connection %d of the half-way heads could not connect: %r"
                                % (i, e))
        data = PARTIAL_HEADS[i % len(PARTIAL_HEADS)][1]
        if data:
            s.sendall(data)
        socks.append(s)
    return socks


def close_wave(socks, first):
    for i, s in enumerate(socks, first):
        if (i // len(PARTIAL_HEADS)) % 2:
            rst_close(s)
        else:
            s.close()


# --------------------------------------------------------------------------- the story

def story(sc):
    h.raise_nofile(WAVE + 1024)
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--heartbeat", "1", "--max-subscribers", str(MAX_SUBS)])
    w = sc.writer(mongo.uri)
    good = Good(sc, cg)
    next_seq = [0]

    def write_orders(n):
        seqs = list(range(next_seq[0], next_seq[0] + n))
        w.insert_seq(next_seq[0], n, "app", "orders")
        next_seq[0] += n
        return seqs

    write_orders(10)
    good.expect(range(10), what="at the start")
    pos = list(good.sse_positions)
    wait_subscribers(cg, GOOD, "(the two well-behaved subscribers)")
    time.sleep(0.5 * h.SLOW)       # let the test's own /healthz connections close
    baseline = fd_count(cg)
    h.say("two well-behaved subscribers got the first 10 orders; changegate holds %d files",
          baseline)

    # 2. limits and errors
    dev = h.Deviations()
    limits_and_errors(cg, dev, pos, lambda i: list(range(i + 1, 10)))
    seqs = write_orders(3)
    good.expect(seqs, what="after the bad requests")
    wait_subscribers(cg, GOOD, "after the bad requests (a wrongly accepted stream lingers)")
    h.say("after the bad requests: %d deviations; both subscribers got the next 3 orders",
          len(dev.items))

    # 3. connections dropped half-way through their request head
    t0 = time.monotonic()
    done = 0
    while done < DROPS:
        n = min(WAVE, DROPS - done)
        socks = drop_wave(cg.port, n, done)
        try:
            # The gate holds every connection that sent something (TCP_DEFER_ACCEPT keeps
            # the silent ones in the kernel): the half-way heads are really waiting there.
            held = sum(1 for i in range(done, done + n) if PARTIAL_HEADS[i % len(PARTIAL_HEADS)][1])
            h.wait_until(lambda: fd_count(cg) >= baseline + held, 30 * h.SLOW,
                         "changegate to hold the %d half-way heads that sent bytes (it holds "
                         "%d files, %d before)" % (held, fd_count(cg), baseline), interval=0.1)
            seqs = write_orders(3)
            good.expect(seqs, what="while %d half-way heads are open" % n)
        finally:
            close_wave(socks, done)
        done += n
    h.say("%d connections dropped half-way through their heads (%s; FIN and RST) in %.1fs; "
          "both subscribers got every write in between", done,
          ", ".join(k for k, _ in PARTIAL_HEADS), time.monotonic() - t0)
    h.check(cg.health()[0] == 200, "/healthz is not 200 after the half-way heads")
    wait_subscribers(cg, GOOD, "after the half-way heads")
    wait_fds(cg, baseline, "after the half-way heads")
    fresh = cg.sse(last_event_id=good.sse_positions[-1])
    seqs = write_orders(2)
    good.expect(seqs, what="after the half-way heads")
    got = [h.seq_of(h.check_sse_event(m)) for m in fresh.read_messages(2)]
    h.check_sequence(got, seqs, "a new subscriber after the half-way heads")
    fresh.close()
    h.say("after them: /healthz 200 counting %d, changegate holds %d files again, a new "
          "subscriber got the next writes", GOOD, baseline)

    # 4a. streams that read a few events and leave (RST or FIN)
    leavers = [cg.sse() for _ in range(30)] + [cg.ndjson() for _ in range(10)]
    wait_subscribers(cg, GOOD + 40, "(40 more streams)")
    seqs = write_orders(5)
    good.expect(seqs, what="with 40 more streams")
    for i, c in enumerate(leavers):
        if isinstance(c, h.SSEClient):
            got = [h.seq_of(h.check_sse_event(m)) for m in c.read_messages(3)]
        else:
            got = [h.seq_of(h.check_ndjson_event(o)) for o in c.read_events(3)]
        h.check(got == seqs[:3], "leaving stream %d got %r, expected %r", i, got, seqs[:3])
        if i % 2:
            rst_close(c.http.sock)
        else:
            c.close()
    seqs = write_orders(5)
    good.expect(seqs, what="after 40 streams left")
    wait_subscribers(cg, GOOD, "after 40 streams left mid-stream (20 RST, 20 FIN)")
    h.say("30 SSE and 10 NDJSON streams read 3 of 5 events and left (RST, FIN): cleaned up")

    # 4b. long-polls that leave while they wait
    polls = []
    for i in range(10):
        r = Raw(cg.port)
        r.send(get("/poll?timeout=60"))
        polls.append(r)
    for i in range(5):
        r = Raw(cg.port)
        r.send(get("/poll?timeout=120&ns=nowhere.never"))
        polls.append(r)
    wait_subscribers(cg, GOOD + 15, "(15 waiting long-polls)")
    for i, r in enumerate(polls):
        r.rst() if i % 2 else r.close()
    seqs = write_orders(1)        # would wake the ten: their answers go to closed sockets
    good.expect(seqs, what="after 15 long-polls left")
    wait_subscribers(cg, GOOD, "after 15 waiting long-polls left (5 of them wait for "
                     "nothing until their timeout=120)")
    h.say("15 long-polls left while waiting (RST, FIN): cleaned up, the 5 with nothing to "
          "wake them before their timeout=120 included")

    # 4c. big documents: streams and a 10 MB poll answer abandoned half-way
    big_subs = []
    for i in range(10):
        r = Raw(cg.port, rcvbuf=4096)
        r.send(get("/events?ns=app.big", [("Host", "x"), ("Accept", "text/event-stream")]))
        ans = r.response()
        h.check(ans is not None and ans.status == 200, "big-document stream %d: %r", i, ans)
        big_subs.append(r)
    wait_subscribers(cg, GOOD + 10, "(10 streams of big documents)")
    before_big = good.sse_positions[-1]
    big = w.coll("app", "big")
    for k in range(0, BIG_DOCS, 100):
        big.insert_many([{"n": n, "pad": BIG_PAD} for n in range(k, k + 100)])
    seqs = write_orders(1)
    good.expect(seqs, others=BIG_DOCS, what="after the big documents")
    for i, r in enumerate(big_subs):
        while r.received < 20000 and r._recv():
            pass
        h.check(r.received >= 20000, "big-document stream %d ended (%s) after %d bytes", i,
                r.end, r.received)
        r.rst() if i % 2 else r.close()
    path = "/poll?timeout=0&limit=1000&ns=app.big&lastEventId=%s" % before_big
    for how in ("RST", "FIN"):
        r = Raw(cg.port, rcvbuf=16384)
        r.send(get(path))
        ans = r.response(read_body=False)
        h.check(ans is not None and ans.status == 200, "big poll answered %r", ans)
        total = int(ans.headers.get("content-length", "0"))
        while r.received < 65536 and r._recv():
            pass
        h.check(r.received >= 65536, "the big poll answer ended (%s) after %d bytes", r.end,
                r.received)
        h.check(total > BIG_DOCS * len(BIG_PAD), "the big poll answer is %d bytes", total)
        r.rst() if how == "RST" else r.close()
        h.say("a %.1f MB /poll answer abandoned after its head and %d bytes (%s)",
              total / 1e6, r.received, how)
    r, ans = exchange(cg.port, get(path))
    r.close()
    h.check(ans is not None and ans.status == 200, "the whole big poll answered %r", ans)
    doc = ans.json()
    h.check(doc is not None and [e["fullDocument"]["n"] for e in doc["events"]] ==
            list(range(BIG_DOCS)) and all(e["fullDocument"]["pad"] == BIG_PAD
                                          for e in doc["events"]),
            "the whole big poll answer does not hold exactly the %d documents", BIG_DOCS)
    h.say("a third one read whole: exactly the %d documents (%.1f MB)", BIG_DOCS,
          len(ans.body) / 1e6)
    seqs = write_orders(2)
    good.expect(seqs, what="after the abandoned answers")
    wait_subscribers(cg, GOOD, "after the big-document clients left")
    h.say("10 streams left in the middle of big documents, two 10 MB answers were "
          "abandoned: cleaned up")

    # 5. no slot leaked: exactly MAX_SUBS - GOOD more fit
    fill = [cg.sse() for _ in range(MAX_SUBS - GOOD)]
    wait_subscribers(cg, MAX_SUBS, "(filled to --max-subscribers)")
    for what, data in (("stream", get("/events", [("Host", "x"), ("Accept", "text/event-stream")])),
                       ("poll", get("/poll?timeout=1"))):
        r, ans = exchange(cg.port, data)
        r.close()
        h.check(ans is not None, "over --max-subscribers: no answer to a %s", what)
        diff = is_json_error(ans, 503, ["too_many_subscribers"])
        h.check(not diff, "a %s over --max-subscribers %d: %s", what, MAX_SUBS, diff)
        h.check(ans.headers.get("retry-after", "").isdigit(), "503 too_many_subscribers "
                "without a Retry-After in seconds: %r", ans.headers)
    h.say("%d new subscribers fill --max-subscribers %d exactly; the next stream and poll: "
          "503 too_many_subscribers, Retry-After %s", len(fill), MAX_SUBS,
          ans.headers["retry-after"])
    for i, c in enumerate(fill):
        rst_close(c.http.sock) if i % 2 else c.close()
    wait_subscribers(cg, GOOD, "after the %d left" % len(fill))
    wait_fds(cg, baseline, "at the end")
    fresh = cg.sse(last_event_id=good.sse_positions[-1])
    seqs = write_orders(3)
    good.expect(seqs, what="at the end")
    got = [h.seq_of(h.check_sse_event(m)) for m in fresh.read_messages(3)]
    h.check_sequence(got, seqs, "a new subscriber at the end")
    fresh.close()
    h.say("at the end: %d subscribers, %d files, a new subscriber gets the writes exactly",
          GOOD, baseline)

    for c in (good.sse, good.nd):
        c.close()
    cg.stop()
    log = cg.stderr()
    for needle in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
        h.check(needle not in log, "changegate's log has a sanitizer report (%r)", needle)
    if dev.items:
        raise h.TestFailure("%d of the requests of step 2 were not answered as documented:\n  "
                            "%s" % (len(dev.items), "\n  ".join(dev.items)))


if __name__ == "__main__":
    h.run(story)
