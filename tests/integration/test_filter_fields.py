#!/usr/bin/python3
"""Story: subscribers with MongoDB query filters and projections on one gateway.

1. devmongo and changegate (watching the whole deployment) start. One subscriber
   takes everything: the reference. A dozen more subscribe with `filter` queries
   (equality, ranges, $in/$nin, $or, $regex, $size, $elemMatch, $exists, $type,
   paths into updateDescription), the `id` and `op` shorthands, and `fields`
   projections; over SSE, NDJSON and long-poll.
2. Orders are inserted, updated and deleted in shop.orders and shop.returns.
3. What each subscriber must get is computed independently: every event of the
   reference stream is tested with mongomock's implementation of MongoDB queries
   (not changegate's), and projected in Python. Each subscriber receives exactly
   those events, in order, each with exactly the projected fields.
   Long requests take the same path: a filter of almost 16 KiB (whose URL, percent-
   encoded, is longer still) and subscribers whose request heads sit just under and
   just over what the small per-connection memory takes (see src/gate.c).
4. Bad filters and projections are refused with 400 and a message naming the
   problem and its path, a filter over 16 KiB included; none of that disturbs the
   subscribers already open.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from bson import json_util  # noqa: E402
import mongomock.filtering  # noqa: E402  (Debian's python3-mongomock)

OWNERS = ["ann", "bob", "Bea", "carl"]
TAGS = [[], ["red"], ["green", "blue"], ["red", "blue"], ["blue"]]

SUBSCRIBERS = {
    "owner ann, projected": {"filter": {"fullDocument.owner": "ann"},
                             "fields": "fullDocument.qty,fullDocument.owner"},
    "big inserts": {"filter": {"fullDocument.qty": {"$gte": 3}, "operationType": "insert"}},
    "red or paid": {"filter": {"$or": [{"fullDocument.tags": "red"},
                                       {"updateDescription.updatedFields.status": "paid"}]},
                    "fields": "updateDescription.updatedFields"},
    "owner starts with b": {"filter": {"fullDocument.owner": {"$regex": "^b", "$options": "i"}}},
    "two tags": {"filter": {"fullDocument.tags": {"$size": 2}}},
    "line a with n>1": {"filter": {"fullDocument.lines": {"$elemMatch": {"sku": "a",
                                                                         "n": {"$gt": 1}}}}},
    "no status yet": {"filter": {"fullDocument.status": {"$exists": False},
                                 "operationType": "insert"}},
    "not ann nor bob": {"filter": {"fullDocument.owner": {"$nin": ["ann", "bob"]}}},
    "qty is a double": {"filter": {"fullDocument.qty": {"$type": "double"}}},
    "returns only": {"filter": {"ns.coll": "returns"}, "fields": "fullDocument._id"},
    "ids 3, 5, 8 by id": {"id": ["3", "5", "8"]},
    "deletes of 3..9": {"op": "delete", "filter": {"documentKey._id": {"$gte": 3, "$lte": 9}}},
    # Request heads just under and just over the small pool's budget (8 KiB).
    "ann, 7 KB header": {"filter": {"fullDocument.owner": "ann"}, "headers": {"X-Pad": "p" * 7000}},
    "ann, 9 KB header": {"filter": {"fullDocument.owner": "ann"}, "headers": {"X-Pad": "p" * 9000}},
}


def long_in_filter(limit=16384):
    """{"fullDocument.owner": {"$in": [...]}} as close to `limit` bytes as it gets."""
    names = ["carl"]
    while len(json.dumps({"fullDocument.owner": {"$in": names + ["nobody%05d" % len(names)]}})) \
            <= limit:
        names.append("nobody%05d" % len(names))
    return {"fullDocument.owner": {"$in": names}}


SUBSCRIBERS["carl in a 16 KiB $in list"] = {"filter": long_in_filter()}


def params_of(spec):
    ps = []
    if "filter" in spec:
        ps.append(("filter", json.dumps(spec["filter"])))
    if "fields" in spec:
        ps.append(("fields", spec["fields"]))
    for v in spec.get("id", []):
        ps.append(("id", v))
    if "op" in spec:
        ps.append(("op", spec["op"]))
    return ps


def wants(spec, event):
    """Whether a subscriber wants an event, decided by mongomock."""
    query = dict(spec.get("filter", {}))
    conds = [query] if query else []
    if "id" in spec:
        conds.append({"documentKey._id": {"$in": [json.loads(v) for v in spec["id"]]}})
    if "op" in spec:
        conds.append({"operationType": {"$in": spec["op"].split(",")}})
    return all(mongomock.filtering.filter_applies(c, event) for c in conds)


ALWAYS = ["_id", "operationType", "ns", "documentKey", "clusterTime"]


def project(doc, paths):
    """An inclusion projection by dotted paths (arrays of documents walked)."""
    tree = {}
    for p in paths:
        node = tree
        parts = p.split(".")
        for i, part in enumerate(parts):
            if node.get(part) is True:
                break
            if i == len(parts) - 1:
                node[part] = True
            else:
                node = node.setdefault(part, {})

    def apply(value, node):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k not in node:
                    continue
                if node[k] is True:
                    out[k] = v
                elif isinstance(v, (dict, list)):
                    out[k] = apply(v, node[k])
            return out
        return [apply(e, node) for e in value if isinstance(e, (dict, list))]
    return apply(doc, tree)


def expected_payload(spec, raw_json):
    ev = json.loads(raw_json)
    if "fields" in spec:
        return project(ev, spec["fields"].split(",") + ALWAYS)
    return ev


def do_writes(w):
    orders, returns = w.coll("shop", "orders"), w.coll("shop", "returns")
    for i in range(40):
        doc = {"_id": i, "owner": OWNERS[i % 4], "qty": i % 6, "tags": TAGS[i % 5],
               "lines": [{"sku": "a", "n": i % 3}, {"sku": "b", "n": 1}]}
        if i % 7 == 0:
            doc["qty"] = float(i % 6) + 0.5
        if i % 3 == 0:
            doc["status"] = "new"
        orders.insert_one(doc)
        if i % 4 == 1:
            orders.update_one({"_id": i - 1}, {"$set": {"status": "paid" if i % 8 == 1
                                                         else "shipped"}})
        if i % 5 == 4:
            orders.delete_one({"_id": i - 2})
        if i % 6 == 0:
            returns.insert_one({"_id": 1000 + i, "order": i, "owner": OWNERS[(i + 1) % 4]})


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)
    everything = sc.track(cg.sse())
    subs = {name: sc.track(cg.sse(params=params_of(spec), headers=spec.get("headers")))
            for name, spec in SUBSCRIBERS.items()}
    long_filter = json.dumps(SUBSCRIBERS["carl in a 16 KiB $in list"]["filter"])
    h.check(16000 < len(long_filter) <= 16384, "the long filter is %d bytes", len(long_filter))
    nd_spec = SUBSCRIBERS["owner ann, projected"]
    nd = sc.track(cg.ndjson(params=params_of(nd_spec)))
    poll_spec = SUBSCRIBERS["red or paid"]
    status, first, _ = cg.poll(timeout=1, params=params_of(poll_spec))
    h.check(status == 200 and first["events"] == [], "first poll: %d %r", status, first)
    h.say("%d filtered subscribers open, plus NDJSON and long-poll", len(subs))

    do_writes(sc.writer(mongo.uri))
    reference = everything.drain(1.0, timeout=30)
    h.check(len(reference) >= 60, "the reference stream got only %d events", len(reference))
    events = [json_util.loads(m.data) for m in reference]   # BSON types, for mongomock
    h.say("the reference subscriber got %d events", len(reference))

    for name, spec in SUBSCRIBERS.items():
        want = [m for m, ev in zip(reference, events) if wants(spec, ev)]
        h.check(want, "subscriber %r should match something: bad plan", name)
        got = subs[name].read_messages(len(want), timeout=20) + subs[name].drain(0.5)
        h.check_sequence([m.id for m in got], [m.id for m in want], "filter %r" % name)
        for g, w in zip(got, want):
            h.check(json.loads(g.data) == expected_payload(spec, w.data),
                    "%r: event %s is %s, expected %s", name, g.id, g.data,
                    json.dumps(expected_payload(spec, w.data)))
        h.say("%-22s -> %2d events, exactly the expected ones and fields", name, len(want))

    want = [m for m, ev in zip(reference, events) if wants(nd_spec, ev)]
    objs = nd.read_events(len(want))
    h.check([o["id"] for o in objs] == [m.id for m in want], "NDJSON filter: wrong events")
    h.check(all(o["event"] == expected_payload(nd_spec, m.data) for o, m in zip(objs, want)),
            "NDJSON projection differs")
    want = [m for m, ev in zip(reference, events) if wants(poll_spec, ev)]
    got, pos = [], first["lastEventId"]
    while len(got) < len(want):
        status, body, _ = cg.poll(lastEventId=pos, timeout=5, params=params_of(poll_spec))
        h.check(status == 200 and body["events"], "poll: %d %r", status, body)
        got += body["events"]
        pos = body["lastEventId"]
    h.check(got == [expected_payload(poll_spec, m.data) for m in want],
            "long-poll filter/projection: %d events differ from the expected %d", len(got),
            len(want))
    h.say("NDJSON and long-poll agree")

    bad = [
        ([("filter", "{not json")], "invalid_filter", "filter"),
        ([("filter", '{"fullDocument.qty": {"$foo": 1}}')], "invalid_filter",
         "filter.fullDocument.qty"),
        ([("filter", '{"fullDocument.qty": {"$in": 5}}')], "invalid_filter", "$in"),
        ([("filter", '{"fullDocument.owner": {"$regex": "("}}')], "invalid_filter", "regex"),
        ([("filter", '{"$where": "sleep(1000)"}')], "invalid_filter", "$where"),
        ([("filter", '{"$expr": {"$gt": ["$a", 1]}}')], "invalid_filter", "$expr"),
        ([("filter", '{"a": {"$function": {}}}')], "invalid_filter", "$function"),
        ([("filter", '{"$jsonSchema": {}}')], "invalid_filter", "$jsonSchema"),
        ([("filter", '{"x": {"$accumulator": {}}}')], "invalid_filter", "$accumulator"),
        ([("filter", "[1, 2]")], "invalid_filter", "filter"),
        ([("filter", '{"a": ' * 40 + "1" + "}" * 40)], "invalid_filter", "32"),
        ([("fields", "fullDocument..qty")], "invalid_parameter", "fields"),
        ([("fields", "")], "invalid_parameter", "fields"),
        ([("id", "abc")], "invalid_parameter", "id"),
    ]
    for params, code, needle in bad:
        status, hdrs, body = h.request(cg.port, "GET", "/events?" + h.query(params))
        err = h.json_body(body)
        h.check(status == 400 and err and err.get("error") == code and needle in err["message"],
                "%r answered %d %r; expected 400 %s mentioning %r", params, status, err, code,
                needle)
    h.say("%d bad filters and projections refused with 400 naming the problem", len(bad))

    # Over 16 KiB (the URL is still under the 64 KiB a request line may have).
    status, _, body = h.request(cg.port, "GET", "/events?" + h.query(
        [("filter", '{"a": "%s"}' % ("x" * 16380))]))
    err = h.json_body(body)
    h.check(status == 400 and err and err.get("error") == "invalid_filter" and
            "16384" in err["message"], "a filter of 16,389 bytes answered %d %r", status, err)
    h.say("a filter over 16 KiB: 400 %s", err["message"])

    # Nothing of that disturbed the open subscribers.
    sc.writer(mongo.uri).coll("shop", "orders").insert_one({"_id": 999, "owner": "ann",
                                                            "qty": 9})
    h.check(len(everything.read_messages(1)) == 1, "the reference subscriber stalled")
    got = subs["owner ann, projected"].read_messages(1)
    h.check(json.loads(got[0].data)["fullDocument"] == {"owner": "ann", "qty": 9},
            "after bad input: %r", got[0].data)
    h.say("open subscribers carried on")


h.run(story)
