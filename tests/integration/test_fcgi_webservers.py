#!/usr/bin/python3
"""Story: behind nginx, lighttpd and Apache (each in turn, with the example configuration
in examples/ verbatim), changegate's FastCGI front end answers every HTTP scenario of the
earlier issues the way its own HTTP listener does.

1. A first devmongo runs just long enough to give a resume token (a well-formed position
   from another MongoDB run) and stops. Then devmongo and one changegate start:
   `--listen fcgi:unix:<socket_dir>/changegate.sock --fcgi-socket-owner :www-data`, plus
   its HTTP listener (the reference, and where /healthz and /metrics are read),
   `--cors-origin http://app.example`, `--max-subscribers 32`, `--heartbeat 2` (lighttpd
   and Apache learn that a client left only when they next write to it). The same
   devmongo and changegate serve the three web servers; steps 2-12 run for each, under
   /changegate/, while it is the only one up.
2. 300 requests that changegate answers at once (/healthz, an unknown endpoint,
   /poll?timeout=0), one after the other through the web server: each gets changegate's
   answer, none the web server's own 502/503.
3. /healthz and /metrics through the web server: 200, the same JSON keys as the direct
   /healthz, Prometheus text that promtool accepts. HEAD /healthz, /events and
   /events?format=ndjson, through the web server and directly: 200, the Content-Type of
   a GET, no body, and no subscriber left behind. A GET pipelined after the HEAD on one
   keep-alive connection is answered right after the HEAD's head, through the web server
   and (checked once, before step 2) directly; a deviation there is reported at the end,
   after everything else has run.
4. CORS: an OPTIONS preflight from http://app.example answers 204 with the same
   Access-Control-* headers as the direct listener; a GET from it carries
   Access-Control-Allow-Origin; an origin not listed gets the same 403 origin_not_allowed.
5. Errors: 404 (unknown endpoint), 405 (POST, DELETE; with the same Allow), 400
   unknown_parameter, invalid_position (header and parameter), invalid_filter (malformed
   JSON, $where, an unknown operator; URL-encoded) and invalid_parameter: the status, the
   Content-Type and the JSON body equal what the direct HTTP listener answers.
6. SSE: a real `curl -N` through the web server and a direct reference subscriber, then
   40 inserts: curl gets seq 0..39 in order, each id equal to its event's resume token
   and to the reference's id.
7. Resuming through the web server: `Last-Event-ID: <id of 14>` gets exactly 15..39,
   `?lastEventId=<id of 29>` exactly 30..39, both together (header 35, query 3) exactly
   36..39; NDJSON with `Accept: application/x-ndjson` + Last-Event-ID (9) and with
   `?format=ndjson&lastEventId=` (19) exactly the rest. An NDJSON stream from now shows
   its head and opening heartbeat before any event. 5 live inserts (40..44) then reach
   every one of them (curl included) in order.
8. A long-poll loop through the web server (limit=7) from the position before step 6
   reads seq 0..74 (30 of them written by a thread while it polls, so polls park and are
   woken): no gap, no repeat, the same positions as the reference; each answer at most 7
   events, its lastEventId its last event's.
9. Filters through the web server and directly, resuming from the position before a batch
   of inserts, updates and deletes in two collections: `ns`, `ns` + `op` (NDJSON), a
   URL-encoded `filter` with `fields` (SSE), and `filter` + `ns` on /poll get exactly the
   expected events, the same events as the direct subscriber with the same request.
10. History lost: /poll from the foreign position answers 410 history_lost (as directly),
   an SSE stream from it starts with `event: reset` (history_lost); the next write
   reaches the stream, and a poll from the 410's lastEventId, exactly.
11. --max-subscribers: with every slot taken (direct streams fill up the rest), a stream
   and a poll through the web server get the same 503 too_many_subscribers (and
   Retry-After) as the direct listener; the slots free up once the fillers leave.
12. Every client closes; changegate's subscriber gauges return to 0 (at once behind
   nginx, within a few heartbeats behind lighttpd and Apache), and the web server stops.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import webservers  # noqa: E402

PREFIX = "/changegate"       # where the example configurations mount changegate
ORIGIN = "http://app.example"
MAX_SUBSCRIBERS = 32
HEARTBEAT = 2
N = 40                       # step 6's inserts
LIVE = 5                     # step 7's live inserts
MORE = 30                    # step 8's inserts while polling
TRANSPORTS = ("sse", "ndjson", "poll")
q = urllib.parse.quote
DEVIATIONS = []              # checked at the end, so that one does not hide the others


# --------------------------------------------------------------------------- helpers

def get(port, path, method="GET", headers=None, prefix=""):
    """(status, headers, body) of one request; `prefix` is PREFIX through a web server."""
    return h.request(port, method, prefix + path, headers=headers, timeout=20 * h.SLOW)


def poll_at(port, prefix="", timeout=5, **params):
    """GET <prefix>/poll; returns (status, parsed body, headers)."""
    qs = h.query(list(params.items()) + [("timeout", timeout)])
    status, hdrs, body = h.request(port, "GET", prefix + "/poll?" + qs,
                                   timeout=(float(timeout) + 15) * h.SLOW)
    return status, h.json_body(body, "%s/poll answer" % prefix), hdrs


def poll_ok(port, prefix="", **kw):
    status, body, hdrs = poll_at(port, prefix, **kw)
    h.check(status == 200, "%s/poll %r answered %d: %r", prefix, kw, status, body)
    h.check(isinstance(body, dict) and isinstance(body.get("events"), list)
            and isinstance(body.get("lastEventId"), str) and body["lastEventId"],
            "%s/poll answer lacks events/lastEventId: %r", prefix, body)
    return body


def ctype(headers):
    return headers.get("content-type", "").split(";")[0].strip()


def gauges(cg):
    m = cg.metrics()
    return {t: m.value("changegate_subscribers", transport=t) for t in TRANSPORTS}


def wait_subscribers(cg, n, what, timeout=20):
    """Waits until changegate counts n subscribers in all (its /metrics, directly)."""
    t0 = time.monotonic()
    try:
        h.wait_until(lambda: sum(gauges(cg).values()) == n, timeout * h.SLOW,
                     "%s: changegate_subscribers to add up to %d" % (what, n), interval=0.1)
    except h.TestFailure as e:
        raise h.TestFailure("%s; they are now %r" % (e, gauges(cg)))
    return time.monotonic() - t0


def raw_exchange(port, text, timeout=10):
    """Sends raw request bytes, reads until the server closes; returns the bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * h.SLOW)
    try:
        s.sendall(text.encode("latin-1"))
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise h.TestFailure("no end of answer from :%d within %ss to %r; got %r" % (
                    port, timeout, text[:80], data[:500]))
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def raw_stream(port, path, headers=()):
    """A GET left open (a parked subscriber) on a raw socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * h.SLOW)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
        path, "".join("%s: %s\r\n" % kv for kv in headers))).encode())
    return s


def seqs_sse(msgs):
    return [h.seq_of(h.check_sse_event(m)) for m in msgs]


def seqs_nd(objs):
    return [h.seq_of(h.check_ndjson_event(o)) for o in objs]


def position_like(pos):
    return isinstance(pos, str) and pos and all(c in "0123456789ABCDEF" for c in pos)


# --------------------------------------------------------------------------- steps

BURST = 100


def burst(cg, ws):
    """Answers given at once (no subscription) in a row: each must be changegate's."""
    wrong = {}
    for i in range(BURST):
        for path, want in (("/healthz", 200), ("/nowhere", 404), ("/poll?timeout=0", 200)):
            st, hd, body = get(ws.port, path, prefix=PREFIX)
            if st != want or ctype(hd) != "application/json":
                key = "%s -> %d %s" % (path, st, ctype(hd))
                wrong[key] = wrong.get(key, 0) + 1
    if wrong:
        lines = [ln for ln in ws.error_log().splitlines() if "error" in ln.lower()]
        raise h.TestFailure(
            "%s: of %d requests answered at once by changegate (/healthz, an unknown endpoint, "
            "/poll?timeout=0), %d got another answer from the web server: %r; its error log "
            "says:\n  %s" % (ws.name, 3 * BURST, sum(wrong.values()), wrong,
                              "\n  ".join(lines[-5:])))
    h.say("%s: %d answers given at once (/healthz, 404, /poll?timeout=0), every one "
          "changegate's", ws.name, 3 * BURST)


