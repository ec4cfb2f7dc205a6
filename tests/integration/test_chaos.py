#!/usr/bin/python3
"""Story: everything goes wrong at once, and still no client loses or repeats an event.

1. devmongo (--dbpath: restartable with its oplog) and changegate (--journal-size 500,
   --heartbeat 1, fixed port and --state-dir) start. A pymongo change stream gives the
   start position P0 (an event before every write below).
2. A writer inserts and deletes 20,000 times (CG_CHAOS_WRITES) over about 70 s
   (CG_CHAOS_WRITE_SECONDS), one at a time, spread over 8 collections in 2 databases
   (chaos1/chaos2 . c0..c3): inserts carry a known _id and fields c (collection index),
   kind (a/b/c) and owner (u0..u4); about 1 in 9 writes deletes an earlier document. It
   retries across devmongo restarts idempotently (a duplicate key means "already
   written", a delete that finds nothing means "already deleted"). Then one sentinel
   insert per collection.
3. Meanwhile, every 2-6 s, a random fault: devmongo restarted (SIGTERM, down up to 1.5 s,
   same port and dbpath); changegate SIGKILLed and restarted (same port, same
   --state-dir: it persisted its position at least once a second); failCommand
   closeConnection on getMore ({times: 1..3}); failCommand getMore errors labelled
   ResumableChangeStreamError ({times: 1..2}).
4. 50 clients, each with its own filter (ns=, op=, filter= on the fields written,
   combined), 30 over SSE, 10 NDJSON, 10 long-poll, all starting from P0, keep
   disconnecting (after 0.3-6 s) and reconnecting with their own position (SSE: the
   last id received, heartbeats included; NDJSON: the last event's / heartbeat's
   lastEventId; poll: the answer's lastEventId).
5. After the writes and sentinels, the faults stop; a pymongo change stream from P0 reads
   the authoritative sequence (it must be exactly the planned writes, in order). Each
   client reads until it has its last matching event (at most 60 s more).
6. Each client's sequence must equal exactly the matching writes, in order, each with its
   MongoDB resume token as id: lost = 0, repeated = 0. A client that got a reset is
   accounted for: after a reset naming position X, its events must be exactly the
   matching writes after X (resets are reported). Per-client lines and totals are
   printed, with the seed (CG_CHAOS_SEED reproduces the plan and the fault schedule).
"""
import collections
import http.client
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SEED = int(os.environ.get("CG_CHAOS_SEED") or random.SystemRandom().randrange(1, 10 ** 9))
WRITES = int(os.environ.get("CG_CHAOS_WRITES", "20000"))
WRITE_SECONDS = float(os.environ.get("CG_CHAOS_WRITE_SECONDS", "70"))
JOURNAL = int(os.environ.get("CG_CHAOS_JOURNAL", "500"))
CONVERGE_SECONDS = 60
DBS = ["chaos1", "chaos2"]
COLLS = ["c0", "c1", "c2", "c3"]
NAMESPACES = [(d, c) for d in DBS for c in COLLS]
KINDS = ["a", "b", "c"]
OWNERS = ["u0", "u1", "u2", "u3", "u4"]
SENTINEL_ID = 1000000
# Server errors a write may meet while devmongo shuts down or restarts.
RETRY_CODES = (6, 7, 89, 91, 189, 10107, 11600, 11602, 13435, 13436)


class Violation(Exception):
    """A client saw something the contract forbids (not mere connection trouble)."""


def validated(fn, *args):
    """Run a harness check (check_sse_event, ...) and report a failure as a Violation."""
    try:
        return fn(*args)
    except h.TestFailure as e:
        raise Violation(str(e))


def require(cond, msg, *args):
    if not cond:
        raise Violation(msg % args if args else msg)


def fd(e):
    return e.get("fullDocument") or {}


def dbof(e):
    return (e.get("ns") or {}).get("db")


def collof(e):
    return (e.get("ns") or {}).get("coll")


