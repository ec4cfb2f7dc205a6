#!/usr/bin/python3
"""Insert documents {seq, ts_us, pad} into MongoDB at a steady rate (benchmark load).

    /usr/bin/python3 bench/writer.py --uri mongodb://127.0.0.1:27017/?replicaSet=rs0 \
        --rate 1000 --duration 10 --doc-bytes 100

seq counts from --first-seq; ts_us is the wall-clock time in microseconds (int64) taken
just before the insert, so a subscriber measures latency as receipt time - ts_us. The
schedule is absolute (document i is due at start + i/rate): a slow insert is caught up
by the next ones instead of lowering the rate. With --burst K --pause P the writer
stops for P seconds after every K documents (not after the last), and the schedule
resumes after the pause: quiet periods in which changegate sends heartbeats, which it
sends only on an idle stream. --batch K sends every K documents as one insert_many, and
--rate 0 (with --count) drops the schedule: as fast as it can (saturation, bench/limit.sh);
a document's ts_us is still the time it was made, before its batch is sent. Prints one
line of JSON at the end.
"""
import argparse
import json
import sys
import time

import bson
import pymongo


class Batches:
    """--batch K: insert_one() keeps documents and sends each K (and the last of COUNT)
    as one insert_many."""

    def __init__(self, coll, k, count):
        self.coll, self.k, self.left, self.docs = coll, k, count, []

    def insert_one(self, doc):
        self.docs.append(doc)
        self.left -= 1
        if len(self.docs) >= self.k or self.left == 0:
            self.coll.insert_many(self.docs, ordered=True)
            self.docs = []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--db", default="bench")
    ap.add_argument("--coll", default="events")
    ap.add_argument("--rate", type=float, default=1000.0, help="inserts per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--count", type=int, help="documents (default rate x duration)")
    ap.add_argument("--doc-bytes", type=int, default=100, help="approximate BSON size")
    ap.add_argument("--first-seq", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1,
                    help="documents per insert (insert_many); --rate 0 --count N: no schedule")
    ap.add_argument("--owners", type=int, default=0,
                    help="add owner \"u<seq %% K>\" to each document (filtered fan-out)")
    ap.add_argument("--owner-field", default="owner",
                    help="the field --owners sets (default owner)")
    ap.add_argument("--owner-prefix", default="u",
                    help="what --owners puts before seq %% K (default u)")
    ap.add_argument("--burst", type=int, default=0,
                    help="pause --pause seconds after every BURST documents")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds (with --burst)")
    args = ap.parse_args()
    if args.rate <= 0:  # as fast as it can: every document is due at the start
        if args.count is None:
            ap.error("--rate 0 needs --count")
        args.rate = float("inf")

    count = args.count if args.count is not None else int(round(args.rate * args.duration))
    probe = {"_id": bson.ObjectId(), "seq": args.first_seq, "ts_us": int(time.time() * 1e6),
             "pad": ""}
    pad = "x" * max(0, args.doc_bytes - len(bson.BSON.encode(probe)))

    client = pymongo.MongoClient(args.uri, serverSelectionTimeoutMS=15000)
    coll = client[args.db][args.coll]
    if args.batch > 1:
        coll = Batches(coll, args.batch, count)
    client.admin.command("ping")

    start = time.monotonic()
    behind_max = 0.0
    paused = 0.0
    for i in range(count):
        if args.burst > 0 and i > 0 and i % args.burst == 0 and args.pause > 0:
            paused += args.pause
        due = start + paused + i / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            behind_max = max(behind_max, now - due)
        doc = {"seq": args.first_seq + i, "ts_us": int(time.time() * 1e6), "pad": pad}
        if args.owners:
            doc[args.owner_field] = "%s%d" % (args.owner_prefix, (args.first_seq + i) % args.owners)
        coll.insert_one(doc)
    elapsed = time.monotonic() - start
    doc_size = len(bson.BSON.encode(dict(probe, pad=pad)))
    print(json.dumps({"written": count, "seconds": round(elapsed, 3),
                      "rate": round(count / elapsed, 1) if elapsed > 0 else None,
                      "doc_bytes": doc_size, "max_behind_s": round(behind_max, 3),
                      "paused_s": round(paused, 3), "cpu_s": round(time.process_time(), 3),
                      "rate_writing": (round(count / (elapsed - paused), 1)
                                       if elapsed > paused else None)}))
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
