#!/usr/bin/python3
"""Story: bad requests and bad configurations get precise, documented answers, and none
of it disturbs a well-behaved subscriber.

1. `changegate --check-config` accepts a good configuration (exit 0) and rejects, with
   exit 1 and a message naming the problem: bad --pipeline JSON, an unknown pipeline
   stage, bad --watch scopes, bad --journal-size values. A normal start with a bad value
   also exits 1.
2. changegate started while MongoDB is unreachable: it runs, /healthz answers 503
   {"error": "not_ready", "message": ...}; devmongo then starts on that port, /healthz
   turns 200 and events stream.
3. HTTP errors, all JSON {"error": code, "message": text} with Content-Type
   application/json: malformed Last-Event-ID / lastEventId -> 400 invalid_position naming
   the header / parameter; unknown path -> 404 not_found; POST/DELETE/PUT -> 405
   method_not_allowed; unknown query parameter -> 400 unknown_parameter naming it; bad
   op/ns/timeout/limit/format values -> 400 invalid_parameter; filter/fields -> 400
   not_supported (or, in a version that supports them, malformed ones -> 400).
4. A subscriber connected before all that, and one connecting after it, receive the next
   writes normally.
5. --max-subscribers 2: the third stream (and a poll) gets 503 too_many_subscribers with
   Retry-After; once one leaves, a new one is accepted (the daemon notices a departed
   client when it next writes to it, so this runs with --heartbeat 1).
"""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402





def check_config(sc):
    state = sc.mkdir("check-state")
    port = h.free_port()
    base = ["--mongo-uri", "mongodb://127.0.0.1:%d/?replicaSet=rs0" % h.free_port(),
            "--listen", "http://127.0.0.1:%d" % port, "--state-dir", state]
    good = base + ["--watch", "shop.orders", "--journal-size", "500", "--heartbeat", "5",
                   "--pipeline", '[{"$match": {"operationType": {"$in": ["insert", "update"]}}}]',
                   "--full-document", "updateLookup", "--max-subscribers", "50"]
    rc, out = h.run_changegate(["--check-config"] + good)
    h.check(rc == 0, "--check-config with a good configuration exited %s: %s", rc, out)
    h.say("--check-config: good configuration accepted")

    # (what, extra args, words of which at least one must appear in the output)
    bad = [
        ("pipeline not JSON", ["--pipeline", '[{"$match": {'], ["pipeline"]),
        ("pipeline not an array", ["--pipeline", '{"$match": {}}'], ["pipeline"]),
        ("unknown pipeline stage", ["--pipeline", '[{"$nosuchstage": {}}]'],
         ["$nosuchstage", "nosuchstage"]),
        ("watch with empty db", ["--watch", ".orders"], ["watch"]),
        ("watch with empty collection", ["--watch", "shop."], ["watch"]),
        ("watch with a bad db character", ["--watch", "sh$op"], ["watch"]),
        ("journal-size zero", ["--journal-size", "0"], ["journal-size", "journal_size"]),
        ("journal-size negative", ["--journal-size", "-5"], ["journal-size", "journal_size"]),
        ("journal-size not a number", ["--journal-size", "lots"], ["journal-size", "journal_size"]),
        ("journal-size trailing junk", ["--journal-size", "100x"], ["journal-size", "journal_size"]),
        ("full-document unknown", ["--full-document", "sometimes"], ["full-document", "full_document"]),
    ]
    for what, extra, words in bad:
        rc, out = h.run_changegate(["--check-config"] + base + extra)
        h.check(rc == 1, "--check-config with %s (%s) exited %s, expected 1; output: %s",
                what, extra, rc, out.strip())
        low = out.lower()
        h.check(any(wd.lower() in low for wd in words),
                "--check-config with %s: the output does not name the problem (%s): %r",
                what, " or ".join(words), out.strip())
        h.say("--check-config rejects %-30s: %s", what, out.strip().splitlines()[-1][:100]
              if out.strip() else "")

    rc, out = h.run_changegate(base + ["--journal-size", "0"], timeout=20)
    # 78 (EX_CONFIG): a configuration problem, which a service manager must not restart.
    h.check(rc == 78, "a normal start with --journal-size 0 exited %s, expected 78: %s", rc, out)
    h.check("journal" in out.lower(), "a normal start with a bad value does not name it: %r", out)
    h.say("a normal start with a bad value exits 78 (EX_CONFIG) naming it")


