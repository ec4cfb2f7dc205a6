#!/usr/bin/python3
"""Story: 200 users, each subscribed with their own token, while 20,000 writes of every
kind flow across them: every user receives exactly the changes to their own documents,
deletes included, and not one change of anyone else's.

1. devmongo starts; leak.orders and leak.inventory are created with
   changeStreamPreAndPostImages enabled (so deletes carry the document as it was, and
   updates the document as it became), leak.plain without. changegate runs with --auth
   jwt (an HS256 secret), --auth-rule {"fullDocument.owner_id": "$$jwt.sub"}, --jwt-cookie,
   --full-document whenAvailable and --full-document-before-change whenAvailable: every
   event's subject (fullDocument, else fullDocumentBeforeChange) is the document as of
   that write, so what each user must get follows from the writes alone (with
   updateLookup an update's fullDocument is whatever the document is when the watcher
   reads it, which an owner change right after would make a race).
2. 200 users u000..u199, each with a token minted by PyJWT (sub = the user): 120 SSE
   streams with the token in the Authorization header, 20 with it in the cookie, 20 with
   ?access_token= (20 of these 160 add a subscriber filter that would widen the rule if
   it were ORed instead of ANDed: the neighbour's documents, every delete), 20 NDJSON
   streams and 20 long-poll loops (each with a position taken before the first write).
   The 180 streams are raw sockets driven by one epoll loop (harness RawSSE / pump).
3. A writer makes 20,000 writes (seeded; CG_LEAK_SEED reproduces, CG_LEAK_WRITES changes
   the count): inserts, updates ($set, some moving a document to another owner),
   replacements (some to another owner) and deletes, over the three collections, then
   drops leak.plain, then inserts one sentinel document per user. Each write gives the
   event its subject implies: in leak.orders / leak.inventory every write goes to the
   owner the document has after it (deletes: the owner it had); in leak.plain inserts
   and replacements go to their owner, while updates and deletes have no subject
   (fullDocument null, no pre-image) and go to no one, like the drop.
4. Every user reads until their sentinel: the events they received are exactly the
   expected ones (by collection, document and version), in position order, none
   repeated, and not one has another user's document as its subject; every delete went
   to its owner and to no one else; no stream saw a reset or ended. The sum of
   /metrics changegate_deliveries_total equals what the 200 clients received.
"""
import json
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tokens as tk  # noqa: E402

USERS = 200
WRITES = int(os.environ.get("CG_LEAK_WRITES", "20000"))
SEED = int(os.environ.get("CG_LEAK_SEED") or random.SystemRandom().randrange(1, 10 ** 9))
RULE = {"fullDocument.owner_id": "$$jwt.sub"}
IMAGED = ("orders", "inventory")
DB = "leak"


class User:
    def __init__(self, i, token):
        self.i = i
        self.name = "u%03d" % i
        self.token = token
        self.kind = "sse"         # sse | ndjson | poll
        self.how = "header"       # header | cookie | param
        self.filter = None
        self.expected = set()
        self.got = []             # keys in arrival order
        self.seen = set()
        self.repeats = []
        self.foreign = []         # (key, owner) of events about someone else's document
        self.deletes = 0
        self.last_pos = ""
        self.order_errors = []
        self.errors = []
        self.done = False
        self.ready = False
        self.conn = None

    def add(self, ev, pos):
        if self.done:
            self.errors.append("an event after the sentinel: %r" % (str(ev)[:200],))
            return
        if pos <= self.last_pos:
            self.order_errors.append((self.last_pos, pos))
        self.last_pos = pos
        subject = ev.get("fullDocument") or ev.get("fullDocumentBeforeChange")
        coll = (ev.get("ns") or {}).get("coll")
        op = ev.get("operationType")
        doc_id = (ev.get("documentKey") or {}).get("_id")
        if not isinstance(subject, dict):
            self.errors.append("an event without a subject was delivered: %r" % (
                str(ev)[:300],))
            return
        key = (coll, doc_id, "del" if op == "delete" else subject.get("v"))
        owner = subject.get("owner_id")
        if owner != self.name:
            self.foreign.append((key, op, owner))
        if key in self.seen:
            self.repeats.append(key)
        self.seen.add(key)
        self.got.append(key)
        if op == "delete":
            self.deletes += 1
        if subject.get("sentinel"):
            self.done = True


