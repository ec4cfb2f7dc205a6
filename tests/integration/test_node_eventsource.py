#!/usr/bin/python3
"""Story: a Node.js app using the `eventsource` package, and scripts using a real
`curl -N` (SSE and NDJSON), each get every event exactly once across a restart of
changegate; heartbeats are SSE comments (and id-only blocks) or NDJSON heartbeat lines,
never events; every NDJSON line is a JSON value that jq reads.

1. devmongo and changegate (--heartbeat 1) start. Subscribers: the `eventsource` package
   in Node (tests/node-clients/eventsource.mjs, printing what it gets as JSON lines),
   `curl -N` on /events (SSE), `curl -N -H 'Accept: application/x-ndjson'` and
   `curl -N '/events?format=ndjson'`. Before the first write, each NDJSON curl shows a
   heartbeat line (so its subscription exists).
2. seq 0..99 are inserted; every subscriber gets them in order. Then, idle: curl's SSE
   stream shows `: heartbeat` followed by an id-only block carrying the id of seq 99;
   the NDJSON streams show {"heartbeat":true,"lastEventId":<id of seq 99>}; the Node
   client sees no event for them.
3. A writer inserts seq 100..199 while changegate gets SIGTERM (exit 0) mid-way: every
   curl exits 0 (its stream ended with the chunked terminator, not cut off); the Node
   client reports an error with readyState CONNECTING (it will reconnect). With
   changegate down, seq 200..249 are inserted.
4. changegate starts again (same port, same state dir). The Node client reconnects by
   itself, with Last-Event-ID (from now, it would miss seq 200..249); the curls are
   started again with the last id each had: SSE with a Last-Event-ID header, NDJSON
   (Accept) with ?lastEventId=, NDJSON (?format=ndjson) with a Last-Event-ID header.
   seq 250..300 are inserted (300 last: once a subscriber has it, a gap or a repeat
   before it would show).
5. Each subscriber has seq 0..300 exactly once, in order, ids equal to the events' resume
   tokens and equal across subscribers, no reset; the Node client opened twice and never
   gave up. Every heartbeat after an event carries that event's id (after a resume and
   before any event, the resume position). Each curl's NDJSON output, run through
   `jq -c .`, gives exactly its lines' values: every line is one JSON value.
"""
import json
import os
import select
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WAIT = 30 * h.SLOW


class CurlRaw:
    """A real `curl -sS -N` whose output is collected as it comes (nothing in between).
    Response headers go to a file (-D); its exit status tells how the stream ended."""

    def __init__(self, sc, name, port, path, headers=()):
        self.name = name
        self.head_path = os.path.join(sc.tmp, name + ".headers")
        argv = ["curl", "-sS", "-N", "-D", self.head_path]
        for hd in headers:
            argv += ["-H", hd]
        argv.append("http://127.0.0.1:%d%s" % (port, path))
        self.argv = argv
        self.proc = h.Proc(name, argv, os.path.join(sc.tmp, name + ".log"), pipes=True)
        sc.procs.append(self.proc)
        self.proc.popen.stdin.close()
        self.fd = self.proc.popen.stdout.fileno()
        self.out = bytearray()
        self.eof = False

    def read_until(self, pred, what, timeout=WAIT):
        """Collect output until pred(bytes so far) is true (bounded)."""
        deadline = time.monotonic() + timeout
        while not pred(bytes(self.out)):
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                raise h.TestFailure("%s: %s%s; it printed %d bytes, ending %r" % (
                    self.name, "output ended before " if self.eof else "timed out waiting for ",
                    what, len(self.out), bytes(self.out[-300:])))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                data = os.read(self.fd, 65536)
                if not data:
                    self.eof = True
                self.out += data
        return bytes(self.out)

    def wait_exit(self, timeout=WAIT):
        """Read to the end; curl's exit status (0: the server ended the body cleanly)."""
        self.read_until(lambda _: self.eof, "its end", timeout)
        try:
            rc = self.proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise h.TestFailure("%s: output closed but curl did not exit" % self.name)
        self.proc.stop(wait=0, sig=None)
        return rc

    def headers(self):
        with open(self.head_path, "rb") as f:
            lines = f.read().decode("latin-1").split("\r\n")
        return {k.strip().lower(): v.strip() for k, _, v in
                (ln.partition(":") for ln in lines[1:] if ":" in ln)}