def check_json_error(status, headers, body, want_status, want_code, mention=None, what=""):
    h.check(status == want_status, "%s: status %d, expected %d; body %r", what, status,
            want_status, body[:300])
    ctype = headers.get("content-type", "")
    h.check(ctype.split(";")[0].strip() == "application/json",
            "%s: Content-Type %r, expected application/json", what, ctype)
    doc = h.json_body(body, what)
    if want_code is None:       # any code, as long as the shape is the documented one
        h.check(isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"],
                "%s: no error code in %r", what, doc)
    else:
        h.check(isinstance(doc, dict) and doc.get("error") == want_code,
                "%s: error code %r, expected %r (body %r)", what, doc and doc.get("error"),
                want_code, doc)
    h.check(isinstance(doc.get("message"), str) and doc["message"].strip(),
            "%s: no message in %r", what, doc)
    if mention:
        h.check(mention in doc["message"], "%s: message %r does not name %r", what,
                doc["message"], mention)
    return doc


def bad_requests(cg):
    port = cg.port
    q = urllib.parse.quote
    cases = [
        # (what, method, path, headers, status, code, must be named in the message)
        ("malformed Last-Event-ID on /events", "GET", "/events",
         {"Last-Event-ID": "not a position!"}, 400, "invalid_position", "Last-Event-ID"),
        ("malformed Last-Event-ID on /poll", "GET", "/poll?timeout=1",
         {"Last-Event-ID": "@@@"}, 400, "invalid_position", "Last-Event-ID"),
        ("malformed lastEventId on /events", "GET", "/events?lastEventId=" + q("zz top!"),
         None, 400, "invalid_position", "lastEventId"),
        ("malformed lastEventId on /poll", "GET", "/poll?timeout=1&lastEventId=" + q("%%%"),
         None, 400, "invalid_position", "lastEventId"),
        ("unknown path", "GET", "/nowhere", None, 404, "not_found", None),
        ("unknown path below /events", "GET", "/events/extra", None, 404, "not_found", None),
        ("POST /events", "POST", "/events", None, 405, "method_not_allowed", None),
        ("DELETE /events", "DELETE", "/events", None, 405, "method_not_allowed", None),
        ("POST /poll", "POST", "/poll", None, 405, "method_not_allowed", None),
        ("DELETE /healthz", "DELETE", "/healthz", None, 405, "method_not_allowed", None),
        ("PUT /events", "PUT", "/events", None, 405, "method_not_allowed", None),
        ("unknown parameter on /events", "GET", "/events?colour=blue", None, 400,
         "unknown_parameter", "colour"),
        ("unknown parameter on /poll", "GET", "/poll?timeout=1&frobnicate=1", None, 400,
         "unknown_parameter", "frobnicate"),
        ("bad op", "GET", "/events?op=explode", None, 400, "invalid_parameter", "op"),
        ("bad op in a list", "GET", "/events?op=insert,explode", None, 400,
         "invalid_parameter", "op"),
        ("bad ns (empty db)", "GET", "/events?ns=.orders", None, 400, "invalid_parameter", "ns"),
        ("bad ns (bad character)", "GET", "/events?ns=" + q("sh$op"), None, 400,
         "invalid_parameter", "ns"),
        ("bad timeout (word)", "GET", "/poll?timeout=soon", None, 400, "invalid_parameter",
         "timeout"),
        ("bad timeout (negative)", "GET", "/poll?timeout=-3", None, 400, "invalid_parameter",
         "timeout"),
        ("bad limit (word)", "GET", "/poll?timeout=1&limit=many", None, 400,
         "invalid_parameter", "limit"),
        ("bad limit (negative)", "GET", "/poll?timeout=1&limit=-1", None, 400,
         "invalid_parameter", "limit"),
        ("bad format", "GET", "/events?format=xml", None, 400, "invalid_parameter", "format"),
    ]
    # filter and fields: the first version answers 400 not_supported to any use of them;
    # once they exist (test_filter_fields.py covers them), malformed ones must be a 400.
    st, hd, body = h.request(port, "GET", "/poll?timeout=0&filter=" + q("{}"), timeout=10 * h.SLOW)
    if st == 400 and (h.json_body(body) or {}).get("error") == "not_supported":
        h.say("filter/fields: not supported by this version")
        cases += [
            ("filter on /events", "GET", "/events?filter=" + q('{"fullDocument.x": 1}'), None,
             400, "not_supported", None),
            ("fields on /events", "GET", "/events?fields=fullDocument.x", None, 400,
             "not_supported", None),
            ("filter on /poll", "GET", "/poll?timeout=1&filter=" + q("{}"), None, 400,
             "not_supported", None),
            ("fields on /poll", "GET", "/poll?timeout=1&fields=_id", None, 400,
             "not_supported", None),
        ]
    else:
        h.check(st == 200, "/poll?filter={} answered %d %r: neither supported nor "
                "not_supported", st, body[:300])
        h.say("filter/fields: supported by this version; checking malformed ones")
        cases += [
            ("filter not JSON", "GET", "/events?filter=" + q('{"a": '), None, 400, None,
             "filter"),
            ("filter not an object", "GET", "/poll?timeout=1&filter=" + q("[1, 2]"), None, 400,
             None, "filter"),
            ("filter unknown operator", "GET", "/events?filter=" + q('{"a": {"$frob": 1}}'),
             None, 400, None, "$frob"),
            ("fields empty entry", "GET", "/events?fields=" + q("a,,b"), None, 400, None,
             "fields"),
        ]
    for what, method, path, headers, status, code, mention in cases:
        st, hd, body = h.request(port, method, path, headers=headers, timeout=10 * h.SLOW)
        check_json_error(st, hd, body, status, code, mention, "%s (%s %s)" % (what, method, path))
        if status == 405 and "allow" not in hd:
            h.say("note: 405 for %s %s has no Allow header (RFC 9110 requires one)", method, path)
    h.say("%d malformed requests answered with the documented JSON errors", len(cases))
    h.check(cg.proc.alive(), "changegate died during the bad requests")