SSE_BLOCK_FIELD = re.compile(rb"^(event|id|data|retry): ?(.*)$")


def on_sse(conn, data):
    u = conn.tag
    for block in data.split(b"\n\n"):
        if not block:
            continue
        fields = {}
        for ln in block.split(b"\n"):
            if ln.startswith(b":"):
                continue
            m = SSE_BLOCK_FIELD.match(ln)
            if m:
                fields[m.group(1)] = m.group(2)
            elif ln:
                u.errors.append("unexpected SSE line %r" % ln[:100])
        if b"data" not in fields:
            continue                          # a comment, a heartbeat, the preamble
        if b"event" in fields:
            u.errors.append("a named SSE message: %r" % block[:300])
            continue
        try:
            ev = json.loads(fields[b"data"])
        except ValueError:
            u.errors.append("SSE data is not JSON: %r" % fields[b"data"][:200])
            continue
        pos = fields.get(b"id", b"").decode()
        if pos != ev.get("_id", {}).get("_data"):
            u.errors.append("SSE id %r is not the event's token" % pos)
        u.add(ev, pos)


class RawNDJSON(h.RawSSE):
    """RawSSE's socket and HTTP decoding, handing over complete lines instead of blocks."""

    def take(self):
        k = self.body.rfind(b"\n")
        if k < 0:
            return b""
        out = bytes(self.body[:k + 1])
        del self.body[:k + 1]
        return out


def on_ndjson(conn, data):
    u = conn.tag
    for ln in data.split(b"\n"):
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except ValueError:
            u.errors.append("NDJSON line is not JSON: %r" % ln[:200])
            continue
        if h.is_heartbeat(obj):
            u.ready = True
            continue
        if set(obj) != {"id", "event"}:
            u.errors.append("NDJSON line that is not an event: %r" % ln[:300])
            continue
        if obj["id"] != obj["event"].get("_id", {}).get("_data"):
            u.errors.append("NDJSON id %r is not the event's token" % obj["id"])
        u.add(obj["event"], obj["id"])


def on_data(conn, data):
    u = conn.tag
    if u.kind == "ndjson":
        on_ndjson(conn, data)
    else:
        u.ready = True                         # the preamble, at least
        on_sse(conn, data)


class Live:
    """The live documents of one collection: random choice and removal in O(1)."""

    def __init__(self):
        self.ids = []
        self.where = {}
        self.state = {}           # _id -> [owner, version]

    def __len__(self):
        return len(self.ids)

    def add(self, _id, owner):
        self.where[_id] = len(self.ids)
        self.ids.append(_id)
        self.state[_id] = [owner, 0]

    def pick(self, rng):
        return self.ids[rng.randrange(len(self.ids))]

    def remove(self, _id):
        k = self.where.pop(_id)
        last = self.ids.pop()
        if last != _id:
            self.ids[k] = last
            self.where[last] = k
        del self.state[_id]