def sse_items(raw):
    """curl's SSE bytes, parsed by the WHATWG rules: (messages, comments, id-only blocks)."""
    items = h.SSEParser().feed(raw)
    return ([i for i in items if isinstance(i, h.Message)],
            [i for i in items if isinstance(i, h.Comment)],
            [i for i in items if isinstance(i, h.IdOnly)])


def ndjson_lines(raw, what):
    """Each line of curl's NDJSON bytes as JSON (each one must be a whole JSON value)."""
    h.check(raw.endswith(b"\n") or not raw, "%s: output ends inside a line: %r", what, raw[-200:])
    out = []
    for ln in raw.split(b"\n")[:-1]:
        try:
            out.append(json.loads(ln.decode("utf-8")))
        except ValueError as e:
            raise h.TestFailure("%s: a line is not JSON (%s): %r" % (what, e, ln[:300]))
    return out


def check_jq(raw, objs, what):
    """jq -c . reads the same values, one per line."""
    jq = subprocess.run(["jq", "-c", "."], input=raw, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=30)
    h.check(jq.returncode == 0, "%s: jq failed (%d): %s", what, jq.returncode,
            jq.stderr.decode("utf-8", "replace")[:500])
    values = [json.loads(ln) for ln in jq.stdout.decode("utf-8").splitlines()]
    h.check(values == objs, "%s: jq read %d values, the lines were %d (or they differ)", what,
            len(values), len(objs))


def check_beat_ids(seq_items, start_id, what):
    """seq_items: the stream in order, ("event", id) and ("beat", id or None). With no
    filter, everything a subscriber considers is delivered to it, so a heartbeat's id is
    the id of the last event before it (or start_id, the position the stream resumed from,
    when it has none; with start_id None, anything: the watcher's position before any
    event)."""
    last = start_id
    for kind, ident in seq_items:
        if kind == "event":
            last = ident
        elif last is not None:
            h.check(ident == last, "%s: a heartbeat carries position %r, but the last event "
                    "before it (or the resume position) is %r", what, ident, last)


def split_ndjson(objs, what):
    """(events as (seq, id), heartbeats) of NDJSON objects; anything else fails."""
    events, beats = [], []
    for o in objs:
        if h.is_heartbeat(o):
            beats.append(o)
        else:
            ev = h.check_ndjson_event(o)
            events.append((h.seq_of(ev), o["id"]))
    return events, beats


def sse_events(raw):
    """[(seq, id)] of the SSE data messages in raw."""
    return [(h.seq_of(h.check_sse_event(m)), m.id_field) for m in sse_items(raw)[0]]


def nd_events(raw, what):
    """[(seq, id)] of the NDJSON events in the complete lines of raw."""
    return split_ndjson(ndjson_lines(raw[:raw.rfind(b"\n") + 1], what), what)[0]