# (name, query parameters, the same selection in Python over a change event)
FILTERS = [
    ("everything", [], lambda e: True),
    ("ns=chaos1", [("ns", "chaos1")], lambda e: dbof(e) == "chaos1"),
    ("ns=chaos2.c1,chaos1.c3", [("ns", "chaos2.c1,chaos1.c3")],
     lambda e: (dbof(e), collof(e)) in (("chaos2", "c1"), ("chaos1", "c3"))),
    ("ns=chaos2.c0&ns=chaos2.c2", [("ns", "chaos2.c0"), ("ns", "chaos2.c2")],
     lambda e: dbof(e) == "chaos2" and collof(e) in ("c0", "c2")),
    ("op=delete", [("op", "delete")], lambda e: e.get("operationType") == "delete"),
    ("op=insert ns=chaos2", [("op", "insert"), ("ns", "chaos2")],
     lambda e: e.get("operationType") == "insert" and dbof(e) == "chaos2"),
    ("kind=a", [("filter", '{"fullDocument.kind": "a"}')], lambda e: fd(e).get("kind") == "a"),
    ("owner in u1,u3", [("filter", '{"fullDocument.owner": {"$in": ["u1", "u3"]}}')],
     lambda e: fd(e).get("owner") in ("u1", "u3")),
    ("c>=2 or delete",
     [("filter", '{"$or": [{"fullDocument.c": {"$gte": 2}}, {"operationType": "delete"}]}')],
     lambda e: (isinstance(fd(e).get("c"), int) and fd(e)["c"] >= 2)
     or e.get("operationType") == "delete"),
    ("_id in [5000,12000)", [("filter", '{"documentKey._id": {"$gte": 5000, "$lt": 12000}}')],
     lambda e: isinstance((e.get("documentKey") or {}).get("_id"), int)
     and 5000 <= e["documentKey"]["_id"] < 12000),
    ("ns=chaos2 kind=b", [("ns", "chaos2"), ("filter", '{"fullDocument.kind": "b"}')],
     lambda e: dbof(e) == "chaos2" and fd(e).get("kind") == "b"),
    ("op=insert owner=u0", [("op", "insert"), ("filter", '{"fullDocument.owner": "u0"}')],
     lambda e: e.get("operationType") == "insert" and fd(e).get("owner") == "u0"),
    ("ns=chaos1.c0 op=delete,insert", [("ns", "chaos1.c0"), ("op", "delete,insert")],
     lambda e: (dbof(e), collof(e)) == ("chaos1", "c0")
     and e.get("operationType") in ("delete", "insert")),
]


def key_of(e):
    return (dbof(e), collof(e), e.get("operationType"), (e.get("documentKey") or {}).get("_id"))


def make_plan(rng):
    plan, alive = [], {ns: [] for ns in NAMESPACES}
    for k in range(WRITES):
        ns = rng.choice(NAMESPACES)
        if alive[ns] and rng.random() < 0.12:
            _id = alive[ns].pop(rng.randrange(len(alive[ns])))
            plan.append(("delete", ns, _id, None))
        else:
            doc = {"_id": k, "c": NAMESPACES.index(ns), "kind": rng.choice(KINDS),
                   "owner": rng.choice(OWNERS), "n": k}
            plan.append(("insert", ns, k, doc))
            alive[ns].append(k)
    return plan


def sentinels():
    return [("insert", ns, SENTINEL_ID + i, {"_id": SENTINEL_ID + i, "c": i, "kind": "end",
                                             "owner": "end", "sentinel": True})
            for i, ns in enumerate(NAMESPACES)]


