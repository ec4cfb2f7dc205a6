#!/usr/bin/python3
"""Story: a subscriber's token expires while changes keep flowing. Its stream ends with
a named `expired` message carrying the position to resume from; the client comes back
with a fresh token and that position and misses nothing, repeats nothing. A long-poll
waiting when its token expires is answered, and the same token is then refused.

1. devmongo and changegate (--auth jwt, HMAC secret, --auth-rule {"fullDocument.owner_id":
   "$$jwt.sub"}, --jwt-leeway 0, --heartbeat 2) start. Tokens are minted by PyJWT
   (tokens.py).
2. Subscribers with short-lived tokens (a few seconds; scaled under CG_WRAPPER): ann over
   SSE and over NDJSON, dan over SSE (dan owns nothing: an idle stream), a poll loop for
   ann, and a poll for cat (who owns nothing either) that waits with timeout=60.
   A writer inserts documents alternately owned by ann and bob, about 50 a second, until
   told to stop.
3. ann's SSE stream ends with `event: expired`, `id: <position>` and data
   {"reason": "token_expired", "lastEventId": <the same position>}, then the body's
   chunked end; the NDJSON stream ends with {"expired": {"reason": "token_expired",
   "lastEventId": ...}}; dan's idle stream ends the same way. Each reconnects at once
   with a fresh token and the position (Last-Event-ID), and reads on while the writer
   keeps writing: expiry came in the middle of the flow.
4. Once the poll loop has met its expiry too, the writer stops and writes a last
   document for ann. ann's SSE and NDJSON clients, before and after their expiry
   together, received exactly every document of ann's in order, with no repeat and none
   of bob's; a document for dan then reaches dan's resumed stream, alone. The poll loop
   met 401 token_expired once (never another error), switched to a fresh token at its
   last position and also has exactly ann's documents. cat's waiting poll was answered
   200 with no events and a lastEventId once its token expired (the test allows it 50 s,
   under its 60 s timeout), the next poll with the same token is 401 token_expired
   (WWW-Authenticate: Bearer), and after a document for cat is written, a fresh token
   from that lastEventId gets exactly it.
5. gus's stream (a 4 KiB receive buffer) is not read while 1,500 documents of 2 kB are
   written for gus and its token expires: changegate holds a backlog for it. Read
   again, it delivers what was on its way, then `expired`, then the body ends; resumed
   from that position with a fresh token, gus gets exactly the rest.
6. A second gateway keeps the default --jwt-leeway (30 s). A token that expired 25 s ago
   is still admitted there; when its stream ends with `expired`, or a poll waiting on it
   is answered, the same token asked again is refused with 401 token_expired: a client
   is not sent round a loop of admissions that end at once.
7. On a third gateway, tokens that expire very late or never (exp 2^63-1, 1e16, 1e300 as
   a JSON real, 2^53-1, no exp) behave like any long-lived token: an SSE stream gets the
   owner's next document rather than `expired`, and a poll waiting on it is answered
   with that document, not at once and empty.
Steps 6 and 7 gather their deviations and report them together at the end.
"""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tokens as tk  # noqa: E402

RULE = {"fullDocument.owner_id": "$$jwt.sub"}
RATE = 50.0


def bearer(token):
    return {"Authorization": "Bearer " + token}


def mint(keys, sub, seconds):
    """A token for `sub` whose exp is `seconds` from now (whole seconds, as JWT has it)."""
    return keys.hs(tk.Keyring.claims(sub, ttl=None, exp=int(time.time() + seconds)))


class Writer:
    """Inserts {seq, owner_id} alternately for ann and bob, RATE a second, until stopped;
    then ann's last document."""

    def __init__(self, coll):
        self.coll = coll
        self.stop = threading.Event()
        self.ann = []
        self.count = 0

    def run(self):
        t0 = time.monotonic()
        seq = 0
        while not self.stop.is_set():
            delay = t0 + seq / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            owner = "ann" if seq % 2 == 0 else "bob"
            self.coll.insert_one({"seq": seq, "owner_id": owner})
            if owner == "ann":
                self.ann.append(seq)
            seq += 1
            self.count = seq
        self.coll.insert_one({"seq": seq, "owner_id": "ann", "last": True})
        self.ann.append(seq)
        return seq + 1


