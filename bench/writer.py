#!/usr/bin/python3
"""Insert documents {seq, ts_us, pad} into MongoDB at a steady rate (benchmark load).

    /usr/bin/python3 bench/writer.py --uri mongodb://127.0.0.1:27017/?replicaSet=rs0 \
        --rate 1000 --duration 10 --doc-bytes 100
    /usr/bin/python3 bench/writer.py --nchan http://127.0.0.1:8081/pub \
        --rate 0 --count 10000 --doc-bytes 100

seq counts from --first-seq; ts_us is the wall-clock time in microseconds (int64) taken
just before the insert, so a subscriber measures latency as receipt time - ts_us. The
schedule is absolute (document i is due at start + i/rate): a slow insert is caught up
by the next ones instead of lowering the rate. With --burst K --pause P the writer
stops for P seconds after every K documents (not after the last), and the schedule
resumes after the pause: quiet periods in which changegate sends heartbeats, which it
sends only on an idle stream. Prints one line of JSON at the end.

--rate 0 is saturation: --count documents as fast as the writer can. Into MongoDB they
go in insert_many batches of --batch (one ts_us per batch, taken just before it).

--nchan URL publishes the same documents to an Nchan publisher location instead (bench/
nchan.sh), each as a POST of the JSON {"seq": .., "ts_us": .., "pad": ".."} of about
--doc-bytes bytes, ts_us taken just before the request is sent. Nchan answers a POST
only once it has handed the message to every subscriber, so waiting for each answer
would measure round trips: --pipeline N (8) requests are kept in flight on ONE
keep-alive connection (HTTP/1.1 pipelining; nginx handles a connection's requests one
after the other), which keeps seq order: Nchan orders a channel's messages by arrival,
so several connections would let them overtake each other. nginx must allow that many
requests on one connection (keepalive_requests, set by bench/nchan.sh).
"""
import argparse
import collections
import json
import socket
import sys
import time
import urllib.parse


class NchanPublisher:
    """POSTs on one keep-alive connection, up to WINDOW of them unanswered."""

    def __init__(self, url, window):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit("writer: --nchan wants http://HOST:PORT/PATH, not %r" % url)
        self.host = "%s:%d" % (u.hostname, u.port or 80)
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.window = max(1, window)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.inflight = 0
        self.statuses = collections.Counter()

    def post(self, body):
        while self.inflight >= self.window:
            self._answer()
        head = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (self.path, self.host, len(body))).encode()
        self.sock.sendall(head + body)
        self.inflight += 1

    def drain(self):
        while self.inflight:
            self._answer()

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit("writer: nginx closed the publisher connection with %d POSTs "
                             "unanswered (keepalive_requests?)" % self.inflight)
        self.buf += data

    def _answer(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._more()
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        else:
            length = int(fields.get("content-length", "0"))
            while len(self.buf) < length:
                self._more()
            self.buf = self.buf[length:]
        self.inflight -= 1
        self.statuses[status] += 1
        # 201: delivered to subscribers; 202: queued, none subscribed
        if status not in (200, 201, 202):
            raise SystemExit("writer: Nchan answered a POST with %d: %s" % (status, lines[0]))

    def close(self):
        self.sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", help="MongoDB connection string (or --nchan)")
    ap.add_argument("--nchan", metavar="URL", help="publish to this Nchan publisher URL instead")
    ap.add_argument("--pipeline", type=int, default=8,
                    help="--nchan: POSTs in flight on the one connection (default 8)")
    ap.add_argument("--db", default="bench")
    ap.add_argument("--coll", default="events")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="inserts per second; 0: as fast as possible (needs --count)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--count", type=int, help="documents (default rate x duration)")
    ap.add_argument("--batch", type=int, default=100,
                    help="--rate 0 into MongoDB: documents per insert_many (default 100)")
    ap.add_argument("--doc-bytes", type=int, default=100, help="approximate BSON size")
    ap.add_argument("--first-seq", type=int, default=0)
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
    if bool(args.uri) == bool(args.nchan):
        ap.error("give one of --uri and --nchan")
    saturate = args.rate <= 0
    if saturate and args.count is None:
        ap.error("--rate 0 (as fast as possible) needs --count")

    count = args.count if args.count is not None else int(round(args.rate * args.duration))

    def owner(seq):
        return "%s%d" % (args.owner_prefix, seq % args.owners)

    if args.nchan:
        # The JSON body's size is about --doc-bytes (seq and ts_us digits vary a little).
        def body(seq, pad):
            doc = {"seq": seq, "ts_us": int(time.time() * 1e6), "pad": pad}
            if args.owners:
                doc[args.owner_field] = owner(seq)
            return json.dumps(doc, separators=(",", ":")).encode()
        pad = "x" * max(0, args.doc_bytes - len(body(args.first_seq, "")))
        doc_size = len(body(args.first_seq, pad))
        pub = NchanPublisher(args.nchan, args.pipeline)
    else:
        import bson
        import pymongo
        probe = {"_id": bson.ObjectId(), "seq": args.first_seq, "ts_us": int(time.time() * 1e6),
                 "pad": ""}
        pad = "x" * max(0, args.doc_bytes - len(bson.BSON.encode(probe)))
        doc_size = len(bson.BSON.encode(dict(probe, pad=pad)))
        client = pymongo.MongoClient(args.uri, serverSelectionTimeoutMS=15000)
        coll = client[args.db][args.coll]
        client.admin.command("ping")

    def doc(seq, ts_us):
        d = {"seq": seq, "ts_us": ts_us, "pad": pad}
        if args.owners:
            d[args.owner_field] = owner(seq)
        return d

    start = time.monotonic()
    t_first_us = int(time.time() * 1e6)  # the first write, to compare with receipts
    behind_max = 0.0
    paused = 0.0
    if saturate and not args.nchan:
        # insert_many is ordered: the batch's documents reach the oplog in seq order.
        for i in range(0, count, max(1, args.batch)):
            ts = int(time.time() * 1e6)
            coll.insert_many([doc(args.first_seq + j, ts)
                              for j in range(i, min(count, i + max(1, args.batch)))])
    else:
        for i in range(count):
            if not saturate:
                if args.burst > 0 and i > 0 and i % args.burst == 0 and args.pause > 0:
                    paused += args.pause
                due = start + paused + i / args.rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                else:
                    behind_max = max(behind_max, now - due)
            if args.nchan:
                pub.post(body(args.first_seq + i, pad))
            else:
                coll.insert_one(doc(args.first_seq + i, int(time.time() * 1e6)))
    if args.nchan:
        pub.drain()  # every message handed to every subscriber
        pub.close()
    elapsed = time.monotonic() - start
    summary = {"written": count, "seconds": round(elapsed, 3),
               "rate": round(count / elapsed, 1) if elapsed > 0 else None,
               "doc_bytes": doc_size, "max_behind_s": round(behind_max, 3),
               "paused_s": round(paused, 3), "cpu_s": round(time.process_time(), 3),
               "rate_writing": (round(count / (elapsed - paused), 1)
                                if elapsed > paused else None),
               "target": "nchan" if args.nchan else "mongo", "saturate": saturate,
               "t_first_us": t_first_us, "t_end_us": int(time.time() * 1e6)}
    if args.nchan:
        summary["pipeline"] = args.pipeline
        summary["statuses"] = {str(k): v for k, v in sorted(pub.statuses.items())}
    elif saturate:
        summary["batch"] = args.batch
    print(json.dumps(summary))
    if not args.nchan:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
