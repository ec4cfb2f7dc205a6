#!/usr/bin/python3
"""Story: with --auth jwt, a subscriber is admitted only with a valid token, and then
sees only what the token's rule allows; every other token is refused with the reason's
code and nothing more. Tokens are minted by an independent implementation (Debian's
python3-jwt, PyJWT 2.6, with python3-cryptography keys: tokens.py).

1. devmongo starts. Gateway A: --auth jwt with an HMAC secret file (64 bytes and a
   newline) and an RSA public key (rs1.pem), --jwt-audience, --jwt-issuer, --jwt-cookie
   cg_token, --auth-rule {"fullDocument.owner_id": "$$jwt.sub", "fullDocument.tenant":
   {"$in": "$$jwt.tenants"}}, a FastCGI listener, and an HTTP listener on a non-loopback
   address of this machine when it has one.
2. Admitted, rule applied: streams opened with ann's token in the Authorization header,
   in the cookie, as ?access_token=, over NDJSON, signed HS384, HS512 and RS256, of
   exactly 8,192 bytes; header beats cookie, cookie beats access_token; bob's token
   with two tenants; a token whose `changegate` claim narrows the filter and the fields
   (and a request asking for fewer fields); a subscriber filter that tries to widen the
   rule with $or. 40 documents of three owners and three tenants (one with no owner)
   are inserted, then one sentinel per owner: each stream receives exactly the
   documents its token allows, in order, and nothing more after its sentinel. Polls from the position
   before the writes: ?access_token=, "bearer" in lower case, the cookie among others
   whose names begin or end like it, an audience list holding ours, nbf and exp within
   the 30 s leeway, a deeply (but not absurdly) nested unrelated claim get exactly their
   documents; a filter for another owner and an empty tenants list get nothing; claims
   that could only widen the rule by injection (sub {"$ne": null}, sub null, sub an
   array, tenants holding an operator object, tenants nested 40 deep) are refused with
   403 or see nothing: never a rule that matches everything.
3. Refused with 401, a JSON body {"error": CODE, "message": ...} and WWW-Authenticate:
   Bearer realm="changegate": no token (token_missing, also an empty cookie and an
   empty access_token), expired, not yet valid, wrong / missing audience, wrong /
   missing issuer, a foreign secret, a tampered payload or signature (bad_signature),
   alg "none" in three spellings (algorithm_not_allowed), HS256 keyed with rs1.pem's
   text (algorithm confusion: refused), malformed tokens (two or four segments,
   characters outside base64url, a payload that is not JSON or not an object, a header
   without alg), 8,193 bytes (header, cookie, parameter) and 12 KiB (token_too_large),
   claims nested 2,900 deep in the payload or the header (malformed_token); an expired
   token in the header beside a valid cookie (the header is the token). A 1 MB token in
   the Authorization header gets 401 token_too_large from the HTTP gate, which never
   reads it whole; in a cookie or as a parameter the HTTP head limits answer (431
   headers_too_large: a Cookie header cannot be told apart from its token; 414
   uri_too_long); the gateway goes on serving.
   403: tenants a string, a number or an object (claim_type), tenants or sub missing
   (claim_missing), a `changegate` filter that is not a query or uses $where
   (invalid_token_filter), fields that are not a list (invalid_token_fields), a request
   for a field the token does not allow (field_not_allowed). No body echoes any part of
   a token, a claim's value, the configured audience or issuer.
4. Over A's FastCGI listener (as nginx speaks it): no token and expired tokens (header,
   cookie) get the same 401s; ann's poll gets exactly her documents; /healthz and
   /metrics are 403 for REMOTE_ADDR 203.0.113.9 and 200 for 127.0.0.1.
5. Gateway B has public keys only (rs1.pem, rot2=rot2.pem, ec1.pem): RS256 with either
   key id and ES256 are admitted; an unknown kid (unknown_key), a key id naming the
   wrong key or a foreign key (bad_signature), RS384, HS256 keyed with rs1.pem's text
   with or without its kid (the confusion token), HS256, alg none, a signature of the
   other key type: algorithm_not_allowed.
6. Gateway C: --access-token-param off, no cookie, --ops-access any, --jwt-algorithms
   HS256, and a rule with a nested claim path ("$$jwt.app.tenant"): ?access_token= is an
   unknown parameter (400 naming it) on /events and /poll; a cookie is no token there
   (token_missing); HS384 is algorithm_not_allowed; the header works and the nested
   claim fills the rule (exactly ann's t1 documents); app.tenant missing, app not an
   object, app.tenant an object: 403.
7. /healthz and /metrics: on A (--ops-access loopback, the default with --auth jwt)
   over the non-loopback address: 403, while subscriptions work there; on C (any): 200.
   Without a non-loopback address, loopback is checked to be allowed on both.
8. --check-config and start-up fail, saying why, for a rule that does not parse or is
   not an object, a placeholder with an empty path ("$$jwt." and "$$jwt.sub."), a rule
   with an unknown operator, a 31-byte secret (32 is fine), a key file that does not
   exist or is a directory, a 1,024-bit RSA key, a P-384 key, a PEM that is not a key,
   --auth jwt without a key, --jwt-algorithms none / HS999 / RS256 without an RSA key.
   --auth none on 0.0.0.0 is refused without --allow-public-unauthenticated, and starts
   (with a warning) with it.
9. All gateways exit 0 on SIGTERM; none of their logs (--log-level debug) holds any
   token's payload or signature.
Individual answers are checked one by one and every deviation is reported together at
the end, so one wrong code does not hide the next.
"""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import fcgi_client as fc  # noqa: E402
import tokens as tk  # noqa: E402

RULE = {"fullDocument.owner_id": "$$jwt.sub", "fullDocument.tenant": {"$in": "$$jwt.tenants"}}
OWNERS = ["ann", "bob", "cat"]
TENANTS = ["t1", "t2", "t3"]
SENTINEL = 100
# Claim values that must never come back in an answer.
MARKERS = ["marker-aud-q7", "marker-iss-q7", "marker-kid-q7", "marker-tenant-q7",
           "marker-sub-q7"]