class Writer:
    """One write at a time, retried until it is known to have happened exactly once."""

    def __init__(self, uri):
        import pymongo
        import pymongo.errors as pe
        self.pe = pe
        self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000,
                                          connectTimeoutMS=2000, socketTimeoutMS=5000)
        self.retries = 0
        self.dups = 0
        self.missing_deletes = 0

    def do(self, op, deadline):
        kind, (db, coll), _id, doc = op
        c = self.client[db][coll]
        # The plan never inserts an _id twice nor deletes a missing one, so a duplicate
        # key or an empty delete means an earlier attempt (ours, or pymongo's own retry)
        # happened; devmongo's change stream from P0 is compared with the plan at the end.
        while True:
            try:
                if kind == "insert":
                    c.insert_one(doc)
                elif c.delete_one({"_id": _id}).deleted_count == 0:
                    self.missing_deletes += 1
                return
            except self.pe.DuplicateKeyError:
                self.dups += 1
                return
            except (self.pe.ConnectionFailure, self.pe.OperationFailure) as e:
                if isinstance(e, self.pe.OperationFailure) and e.code not in RETRY_CODES:
                    raise
                self.retries += 1
                h.check(time.monotonic() < deadline, "writer: %s.%s %s %r still failing: %r",
                        db, coll, kind, _id, e)
                time.sleep(0.1)

    def close(self):
        self.client.close()


class Client(threading.Thread):
    """One subscriber that keeps disconnecting and reconnecting with its position."""

    def __init__(self, idx, transport, fname, params, pred, port, start, seed):
        super().__init__(name="client-%02d" % idx, daemon=True)
        self.idx, self.transport, self.fname = idx, transport, fname
        self.params, self.pred, self.port = list(params), pred, port
        self.pos = start
        self.rng = random.Random(seed)
        self.items = []             # ("event", key, id) | ("reset", reason, lastEventId)
        self.sessions = 0
        self.heartbeats = 0
        self.transient = collections.Counter()
        self.fatal = None
        self.final_key = None       # set at the end: the last matching write
        self.done = threading.Event()
        self.stop = threading.Event()

    # -- bookkeeping
    def _event(self, ev, pos):
        self.items.append(("event", key_of(ev), pos))
        self.pos = pos
        if self.final_key is not None and key_of(ev) == self.final_key:
            self.done.set()

    def _reset(self, reason, pos):
        self.items.append(("reset", reason, pos))
        self.pos = pos

    def run(self):
        try:
            while not self.stop.is_set() and not self.done.is_set():
                self.sessions += 1
                try:
                    getattr(self, "_session_" + self.transport)()
                except Violation:
                    raise
                except (OSError, http.client.HTTPException, TimeoutError) as e:
                    self.transient[type(e).__name__] += 1
                except h.TestFailure as e:
                    # Connection-level trouble surfaces as TestFailure from the harness
                    # (closed before headers, body cut off): changegate may just have been
                    # killed. Sequences are judged at the end.
                    self.transient["TestFailure: " + str(e)[:60]] += 1
                if not self.done.is_set():
                    self.stop.wait(self.rng.uniform(0.0, 0.4))
        except BaseException as e:  # noqa: B902 - reported by the main thread
            self.fatal = "%s: %s" % (type(e).__name__, e)

    def _session_end(self):
        return time.monotonic() + self.rng.uniform(0.3, 6.0)

    def _over(self, end):
        return time.monotonic() >= end or self.stop.is_set() or self.done.is_set()

    def _session_sse(self):
        s = h.SSEClient(self.port, last_event_id=self.pos, params=self.params,
                        expect_status=None, timeout=5)
        try:
            if s.status != 200:
                self.transient["SSE %d" % s.status] += 1
                require(s.status == 503, "GET /events answered %d", s.status)
                return
            end = self._session_end()
            while not self._over(end):
                try:
                    item = s.next_item(timeout=min(0.5, max(0.01, end - time.monotonic())))
                except TimeoutError:
                    continue
                if item is None:
                    self.transient["SSE ended: %s" % s.end_state] += 1
                    return
                if isinstance(item, h.Message):
                    if item.type == "reset":
                        d = validated(item.json)
                        require(isinstance(d, dict) and item.id_field == d.get("lastEventId"),
                                "reset id %r != data.lastEventId in %r", item.id_field, d)
                        self._reset(d.get("reason"), item.id_field)
                    else:
                        require(item.type == "message", "unexpected `event: %s`", item.type)
                        self._event(validated(h.check_sse_event, item), item.id_field)
                elif isinstance(item, h.IdOnly):
                    self.heartbeats += 1
                    self.pos = item.last_event_id
        finally:
            s.close()

    def _session_ndjson(self):
        qs = h.query(self.params)
        hs = h.HTTPStream(self.port, "/events" + ("?" + qs if qs else ""),
                          {"Accept": "application/x-ndjson", "Last-Event-ID": self.pos})
        try:
            status = hs.read_headers(5)
            if status != 200:
                self.transient["NDJSON %d" % status] += 1
                require(status == 503, "GET /events (NDJSON) answered %d", status)
                return
            buf = bytearray()
            end = self._session_end()
            while not self._over(end):
                try:
                    chunk = hs.read_body(time.monotonic() + 0.5)
                except TimeoutError:
                    continue
                if not chunk:
                    self.transient["NDJSON ended: %s" % hs.end_state] += 1
                    return          # a partial last line is dropped, as a client would
                buf += chunk
                while True:
                    k = buf.find(b"\n")
                    if k < 0:
                        break
                    line = bytes(buf[:k])
                    del buf[:k + 1]
                    if not line.strip():
                        continue
                    try:
                        o = json.loads(line.decode("utf-8"))
                    except ValueError as e:
                        raise Violation("NDJSON line is not JSON (%s): %r" % (e, line[:300]))
                    if h.is_heartbeat(o):
                        self.heartbeats += 1
                        if o.get("lastEventId"):
                            self.pos = o["lastEventId"]
                    elif "reset" in o:
                        r = o["reset"]
                        require(isinstance(r, dict) and r.get("lastEventId"), "bad reset %r", o)
                        self._reset(r.get("reason"), r["lastEventId"])
                    else:
                        self._event(validated(h.check_ndjson_event, o), o["id"])
        finally:
            hs.close()

    def _session_poll(self):
        end = self._session_end()
        while not self._over(end):
            timeout = self.rng.choice([1, 2])
            limit = self.rng.choice([50, 200, 1000])
            qs = h.query([("lastEventId", self.pos), ("timeout", timeout), ("limit", limit)]
                         + self.params)
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout + 10)
            try:
                conn.request("GET", "/poll?" + qs)
                resp = conn.getresponse()
                body = resp.read()
                status = resp.status
            finally:
                conn.close()
            if status == 503:
                self.transient["poll 503"] += 1
                return
            try:
                b = json.loads(body.decode("utf-8"))
            except ValueError:
                raise Violation("/poll answered %d with a body that is not JSON: %r" % (
                    status, body[:300]))
            if status == 410:
                require(b.get("error") == "history_lost" and b.get("lastEventId"),
                        "410 body %r", b)
                self._reset("410 " + b["error"], b["lastEventId"])
                continue
            require(status == 200, "/poll answered %d %r", status, body[:300])
            require(isinstance(b.get("events"), list) and len(b["events"]) <= limit,
                    "/poll answer %r with limit %d", body[:300], limit)
            for ev in b["events"]:
                self._event(ev, validated(h.position_of, ev))
            require(isinstance(b.get("lastEventId"), str) and b["lastEventId"],
                    "/poll answer without lastEventId: %r", body[:300])
            self.pos = b["lastEventId"]
            if not b["events"]:
                continue
            time.sleep(self.rng.uniform(0.05, 0.3))