HEADS = (("/healthz", "application/json"), ("/events", "text/event-stream"),
         ("/events?format=ndjson", "application/x-ndjson"))


def head_keepalive(port, prefix, path, what):
    """HEAD then GET /healthz on one keep-alive connection: the GET's answer must follow the
    HEAD's head directly (a body, even an empty chunked one, would be read as the start of
    the next answer). A deviation is recorded, not raised."""
    data = raw_exchange(port, "HEAD %s%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                        "GET %s/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Connection: close\r\n\r\n" % (prefix, path, prefix))
    head, _, rest = data.partition(b"\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.1 200"), "%s: HEAD %s answered %r", what, path, head[:200])
    if not (rest == b"" or rest.startswith(b"HTTP/1.")):
        DEVIATIONS.append("%s: HEAD %s: %r follows its head, before the next answer on the "
                          "connection (a HEAD answer has no body; a keep-alive client reads "
                          "it as the start of the next answer)" % (what, path, rest[:40]))
    return rest


def health_metrics_head(cg, ws):
    port = ws.port
    st, hd, body = get(port, "/healthz", prefix=PREFIX)
    h.check(st == 200 and ctype(hd) == "application/json",
            "%s: GET /healthz answered %d (%s) %r", ws.name, st, ctype(hd), body[:300])
    via = h.json_body(body, "/healthz through %s" % ws.name)
    _, direct = cg.health_json()
    h.check(via.get("status") == "ok" and sorted(via) == sorted(direct),
            "%s: /healthz %r; directly %r", ws.name, via, direct)
    st, hd, body = get(port, "/metrics", prefix=PREFIX)
    h.check(st == 200 and ctype(hd) == "text/plain",
            "%s: GET /metrics answered %d (%s) %r", ws.name, st, ctype(hd), body[:300])
    m = h.Metrics(h.parse_metrics(body.decode("utf-8", "replace")))
    for t in TRANSPORTS:
        m.value("changegate_subscribers", transport=t)
    for family in ("changegate_events_received_total", "changegate_watcher_streaming",
                   "changegate_journal_events"):
        h.check(m.has(family), "%s: /metrics lacks %s", ws.name, family)
    p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       timeout=30)
    h.check(p.returncode == 0, "%s: promtool check metrics failed (%d): %s %s", ws.name,
            p.returncode, p.stdout.decode()[:500], p.stderr.decode()[:500])
    h.say("%s: /healthz %s and /metrics (promtool accepts it) through the web server",
          ws.name, via["status"])

    for path, want in HEADS:
        for what, p_, pre in ((ws.name, port, PREFIX), ("direct", cg.port, "")):
            st, hd, body = get(p_, path, "HEAD", prefix=pre)
            h.check(st == 200 and ctype(hd) == want and body == b"",
                    "%s: HEAD %s answered %d, Content-Type %r, body %r; expected 200, %s, "
                    "no body", what, path, st, ctype(hd), body[:100], want)
        head_keepalive(port, PREFIX, path, ws.name)
    wait_subscribers(cg, 0, "%s: after HEAD requests" % ws.name)
    h.say("%s: HEAD /healthz, /events (SSE and NDJSON): 200, no body, as directly; no "
          "subscriber left", ws.name)


