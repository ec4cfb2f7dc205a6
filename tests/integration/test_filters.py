#!/usr/bin/python3
"""Story: subscribers with `ns` and `op` filters get exactly the matching events.

1. devmongo and changegate (watching the whole deployment) start. Eleven SSE
   subscribers open /events with different filters (ns alone, op alone, both, ns
   repeated, ns comma-separated, op comma-separated, and near-miss names: db `shopping`
   next to `shop`, collection `ordersarchive` next to `orders`); one NDJSON and one
   long-poll client use filters too.
2. Inserts, updates, replaces and deletes go to six namespaces, interleaved.
3. The expected sequence for each filter is computed from the write log alone (not from
   what the server sent); each subscriber must receive exactly that sequence of
   (db, coll, operationType, documentKey._id), in write order, and nothing else.
4. A filtered subscriber resuming (from a position it never saw, then from its own last
   id) gets exactly the rest of its matches; one connecting without a position gets none
   of the old events.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NAMESPACES = [("shop", "orders"), ("shop", "ordersarchive"), ("shop", "users"),
              ("shopping", "orders"), ("inventory", "items"), ("other", "log")]

FILTERS = {
    "ns=shop": [("ns", "shop")],
    "ns=shop.orders": [("ns", "shop.orders")],
    "ns repeated": [("ns", "shop.orders"), ("ns", "inventory.items")],
    "ns comma": [("ns", "shop.users,inventory")],
    "ns=shopping": [("ns", "shopping")],
    "op=insert": [("op", "insert")],
    "op comma": [("op", "update,delete")],
    "op=replace": [("op", "replace")],
    "ns+op": [("ns", "shop"), ("op", "delete")],
    "ns comma+op comma": [("ns", "inventory.items,other"), ("op", "insert,update")],
    "none": [],
}


def ns_matches(spec_values, db, coll):
    specs = [s for v in spec_values for s in v.split(",")]
    for s in specs:
        if "." in s:
            sdb, scoll = s.split(".", 1)
            if sdb == db and scoll == coll:
                return True
        elif s == db:
            return True
    return False


def expected_for(params, log):
    nss = [v for k, v in params if k == "ns"]
    ops = [o for k, v in params if k == "op" for o in v.split(",")]
    return [e for e in log
            if (not nss or ns_matches(nss, e[0], e[1])) and (not ops or e[2] in ops)]


def do_writes(w):
    """Interleaved CRUD on every namespace; returns the log (db, coll, op, _id)."""
    log = []
    colls = {ns: w.coll(*ns) for ns in NAMESPACES}
    for rnd in range(6):
        for i, ns in enumerate(NAMESPACES):
            c = colls[ns]
            _id = rnd * 10 + i
            c.insert_one({"_id": _id, "v": 0, "ns": "%s.%s" % ns})
            log.append(ns + ("insert", _id))
            if rnd >= 1 and (rnd + i) % 2 == 0:
                prev = (rnd - 1) * 10 + i
                c.update_one({"_id": prev}, {"$set": {"v": rnd}, "$inc": {"n": 1}})
                log.append(ns + ("update", prev))
            if rnd >= 2 and (rnd + i) % 3 == 0:
                prev = (rnd - 2) * 10 + i
                c.replace_one({"_id": prev}, {"replaced": True, "v": rnd})
                log.append(ns + ("replace", prev))
            if rnd >= 3 and (rnd + i) % 2 == 1:
                prev = (rnd - 3) * 10 + i
                r = c.delete_one({"_id": prev})
                h.check(r.deleted_count == 1, "delete of %r in %s.%s removed %d documents",
                        prev, ns[0], ns[1], r.deleted_count)
                log.append(ns + ("delete", prev))
    return log


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)

    subs = {name: sc.track(cg.sse(params=params)) for name, params in FILTERS.items()}
    nd_params = [("ns", "shop"), ("op", "insert,replace")]
    nd = sc.track(cg.ndjson(params=nd_params))
    poll_params = [("ns", "shop.users"), ("ns", "other.log"), ("op", "delete,update")]
    status, first, _ = cg.poll(timeout=1, params=poll_params)
    h.check(status == 200 and first["events"] == [], "initial filtered poll: %d %r", status, first)
    h.say("%d filtered SSE subscribers, 1 NDJSON, 1 long-poll", len(subs))

    w = sc.writer(mongo.uri)
    log = do_writes(w)
    counts = {}
    for e in log:
        counts[e[2]] = counts.get(e[2], 0) + 1
    h.say("wrote %d changes: %s", len(log), counts)
    h.check(all(counts.get(op) for op in ("insert", "update", "replace", "delete")),
            "the write plan should cover every CRUD operation: %r", counts)

    seen = {}
    for name, params in FILTERS.items():
        want = expected_for(params, log)
        h.check(want or name == "ns=shopping", "filter %s expects nothing: bad plan", name)
        got = subs[name].read_messages(len(want), timeout=20)
        got += subs[name].drain(0.5)     # anything extra the filter should have dropped
        keys = [h.key_of(h.check_sse_event(m)) for m in got]
        h.check_sequence(keys, want, "SSE filter %s %s" % (name, params))
        seen[name] = got
        h.say("SSE %-18s -> %3d events, exactly the expected ones", name, len(want))

    # A filtered subscriber that resumes from the first event's position, reads half of
    # its matches, leaves and resumes with its last id gets exactly the rest of its
    # matches (positions of events it never saw lie between them).
    params = FILTERS["ns comma+op comma"]
    want = expected_for(params, log[1:])
    k = len(want) // 2
    late = sc.track(cg.sse(params=params))       # connected after the writes: nothing old
    s1 = sc.track(cg.sse(params=params, last_event_id=seen["none"][0].id))
    got1 = s1.read_messages(k)
    s1.close()
    s2 = sc.track(cg.sse(params=params, last_event_id=got1[-1].id))
    got2 = s2.read_messages(len(want) - k) + s2.drain(0.3)
    h.check_sequence([h.key_of(h.check_sse_event(m)) for m in got1 + got2], want,
                     "filter %s resumed in two parts" % params)
    stray = late.drain(0.3)
    h.check(not stray, "a filtered subscriber without a position got old events: %r", stray[:3])
    h.say("a filtered subscriber resumed in two parts got exactly its %d matches", len(want))

    want = expected_for(nd_params, log)
    objs = nd.read_events(len(want))
    keys = [h.key_of(h.check_ndjson_event(o)) for o in objs]
    h.check_sequence(keys, want, "NDJSON filter %s" % nd_params)
    h.say("NDJSON %s -> %d events, exactly the expected ones", nd_params, len(want))

    want = expected_for(poll_params, log)
    got, pos = [], first["lastEventId"]
    deadline = time.monotonic() + 30 * h.SLOW
    while len(got) < len(want) and time.monotonic() < deadline:
        status, body, _ = cg.poll(lastEventId=pos, timeout=2, params=poll_params)
        h.check(status == 200, "filtered poll answered %d: %r", status, body)
        got += body["events"]
        pos = body["lastEventId"]
    status, body, _ = cg.poll(lastEventId=pos, timeout=1, params=poll_params)
    got += body["events"]
    h.check_sequence([h.key_of(e) for e in got], want, "long-poll filter %s" % poll_params)
    h.say("long-poll %s -> %d events, exactly the expected ones", poll_params, len(want))


if __name__ == "__main__":
    h.run(story)