def unreachable_then_up(sc):
    mport = h.free_port()
    mongo = h.Devmongo(sc, port=mport, name="devmongo-late")
    sc.devmongos.append(mongo)
    cg = h.Changegate(sc, mongo.uri, name="changegate-early")
    cg.start(wait_healthy=False)
    body = cg.wait_health(503, timeout=20)
    h.check(body.get("error") == "not_ready" and isinstance(body.get("message"), str)
            and body["message"].strip(), "/healthz 503 body without not_ready/message: %r", body)
    h.say("MongoDB unreachable: changegate runs, /healthz 503 %s", body)
    sub = sc.track(cg.sse())
    mongo.start()
    body = cg.wait_health(200, timeout=40)
    h.check(body.get("status") == "ok", "/healthz 200 body: %r", body)
    w = sc.writer(mongo.uri)
    w.insert_seq(0, 20, "late", "start")
    msgs = sub.read_messages(20, timeout=30)
    h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in msgs], list(range(20)),
                     "events after MongoDB came up")
    h.say("devmongo came up: /healthz 200 and the early subscriber got all 20 events")
    sub.close()
    w.close()
    cg.stop()
    mongo.stop()


def story(sc):
    check_config(sc)
    unreachable_then_up(sc)

    mongo = sc.devmongo()
    # --heartbeat 1: a subscriber that went away is noticed on the next write to it.
    cg = sc.changegate(mongo.uri, args=["--max-subscribers", "2", "--heartbeat", "1"])
    w = sc.writer(mongo.uri)
    before = sc.track(cg.sse())
    bad_requests(cg)

    after = sc.track(cg.sse())
    w.insert_seq(0, 10, "ok", "after")
    for what, s in (("subscriber from before", before), ("subscriber from after", after)):
        msgs = s.read_messages(10)
        h.check_sequence([h.seq_of(h.check_sse_event(m)) for m in msgs], list(range(10)), what)
    h.say("subscribers before and after the bad requests both got the 10 new events")

    # --max-subscribers 2: both slots are taken.
    st, hd, body = h.request(cg.port, "GET", "/events", headers={"Accept": "text/event-stream"},
                             timeout=10 * h.SLOW)
    check_json_error(st, hd, body, 503, "too_many_subscribers", None, "third subscriber")
    h.check("retry-after" in hd, "503 too_many_subscribers without Retry-After: %r", hd)
    st, hd, body = h.request(cg.port, "GET", "/poll?timeout=1", timeout=10 * h.SLOW)
    check_json_error(st, hd, body, 503, "too_many_subscribers", None, "poll over the limit")
    h.say("over --max-subscribers: 503 too_many_subscribers, Retry-After %s", hd["retry-after"])
    after.close()

    def third():
        try:
            s = cg.sse()
        except h.TestFailure:       # still 503: the slot is not free yet
            return False
        s.close()
        return True
    t0 = h.time.monotonic()
    h.wait_until(third, 15 * h.SLOW, "a slot to free up after a subscriber left", interval=0.1)
    h.say("the slot was free again %.1fs after the subscriber left", h.time.monotonic() - t0)
    w.insert_seq(10, 1, "ok", "after")
    h.check([h.seq_of(m.json()) for m in before.read_messages(1)] == [10],
            "the first subscriber missed the write after the 503s")
    h.say("a freed slot is reusable and the first subscriber still streams")


if __name__ == "__main__":
    h.run(story)