def cors(cg, ws):
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
           "Access-Control-Request-Headers": "last-event-id"}
    answers = {}
    for what, port, prefix in ((ws.name, ws.port, PREFIX), ("direct", cg.port, "")):
        st, hd, body = get(port, "/events", "OPTIONS", headers=pre, prefix=prefix)
        h.check(st == 204, "%s: OPTIONS /events preflight answered %d %r", what, st, body[:200])
        answers[what] = {k: v for k, v in hd.items() if k.startswith("access-control-")}
    via, direct = answers[ws.name], answers["direct"]
    h.check(via == direct, "%s: preflight Access-Control-* headers %r; directly %r", ws.name,
            via, direct)
    h.check(via.get("access-control-allow-origin") == ORIGIN
            and "GET" in via.get("access-control-allow-methods", "")
            and "Last-Event-ID" in via.get("access-control-allow-headers", ""),
            "%s: preflight headers %r", ws.name, via)
    st, hd, body = get(ws.port, "/healthz", headers={"Origin": ORIGIN}, prefix=PREFIX)
    h.check(st == 200 and hd.get("access-control-allow-origin") == ORIGIN,
            "%s: GET /healthz from %s: %d, Access-Control-Allow-Origin %r", ws.name, ORIGIN, st,
            hd.get("access-control-allow-origin"))
    bad = {"Origin": "http://evil.example"}
    st, hd, body = get(ws.port, "/events", headers=bad, prefix=PREFIX)
    dst, dhd, dbody = get(cg.port, "/events", headers=bad)
    h.check(st == dst == 403 and ctype(hd) == "application/json"
            and h.json_body(body) == h.json_body(dbody)
            and h.json_body(body).get("error") == "origin_not_allowed",
            "%s: GET /events from an origin not allowed: %d %r; directly %d %r", ws.name, st,
            body[:300], dst, dbody[:300])
    h.say("%s: CORS preflight 204 with the direct listener's headers %s; Origin echoed; "
          "another origin 403", ws.name, sorted(via))