def judge(c, expected, tok_of):
    """Compare a client's items with the expected [(token, key)]; returns a summary dict."""
    exp_keys = [k for _, k in expected]
    segs, cur, start = [], [], None
    for it in c.items:
        if it[0] == "reset":
            segs.append((start, cur))
            cur, start = [], it
        else:
            cur.append(it)
    segs.append((start, cur))
    res = {"expected": len(exp_keys), "got": sum(len(s) for _, s in segs),
           "lost": 0, "repeated": 0, "unexpected": 0, "bad_ids": 0, "order": 0,
           "resets": len(segs) - 1, "reasons": collections.Counter(), "first_problem": None}
    for i, (reset, seg) in enumerate(segs):
        final = i == len(segs) - 1
        if reset is None:
            window = exp_keys
        else:
            res["reasons"][reset[1]] += 1
            x = reset[2] or ""
            window = [k for t, k in expected if t > x]
        got = [k for _, k, _ in seg]
        for _, k, pos in seg:
            if tok_of.get(k) != pos:
                res["bad_ids"] += 1
        counts = collections.Counter(got)
        res["repeated"] += sum(n - 1 for n in counts.values() if n > 1)
        wset = set(window)
        res["unexpected"] += sum(1 for k in counts if k not in wset)
        want = window if final else window[:len(got)]
        if final:
            gset = set(got)
            res["lost"] += sum(1 for k in window if k not in gset)
        if got != want and res["first_problem"] is None:
            j = next((n for n, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
            res["order"] += 1
            res["first_problem"] = "segment %d (after %s): at index %d got %r, expected %r" % (
                i, "P0" if reset is None else "reset %s %s" % (reset[1], reset[2]), j,
                got[j:j + 2], want[j:j + 2])
    return res


def story(sc):
    h.say("seed %d (CG_CHAOS_SEED=%d reproduces the plan and the fault schedule); %d writes "
          "over ~%.0fs", SEED, SEED, WRITES, WRITE_SECONDS)
    plan = make_plan(random.Random(SEED)) + sentinels()
    mongo = sc.devmongo(dbpath=sc.mkdir("devmongo-db"))
    cg = sc.changegate(mongo.uri, args=["--journal-size", str(JOURNAL), "--heartbeat", "1",
                                        "--max-subscribers", "500"])
    p0 = h.wait_devmongo_token(mongo.uri, db="chaosm", coll="marker")
    h.say("P0 = %s", p0)

    clients = []
    for i in range(50):
        fname, params, pred = FILTERS[i % len(FILTERS)]
        transport = ("sse", "sse", "sse", "ndjson", "poll")[i % 5]
        clients.append(Client(i, transport, fname, params, pred, cg.port, p0, SEED + 100 + i))
    for c in clients:
        c.start()

    writer = Writer(mongo.uri)
    sc.closers.append(writer.close)
    writes_done = threading.Event()

    def write_all():
        t0 = time.monotonic()
        for k, op in enumerate(plan[:WRITES]):
            delay = t0 + k * WRITE_SECONDS / WRITES - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            writer.do(op, time.monotonic() + 60)
        writes_done.set()
        return time.monotonic() - t0

    faults = collections.Counter()

    def chaos():
        rng = random.Random(SEED + 1)
        kinds = ["devmongo restart", "changegate SIGKILL", "getMore closeConnection",
                 "getMore ResumableChangeStreamError"]
        while not writes_done.wait(rng.uniform(2.0, 6.0)):
            kind = rng.choice(kinds)
            faults[kind] += 1
            if kind == "devmongo restart":
                h.say("fault: devmongo restart")
                mongo.restart(down=rng.uniform(0.0, 1.5))
            elif kind == "changegate SIGKILL":
                h.say("fault: changegate SIGKILL")
                cg.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                cg.start()
            elif kind == "getMore closeConnection":
                n = rng.randint(1, 3)
                h.say("fault: failCommand getMore closeConnection x%d", n)
                h.fail_command(mongo.uri, {"times": n}, failCommands=["getMore"],
                               closeConnection=True)
            else:
                n = rng.randint(1, 2)
                code = rng.choice([6, 91, 189])
                h.say("fault: failCommand getMore error %d ResumableChangeStreamError x%d",
                      code, n)
                h.fail_command(mongo.uri, {"times": n}, failCommands=["getMore"],
                               errorCode=code, errorLabels=["ResumableChangeStreamError"])

    wt = sc.thread(write_all)
    ct = sc.thread(chaos)
    took = wt.join(WRITE_SECONDS + 120)
    ct.join(60)
    h.fail_command(mongo.uri, "off")
    h.say("%d writes in %.1fs (%d retried, %d duplicate keys, %d deletes already done); "
          "faults: %s", WRITES, took, writer.retries, writer.dups, writer.missing_deletes,
          dict(faults))
    for op in plan[WRITES:]:
        writer.do(op, time.monotonic() + 30)
    h.say("one sentinel per collection written")

    # 5. The authoritative sequence.
    import pymongo
    mc = pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=15000)
    events = []
    with mc.watch(resume_after={"_data": p0}, batch_size=1000, max_await_time_ms=200) as cs:
        deadline = time.monotonic() + 60 * h.SLOW
        while len(events) < len(plan):
            h.check(time.monotonic() < deadline, "authoritative stream: %d of %d events",
                    len(events), len(plan))
            ev = cs.try_next()
            if ev is not None:
                events.append(ev)
        ev = cs.try_next()
        h.check(ev is None, "authoritative stream: an event beyond the plan: %r", ev)
    mc.close()
    want_keys = [(ns[0], ns[1], kind, _id) for kind, ns, _id, _ in plan]
    h.check_sequence([key_of(e) for e in events], want_keys,
                     "devmongo's own change stream vs the planned writes (writer or devmongo "
                     "problem, not changegate's)")
    tok_of = {key_of(e): e["_id"]["_data"] for e in events}
    h.say("authoritative stream from P0: exactly the %d planned writes", len(events))

    expected = {}
    for c in clients:
        exp = [(e["_id"]["_data"], key_of(e)) for e in events if c.pred(e)]
        expected[c.idx] = exp
        if exp:
            c.final_key = exp[-1][1]
            if any(it[0] == "event" and it[1] == c.final_key for it in list(c.items)):
                c.done.set()
        else:
            c.done.set()
    deadline = time.monotonic() + CONVERGE_SECONDS * h.SLOW
    for c in clients:
        c.done.wait(max(0.0, deadline - time.monotonic()))
    for c in clients:
        c.stop.set()
    for c in clients:
        c.join(15)
    h.say("clients stopped (%d of %d reached their last matching event)",
          sum(1 for c in clients if c.done.is_set()), len(clients))

    # 6. Verdict.
    totals = collections.Counter()
    reasons = collections.Counter()
    failed = []
    for c in clients:
        r = judge(c, expected[c.idx], tok_of)
        reasons.update(r["reasons"])
        for k in ("expected", "got", "lost", "repeated", "unexpected", "bad_ids", "resets"):
            totals[k] += r[k]
        totals["sessions"] += c.sessions
        totals["heartbeats"] += c.heartbeats
        bad = (r["lost"] or r["repeated"] or r["unexpected"] or r["bad_ids"] or r["order"]
               or c.fatal or c.is_alive())
        print("  client %02d %-6s %-30s expected %5d got %5d lost %d repeated %d unexpected %d "
              "bad-ids %d resets %d sessions %3d heartbeats %3d%s%s" % (
                  c.idx, c.transport, c.fname, r["expected"], r["got"], r["lost"],
                  r["repeated"], r["unexpected"], r["bad_ids"], r["resets"], c.sessions,
                  c.heartbeats, "  FAIL" if bad else "",
                  "  (%s)" % (c.fatal or r["first_problem"] or "") if bad else ""), flush=True)
        if bad:
            failed.append((c, r))
    transient = collections.Counter()
    for c in clients:
        transient.update(c.transient)
    h.say("totals: %s; resets by reason: %s", dict(totals), dict(reasons) or "none")
    h.say("connection trouble seen by clients (expected under faults): %s",
          dict(transient.most_common(12)))
    try:
        status, _, body = cg.health(timeout=5)
        h.say("changegate /healthz at the end: %d %s", status, body[:200])
    except OSError as e:
        status = None
        h.say("changegate /healthz at the end: no answer within 5 s (%r): hung?", e)
    h.check(not failed, "%d of %d clients did not get exactly their matching writes: %s",
            len(failed), len(clients), "; ".join(
                "client %02d (%s, %s): %s" % (c.idx, c.transport, c.fname,
                                              c.fatal or r["first_problem"] or
                                              "lost %d repeated %d" % (r["lost"], r["repeated"]))
                for c, r in failed[:5]))
    h.check(status == 200, "changegate's /healthz answered %s at the end", status)
    h.say("every client got exactly its matching writes: lost 0, repeated 0 (%d resets "
          "accounted for)", totals["resets"])


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 180 * h.SLOW))