def plan_writes(rng, n):
    """The writes, each with the (coll, _id, version or "del") key of the event it causes
    and the user who must receive it (None: no one)."""
    live = {c: Live() for c in IMAGED + ("plain",)}
    next_id = 1
    ops = []
    users = ["u%03d" % i for i in range(USERS)]
    for _ in range(n):
        coll = rng.choices(("orders", "inventory", "plain"), (45, 45, 10))[0]
        docs = live[coll]
        r = rng.random()
        if not len(docs) or r < 0.35:
            owner = rng.choice(users)
            _id = next_id
            next_id += 1
            docs.add(_id, owner)
            doc = {"_id": _id, "owner_id": owner, "v": 0, "qty": rng.randrange(100)}
            ops.append(("insert", coll, _id, doc, (coll, _id, 0), owner))
            continue
        _id = docs.pick(rng)
        owner, v = docs.state[_id]
        if r < 0.65:
            new_owner = rng.choice(users) if rng.random() < 0.05 else owner
            upd = {"$set": {"v": v + 1, "qty": rng.randrange(100)}}
            if new_owner != owner:
                upd["$set"]["owner_id"] = new_owner
            docs.state[_id] = [new_owner, v + 1]
            to = new_owner if coll in IMAGED else None
            ops.append(("update", coll, _id, upd, (coll, _id, v + 1), to))
        elif r < 0.80:
            new_owner = rng.choice(users) if rng.random() < 0.3 else owner
            doc = {"owner_id": new_owner, "v": v + 1, "qty": rng.randrange(100),
                   "replaced": True}
            docs.state[_id] = [new_owner, v + 1]
            ops.append(("replace", coll, _id, doc, (coll, _id, v + 1), new_owner))
        else:
            docs.remove(_id)
            to = owner if coll in IMAGED else None
            ops.append(("delete", coll, _id, None, (coll, _id, "del"), to))
    return ops


def write_all(w, ops, progress):
    db = w.client[DB]
    for k, (op, coll, _id, body, _, _) in enumerate(ops):
        c = db[coll]
        if op == "insert":
            c.insert_one(body)
        elif op == "update":
            r = c.update_one({"_id": _id}, body)
            h.check(r.matched_count == 1, "update of %s %s matched nothing", coll, _id)
        elif op == "replace":
            r = c.replace_one({"_id": _id}, body)
            h.check(r.matched_count == 1, "replace of %s %s matched nothing", coll, _id)
        else:
            r = c.delete_one({"_id": _id})
            h.check(r.deleted_count == 1, "delete of %s %s deleted nothing", coll, _id)
        progress[0] = k + 1
    db["plain"].drop()
    for i in range(USERS):
        db["orders"].insert_one({"_id": "sentinel-%03d" % i, "owner_id": "u%03d" % i,
                                 "v": 0, "sentinel": True})
    progress[0] = len(ops) + 1


def poll_loop(port, u, ready_sem, go, deadline):
    hdrs = {"Authorization": "Bearer " + u.token}
    st, body, _ = h.poll(port, timeout=0, headers=hdrs)
    h.check(st == 200 and isinstance(body, dict) and body.get("lastEventId"),
            "%s: the first poll answered %d %r", u.name, st, body)
    pos = body["lastEventId"]
    u.ready = True
    ready_sem.release()
    go.wait(60 * h.SLOW)
    while not u.done:
        h.check(time.monotonic() < deadline, "%s: poll loop still short of its sentinel "
                "(%d events so far)", u.name, len(u.got))
        st, body, _ = h.poll(port, lastEventId=pos, timeout=5, limit=1000, headers=hdrs)
        h.check(st == 200, "%s: a poll answered %d %r", u.name, st, str(body)[:300])
        for ev in body["events"]:
            u.add(ev, h.position_of(ev))
        pos = body["lastEventId"]