ERRORS = [
    # (what, method, path, headers, status, error code)
    ("unknown endpoint", "GET", "/nowhere", None, 404, "not_found"),
    ("POST /events", "POST", "/events", None, 405, "method_not_allowed"),
    ("DELETE /poll", "DELETE", "/poll", {"Content-Length": "0"}, 405, "method_not_allowed"),
    ("unknown parameter (stream)", "GET", "/events?colour=blue", None, 400,
     "unknown_parameter"),
    ("unknown parameter (poll)", "GET", "/poll?timeout=1&frobnicate=1", None, 400,
     "unknown_parameter"),
    ("Last-Event-ID not a position", "GET", "/events", {"Last-Event-ID": "not a position!"},
     400, "invalid_position"),
    ("lastEventId not a position", "GET", "/poll?timeout=1&lastEventId=" + q("zz top!"), None,
     400, "invalid_position"),
    ("filter not JSON", "GET", "/events?filter=" + q('{"fullDocument.qty": {"$gt": }'), None,
     400, "invalid_filter"),
    ("filter with $where", "GET", "/poll?timeout=1&filter=" + q('{"$where": "sleep(1)"}'), None,
     400, "invalid_filter"),
    ("filter with an unknown operator", "GET",
     "/events?format=ndjson&filter=" + q('{"fullDocument.a": {"$frob": 1}}'), None, 400,
     "invalid_filter"),
    ("bad op", "GET", "/events?op=explode", None, 400, "invalid_parameter"),
]


def errors(cg, ws):
    for what, method, path, headers, status, code in ERRORS:
        st, hd, body = get(ws.port, path, method, headers=headers, prefix=PREFIX)
        dst, dhd, dbody = get(cg.port, path, method, headers=headers)
        label = "%s: %s (%s %s)" % (ws.name, what, method, path)
        h.check(dst == status, "%s: the direct listener answered %d %r (expected %d)", label,
                dst, dbody[:300], status)
        h.check(st == dst, "%s: status %d through the web server, %d directly; body %r",
                label, st, dst, body[:300])
        h.check(ctype(hd) == ctype(dhd) == "application/json",
                "%s: Content-Type %r through the web server, %r directly", label, ctype(hd),
                ctype(dhd))
        doc, ddoc = h.json_body(body, label), h.json_body(dbody, label + " (direct)")
        h.check(doc == ddoc, "%s: body %r through the web server, %r directly", label, doc,
                ddoc)
        h.check(doc.get("error") == code and doc.get("message"),
                "%s: body %r, expected error %r with a message", label, doc, code)
        if status == 405:
            h.check(hd.get("allow") and hd.get("allow") == dhd.get("allow"),
                    "%s: Allow %r through the web server, %r directly", label,
                    hd.get("allow"), dhd.get("allow"))
    h.say("%s: %d bad requests answered exactly as the direct listener answers them",
          ws.name, len(ERRORS))