def expired_payload(obj, what):
    h.check(isinstance(obj, dict) and obj.get("reason") == "token_expired"
            and isinstance(obj.get("lastEventId"), str) and obj["lastEventId"]
            and set(obj) == {"reason", "lastEventId"},
            "%s: the expiry notice should be {\"reason\": \"token_expired\", \"lastEventId\": "
            "...}: %r", what, obj)
    return obj["lastEventId"]


def sse_until_expired(c, what, bound):
    """Data messages (their seqs) up to `event: expired`; returns (seqs, position)."""
    seqs = []
    deadline = time.monotonic() + bound
    while True:
        try:
            m = c.next_message(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise h.TestFailure("%s: no `event: expired` within %.0fs (%d events read)" % (
                what, bound, len(seqs)))
        h.check(m is not None, "%s: the stream ended (%s) without `event: expired`, after %d "
                "events" % (what, c.end_state, len(seqs)))
        if m.type == "expired":
            pos = expired_payload(m.json(), what)
            h.check(m.id_field == pos, "%s: `expired` has id %r but lastEventId %r", what,
                    m.id_field, pos)
            rest = c.next_item(10 * h.SLOW)
            h.check(rest is None, "%s: after `expired` the stream went on: %r", what, rest)
            h.check(c.end_state == "chunked-end", "%s: after `expired` the body ended with %s, "
                    "not its chunked end", what, c.end_state)
            return seqs, pos
        ev = h.check_sse_event(m)
        h.check(ev["fullDocument"]["owner_id"] == what.split()[0],
                "%s: received someone else's document %r", what, ev["fullDocument"])
        seqs.append(h.seq_of(ev))


def ndjson_until_expired(c, what, bound):
    seqs = []
    deadline = time.monotonic() + bound
    while True:
        try:
            o = c.next_obj(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise h.TestFailure("%s: no expired line within %.0fs" % (what, bound))
        h.check(o is not None, "%s: the stream ended without an expired line" % what)
        if h.is_heartbeat(o):
            continue
        if "expired" in o:
            h.check(set(o) == {"expired"}, "%s: malformed expired line %r", what, o)
            pos = expired_payload(o["expired"], what)
            rest = c.next_obj(10 * h.SLOW)
            h.check(rest is None, "%s: after the expired line the stream went on: %r", what,
                    rest)
            h.check(c.end_state == "chunked-end", "%s: after the expired line the body ended "
                    "with %s", what, c.end_state)
            return seqs, pos
        ev = h.check_ndjson_event(o)
        h.check(ev["fullDocument"]["owner_id"] == "ann", "%s: someone else's document %r",
                what, ev)
        seqs.append(h.seq_of(ev))


def sse_until_last(c, what, owner="ann"):
    seqs = []
    while True:
        m = c.read_messages(1, timeout=30)[0]
        ev = h.check_sse_event(m)
        h.check(ev["fullDocument"]["owner_id"] == owner, "%s: someone else's document %r",
                what, ev["fullDocument"])
        seqs.append(h.seq_of(ev))
        if ev["fullDocument"].get("last"):
            return seqs


def ndjson_until_last(c, what):
    seqs = []
    while True:
        ev = h.check_ndjson_event(c.read_events(1, timeout=30)[0])
        h.check(ev["fullDocument"]["owner_id"] == "ann", "%s: someone else's document %r",
                what, ev)
        seqs.append(h.seq_of(ev))
        if ev["fullDocument"].get("last"):
            return seqs


def poll_loop(cg, keys, token, pos, met_expiry):
    """ann's poll loop: goes on through its token's expiry with a fresh token."""
    seqs, expiries, empties = [], 0, 0
    deadline = time.monotonic() + 120 * h.SLOW
    while True:
        h.check(time.monotonic() < deadline, "ann's poll loop did not finish")
        st, body, hdrs = cg.poll(lastEventId=pos, timeout=10, limit=1000,
                                 headers=bearer(token))
        if st == 401:
            h.check(isinstance(body, dict) and body.get("error") == "token_expired",
                    "ann's poll loop: 401 %r, expected token_expired", body)
            h.check(expiries == 0, "ann's poll loop: a fresh token was refused too: %r", body)
            expiries += 1
            met_expiry.set()
            token = mint(keys, "ann", 600)
            continue
        h.check(st == 200, "ann's poll loop: %d %r", st, body)
        if not body["events"]:
            empties += 1
        for ev in body["events"]:
            h.check(ev["fullDocument"]["owner_id"] == "ann", "ann's poll loop: %r", ev)
            seqs.append(h.seq_of(ev))
        pos = body["lastEventId"]
        if any(ev["fullDocument"].get("last") for ev in body["events"]):
            return seqs, expiries, empties


def cat_poll(cg, token, pos):
    """A poll that waits (nothing of cat's is written) while its token expires."""
    t0 = time.monotonic()
    st, body, hdrs = cg.poll(lastEventId=pos, timeout=60, headers=bearer(token),
                             http_timeout=50 * h.SLOW)
    return st, body, time.monotonic() - t0


def check_401_expired(status, body, hdrs, what):
    h.check(status == 401, "%s: %d %r, expected 401 token_expired", what, status, body)
    h.check(isinstance(body, dict) and body.get("error") == "token_expired"
            and set(body) == {"error", "message"},
            "%s: body %r, expected {\"error\": \"token_expired\", \"message\": ...}", what, body)
    www = hdrs.get("www-authenticate", "")
    h.check(www.startswith("Bearer") and 'realm="changegate"' in www,
            "%s: WWW-Authenticate %r", what, www)


def main_part(sc, mongo, keys, dev):
    cg = sc.changegate(mongo.uri, args=[
        "--auth", "jwt", "--jwt-secret-file", keys.secret_file, "--jwt-audience", tk.AUDIENCE,
        "--jwt-issuer", tk.ISSUER, "--auth-rule", json.dumps(RULE), "--jwt-leeway", "0",
        "--heartbeat", "2"])
    w = sc.writer(mongo.uri)
    coll = w.coll("app", "orders")
    s = h.SLOW
    # Positions before any write, for the polls.
    st, body, _ = cg.poll(timeout=0, headers=bearer(mint(keys, "ann", 600)))
    h.check(st == 200 and body["lastEventId"], "first poll: %d %r", st, body)
    p0 = body["lastEventId"]

    a = sc.track(cg.sse(headers=bearer(mint(keys, "ann", 4 * s))))
    b = sc.track(cg.ndjson(headers=bearer(mint(keys, "ann", 5 * s))))
    h.check(h.is_heartbeat(b.next_obj(10 * s)), "the NDJSON stream did not open with a heartbeat")
    d = sc.track(cg.sse(headers=bearer(mint(keys, "dan", 3 * s))))
    met_expiry = threading.Event()
    ann_poll = sc.thread(poll_loop, cg, keys, mint(keys, "ann", 3 * s), p0, met_expiry,
                         name="ann-poll")
    cat_token = mint(keys, "cat", 3 * s)
    cat = sc.thread(cat_poll, cg, cat_token, p0, name="cat-poll")
    writer = Writer(coll)
    wt = sc.thread(writer.run, name="writer")
    h.say("ann (SSE, exp in %ds; NDJSON, %ds), dan (idle SSE, %ds), ann's poll loop (%ds) "
          "and cat's waiting poll (%ds) subscribed; writing ann/bob at %.0f/s",
          4 * s, 5 * s, 3 * s, 3 * s, 3 * s, RATE)

    a_before, a_pos = sse_until_expired(a, "ann SSE", 30 * s)
    at_expiry = writer.count
    a2 = sc.track(cg.sse(last_event_id=a_pos, headers=bearer(mint(keys, "ann", 600))))
    h.say("ann's SSE stream: %d events, then `event: expired` (id %s...) and the end of the "
          "body, with %d writes done; reconnected with a fresh token", len(a_before),
          a_pos[:20], at_expiry)
    b_before, b_pos = ndjson_until_expired(b, "ann NDJSON", 30 * s)
    b2 = sc.track(cg.ndjson(last_event_id=b_pos, headers=bearer(mint(keys, "ann", 600))))
    h.say("ann's NDJSON stream: %d events, then the expired line; reconnected", len(b_before))
    d_before, d_pos = sse_until_expired(d, "dan SSE", 30 * s)
    h.check(d_before == [], "dan received documents: %r", d_before)
    d2 = sc.track(cg.sse(last_event_id=d_pos, headers=bearer(mint(keys, "dan", 600))))
    h.say("dan's idle stream ended with `expired` too; reconnected")

    # The flow goes on after the expiry: the resumed streams get more of it live.
    a_after = []
    b_after = []
    for _ in range(10):
        ev = h.check_sse_event(a2.read_messages(1, timeout=30)[0])
        a_after.append(h.seq_of(ev))
        ev = h.check_ndjson_event(b2.read_events(1, timeout=30)[0])
        b_after.append(h.seq_of(ev))
    h.check(met_expiry.wait(30 * s), "ann's poll loop did not meet its token's expiry")
    h.check(wt.is_alive() and not writer.stop.is_set(), "the writer stopped early")
    writer.stop.set()
    wt.join(30 * s)
    a_after += sse_until_last(a2, "ann SSE resumed")
    b_after += ndjson_until_last(b2, "ann NDJSON resumed")
    want = writer.ann
    h.check(want[-1] > at_expiry, "no ann documents were written after the expiry")
    h.check_sequence(a_before + a_after, want, "ann's SSE, before and after its expiry")
    h.check_sequence(b_before + b_after, want, "ann's NDJSON, before and after its expiry")
    h.say("ann's SSE (%d + %d) and NDJSON (%d + %d) together: exactly ann's %d documents, "
          "in order", len(a_before), len(a_after), len(b_before), len(b_after), len(want))
    coll.insert_one({"seq": -1, "owner_id": "dan", "last": True})
    d_after = sse_until_last(d2, "dan resumed", owner="dan")
    h.check(len(d_after) == 1, "dan's resumed stream got %r", d_after)
    for c in (a2, b2, d2):
        c.close()

    seqs, expiries, empties = ann_poll.join(60 * s)
    h.check(expiries == 1, "ann's poll loop never met its token's expiry")
    h.check_sequence(seqs, want, "ann's poll loop across its token's expiry")
    h.say("ann's poll loop: 401 token_expired once, fresh token, exactly ann's %d documents "
          "(%d empty answers)", len(seqs), empties)

    st, body, took = cat.join(60 * s)
    h.check(st == 200 and isinstance(body, dict) and body.get("events") == []
            and body.get("lastEventId"),
            "cat's waiting poll answered %d %r, expected 200 with no events", st, body)
    cat_pos = body["lastEventId"]
    h.say("cat's poll, waiting when its token expired, answered 200 empty after %.1fs "
          "(timeout=60)", took)
    st, body, hdrs = cg.poll(lastEventId=cat_pos, timeout=5, headers=bearer(cat_token))
    check_401_expired(st, body, hdrs, "cat's next poll with the same token")
    coll.insert_one({"seq": -2, "owner_id": "cat", "last": True})
    st, body, _ = cg.poll(lastEventId=cat_pos, timeout=10, headers=bearer(mint(keys, "cat", 600)))
    h.check(st == 200 and [e["fullDocument"]["owner_id"] for e in body["events"]] == ["cat"]
            and body["events"][0]["fullDocument"].get("last"),
            "cat with a fresh token from the empty answer's position: %d %r", st, body)
    h.say("cat's next poll: 401 token_expired; a fresh token from its lastEventId gets "
          "exactly cat's document")
    backlog(sc, cg, keys, coll)
    cg.stop()


def backlog(sc, cg, keys, coll):
    """The token expires while the client is not reading and changegate holds a backlog
    for it: what was already on its way is delivered, then `expired` at the first event
    due after exp, whose position resumes exactly."""
    n, pad = 1500, "p" * 2000
    exp = int(time.time()) + 2 * h.SLOW
    conn = h.RawSSE(cg.port, headers=bearer(mint(keys, "gus", exp - time.time())),
                    rcvbuf=4096)
    sc.closers.append(conn.close)
    left = h.pump([conn], lambda c, d: setattr(c, "body_seen", d),
                  lambda c: c.status is not None, 10 * h.SLOW)
    h.check(not left and conn.status == 200, "gus: the stream was not admitted (%s)",
            conn.status)
    coll.insert_many([{"seq": 2000 + i, "owner_id": "gus", "pad": pad} for i in range(n)])
    # The client reads nothing until its token has expired (a few MB wait for it).
    while time.time() < exp + 1:
        time.sleep(0.1)
    parser = h.SSEParser()
    items = []
    if conn.body:            # what came with the head
        items += parser.feed(conn.take() or b"")

    def on_data(c, data):
        items.extend(parser.feed(data))
    # The body ends with its terminal chunk; the connection itself may stay open.
    h.pump([conn], on_data, lambda c: c.end_state is not None, 30 * h.SLOW)
    h.check(conn.end_state == "chunked-end", "gus: the body did not end (%s) within 30 s of "
            "reading again after its token expired (%d items read, the last %r)",
            conn.end_state, len(items), items[-2:])
    msgs = [m for m in items if isinstance(m, h.Message)]
    h.check(msgs and msgs[-1].type == "expired", "gus: the stream ended (%s) without "
            "`event: expired`; last: %r", conn.end_state, msgs[-1:])
    pos = expired_payload(msgs[-1].json(), "gus")
    h.check(msgs[-1].id_field == pos, "gus: `expired` id %r, lastEventId %r",
            msgs[-1].id_field, pos)
    before = [h.seq_of(h.check_sse_event(m)) for m in msgs[:-1]]
    h.check(len(before) < n, "gus: all %d events came before `expired` (no backlog was left "
            "to expire on)", n)
    c2 = sc.track(cg.sse(last_event_id=pos, headers=bearer(mint(keys, "gus", 600))))
    after = [h.seq_of(h.check_sse_event(m)) for m in c2.read_messages(n - len(before))]
    h.check_sequence(before + after, list(range(2000, 2000 + n)),
                     "gus: the backlog before `expired` and after resuming")
    extra = c2.drain(0.5)
    h.check(not extra, "gus: more after the last document: %r", extra[:2])
    c2.close()
    conn.close()
    h.say("gus, not reading while its token expired over a %d-event backlog: %d delivered, "
          "`expired`, the other %d after resuming, exactly", n, len(before), len(after))


def far_future(sc, mongo, keys, dev):
    """Tokens that expire in a very long time, or never: they behave like any long-lived
    token (the stream stays and delivers, a poll waits for the next event). Last, on a
    gateway of its own: under UndefinedBehaviorSanitizer a failure here can be a crash."""
    cg = h.Changegate(sc, mongo.uri, name="changegate-far", args=[
        "--auth", "jwt", "--jwt-secret-file", keys.secret_file, "--jwt-audience", tk.AUDIENCE,
        "--jwt-issuer", tk.ISSUER, "--auth-rule", json.dumps(RULE), "--jwt-leeway", "0"])
    cg.start()
    w = sc.writer(mongo.uri)
    coll = w.coll("app", "far")
    cases = [("exp 2^63-1", 2 ** 63 - 1), ("exp 1e16", 10 ** 16),
             ("exp 1e300 (a JSON real)", 1e300), ("exp 2^53-1", 2 ** 53 - 1), ("no exp", None)]
    for n, (what, exp) in enumerate(cases):
        try:
            far_case(sc, cg, keys, coll, dev, n, what, exp)
        except (OSError, http.client.HTTPException, h.TestFailure) as e:
            try:
                cg.proc.popen.wait(timeout=3)      # a connection cut may be a crash
            except Exception:
                pass
            alive = cg.proc.alive()
            dev.expect(False, "%s: %r; changegate %s", what, e, "still runs" if alive else
                       "exited with status %s (see its log)" % cg.proc.popen.returncode)
            if not alive:
                break
    cg.stop(expect_clean=cg.proc.alive())


def far_case(sc, cg, keys, coll, dev, n, what, exp):
    owner = "far%d" % n
    claims = tk.Keyring.claims(owner, ttl=None)
    if exp is not None:
        claims["exp"] = exp
    token = keys.hs(claims)
    st, body, _ = cg.poll(timeout=0, headers=bearer(token))
    if not dev.expect(st == 200, "%s: the token was refused: %d %r", what, st, body):
        return
    pos = body["lastEventId"]
    c = sc.track(cg.sse(headers=bearer(token)))
    waiting = sc.thread(lambda: cg.poll(lastEventId=pos, timeout=20, headers=bearer(token)),
                        name="poll-" + owner)
    time.sleep(0.5 * h.SLOW)     # let the poll be waiting before the write
    coll.insert_one({"seq": 1000 + n, "owner_id": owner})
    m = c.next_message(20 * h.SLOW)
    ok = dev.expect(m is not None and m.type == "message" and
                    h.seq_of(h.check_sse_event(m)) == 1000 + n,
                    "%s: the stream got %r instead of the owner's next document (the "
                    "token was taken for expired at once)", what, m)
    st, body, _ = waiting.join(40 * h.SLOW)
    ok = dev.expect(st == 200 and [e["fullDocument"]["owner_id"]
                                   for e in body["events"]] == [owner],
                    "%s: a poll waiting with the token answered %d %r instead of the "
                    "owner's next document", what, st, body) and ok
    c.close()
    if ok:
        h.say("%-28s the stream and a waiting poll get the next document", what)


def leeway_part(sc, mongo, keys, dev):
    """Default leeway: after an expiry notice the same token must not be admitted again."""
    cg = h.Changegate(sc, mongo.uri, name="changegate-leeway", args=[
        "--auth", "jwt", "--jwt-secret-file", keys.secret_file, "--jwt-audience", tk.AUDIENCE,
        "--jwt-issuer", tk.ISSUER, "--auth-rule", json.dumps(RULE), "--heartbeat", "2"])
    cg.start()
    ago = 30 - 5 * h.SLOW                       # within the 30 s leeway for a few seconds

    sse_token = mint(keys, "eve", -ago)
    c = cg.sse(headers=bearer(sse_token), expect_status=None)
    sc.track(c)
    if not dev.expect(c.status == 200, "leeway 30 s: a token %ds past exp was not admitted: "
                      "%d", ago, c.status):
        cg.stop()
        return
    sse_until_expired(c, "eve SSE (leeway)", 60 * h.SLOW)
    c.close()
    s2 = h.HTTPStream(cg.port, "/events", bearer(sse_token))
    try:
        st = s2.read_headers(10 * h.SLOW)
        body = s2.read_all(5 * h.SLOW) if st != 200 else b""
    finally:
        s2.close()
    if dev.expect(st == 401, "leeway 30 s: right after `event: expired` the same token was "
                  "admitted again (%d): the stream ends at exp, but admission accepts the "
                  "token until exp + leeway, so a reconnecting client is sent `expired` at "
                  "once, again and again, for up to the leeway", st):
        doc = json.loads(body)
        dev.expect(doc.get("error") == "token_expired", "leeway: the refusal is %r", doc)
        h.say("leeway 30 s: after `expired` the same token is refused with 401 token_expired")

    poll_token = mint(keys, "fay", -ago)
    st, body, _ = cg.poll(timeout=0, headers=bearer(poll_token))
    if not dev.expect(st == 200, "leeway 30 s: a poll with a token %ds past exp: %d %r", ago,
                      st, body):
        cg.stop()
        return
    pos = body["lastEventId"]
    t0 = time.monotonic()
    st, body, _ = cg.poll(lastEventId=pos, timeout=60, headers=bearer(poll_token),
                          http_timeout=60 * h.SLOW)
    took = time.monotonic() - t0
    dev.expect(st == 200 and body.get("events") == [], "leeway: the waiting poll answered %d %r",
               st, body)
    st, body, hdrs = cg.poll(lastEventId=pos, timeout=5, headers=bearer(poll_token))
    if dev.expect(st == 401 and (body or {}).get("error") == "token_expired",
                  "leeway 30 s: after a poll was answered for its token's expiry (after %.1fs) "
                  "the next poll with the same token answered %d %r, expected 401 "
                  "token_expired", took, st, body):
        h.say("leeway 30 s: a waiting poll answered at expiry (%.1fs), the next one 401 "
              "token_expired", took)
    cg.stop()


def story(sc):
    keys = tk.Keyring(sc.mkdir("keys"))
    mongo = sc.devmongo()
    dev = []

    class Dev:
        @staticmethod
        def expect(cond, msg, *args):
            if not cond:
                dev.append(msg % args if args else msg)
                h.say("DEVIATION: %s", dev[-1])
            return bool(cond)
    main_part(sc, mongo, keys, Dev)
    leeway_part(sc, mongo, keys, Dev)
    far_future(sc, mongo, keys, Dev)
    h.check(not dev, "%d deviation(s):\n  %s", len(dev), "\n  ".join(dev))


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 150 * h.SLOW))