def story(sc):
    h.raise_nofile(USERS * 2 + 500)
    rng = random.Random(SEED)
    h.say("seed %d (CG_LEAK_SEED=%d reproduces): %d users, %d writes", SEED, SEED, USERS, WRITES)
    keys = tk.Keyring(sc.mkdir("keys"))
    mongo = sc.devmongo()
    w = sc.writer(mongo.uri)
    db = w.client[DB]
    for c in IMAGED:
        db.create_collection(c, changeStreamPreAndPostImages={"enabled": True})
    db.create_collection("plain")
    cg = sc.changegate(mongo.uri, args=[
        "--auth", "jwt", "--jwt-secret-file", keys.secret_file,
        "--jwt-audience", tk.AUDIENCE, "--jwt-issuer", tk.ISSUER, "--jwt-cookie", tk.COOKIE,
        "--auth-rule", json.dumps(RULE),
        "--full-document", "whenAvailable", "--full-document-before-change", "whenAvailable",
        "--max-subscribers", str(USERS + 100), "--journal-size", str(WRITES + 5000),
        "--heartbeat", "5"])

    users = []
    for i in range(USERS):
        users.append(User(i, keys.hs(tk.Keyring.claims("u%03d" % i, ttl=3600))))
    for u in users:
        if u.i % 10 == 0:
            u.kind = "ndjson"
        elif u.i % 10 == 5:
            u.kind = "poll"
        elif u.i % 10 == 3:
            u.how = "cookie"
        elif u.i % 10 == 7:
            u.how = "param"
        if u.kind == "sse" and u.i % 20 in (1, 2):
            other = "u%03d" % ((u.i + 1) % USERS)
            # ORed with the rule these would show the neighbour's changes and every delete;
            # ANDed they leave the user's own events exactly.
            u.filter = ({"$or": [{"fullDocument.owner_id": other},
                                 {"fullDocumentBeforeChange.owner_id": other},
                                 {"operationType": "delete"},
                                 {"fullDocument.owner_id": u.name}]} if u.i % 20 == 1 else
                        {"operationType": {"$in": ["insert", "update", "replace", "delete"]}})

    ops = plan_writes(rng, WRITES)
    by_name = {u.name: u for u in users}
    counts = {}
    no_one = 0
    deletes_to = 0
    for op, coll, _id, _, key, to in ops:
        counts[op] = counts.get(op, 0) + 1
        if to is None:
            no_one += 1
            continue
        by_name[to].expected.add(key)
        deletes_to += op == "delete"
    for u in users:
        u.expected.add(("orders", "sentinel-%03d" % u.i, 0))
    expected_total = sum(len(u.expected) for u in users)
    h.say("planned: %s; %d events go to no one (leak.plain updates and deletes, the drop "
          "too); %d deliveries expected, %d of them deletes", counts, no_one + 1,
          expected_total, deletes_to)

    # 2. Subscribe everyone.
    streams = []
    for u in users:
        if u.kind == "poll":
            continue
        params = []
        hdrs = {}
        if u.filter is not None:
            params.append(("filter", json.dumps(u.filter)))
        if u.how == "header":
            hdrs["Authorization"] = "Bearer " + u.token
        elif u.how == "cookie":
            hdrs["Cookie"] = "lang=en; %s=%s" % (tk.COOKIE, u.token)
        else:
            params.append(("access_token", u.token))
        path = "/events" + ("?" + h.query(params) if params else "")
        if u.kind == "ndjson":
            hdrs["Accept"] = "application/x-ndjson"
            u.conn = RawNDJSON(cg.port, path, headers=hdrs, tag=u)
        else:
            u.conn = h.RawSSE(cg.port, path, headers=hdrs, tag=u)
        sc.closers.append(u.conn.close)
        streams.append(u.conn)
    left = h.pump(streams, on_data, lambda c: c.tag.ready or c.status not in (None, 200),
                  30 * h.SLOW)
    bad = [c.tag.name for c in streams if c.status != 200]
    h.check(not bad, "%d streams were not admitted: %s (statuses %r)", len(bad), bad[:5],
            sorted({c.status for c in streams}))
    h.check(not left, "%d streams sent nothing within 30 s of opening", len(left))

    ready_sem = threading.Semaphore(0)
    go = threading.Event()
    deadline = time.monotonic() + 150 * h.SLOW
    pollers = [u for u in users if u.kind == "poll"]
    for u in pollers:
        sc.thread(poll_loop, cg.port, u, ready_sem, go, deadline, name="poll-" + u.name)
    for _ in pollers:
        h.check(ready_sem.acquire(timeout=30 * h.SLOW), "a poll client got no first answer")
    health = h.wait_until(lambda: (lambda b: b if b and b.get("subscribers", 0) >= len(streams)
                                   else None)(cg.health_json()[1]), 20 * h.SLOW,
                          "/healthz to count the %d streams" % len(streams))
    h.say("%d streams (%d SSE: %d header, %d cookie, %d access_token, %d with a widening "
          "filter; %d NDJSON) and %d poll loops subscribed; /healthz counts %d",
          len(streams), sum(u.kind == "sse" for u in users),
          sum(u.kind == "sse" and u.how == "header" for u in users),
          sum(u.kind == "sse" and u.how == "cookie" for u in users),
          sum(u.kind == "sse" and u.how == "param" for u in users),
          sum(u.filter is not None for u in users), sum(u.kind == "ndjson" for u in users),
          len(pollers), health["subscribers"])

    # 3. Write while everyone reads.
    progress = [0]
    go.set()
    t0 = time.monotonic()
    writer = sc.thread(write_all, w, ops, progress, name="writer")
    samples = []

    def tick():
        samples.append(progress[0])

    left = h.pump(streams, on_data, lambda c: c.tag.done or bool(c.tag.errors),
                  max(1.0, deadline - time.monotonic()), tick=tick, tick_every=5.0)
    writer.join(60 * h.SLOW)
    took = time.monotonic() - t0
    for t in sc.threads:
        if t.name.startswith("poll-"):
            t.join(max(1.0, deadline - time.monotonic()) + 10)
    h.say("%d writes and %d sentinels in %.1fs (writer progress every 5 s: %s)", WRITES,
          USERS, took, samples)

    # 4. Verdict.
    problems = []
    leaks = 0
    for u in users:
        if u.foreign:
            leaks += len(u.foreign)
            problems.append("%s (%s) received %d events about other users' documents, e.g. "
                            "%r" % (u.name, u.kind, len(u.foreign), u.foreign[:3]))
        if u.errors:
            problems.append("%s (%s): %s" % (u.name, u.kind, "; ".join(u.errors[:3])))
        if not u.done:
            problems.append("%s (%s) never got its sentinel (%d events; stream %s)" % (
                u.name, u.kind, len(u.got), u.conn.end_state if u.conn else "poll"))
        if u.repeats:
            problems.append("%s (%s) got %d events twice, e.g. %r" % (
                u.name, u.kind, len(u.repeats), u.repeats[:3]))
        if u.order_errors:
            problems.append("%s: positions out of order %r" % (u.name, u.order_errors[:2]))
        missing = u.expected - u.seen
        extra = u.seen - u.expected
        if missing or extra:
            problems.append("%s (%s): %d missing %r, %d unexpected %r" % (
                u.name, u.kind, len(missing), sorted(missing, key=str)[:4], len(extra),
                sorted(extra, key=str)[:4]))
    for p in problems[:25]:
        h.say("  %s", p)
    h.check(leaks == 0, "LEAK: %d events reached users who do not own their document" % leaks)
    h.check(not problems, "%d users did not get exactly their events (first: %s)",
            len(problems), problems[0] if problems else "")
    received = sum(len(u.got) for u in users)
    deletes = sum(u.deletes for u in users)
    h.check(received == expected_total, "received %d events in all, expected %d", received,
            expected_total)
    h.check(deletes == deletes_to, "%d deletes delivered, %d expected", deletes, deletes_to)
    h.say("all %d users got exactly their events: %d deliveries (%d deletes, each to its "
          "owner only), zero about anyone else's documents", USERS, received, deletes)

    m = cg.metrics()
    sent = m.total("changegate_deliveries_total")
    h.check(sent == received, "changegate_deliveries_total sums to %s, the clients received %d",
            sent, received)
    h.check(m.total("changegate_resets_total") == 0, "resets: %s",
            m.total("changegate_resets_total"))
    # Every subscriber is found by the rule's equality on sub, none is scanned: an event
    # costs its owner's subscribers, not 200 filter evaluations.
    h.check(m.value("changegate_subscribers_scanned") == 0
            and m.value("changegate_subscribers_indexed") >= len(streams),
            "the matching index: %s indexed, %s scanned; every rule-bound subscriber should "
            "be indexed", m.value("changegate_subscribers_indexed"),
            m.value("changegate_subscribers_scanned"))
    h.say("/metrics: %d deliveries, no resets; %d subscribers indexed by the rule, none "
          "scanned", sent, m.value("changegate_subscribers_indexed"))
    for c in streams:
        c.close()


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 180 * h.SLOW))