def sse_ndjson_resume(sc, cg, ws, w, coll):
    port = ws.port
    start = poll_ok(port, PREFIX, timeout=0)["lastEventId"]
    ref = sc.track(cg.sse())
    curl = h.CurlSSE(sc, port, PREFIX + "/events")
    first = curl.next_item(timeout=15 * h.SLOW)
    h.check(isinstance(first, h.Comment) and first.text == "changegate",
            "%s: curl's first SSE item is %r, expected ': changegate'", ws.name, first)
    w.insert_seq(0, N, "web", coll)
    msgs = curl.read_messages(N, timeout=30)
    h.check(bytes(curl.parser.raw).startswith(h.SSEClient.PREAMBLE),
            "%s: curl's stream does not start with the preamble: %r", ws.name,
            bytes(curl.parser.raw[:60]))
    h.check_sequence(seqs_sse(msgs), list(range(N)), "%s: curl -N, SSE" % ws.name)
    ref_msgs = ref.read_messages(N)
    h.check_sequence(seqs_sse(ref_msgs), list(range(N)), "%s: direct reference" % ws.name)
    ids = [m.id_field for m in ref_msgs]
    h.check_sequence([m.id_field for m in msgs], ids, "%s: curl's ids vs the reference's"
                     % ws.name)
    h.say("%s: curl -N got seq 0..%d in order, ids = resume tokens = the direct ids",
          ws.name, N - 1)

    a = sc.track(h.SSEClient(port, PREFIX + "/events", last_event_id=ids[14]))
    b = sc.track(h.SSEClient(port, PREFIX + "/events", params=[("lastEventId", ids[29])]))
    c = sc.track(h.SSEClient(port, PREFIX + "/events", last_event_id=ids[35],
                             params=[("lastEventId", ids[3])]))
    n1 = sc.track(h.NDJSONClient(port, PREFIX + "/events", last_event_id=ids[9]))
    n2 = sc.track(h.NDJSONClient(port, PREFIX + "/events", use_query=True,
                                 params=[("lastEventId", ids[19])]))
    for what, s, k in (("Last-Event-ID", a, 15), ("?lastEventId=", b, 30),
                       ("header and query", c, 36)):
        got = s.read_messages(N - k)
        h.check_sequence(seqs_sse(got), list(range(k, N)), "%s: SSE resumed with %s"
                         % (ws.name, what))
        h.check_sequence([m.id_field for m in got], ids[k:], "%s: ids after %s"
                         % (ws.name, what))
    for what, s, k in (("Accept + Last-Event-ID", n1, 10), ("format=ndjson&lastEventId=", n2,
                                                             20)):
        got = s.read_events(N - k)
        h.check_sequence(seqs_nd(got), list(range(k, N)), "%s: NDJSON resumed (%s)"
                         % (ws.name, what))
        h.check_sequence([o["id"] for o in got], ids[k:], "%s: NDJSON ids (%s)"
                         % (ws.name, what))
    # From now: the head and the opening heartbeat come before any event.
    n3 = sc.track(h.NDJSONClient(port, PREFIX + "/events"))
    o = n3.next_obj(timeout=10 * h.SLOW)
    h.check(h.is_heartbeat(o), "%s: an NDJSON stream from now opened with %r, expected a "
            "heartbeat line", ws.name, o)
    h.say("%s: resumed exactly: SSE header 15.., query 30.., both 36.. (header wins); NDJSON "
          "Accept 10.., format=ndjson 20..; NDJSON from now opened at once", ws.name)

    w.insert_seq(N, LIVE, "web", coll)
    live = list(range(N, N + LIVE))
    ref_live = ref.read_messages(LIVE)
    h.check_sequence(seqs_sse(ref_live), live, "%s: reference, live" % ws.name)
    ids += [m.id_field for m in ref_live]
    for what, s in (("curl", curl), ("SSE A", a), ("SSE B", b), ("SSE C", c)):
        got = s.read_messages(LIVE)
        h.check_sequence(seqs_sse(got), live, "%s: %s, live" % (ws.name, what))
        h.check_sequence([m.id_field for m in got], ids[N:], "%s: %s, live ids"
                         % (ws.name, what))
    for what, s in (("NDJSON 1", n1), ("NDJSON 2", n2), ("NDJSON from now", n3)):
        got = s.read_events(LIVE)
        h.check_sequence(seqs_nd(got), live, "%s: %s, live" % (ws.name, what))
    h.say("%s: %d live inserts reached curl, the 3 SSE and the 3 NDJSON streams in order",
          ws.name, LIVE)
    for s in (curl, a, b, c, n1, n2, n3):
        s.close()
    return start, ref, ids