def documents():
    """seq 0..35: every (owner, tenant) pair four times, kind a for 0..8, b for 9..17, ...;
    seq 36: no owner (a rule filled with null would match it); then a sentinel per owner
    (tenant t1, kind b: every admitted stream's last document)."""
    docs = []
    for seq in range(36):
        docs.append({"_id": seq, "seq": seq, "owner_id": OWNERS[seq % 3],
                     "tenant": TENANTS[(seq // 3) % 3], "kind": "ab"[(seq // 9) % 2],
                     "secret": "s%d" % seq})
    docs.append({"_id": 36, "seq": 36, "tenant": "t1", "kind": "a", "secret": "ownerless"})
    for i, o in enumerate(OWNERS):
        docs.append({"_id": SENTINEL + i, "seq": SENTINEL + i, "owner_id": o, "tenant": "t1",
                     "kind": "b", "secret": "sentinel"})
    return docs


def allowed(docs, sub, tenants, kind=None):
    return [d["seq"] for d in docs if d.get("owner_id") == sub and d["tenant"] in tenants
            and (kind is None or d["kind"] == kind)]


def auth(token, how="header", params=()):
    """(headers, params) carrying the token the given way."""
    params = list(params)
    if how == "header":
        return {"Authorization": "Bearer " + token}, params
    if how == "bearer-lowercase":
        return {"Authorization": "bearer " + token}, params
    if how == "cookie-crowded":         # names that begin or end like the configured one
        return {"Cookie": "x%s=junk; %s_old=junk; %s=%s; %sx=junk" % (
            tk.COOKIE, tk.COOKIE, tk.COOKIE, token, tk.COOKIE)}, params
    if how == "cookie":
        return {"Cookie": "theme=dark; %s=%s; lang=en" % (tk.COOKIE, token)}, params
    if how == "param":
        return {}, params + [("access_token", token)]
    raise ValueError(how)


def ask(port, path, headers=None, host="127.0.0.1"):
    """One GET; a 200 stream is closed at once. Returns (status, headers, body)."""
    s = h.HTTPStream(port, path, headers or {}, host=host)
    try:
        status = s.read_headers(10 * h.SLOW)
        if status == 200 and path.startswith("/events"):
            return status, s.headers, b""
        return status, s.headers, s.read_all(10 * h.SLOW)
    finally:
        s.close()


class Checker:
    """Asks for refusals and records every deviation from the expected answer."""

    def __init__(self, keys, dev):
        self.keys = keys
        self.dev = dev
        self.minted = []          # every token sent, for the log check
        self.n = 0

    def note(self, *tokens):
        self.minted.extend(t for t in tokens if t)

    def refused(self, port, what, token, status, codes, how="header", path="/events",
                headers=None, host="127.0.0.1", forbid=()):
        """The request with `token` (None: no token) must be answered `status` with a JSON
        body {"error": one of codes, "message": text} that echoes nothing of the token."""
        if isinstance(codes, str):
            codes = [codes]
        self.n += 1
        hdrs, params = ({}, []) if token is None else auth(token, how)
        hdrs.update(headers or {})
        self.note(token)
        full = path
        if params:
            full += ("&" if "?" in path else "?") + h.query(params)
        st, rh, body = ask(port, full, hdrs, host=host)
        if not self.dev.expect(st == status, "%s: status %d, expected %d %s (body %r)", what, st,
                               status, "/".join(codes), body[:200]):
            return None
        diff = json_error_diff(rh, body, codes)
        if not self.dev.expect(not diff, "%s: %s", what, diff):
            return None
        if status == 401:
            www = rh.get("www-authenticate", "")
            self.dev.expect(www.startswith("Bearer") and 'realm="changegate"' in www,
                            "%s: 401 without WWW-Authenticate: Bearer realm=\"changegate\" "
                            "(got %r)", what, www)
        text = body.decode("utf-8", "replace")
        leaked = [s for s in (tk.segments(token) if token else []) if s in text]
        leaked += [m for m in list(MARKERS) + list(forbid) if m in text]
        self.dev.expect(not leaked, "%s: the answer echoes token text %r: %r", what,
                        [x[:40] for x in leaked], text[:300])
        doc = json.loads(text)
        h.say("%-58s %d %s", what, st, doc["error"])
        return doc


def json_error_diff(headers, body, codes):
    ctype = headers.get("content-type", "")
    if ctype.split(";")[0].strip() != "application/json":
        return "Content-Type %r, expected application/json (body %r)" % (ctype, body[:200])
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "body is not JSON: %r" % body[:200]
    if not isinstance(doc, dict) or set(doc) != {"error", "message"}:
        return "body is not exactly {\"error\", \"message\"}: %r" % body[:300]
    if doc["error"] not in codes:
        return "error %r, expected %s (message %r)" % (doc["error"], " or ".join(codes),
                                                       doc.get("message"))
    if not isinstance(doc["message"], str) or not doc["message"].strip():
        return "empty message: %r" % doc
    return ""


def non_loopback_ipv4():
    """An IPv4 address of one of this machine's interfaces outside 127/8 that a socket
    can bind, or None."""
    import fcntl
    import struct
    for _, name in socket.if_nameindex():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            req = struct.pack("256s", name.encode()[:15])
            ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])  # SIOCGIFADDR
        except OSError:
            continue
        finally:
            s.close()
        if ip.startswith("127.") or ip == "0.0.0.0":
            continue
        try:
            b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            b.bind((ip, 0))
            b.close()
        except OSError:
            continue
        return ip
    return None


