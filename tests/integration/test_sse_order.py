#!/usr/bin/python3
"""Story: 500 inserts reach a `curl -N` SSE subscriber and an NDJSON subscriber in the
order they were written, each with a unique id that is the event's resume token.

1. devmongo and changegate start; a real curl subscribes to /events (SSE) and a Python
   reader subscribes to /events with Accept: application/x-ndjson, a second one with
   ?format=ndjson.
2. 500 documents {seq: 0..499} are inserted one by one.
3. curl's output, parsed by the WHATWG rules, holds exactly seq 0..499 in order, every
   message with an `id:` equal to the event's _id._data, all ids distinct, and begins
   with ': changegate\\nretry: 3000\\n\\n'.
4. Both NDJSON readers get {"id", "event"} lines for exactly the same 500 events, with
   the same ids as SSE.
5. Strings with newlines, CRs, quotes, NUL and non-ASCII characters arrive intact, each
   event still on a single data line; documents of 1 MB and 15 MB arrive whole.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 500


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)

    curl = h.CurlSSE(sc, cg.port, "/events")
    # Wait for the preamble so curl's subscription exists before the first write.
    first = curl.next_item(timeout=10 * h.SLOW)
    h.check(isinstance(first, h.Comment) and first.text == "changegate",
            "curl's first SSE item is %r, expected ': changegate'", first)
    nd_accept = sc.track(cg.ndjson())
    nd_query = sc.track(cg.ndjson(use_query=True))
    h.say("curl and two NDJSON readers subscribed; writing %d inserts", N)

    w = sc.writer(mongo.uri)
    w.insert_seq(0, N, db="shop", coll="orders")

    msgs = curl.read_messages(N, timeout=30)
    h.check(bytes(curl.parser.raw).startswith(b": changegate\nretry: 3000\n\n"),
            "curl's SSE stream does not start with the preamble: %r", bytes(curl.parser.raw[:60]))
    h.check(curl.parser.retry == 3000, "retry field is %r, expected 3000", curl.parser.retry)
    events = [h.check_sse_event(m) for m in msgs]
    seqs = [h.seq_of(e) for e in events]
    h.check_sequence(seqs, list(range(N)), "SSE (curl) seq order")
    ids = [m.id_field for m in msgs]
    h.check(len(set(ids)) == N, "SSE ids are not unique: %d distinct of %d", len(set(ids)), N)
    for e in events:
        h.check(e.get("operationType") == "insert" and e.get("ns") == {"db": "shop", "coll": "orders"},
                "unexpected event shape: %r", e)
    h.say("curl got all %d in order, unique ids", N)

    for name, nd in (("Accept", nd_accept), ("format=ndjson", nd_query)):
        objs = nd.read_events(N, timeout=30)
        nd_events = [h.check_ndjson_event(o) for o in objs]
        h.check_sequence([h.seq_of(e) for e in nd_events], list(range(N)),
                         "NDJSON (%s) seq order" % name)
        h.check_sequence([o["id"] for o in objs], ids, "NDJSON (%s) ids vs SSE ids" % name)
        h.check(nd_events == events, "NDJSON (%s) events differ from the SSE events", name)
        h.say("NDJSON via %s got the same %d events with the same ids", name, N)

    # Nothing beyond the 500 was delivered (a short grace window for strays).
    extra = [i for i in _drain_curl(curl, 0.5) if isinstance(i, h.Message)]
    h.check(not extra, "curl got %d extra messages after the 500: %r", len(extra), extra[:3])

    # Awkward strings survive as one data line and decode to exactly what was written.
    texts = ["two\nlines", "cr\r\nlf and a lone \r", "data: fake field\n\nid: 1",
             "quote \" backslash \\ tab \t", "unicode é 漢字 😀 \u2028 \u2029 \x7f",
             "nul\x00inside", ""]
    coll = w.coll("shop", "orders")
    for i, text in enumerate(texts):
        coll.insert_one({"seq": N + i, "text": text})
    msgs = curl.read_messages(len(texts), timeout=30)
    got = [h.check_sse_event(m)["fullDocument"] for m in msgs]
    h.check_sequence([(d["seq"], d["text"]) for d in got],
                     [(N + i, t) for i, t in enumerate(texts)], "awkward strings over SSE")
    objs = nd_accept.read_events(len(texts))
    h.check_sequence([h.check_ndjson_event(o)["fullDocument"]["text"] for o in objs], texts,
                     "awkward strings over NDJSON")
    h.say("newlines, CRs, quotes, NUL and non-ASCII text arrive intact on one data line")

    # Large documents (up to near MongoDB's 16 MB limit) arrive whole.
    sizes = [1 << 20, 15 * 1000 * 1000]
    for i, size in enumerate(sizes):
        coll.insert_one({"seq": 1000 + i, "pad": "%d:" % i + "z" * size})
    msgs = curl.read_messages(len(sizes), timeout=60)
    objs = nd_query.read_events(len(texts) + len(sizes), timeout=60)[len(texts):]
    for i, size in enumerate(sizes):
        for what, ev in (("SSE", h.check_sse_event(msgs[i])),
                         ("NDJSON", h.check_ndjson_event(objs[i]))):
            fd = ev["fullDocument"]
            h.check(fd["seq"] == 1000 + i and fd["pad"] == "%d:" % i + "z" * size,
                    "%s: the %d-byte document arrived altered (seq %r, pad length %d)", what,
                    size, fd["seq"], len(fd["pad"]))
    h.say("documents of 1 MB and 15 MB arrive whole over SSE and NDJSON")
    curl.close()


def _drain_curl(curl, quiet):
    out = []
    while True:
        try:
            item = curl.next_item(quiet)
        except TimeoutError:
            return out
        if item is None:
            return out
        out.append(item)


if __name__ == "__main__":
    h.run(story)