def long_poll(sc, cg, ws, w, coll, start, ref, ids):
    total = N + LIVE + MORE
    writer = sc.thread(h.insert_paced, w.coll("web", coll), N + LIVE, MORE, 0.01,
                       name="writer-%s" % ws.name)
    events, pos, polls = [], start, 0
    deadline = time.monotonic() + 40 * h.SLOW
    while len(events) < total:
        h.check(time.monotonic() < deadline, "%s: poll loop: %d of %d events after %d polls",
                ws.name, len(events), total, polls)
        body = poll_ok(ws.port, PREFIX, lastEventId=pos, timeout=5, limit=7)
        polls += 1
        h.check(len(body["events"]) <= 7, "%s: a poll with limit=7 answered %d events",
                ws.name, len(body["events"]))
        if body["events"]:
            h.check(body["lastEventId"] == h.position_of(body["events"][-1]),
                    "%s: poll's lastEventId %r is not its last event's", ws.name,
                    body["lastEventId"])
        events += body["events"]
        pos = body["lastEventId"]
    writer.join(30)
    h.check_sequence([h.seq_of(e) for e in events], list(range(total)),
                     "%s: long-poll loop" % ws.name)
    ids += [m.id_field for m in ref.read_messages(MORE)]
    h.check_sequence([h.position_of(e) for e in events], ids,
                     "%s: long-poll positions vs the reference's ids" % ws.name)
    h.say("%s: a long-poll loop read seq 0..%d in %d polls (limit=7): no gap, no repeat",
          ws.name, total - 1, polls)


FILTER_RED = {"fullDocument.colour": "red", "fullDocument.n": {"$gte": 2}}