def free_port_on(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        return s.getsockname()[1]
    finally:
        s.close()





def jwt_args(keys, rule=RULE, extra=()):
    return ["--auth", "jwt", "--jwt-secret-file", keys.secret_file,
            "--jwt-public-key", keys.rs1_file, "--jwt-audience", tk.AUDIENCE,
            "--jwt-issuer", tk.ISSUER, "--jwt-cookie", tk.COOKIE,
            "--auth-rule", json.dumps(rule)] + list(extra)


# --------------------------------------------------------------------------- 2. admitted

def read_to_sentinel(client, ndjson, what):
    seqs, events = [], []
    while True:
        if ndjson:
            ev = h.check_ndjson_event(client.read_events(1, timeout=20)[0])
        else:
            ev = h.check_sse_event(client.read_messages(1, timeout=20)[0])
        fd = ev.get("fullDocument")
        h.check(isinstance(fd, dict) and isinstance(fd.get("seq"), int),
                "%s: event without fullDocument.seq: %r", what, ev)
        seqs.append(fd["seq"])
        events.append(ev)
        if fd["seq"] >= SENTINEL:
            return seqs, events


def poll_all(cg, token, since, how="header", params=(), what=""):
    """Every event after `since` that the token allows (one poll: they are all there)."""
    hdrs, ps = auth(token, how, params)
    status, body, _ = cg.poll(lastEventId=since, timeout=1, limit=1000, params=ps, headers=hdrs)
    return status, body


def admitted(sc, cg, keys, w, checker, dev):
    k = keys
    C = tk.Keyring.claims
    ann = C("ann", tenants=["t1"])
    bob = C("bob", tenants=["t1", "t2"])
    t_ann = k.hs(ann)
    t_bob = k.hs(bob)
    k.check_with_pyjwt(t_ann)
    t_narrow = k.hs(C("ann", tenants=["t1"], changegate={
        "filter": {"fullDocument.kind": "b"}, "fields": "fullDocument.seq,fullDocument.kind"}))
    t_8192 = k.sized(ann, 8192)
    checker.note(t_ann, t_bob, t_narrow, t_8192)
    h.check(len(t_8192) == 8192, "the 8 KiB token is %d bytes", len(t_8192))

    # A position before any write, from a poll that answers at once.
    st, body, _ = cg.poll(timeout=0, headers=auth(t_ann)[0])
    h.check(st == 200 and body.get("events") == [] and body.get("lastEventId"),
            "the first poll with a valid token answered %d %r", st, body)
    p0 = body["lastEventId"]

    docs = documents()
    ann_t1 = allowed(docs, "ann", ["t1"])
    streams = [
        # (what, how, token, ndjson, params, expected seqs, projection check)
        ("SSE, Authorization: Bearer", "header", t_ann, False, (), ann_t1, None),
        ("SSE, cookie cg_token", "cookie", t_ann, False, (), ann_t1, None),
        ("SSE, ?access_token=", "param", t_ann, False, (), ann_t1, None),
        ("NDJSON, Authorization: Bearer", "header", t_ann, True, (), ann_t1, None),
        ("SSE, HS384", "header", k.hs(ann, alg="HS384"), False, (), ann_t1, None),
        ("SSE, HS512", "header", k.hs(ann, alg="HS512"), False, (), ann_t1, None),
        ("SSE, RS256 kid rs1", "header", k.rs(ann), False, (), ann_t1, None),
        ("SSE, a token of exactly 8,192 bytes", "header", t_8192, False, (), ann_t1, None),
        ("SSE, bob with tenants t1 and t2", "header", t_bob, False, (),
         allowed(docs, "bob", ["t1", "t2"]), None),
        ("SSE, changegate claim: kind b, fields seq,kind", "header", t_narrow, False, (),
         allowed(docs, "ann", ["t1"], "b"), {"seq", "kind"}),
        ("SSE, same token, fields=fullDocument.seq", "header", t_narrow, False,
         [("fields", "fullDocument.seq")], allowed(docs, "ann", ["t1"], "b"), {"seq"}),
        ("SSE, ann's token, filter $or owner bob / ann", "header", t_ann, False,
         [("filter", json.dumps({"$or": [{"fullDocument.owner_id": "bob"},
                                         {"fullDocument.owner_id": "ann"}]}))], ann_t1, None),
    ]
    opened = []
    for what, how, token, ndjson, params, want, proj in streams:
        checker.note(token)
        hdrs, ps = auth(token, how, params)
        c = (cg.ndjson(params=ps, headers=hdrs) if ndjson else cg.sse(params=ps, headers=hdrs))
        sc.track(c)
        if ndjson:
            first = c.next_obj(10 * h.SLOW)
            h.check(h.is_heartbeat(first), "%s: the stream did not open with a heartbeat: %r",
                    what, first)
        opened.append((what, c, ndjson, want, proj))
    # Precedence: the header over the cookie, the cookie over the parameter.
    hb = {"Authorization": "Bearer " + t_ann, "Cookie": "%s=%s" % (tk.COOKIE, t_bob)}
    opened.append(("SSE, header ann + cookie bob: the header", sc.track(cg.sse(headers=hb)),
                   False, ann_t1, None))
    cb = {"Cookie": "%s=%s" % (tk.COOKIE, t_bob)}
    opened.append(("SSE, cookie bob + access_token ann: the cookie",
                   sc.track(cg.sse(headers=cb, params=[("access_token", t_ann)])), False,
                   allowed(docs, "bob", ["t1", "t2"]), None))
    h.say("%d streams admitted; writing %d documents", len(opened), len(docs))

    coll = w.coll("app", "orders")
    for d in docs:
        coll.insert_one(d)
    for what, c, ndjson, want, proj in opened:
        seqs, events = read_to_sentinel(c, ndjson, what)
        h.check_sequence(seqs, want, what)
        if proj is not None:
            for ev in events:
                h.check(set(ev["fullDocument"]) == proj, "%s: fullDocument has %r, expected "
                        "exactly %r (the token's fields)", what, sorted(ev["fullDocument"]),
                        sorted(proj))
        # The other owners' sentinels come after this one: nothing more may follow.
        if ndjson:
            extra = []
            try:
                while True:
                    o = c.next_obj(0.3)
                    if o is None:
                        break
                    if not h.is_heartbeat(o):
                        extra.append(o)
            except TimeoutError:
                pass
        else:
            extra = c.drain(0.3)
        h.check(not extra, "%s: more after its sentinel: %r", what, extra[:2])
        c.close()
        h.say("%-52s exactly its %d documents", what, len(seqs))

    # Polls from p0: everything is written, so one answer holds all a token allows.
    # (what, token, how, params, expected seqs or None for "refused 403 or nothing")
    deep20 = {"l0": {}}
    node = deep20["l0"]
    for i in range(1, 20):
        node["l%d" % i] = {}
        node = node["l%d" % i]
    nested40 = ["t1"]
    for _ in range(40):
        nested40 = [nested40]
    now = int(time.time())
    polls = [
        ("poll, ?access_token=", t_ann, "param", (), ann_t1),
        ("poll, Authorization: bearer (lower case)", t_ann, "bearer-lowercase", (), ann_t1),
        ("poll, cookie among x-cg_token, cg_token_old, ...", t_ann, "cookie-crowded", (),
         ann_t1),
        ("poll, aud a list holding ours", k.hs(C("ann", tenants=["t1"],
                                                 aud=["someone-else", tk.AUDIENCE])),
         "header", (), ann_t1),
        ("poll, nbf 10 s ahead (leeway 30 s)", k.hs(C("ann", tenants=["t1"], nbf=now + 10)),
         "header", (), ann_t1),
        ("poll, exp 10 s ago (leeway 30 s)", k.hs(dict(C("ann", tenants=["t1"]),
                                                       exp=now - 10)), "header", (), ann_t1),
        ("poll, an unrelated claim nested 20 deep", k.hs(C("ann", tenants=["t1"], app=deep20)),
         "header", (), ann_t1),
        ("poll, ann's token, filter owner bob", t_ann, "header",
         [("filter", json.dumps({"fullDocument.owner_id": "bob"}))], []),
        ("poll, tenants []", k.hs(C("ann", tenants=[])), "header", (), []),
        ("poll, sub {\"$ne\": null}", k.hs(C({"$ne": None}, tenants=["t1", "t2", "t3"])),
         "header", (), None),
        ("poll, sub null", k.hs(dict(C("x", tenants=["t1"]), sub=None)), "header", (), None),
        ("poll, sub [ann, bob]", k.hs(C(["ann", "bob"], tenants=["t1"])), "header", (), None),
        ("poll, tenants [t1, {\"$gt\": \"\"}]", k.hs(C("ann", tenants=["t1", {"$gt": ""}])),
         "header", (), "ann-t1-or-refused"),
        ("poll, tenants nested 40 deep", k.hs(C("ann", tenants=nested40)), "header", (), None),
    ]
    for what, token, how, params, want in polls:
        checker.note(token)
        st, body = poll_all(cg, token, p0, how, params)
        if want is None or want == "ann-t1-or-refused":
            if st == 403:
                dev.expect(isinstance(body, dict) and body.get("error") in
                           ("claim_type", "claim_missing", "invalid_token_filter"),
                           "%s: 403 with %r, expected claim_type", what, body)
                h.say("%-52s 403 %s", what, (body or {}).get("error"))
                continue
            want = ann_t1 if want == "ann-t1-or-refused" else []
        if not dev.expect(st == 200, "%s: status %d %r, expected 200", what, st, body):
            continue
        got = [(e.get("fullDocument") or {}).get("seq") for e in body["events"]]
        if not dev.expect(got == want, "%s: the poll returned seqs %r, expected %r (a rule "
                          "filled from this token matches what it must not, or misses its "
                          "own)", what, got, want):
            continue
        h.say("%-52s 200, %s", what, "exactly its %d documents" % len(got) if got
              else "nothing (not a match-all)")
    return p0, t_ann


# --------------------------------------------------------------------------- 3. refused

def deep_array(depth, leaf="x"):
    return "[" * depth + json.dumps(leaf) + "]" * depth


def refusals(cg, keys, ck, p0):
    k = keys
    C = tk.Keyring.claims
    port = cg.port
    ann = C("ann", tenants=["t1"])
    now = int(time.time())
    good = k.hs(ann)
    hdr = {"alg": "HS256", "typ": "JWT"}

    ck.refused(port, "no token at all", None, 401, "token_missing")
    ck.refused(port, "no token, /poll", None, 401, "token_missing", path="/poll?timeout=1")
    ck.refused(port, "an empty cg_token cookie", None, 401, "token_missing",
               headers={"Cookie": "%s=; theme=dark" % tk.COOKIE})
    ck.refused(port, "an empty access_token", None, 401, "token_missing",
               path="/events?access_token=")
    ck.refused(port, "expired an hour ago", k.hs(dict(ann, exp=now - 3600)), 401,
               "token_expired")
    ck.refused(port, "expired, in the cookie", k.hs(dict(ann, exp=now - 3600)), 401,
               "token_expired", how="cookie")
    ck.refused(port, "expired, as access_token on /poll", k.hs(dict(ann, exp=now - 3600)),
               401, "token_expired", how="param", path="/poll?timeout=1")
    ck.refused(port, "expired header beside a valid cookie", k.hs(dict(ann, exp=now - 3600)),
               401, "token_expired", headers={"Cookie": "%s=%s" % (tk.COOKIE, good)})
    ck.refused(port, "nbf an hour ahead", k.hs(dict(ann, nbf=now + 3600)), 401,
               "token_not_yet_valid")
    ck.refused(port, "wrong audience", k.hs(C("ann", tenants=["t1"], aud="marker-aud-q7")),
               401, "wrong_audience", forbid=[tk.AUDIENCE])
    ck.refused(port, "audience list without ours",
               k.hs(C("ann", tenants=["t1"], aud=["marker-aud-q7", "other"])), 401,
               "wrong_audience", forbid=[tk.AUDIENCE])
    ck.refused(port, "no audience", k.hs(C("ann", tenants=["t1"], aud=None)), 401,
               "wrong_audience", forbid=[tk.AUDIENCE])
    ck.refused(port, "wrong issuer", k.hs(C("ann", tenants=["t1"], iss="marker-iss-q7")),
               401, "wrong_issuer", forbid=[tk.ISSUER])
    ck.refused(port, "no issuer", k.hs(C("ann", tenants=["t1"], iss=None)), 401,
               "wrong_issuer", forbid=[tk.ISSUER])
    ck.refused(port, "signed with another secret", k.hs(ann, secret=k.rogue_secret), 401,
               "bad_signature", forbid=[k.secret])
    hd, pl, sg = good.split(".")
    tampered_payload = hd + "." + tk.b64url(tk.compact(dict(ann, sub="bob"))) + "." + sg
    ck.refused(port, "payload changed (sub ann -> bob)", tampered_payload, 401, "bad_signature")
    mid = len(sg) // 2
    flipped = sg[:mid] + ("A" if sg[mid] != "A" else "B") + sg[mid + 1:]
    ck.refused(port, "a signature character changed", hd + "." + pl + "." + flipped, 401,
               "bad_signature")
    ck.refused(port, "signature cut off", hd + "." + pl + ".", 401,
               ["bad_signature", "malformed_token"])
    for alg in ("none", "None", "NONE"):
        ck.refused(port, "alg %s, no signature" % alg,
                   k.raw({"alg": alg, "typ": "JWT"}, ann, signature=""), 401,
                   "algorithm_not_allowed")
    ck.refused(port, "alg none with a signature", k.raw({"alg": "none"}, ann, signature=sg),
               401, "algorithm_not_allowed")
    ck.refused(port, "HS256 keyed with rs1.pem (kid rs1)", k.confused(ann, kid="rs1"), 401,
               ["algorithm_not_allowed", "bad_signature", "unknown_key"])
    ck.refused(port, "HS256 keyed with rs1.pem (no kid)", k.confused(ann, kid=None), 401,
               ["algorithm_not_allowed", "bad_signature"])
    # Malformed: signed with the real secret over whatever the segments are, so that no
    # order of checks can call them anything but malformed.
    ck.refused(port, "two segments", hd + "." + pl, 401, "malformed_token")
    ck.refused(port, "four segments", good + "." + sg, 401, "malformed_token")
    ck.refused(port, "'!' in the header segment", k.hs_raw(hd[:10] + "!!" + hd[12:], pl), 401,
               "malformed_token")
    ck.refused(port, "'*' in the payload segment", k.hs_raw(hd, pl[:20] + "**" + pl[22:]), 401,
               "malformed_token")
    ck.refused(port, "'!' in the signature segment", hd + "." + pl + "." + sg[:20] + "!!" +
               sg[22:], 401, ["malformed_token", "bad_signature"])
    ck.refused(port, "payload is not JSON", k.hs_raw(hdr, b"not json at all"), 401,
               "malformed_token")
    ck.refused(port, "payload is a JSON array", k.hs_raw(hdr, [1, 2, 3]), 401,
               "malformed_token")
    ck.refused(port, "header is not JSON", k.hs_raw(b"{alg: HS256", ann), 401,
               "malformed_token")
    ck.refused(port, "header without alg", k.hs_raw({"typ": "JWT"}, ann), 401,
               "malformed_token")
    deep_payload = ('{"sub":"ann","tenants":["t1"],"aud":"%s","iss":"%s","exp":%d,"deep":%s}'
                    % (tk.AUDIENCE, tk.ISSUER, now + 600, deep_array(2900))).encode()
    t_deep = k.hs_raw(hdr, deep_payload)
    h.check(len(t_deep) <= 8192, "the deeply nested token is %d bytes", len(t_deep))
    ck.refused(port, "claims nested 2,900 deep (valid signature)", t_deep, 401,
               "malformed_token")
    deep_header = ('{"alg":"HS256","x":%s}' % deep_array(2900)).encode()
    ck.refused(port, "header nested 2,900 deep", k.hs_raw(deep_header, ann), 401,
               "malformed_token")
    # Sizes: over 8,192 bytes (and within the 16 KiB of header fields).
    t_8193 = k.sized(ann, 8193)
    for how in ("header", "cookie", "param"):
        ck.refused(port, "8,193 bytes, %s" % how, t_8193, 401, "token_too_large", how=how)
    ck.refused(port, "12 KiB, header", k.sized(ann, 12 * 1024), 401, "token_too_large")

    # 403: valid tokens that cannot fill the rule.
    for what, claims, code in [
            ("tenants a string", C("ann", tenants="marker-tenant-q7"), "claim_type"),
            ("tenants a number", C("ann", tenants=5), "claim_type"),
            ("tenants an object {\"$gt\": \"\"}", C("ann", tenants={"$gt": ""}), "claim_type"),
            ("tenants missing", C("ann"), "claim_missing"),
            ("sub missing", C(None, tenants=["t1"]), "claim_missing"),
            ("changegate.filter a string", C("ann", tenants=["t1"],
                                             changegate={"filter": "everything"}),
             "invalid_token_filter"),
            ("changegate.filter with $where", C("ann", tenants=["t1"], changegate={
                "filter": {"$where": "return true"}}), "invalid_token_filter"),
            ("changegate.filter with an unknown operator", C("ann", tenants=["t1"], changegate={
                "filter": {"fullDocument.kind": {"$frob": 1}}}), "invalid_token_filter"),
            ("changegate.fields a number", C("ann", tenants=["t1"],
                                             changegate={"fields": 42}),
             "invalid_token_fields")]:
        ck.refused(port, what, k.hs(claims), 403, code)
    narrow = k.hs(C("ann", tenants=["t1"], changegate={"fields": ["fullDocument.seq"]}))
    ck.refused(port, "fields=fullDocument.secret beyond the token's fields", narrow, 403,
               "field_not_allowed", path="/events?fields=fullDocument.secret")
    ck.refused(port, "the same on /poll", narrow, 403, "field_not_allowed",
               path="/poll?timeout=1&fields=fullDocument.secret")


def huge_request(port, path, headers):
    """Sends a request whose head may be far beyond the limits from one thread and reads
    the answer from another (the server may answer before it has read it all).
    Returns (status, headers, body) or None when the connection ended without one."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20 * h.SLOW)
    head = "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (
        path, "".join("%s: %s\r\n" % kv for kv in headers.items()))
    data = head.encode("latin-1")
    err = []

    def send():
        try:
            sock.sendall(data)
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    buf = b""
    try:
        while True:
            try:
                d = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise h.TestFailure("no answer to a %d-byte request within %ss" % (
                    len(data), 20 * h.SLOW))
            if not d:
                break
            buf += d
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                hd = buf[:head_end].decode("latin-1").split("\r\n")
                hs = {}
                for ln in hd[1:]:
                    a, _, b = ln.partition(":")
                    hs[a.strip().lower()] = b.strip()
                n = int(hs.get("content-length", "-1"))
                if n >= 0 and len(buf) >= head_end + 4 + n:
                    return int(hd[0].split()[1]), hs, buf[head_end + 4:head_end + 4 + n]
    finally:
        sock.close()
        t.join(5)
    return None


def megabyte_tokens(cg, keys, ck, dev):
    ann = tk.Keyring.claims("ann", tenants=["t1"])
    big = keys.sized(ann, 1 << 20)
    ck.note(big)
    for what, path, hdrs, status, code in [
            ("1 MB token, Authorization header", "/events", {"Authorization": "Bearer " + big},
             401, "token_too_large"),
            ("1 MB token, cookie", "/events", {"Cookie": "%s=%s" % (tk.COOKIE, big)}, 431,
             "headers_too_large"),
            ("1 MB token, ?access_token=", "/events?access_token=" + big, {}, 414,
             "uri_too_long")]:
        ans = huge_request(cg.port, path, hdrs)
        if not dev.expect(ans is not None, "%s: no answer, the connection just ended", what):
            continue
        st, rh, body = ans
        if dev.expect(st == status, "%s: status %d, expected %d (body %r)", what, st, status,
                      body[:200]):
            diff = json_error_diff(rh, body, [code])
            if dev.expect(not diff, "%s: %s", what, diff):
                h.say("%-58s %d %s", what, st, code)
                dev.expect(st != 401 or "Bearer" in rh.get("www-authenticate", ""),
                           "%s: 401 without WWW-Authenticate: Bearer (%r)", what, rh)
        dev.expect(not any(s[:64] in body.decode("latin-1") for s in tk.segments(big)),
                   "%s: the answer echoes the token", what)
    st, _, _ = cg.health()
    h.check(st == 200, "after the 1 MB tokens /healthz answers %d", st)


# --------------------------------------------------------------------------- 4. public keys

def public_keys(sc, mongo, keys, ck, dev, w):
    k = keys
    C = tk.Keyring.claims
    cgb = h.Changegate(sc, mongo.uri, name="changegate-b", args=[
        "--auth", "jwt", "--jwt-public-key", k.rs1_file,
        "--jwt-public-key", "rot2=" + k.rot2_file, "--jwt-public-key", k.ec1_file,
        "--jwt-audience", tk.AUDIENCE, "--jwt-issuer", tk.ISSUER,
        "--auth-rule", json.dumps(RULE)])
    cgb.start()
    ann = C("ann", tenants=["t1"])
    st, body, _ = cgb.poll(timeout=0, headers=auth(k.rs(ann))[0])
    h.check(st == 200, "gateway B: a poll with an RS256 token answered %d %r", st, body)
    p0 = body["lastEventId"]
    coll = w.coll("app", "orders_b")
    coll.insert_one({"_id": 1, "seq": 1, "owner_id": "ann", "tenant": "t1"})
    coll.insert_one({"_id": 2, "seq": 2, "owner_id": "bob", "tenant": "t1"})
    for what, token in [("RS256 kid rs1", k.rs(ann)),
                        ("RS256 kid rot2 (rot2=FILE)", k.rs(ann, kid="rot2", key=k.rot2)),
                        ("ES256 kid ec1", k.es(ann))]:
        ck.note(token)
        got = []
        deadline = time.monotonic() + 20 * h.SLOW
        while not got and time.monotonic() < deadline:
            st, body, _ = cgb.poll(lastEventId=p0, timeout=5, headers=auth(token)[0])
            if not dev.expect(st == 200, "gateway B, %s: %d %r", what, st, body):
                break
            got = [e["fullDocument"]["seq"] for e in body["events"]]
        if st == 200:
            dev.expect(got == [1], "gateway B, %s: got seqs %r, expected [1]", what, got)
            h.say("%-58s 200, exactly its document", "gateway B, " + what)
    port = cgb.port
    ck.refused(port, "B: RS256 with an unknown kid", k.rs(ann, kid="marker-kid-q7"), 401,
               "unknown_key")
    ck.refused(port, "B: RS256 kid rs1 signed by a foreign key", k.rs(ann, key=k.rogue_rsa),
               401, "bad_signature")
    ck.refused(port, "B: RS256 kid rot2 signed with rs1's key", k.rs(ann, kid="rot2"), 401,
               "bad_signature")
    ck.refused(port, "B: RS384 kid rs1", k.rs(ann, alg="RS384"), 401, "algorithm_not_allowed")
    ck.refused(port, "B: HS256 keyed with rs1.pem, kid rs1 (confusion)",
               k.confused(ann, kid="rs1"), 401, "algorithm_not_allowed")
    ck.refused(port, "B: HS256 keyed with rs1.pem, no kid (confusion)",
               k.confused(ann, kid=None), 401, "algorithm_not_allowed")
    ck.refused(port, "B: HS256 with some secret", k.hs(ann), 401, "algorithm_not_allowed")
    ck.refused(port, "B: alg none", k.raw({"alg": "none"}, ann, signature=""), 401,
               "algorithm_not_allowed")
    ck.refused(port, "B: ES256 signature under kid rs1", k.es(ann, kid="rs1"), 401,
               ["algorithm_not_allowed", "bad_signature"])
    ck.refused(port, "B: RS256 signature under kid ec1", k.rs(ann, kid="ec1"), 401,
               ["algorithm_not_allowed", "bad_signature"])
    return cgb


# --------------------------------------------------------------------------- 5, 6. C, ops

RULE_C = {"fullDocument.owner_id": "$$jwt.sub", "fullDocument.tenant": "$$jwt.app.tenant"}


def gateway_c(sc, mongo, keys, ck, dev, ip, p0):
    k = keys
    C = tk.Keyring.claims
    args = ["--auth", "jwt", "--jwt-secret-file", k.secret_file, "--jwt-audience", tk.AUDIENCE,
            "--jwt-issuer", tk.ISSUER, "--auth-rule", json.dumps(RULE_C),
            "--access-token-param", "off", "--ops-access", "any", "--jwt-algorithms", "HS256"]
    ipport = None
    if ip:
        ipport = free_port_on(ip)
        args += ["--listen", "http://%s:%d" % (ip, ipport)]
    cgc = h.Changegate(sc, mongo.uri, name="changegate-c", args=args)
    cgc.start()
    good = k.hs(C("ann", app={"tenant": "t1", "role": "viewer"}))
    ck.note(good)
    for path in ("/events", "/poll?timeout=0"):
        st, rh, body = ask(cgc.port, path + ("&" if "?" in path else "?") +
                           h.query([("access_token", good)]))
        if dev.expect(st == 400, "C (--access-token-param off): %s with access_token answered "
                      "%d %r, expected 400", path, st, body[:200]):
            diff = json_error_diff(rh, body, ["unknown_parameter"])
            doc = json.loads(body) if not diff else {}
            dev.expect(not diff and "access_token" in doc.get("message", ""),
                       "C: %s?access_token=: %s %r", path, diff, body[:200])
            dev.expect(not any(s in body.decode("utf-8", "replace")
                               for s in tk.segments(good)),
                       "C: the 400 echoes the token: %r", body[:300])
            h.say("%-58s 400 unknown_parameter", "C: %s with access_token (param off)" % path)
    ck.refused(cgc.port, "C: cookie without --jwt-cookie", good, 401, "token_missing",
               how="cookie")
    # A nested claim path ($$jwt.app.tenant) fills the rule. C started after the writes:
    # it catches up from MongoDB, so the answers come in parts; poll on to the sentinel.
    got, pos = [], p0
    deadline = time.monotonic() + 30 * h.SLOW
    while SENTINEL not in got and time.monotonic() < deadline:
        st, body, _ = cgc.poll(lastEventId=pos, timeout=5, limit=1000, headers=auth(good)[0],
                               params=[("ns", "app.orders")])
        if st != 200:
            break
        got += [e["fullDocument"]["seq"] for e in body["events"]]
        pos = body["lastEventId"]
    if dev.expect(st == 200, "C: a poll with the token in the header answered %d %r", st, body):
        want = allowed(documents(), "ann", ["t1"])
        if dev.expect(got == want, "C, rule with $$jwt.app.tenant: got %r, expected %r", got,
                      want):
            h.say("%-58s 200, exactly its %d documents", "C: rule on $$jwt.app.tenant", len(got))
    ck.refused(cgc.port, "C: HS384 with --jwt-algorithms HS256",
               k.hs(C("ann", app={"tenant": "t1"}), alg="HS384"), 401, "algorithm_not_allowed")
    ck.refused(cgc.port, "C: app.tenant missing", k.hs(C("ann", app={"role": "viewer"})), 403,
               "claim_missing")
    ck.refused(cgc.port, "C: app not an object", k.hs(C("ann", app="marker-tenant-q7")), 403,
               ["claim_missing", "claim_type"])
    ck.refused(cgc.port, "C: app.tenant an object", k.hs(C("ann", app={"tenant": {"$ne": 1}})),
               403, "claim_type")
    return cgc, ipport


def ops_access(cga, cgc, ip, ipa, ipc, dev, keys):
    if ip is None:
        for cg, what in ((cga, "A (loopback)"), (cgc, "C (any)")):
            for path in ("/healthz", "/metrics"):
                st, _, body = h.request(cg.port, "GET", path)
                dev.expect(st == 200, "%s %s from 127.0.0.1: %d %r", what, path, st, body[:200])
        h.say("no non-loopback address to bind here: /healthz and /metrics checked from "
              "loopback only (200 on both gateways)")
        return
    for path in ("/healthz", "/metrics"):
        st, rh, body = h.request(ipa, "GET", path, host=ip)
        if dev.expect(st == 403, "A (--ops-access loopback): %s from %s answered %d, "
                      "expected 403 (%r)", path, ip, st, body[:200]):
            diff = json_error_diff(rh, body, ["forbidden"])
            dev.expect(not diff, "A: %s from %s: %s", path, ip, diff)
            h.say("%-58s 403", "A: %s from %s (loopback only)" % (path, ip))
        st, _, body = h.request(cga.port, "GET", path)
        dev.expect(st == 200, "A: %s from 127.0.0.1 answered %d", path, st)
        st, _, body = h.request(ipc, "GET", path, host=ip)
        dev.expect(st == 200, "C (--ops-access any): %s from %s answered %d %r", path, ip, st,
                   body[:200])
        h.say("%-58s %d", "C: %s from %s (any)" % (path, ip), st)
    # Subscriptions are not limited to loopback.
    t = keys.hs(tk.Keyring.claims("ann", tenants=["t1"]))
    st, _, body = h.request(ipa, "GET", "/poll?timeout=0", headers=auth(t)[0], host=ip)
    dev.expect(st == 200, "A: a poll with a token over %s answered %d %r", ip, st, body[:200])
    st, _, body = h.request(ipa, "GET", "/poll?timeout=0", host=ip)
    dev.expect(st == 401, "A: a poll without a token over %s answered %d", ip, st)


# --------------------------------------------------------------------------- FastCGI

def fastcgi(cga, fport, keys, ck, dev, p0):
    """The same gate behind a web server: A's fcgi:// listener, as nginx would speak to it
    (HTTP_AUTHORIZATION, HTTP_COOKIE, REMOTE_ADDR)."""
    k = keys
    C = tk.Keyring.claims
    ann = k.hs(C("ann", tenants=["t1"]))
    expired = k.hs(dict(C("ann", tenants=["t1"]), exp=int(time.time()) - 3600))
    ck.note(ann, expired)
    conn = fc.Connection(("127.0.0.1", fport))
    rid = [0]

    def get(uri, headers=None, **extra):
        rid[0] += 1
        r = conn.get(rid[0], timeout=15, uri=uri, headers=headers, **extra)
        st, _, hdrs, body = r.cgi()
        return st, hdrs, body
    try:
        for what, uri, headers, status, code in [
                ("FastCGI: no token", "/events", None, 401, "token_missing"),
                ("FastCGI: expired token", "/events", {"Authorization": "Bearer " + expired},
                 401, "token_expired"),
                ("FastCGI: expired token in the cookie", "/poll?timeout=1",
                 {"Cookie": "%s=%s" % (tk.COOKIE, expired)}, 401, "token_expired")]:
            st, hdrs, body = get(uri, headers)
            if dev.expect(st == status, "%s: %d %r, expected %d", what, st, body[:200], status):
                diff = json_error_diff(hdrs, body, [code])
                dev.expect(not diff, "%s: %s", what, diff)
                www = hdrs.get("www-authenticate", "")
                dev.expect(www.startswith("Bearer") and 'realm="changegate"' in www,
                           "%s: WWW-Authenticate %r", what, www)
                dev.expect(not any(x in body.decode("utf-8", "replace")
                                   for x in tk.segments(expired)),
                           "%s: the answer echoes the token", what)
                h.say("%-58s %d %s", what, st, code)
        st, _, body = get("/poll?" + h.query([("lastEventId", p0), ("timeout", 1),
                                              ("limit", 1000), ("ns", "app.orders")]),
                          {"Authorization": "Bearer " + ann})
        if dev.expect(st == 200, "FastCGI: a poll with ann's token: %d %r", st, body[:200]):
            got = [e["fullDocument"]["seq"] for e in json.loads(body)["events"]]
            want = allowed(documents(), "ann", ["t1"])
            dev.expect(got == want, "FastCGI: ann's poll got %r, expected %r", got, want)
            h.say("%-58s 200, exactly its %d documents", "FastCGI: poll with ann's token",
                  len(got))
        for remote, status in (("203.0.113.9", 403), ("127.0.0.1", 200)):
            for path in ("/healthz", "/metrics"):
                st, hdrs, body = get(path, REMOTE_ADDR=remote)
                dev.expect(st == status, "FastCGI: %s for REMOTE_ADDR %s answered %d, "
                           "expected %d (--ops-access loopback)", path, remote, st, status)
        h.say("%-58s 403, from 127.0.0.1 200", "FastCGI: /healthz, /metrics from 203.0.113.9")
    finally:
        conn.close()


# --------------------------------------------------------------------------- 7. configuration

def configuration(sc, mongo, keys, dev):
    k = keys
    state = sc.mkdir("check-state")
    base = ["--mongo-uri", mongo.uri, "--state-dir", state,
            "--listen", "http://127.0.0.1:%d" % h.free_port()]
    good = base + jwt_args(k)
    rc, out = h.run_changegate(["--check-config"] + good)
    h.check(rc == 0, "--check-config with a good --auth jwt configuration exited %d: %s", rc,
            out)
    short = k.write("short.secret", "x" * 31 + "\n")
    just = k.write("just.secret", "y" * 32 + "\n")
    rc, out = h.run_changegate(["--check-config"] + base + ["--auth", "jwt", "--jwt-secret-file", just])
    dev.expect(rc == 0, "--check-config with a 32-byte secret (and a newline) exited %d: %s",
               rc, out.strip())
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_pem = k.write("small.pem", tk._public_pem(small))
    p384 = k.write("p384.pem", tk._public_pem(ec.generate_private_key(ec.SECP384R1())))
    not_pem = k.write("notpem.pem", "-----BEGIN PUBLIC KEY-----\nnot base64\n"
                      "-----END PUBLIC KEY-----\n")
    missing = os.path.join(k.dir, "no-such-key.pem")

    def rule_with(text):
        return ["--auth", "jwt", "--jwt-secret-file", k.secret_file, "--auth-rule", text]
    bad = [
        ("a rule that does not parse", rule_with('{"fullDocument.owner_id": "$$jwt.sub"'),
         ["auth-rule"]),
        ("a rule that is not an object", rule_with('["$$jwt.sub"]'), ["auth-rule"]),
        ("\"$$jwt.\" (empty claim path)", rule_with('{"fullDocument.owner_id": "$$jwt."}'),
         ["auth-rule"]),
        ("\"$$jwt.sub.\" (empty path component)",
         rule_with('{"fullDocument.owner_id": "$$jwt.sub."}'), ["auth-rule"]),
        ("a rule with an unknown operator",
         rule_with('{"fullDocument.owner_id": {"$frob": "$$jwt.sub"}}'), ["auth-rule"]),
        ("a 31-byte secret", ["--auth", "jwt", "--jwt-secret-file", short], ["secret"]),
        ("a secret file that does not exist", ["--auth", "jwt", "--jwt-secret-file", missing],
         ["secret", "no-such-key"]),
        ("a public key that does not exist", ["--auth", "jwt", "--jwt-public-key", missing],
         ["public-key", "no-such-key"]),
        ("a public key that is a directory", ["--auth", "jwt", "--jwt-public-key", k.dir],
         ["public-key"]),
        ("a 1,024-bit RSA key", ["--auth", "jwt", "--jwt-public-key", small_pem],
         ["public-key", "2048"]),
        ("a P-384 key", ["--auth", "jwt", "--jwt-public-key", p384], ["public-key"]),
        ("a PEM that is not a key", ["--auth", "jwt", "--jwt-public-key", not_pem],
         ["public-key"]),
        ("--auth jwt without a key", ["--auth", "jwt"], ["key"]),
        ("--jwt-algorithms none", ["--auth", "jwt", "--jwt-secret-file", k.secret_file,
                                   "--jwt-algorithms", "none"], ["jwt-algorithms"]),
        ("--jwt-algorithms HS999", ["--auth", "jwt", "--jwt-secret-file", k.secret_file,
                                    "--jwt-algorithms", "HS256,HS999"], ["jwt-algorithms"]),
        ("--jwt-algorithms RS256 with only a secret",
         ["--auth", "jwt", "--jwt-secret-file", k.secret_file, "--jwt-algorithms", "RS256"],
         ["jwt-algorithms", "RS256"]),
    ]
    for what, extra, words in bad:
        rc, out = h.run_changegate(["--check-config"] + base + extra)
        low = out.lower()
        if dev.expect(rc == 1, "--check-config with %s exited %d, expected 1: %s", what, rc,
                      out.strip()[-300:]):
            dev.expect(any(wd.lower() in low for wd in words),
                       "--check-config with %s: the output does not say why (%s): %r", what,
                       " or ".join(words), out.strip()[-300:])
            h.say("--check-config rejects %-38s %s", what + ":",
                  out.strip().splitlines()[-1][:90] if out.strip() else "")
    # The same problems stop a real start, before it listens.
    for what, extra, words in (bad[0], bad[2], bad[5]):
        rc, out = h.run_changegate(base + extra, timeout=20)
        dev.expect(rc == 78 and any(wd in out.lower() for wd in words),
                   "a start with %s exited %d (expected 78, EX_CONFIG, saying why): %r", what, rc,
                   out.strip()[-300:])
    h.say("a start with a bad rule, an empty placeholder or a short secret exits 78 saying why")

    # --auth none beyond loopback.
    public = ["--mongo-uri", mongo.uri, "--state-dir", state,
              "--listen", "http://0.0.0.0:%d" % h.free_port()]
    rc, out = h.run_changegate(["--check-config"] + public)
    dev.expect(rc == 1 and "allow-public-unauthenticated" in out,
               "--auth none on 0.0.0.0: --check-config exited %d without naming "
               "--allow-public-unauthenticated: %r", rc, out.strip()[-300:])
    rc, out = h.run_changegate(public, timeout=20)
    dev.expect(rc == 78 and "allow-public-unauthenticated" in out,
               "--auth none on 0.0.0.0: a start exited %d without naming "
               "--allow-public-unauthenticated: %r", rc, out.strip()[-300:])
    h.say("--auth none on 0.0.0.0 is refused without --allow-public-unauthenticated")
    port = h.free_port()
    pub = h.Changegate(sc, mongo.uri, name="changegate-public", args=[
        "--listen", "http://0.0.0.0:%d" % port, "--allow-public-unauthenticated"])
    pub.start()
    st, _, _ = h.request(port, "GET", "/healthz")
    dev.expect(st == 200, "--allow-public-unauthenticated on 0.0.0.0: /healthz %d", st)
    warned = [ln for ln in pub.stderr().splitlines() if " warn: " in ln and
              "unauthenticated" in ln.lower()]
    dev.expect(warned, "--allow-public-unauthenticated: no warning in the log")
    pub.stop()
    h.say("with --allow-public-unauthenticated it starts on 0.0.0.0 and warns: %s",
          warned[0].split(" warn: ", 1)[1][:100] if warned else "(no warning)")


# --------------------------------------------------------------------------- the story

def story(sc):
    keys = tk.Keyring(sc.mkdir("keys"))
    dev = h.Deviations()
    ck = Checker(keys, dev)
    mongo = sc.devmongo()
    w = sc.writer(mongo.uri)
    ip = non_loopback_ipv4()
    fport = h.free_port()
    extra, ipa = ["--listen", "fcgi://127.0.0.1:%d" % fport], None
    if ip:
        ipa = free_port_on(ip)
        extra += ["--listen", "http://%s:%d" % (ip, ipa)]
    cga = h.Changegate(sc, mongo.uri, name="changegate-a", args=jwt_args(keys, extra=extra))
    cga.start()
    h.say("gateway A: --auth jwt (HMAC secret, RSA rs1.pem), rule %s; also FastCGI on :%d%s",
          json.dumps(RULE), fport, " and HTTP on %s:%d" % (ip, ipa) if ip else "")

    p0, _ = admitted(sc, cga, keys, w, ck, dev)
    refusals(cga, keys, ck, p0)
    megabyte_tokens(cga, keys, ck, dev)
    fastcgi(cga, fport, keys, ck, dev, p0)
    cgb = public_keys(sc, mongo, keys, ck, dev, w)
    cgc, ipc = gateway_c(sc, mongo, keys, ck, dev, ip, p0)
    ops_access(cga, cgc, ip, ipa, ipc, dev, keys)
    configuration(sc, mongo, keys, dev)

    # Every token must stay out of the logs (debug level: the most that is ever logged).
    st, _, _ = cga.health()
    h.check(st == 200, "gateway A /healthz %d at the end", st)
    for cg in (cga, cgb, cgc):
        cg.stop()
    pieces = set()
    for t in ck.minted:
        for s in tk.segments(t):
            pieces.add(s[:48])
    for cg in (cga, cgb, cgc):
        log = cg.stderr()
        found = [p for p in pieces if p in log]
        dev.expect(not found, "%s's log holds token text: %d pieces, e.g. %r in %r", cg.name,
                   len(found), found[:1], [ln for ln in log.splitlines()
                                           if found and found[0] in ln][:1])
    h.say("%d tokens sent; no payload or signature of any appears in the three logs (%d, "
          "%d, %d lines)", len(ck.minted), *(len(cg.stderr().splitlines())
                                             for cg in (cga, cgb, cgc)))
    h.check(not dev.items, "%d deviation(s):\n  %s", len(dev.items), "\n  ".join(dev.items))
    h.say("%d refusals checked, all with the expected status, code and a body that echoes "
          "nothing", ck.n)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 180 * h.SLOW))