def story(sc):
    h.check(shutil.which("jq") is not None, "jq not found: run tests/install-deps.sh")
    clients = h.node_clients("eventsource")
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri, args=["--heartbeat", "1"])
    w = sc.writer(mongo.uri)
    coll = w.coll("shop", "orders")

    # 1. The subscribers.
    node = h.JSONLinesProc(sc, "node-eventsource",
                           ["node", os.path.join(clients, "eventsource.mjs"),
                            "http://127.0.0.1:%d/events" % cg.port], cwd=clients)
    node_out = []

    def node_until(pred, what):
        deadline = time.monotonic() + WAIT
        while not pred():
            try:
                o = node.next(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise h.TestFailure("Node eventsource client: timed out waiting for %s; it "
                                    "printed %d lines, last %r; stderr: %s" % (
                                        what, len(node_out), node_out[-3:],
                                        node.stderr()[-2000:]))
            h.check(o is not None, "Node eventsource client exited; stderr: %s",
                    node.stderr()[-2000:])
            node_out.append(o)

    def node_events():
        out = []
        for o in node_out:
            if o["type"] == "message":
                msg = h.Message("message", o["data"], o["id"], o["id"])
                out.append((h.seq_of(h.check_sse_event(msg)), o["id"]))
        return out

    def node_has(seq):
        return lambda: any(s == seq for s, _ in node_events()[-1:])

    curls = {
        "sse": CurlRaw(sc, "curl-sse", cg.port, "/events"),
        "nd-accept": CurlRaw(sc, "curl-nd-accept", cg.port, "/events",
                             ["Accept: application/x-ndjson"]),
        "nd-query": CurlRaw(sc, "curl-nd-query", cg.port, "/events?format=ndjson"),
    }
    node_until(lambda: any(o["type"] == "open" for o in node_out), "the stream to open")
    curls["sse"].read_until(lambda b: b.startswith(b": changegate\nretry: 3000\n\n"),
                            "the SSE preamble")
    for name in ("nd-accept", "nd-query"):
        raw = curls[name].read_until(lambda b: b"\n" in b, "a first line")
        h.check(h.is_heartbeat(ndjson_lines(raw.split(b"\n")[0] + b"\n", name)[0]),
                "%s: the first line before any event should be a heartbeat: %r",
                name, raw[:200])
    h.say("Node eventsource open; curl SSE has the preamble; both NDJSON curls have a "
          "heartbeat")

    # 2. 100 inserts, then idle: heartbeats.
    w.insert_seq(0, 100, db="shop", coll="orders")
    node_until(node_has(99), "seq 99")
    h.check_sequence([s for s, _ in node_events()], list(range(100)), "Node client, 0..99")
    id99 = node_events()[-1][1]
    raw = curls["sse"].read_until(lambda b: any(i.last_event_id == id99
                                                for i in sse_items(b)[2]),
                                  "a heartbeat's id-only block after seq 99")
    h.check_sequence(sse_events(raw), node_events(), "curl SSE vs the Node client, 0..99")
    tail = raw.split(b"\nid: %s\ndata: " % id99.encode(), 1)[1].split(b"\n\n", 1)[1]
    h.check(tail.startswith(b": heartbeat\nid: %s\n\n" % id99.encode()),
            "curl SSE: after seq 99 the idle stream should show ': heartbeat' then 'id: %s': "
            "%r", id99, tail[:200])
    for name in ("nd-accept", "nd-query"):
        raw = curls[name].read_until(
            lambda b: {"heartbeat": True, "lastEventId": id99} in ndjson_lines(
                b[:b.rfind(b"\n") + 1], name), "a heartbeat with the id of seq 99")
        h.check_sequence(nd_events(raw, name), node_events(), "curl %s, 0..99" % name)
    h.say("seq 0..99 everywhere; idle: curl SSE shows ': heartbeat' + 'id: <seq 99>', "
          "NDJSON {\"heartbeat\":true,\"lastEventId\":<seq 99>}")

    # 3. SIGTERM in the middle of a write burst; more writes while it is down.
    writer = sc.thread(lambda: h.insert_paced(coll, 100, 100, 0.005))
    node_until(lambda: len(node_events()) >= 110, "110 events")
    cg.stop()                                   # SIGTERM; asserts exit status 0
    firsts = {}
    for name, c in curls.items():
        rc = c.wait_exit()
        h.check(rc == 0, "%s exited with status %d after changegate's SIGTERM (0 expected; "
                "18 means the body was cut off): %s", name, rc, c.proc.output()[-500:])
        firsts[name] = bytes(c.out)
    seen = len(node_out)
    node_until(lambda: any(o["type"] == "error" for o in node_out[seen:]) or
               node_out[-1]["type"] == "error", "an error once the stream ended")
    err = [o for o in node_out if o["type"] == "error"][0]
    h.check(err["readyState"] == 0, "the Node client's error has readyState %r, expected 0 "
            "(CONNECTING: it reconnects by itself): %r", err["readyState"], err)
    writer.join(30)
    w.insert_seq(200, 50, db="shop", coll="orders")     # while changegate is down
    h.say("changegate stopped; every curl exited 0 after %s events (SSE); the Node client "
          "is reconnecting; seq 200..249 written while down", len(sse_events(firsts["sse"])))

    # 4. Restart; the curls come back with their last ids, the Node client by itself.
    cg.start()
    sse_last = sse_events(firsts["sse"])[-1][1]
    nd_last = {name: nd_events(firsts[name], name)[-1][1] for name in ("nd-accept", "nd-query")}
    resumed_from = {"sse": sse_last, **nd_last}
    again = {
        "sse": CurlRaw(sc, "curl-sse-2", cg.port, "/events", ["Last-Event-ID: " + sse_last]),
        "nd-accept": CurlRaw(sc, "curl-nd-accept-2", cg.port,
                             "/events?lastEventId=" + nd_last["nd-accept"],
                             ["Accept: application/x-ndjson"]),
        "nd-query": CurlRaw(sc, "curl-nd-query-2", cg.port, "/events?format=ndjson",
                            ["Last-Event-ID: " + nd_last["nd-query"]]),
    }
    # seq 300 is the last write: once a subscriber has it, any repeat or gap before it shows.
    w.insert_seq(250, 51, db="shop", coll="orders")
    h.say("changegate restarted; curls resumed with their last ids; seq 250..300 written")

    # 5. Everyone has 0..300 exactly once, with the same ids.
    want = list(range(301))
    node_until(node_has(300), "seq 300")
    got = node_events()
    h.check_sequence([s for s, _ in got], want, "Node eventsource across the restart")
    ids = [i for _, i in got]
    h.check(len(set(ids)) == len(want), "Node eventsource: ids are not unique")
    kinds = [o["type"] for o in node_out]
    h.check(set(kinds) <= {"open", "message", "error"},
            "the Node client got something else than messages (a reset?): %r",
            [o for o in node_out if o["type"] not in ("open", "message", "error")][:3])
    h.check(kinds.count("open") >= 2, "the Node client opened %d times, expected a reconnect",
            kinds.count("open"))
    h.check(all(o["readyState"] == 0 for o in node_out if o["type"] == "error"),
            "the Node client gave up (readyState 2): %r",
            [o for o in node_out if o["type"] == "error"])

    id300 = ids[-1]
    for name, c in again.items():
        # Up to seq 300 and the heartbeat after it (the stream then idles).
        if name == "sse":
            c.read_until(lambda b: any(s == 300 for s, _ in sse_events(b)[-1:]) and b.endswith(
                b": heartbeat\nid: %s\n\n" % id300.encode()), "seq 300 and a heartbeat")
        else:
            c.read_until(lambda b: any(s == 300 for s, _ in nd_events(b, name)[-1:]) and
                         b.endswith(b'{"heartbeat":true,"lastEventId":"%s"}\n' % id300.encode()),
                         "seq 300 and a heartbeat")
        c.proc.stop(wait=5)     # curl -N does not end by itself: the test ends it
        parts = ((firsts[name], "first", None), (bytes(c.out), "resumed", resumed_from[name]))
        if name == "sse":
            got = []
            for part, what, start in parts:
                items = h.SSEParser().feed(part)
                comments = {i.text for i in items if isinstance(i, h.Comment)}
                h.check(comments == {"changegate", "heartbeat"}, "curl SSE (%s): comments %r, "
                        "expected the preamble and heartbeats", what, comments)
                h.check(all(i.type == "message" for i in items if isinstance(i, h.Message)),
                        "curl SSE (%s): a named message (a reset?)", what)
                check_beat_ids([("event", i.id_field) if isinstance(i, h.Message) else
                                ("beat", i.last_event_id) for i in items
                                if isinstance(i, (h.Message, h.IdOnly))],
                               start, "curl SSE (%s)" % what)
                got += sse_events(part)
        else:
            objs = []
            for part, what, start in parts:
                whole = part[:part.rfind(b"\n") + 1]
                lines = ndjson_lines(whole, name)
                check_jq(whole, lines, "%s (%s)" % (name, what))
                check_beat_ids([("beat", o.get("lastEventId")) if h.is_heartbeat(o) else
                                ("event", o.get("id")) for o in lines],
                               start, "curl %s (%s)" % (name, what))
                objs += lines
            got, _ = split_ndjson(objs, name)
        h.check_sequence([s for s, _ in got], want, "curl %s across the restart" % name)
        h.check_sequence([i for _, i in got], ids, "curl %s ids vs the Node client's" % name)
    for name in ("nd-accept", "nd-query"):
        ctype = again[name].headers().get("content-type", "")
        h.check(ctype.startswith("application/x-ndjson"), "%s: Content-Type %r", name, ctype)
    h.check(again["sse"].headers().get("content-type", "").startswith("text/event-stream"),
            "curl SSE: Content-Type %r", again["sse"].headers().get("content-type"))
    node.close_stdin()
    h.say("the Node eventsource client and the three curls each have seq 0..300 exactly once, "
          "with the same ids; heartbeats only as comments, id-only blocks and heartbeat lines; "
          "jq reads every NDJSON line")


if __name__ == "__main__":
    h.run(story)