def filters(sc, cg, ws, w, coll):
    f, g = coll + "_f", coll + "_g"
    pre = poll_ok(cg.port, timeout=0)["lastEventId"]
    cf, cgl = w.coll("web", f), w.coll("web", g)
    for i in range(10):
        cf.insert_one({"_id": i, "n": i, "colour": "red" if i % 2 == 0 else "blue"})
        if i < 5:
            cgl.insert_one({"_id": i, "n": i, "colour": "blue"})
    cf.update_one({"_id": 3}, {"$set": {"colour": "green"}})
    cf.delete_one({"_id": 4})
    cgl.insert_one({"_id": 100, "n": 100, "colour": "red"})
    cf.delete_one({"_id": 9})

    def key(e):
        return (e["ns"]["coll"], e["operationType"], e["documentKey"]["_id"])
    specs = [
        ("ns (SSE)", "sse", [("ns", "web." + g)],
         [(g, "insert", i) for i in range(5)] + [(g, "insert", 100)]),
        ("ns + op (NDJSON)", "ndjson", [("ns", "web." + f), ("op", "update,delete")],
         [(f, "update", 3), (f, "delete", 4), (f, "delete", 9)]),
        ("filter + fields (SSE)", "sse",
         [("filter", json.dumps(FILTER_RED)), ("fields", "fullDocument.n")],
         [(f, "insert", i) for i in (2, 4, 6, 8)] + [(g, "insert", 100)]),
    ]
    for what, kind, params, want in specs:
        got = {}
        for side, port, prefix in ((ws.name, ws.port, PREFIX), ("direct", cg.port, "")):
            params_pos = params + [("lastEventId", pre)]
            if kind == "sse":
                s = sc.track(h.SSEClient(port, prefix + "/events", params=params_pos))
                evs = [h.check_sse_event(m) for m in s.read_messages(len(want))]
            else:
                s = sc.track(h.NDJSONClient(port, prefix + "/events", params=params_pos))
                evs = [h.check_ndjson_event(o) for o in s.read_events(len(want))]
            s.close()
            h.check_sequence([key(e) for e in evs], want, "%s: %s (%s)" % (ws.name, what, side))
            got[side] = evs
        h.check(got[ws.name] == got["direct"], "%s: %s: the events differ from the direct "
                "listener's: %r vs %r", ws.name, what, got[ws.name][:2], got["direct"][:2])
        if "fields" in dict(params):
            for e in got[ws.name]:
                h.check(e["fullDocument"] == {"n": e["documentKey"]["_id"]}
                        and set(e) <= {"_id", "operationType", "ns", "documentKey",
                                       "clusterTime", "fullDocument"},
                        "%s: fields=fullDocument.n kept %r", ws.name, e)
    pq = [("filter", json.dumps({"documentKey._id": {"$in": [1, 3]}})), ("ns", "web." + f)]
    bodies = []
    for port, prefix in ((ws.port, PREFIX), (cg.port, "")):
        body = poll_ok(port, prefix, lastEventId=pre, timeout=5, **dict(pq))
        h.check_sequence([key(e) for e in body["events"]],
                         [(f, "insert", 1), (f, "insert", 3), (f, "update", 3)],
                         "%s: /poll with filter and ns (%s)" % (ws.name, prefix or "direct"))
        bodies.append(body)
    h.check(bodies[0] == bodies[1], "%s: filtered /poll answers differ: %r vs %r", ws.name,
            bodies[0], bodies[1])
    h.say("%s: ns, op, a URL-encoded filter with fields, and a filtered /poll: exactly the "
          "expected events, the same as directly", ws.name)


def history_lost(sc, cg, ws, w, coll, foreign):
    st, body, _ = poll_at(ws.port, PREFIX, lastEventId=foreign, timeout=2)
    dst, dbody, _ = poll_at(cg.port, "", lastEventId=foreign, timeout=2)
    h.check(st == dst == 410, "%s: /poll from a foreign position answered %d %r (directly "
            "%d %r), expected 410", ws.name, st, body, dst, dbody)
    h.check(body.get("error") == dbody.get("error") == "history_lost"
            and sorted(body) == sorted(dbody) and body.get("message")
            and position_like(body.get("lastEventId")),
            "%s: 410 body %r; directly %r", ws.name, body, dbody)
    lost = sc.track(h.SSEClient(ws.port, PREFIX + "/events", last_event_id=foreign))
    reset = lost.next_message(timeout=15 * h.SLOW)
    h.check(reset is not None and reset.type == "reset",
            "%s: SSE from a foreign position: first message %r, expected event: reset",
            ws.name, reset)
    data = reset.json()
    h.check(data.get("reason") == "history_lost" and position_like(data.get("lastEventId"))
            and reset.id_field == data["lastEventId"],
            "%s: reset %r (id field %r)", ws.name, data, reset.id_field)
    hc = coll + "_h"
    w.coll("web", hc).insert_one({"seq": 0})
    got = lost.read_messages(1)
    h.check([h.seq_of(h.check_sse_event(m)) for m in got] == [0]
            and got[0].json()["ns"]["coll"] == hc,
            "%s: after the reset the stream got %r, expected the new write", ws.name, got)
    lost.close()
    after = poll_ok(ws.port, PREFIX, lastEventId=body["lastEventId"], timeout=5)
    h.check([(e["ns"]["coll"], h.seq_of(e)) for e in after["events"]] == [(hc, 0)],
            "%s: a poll from the 410's lastEventId answered %r, expected the new write",
            ws.name, after["events"])
    h.say("%s: a foreign position: 410 history_lost on /poll (as directly), event: reset on "
          "SSE; both continue with exactly the next write", ws.name)


def too_many(cg, ws, open_now):
    fillers = [raw_stream(cg.port, "/events", [("Accept", "text/event-stream")])
               for _ in range(MAX_SUBSCRIBERS - open_now)]
    try:
        wait_subscribers(cg, MAX_SUBSCRIBERS, "%s: every slot taken" % ws.name)
        for path, hdrs in (("/events", {"Accept": "text/event-stream"}),
                           ("/poll?timeout=1", None)):
            st, hd, body = get(ws.port, path, headers=hdrs, prefix=PREFIX)
            dst, dhd, dbody = get(cg.port, path, headers=hdrs)
            h.check(st == dst == 503 and ctype(hd) == "application/json"
                    and h.json_body(body) == h.json_body(dbody)
                    and h.json_body(body).get("error") == "too_many_subscribers",
                    "%s: GET %s with every slot taken: %d %r; directly %d %r", ws.name, path,
                    st, body[:300], dst, dbody[:300])
            h.check(hd.get("retry-after") and hd.get("retry-after") == dhd.get("retry-after"),
                    "%s: 503 Retry-After %r; directly %r", ws.name, hd.get("retry-after"),
                    dhd.get("retry-after"))
    finally:
        for s in fillers:
            s.close()
    wait_subscribers(cg, open_now, "%s: after the fillers left" % ws.name)
    h.say("%s: over --max-subscribers %d: 503 too_many_subscribers with Retry-After %s, as "
          "directly; the slots free up", ws.name, MAX_SUBSCRIBERS, hd.get("retry-after"))


def one_server(sc, cg, w, make, sock, foreign):
    with make(sock, sc) as ws:
        coll = ws.name
        wait_subscribers(cg, 0, "%s: before it starts" % ws.name)
        burst(cg, ws)
        health_metrics_head(cg, ws)
        cors(cg, ws)
        errors(cg, ws)
        start, ref, ids = sse_ndjson_resume(sc, cg, ws, w, coll)
        long_poll(sc, cg, ws, w, coll, start, ref, ids)
        filters(sc, cg, ws, w, coll)
        history_lost(sc, cg, ws, w, coll, foreign)
        wait_subscribers(cg, 1, "%s: the clients through it closed (only the direct "
                         "reference is left)" % ws.name)
        too_many(cg, ws, 1)
        ref.close()
        took = wait_subscribers(cg, 0, "%s: every client closed" % ws.name)
        h.check(ws.alive(), "%s exited during the scenario:\n%s", ws.name, ws.error_log()[-2000:])
        h.say("%s: every client closed; subscriber gauges back to 0 (%.1f s)", ws.name, took)


def story(sc):
    foreign = h.foreign_position(sc, later=True)

    mongo = sc.devmongo()
    sock = os.path.join(webservers.socket_dir(sc), "changegate.sock")
    owner = ":" + webservers.group_of(webservers.WORKER_USER) if webservers.WORKER_USER else None
    args = ["--listen", "fcgi:unix:" + sock, "--allow-public-unauthenticated", "--cors-origin", ORIGIN,
            "--max-subscribers", str(MAX_SUBSCRIBERS), "--heartbeat", str(HEARTBEAT)]
    if owner:
        args += ["--fcgi-socket-owner", owner]
    cg = sc.changegate(mongo.uri, args=args)
    w = sc.writer(mongo.uri)
    for path, _ in HEADS:
        head_keepalive(cg.port, "", path, "direct HTTP listener")
    h.say("direct HTTP listener: HEAD on a keep-alive connection checked (%d deviation(s))",
          len(DEVIATIONS))
    for name in ("nginx", "lighttpd", "apache2"):
        one_server(sc, cg, w, webservers.ALL[name], sock, foreign)
    h.check(cg.proc.alive(), "changegate exited")
    h.check(not DEVIATIONS, "%d deviation(s):\n  %s", len(DEVIATIONS), "\n  ".join(DEVIATIONS))


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 150 * h.SLOW))
