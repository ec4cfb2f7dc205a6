#!/usr/bin/python3
"""Read one SSE stream from changegate and check the writer's seq (catch-up benchmark).

    /usr/bin/python3 bench/catchup_reader.py --port 8080 --last-event-id 826B04... \
        --first-seq 1 --expect 49999 --live 1000 --caught-up-file /tmp/caught-up

Connects to GET --path (HTTP/1.1, chunked) with `Last-Event-ID` when given, and reads
until it has --expect events (the timed phase: from connecting to the last of them),
then writes --caught-up-file (JSON: events, seconds, events_per_s, reader CPU) and goes
on until it has --live more (the script writes them once that file exists). It then
listens --linger seconds for anything extra. Every event's fullDocument.seq must be
--first-seq, --first-seq + 1, ... in order: no gap, no repeat, no `event: reset` (the
reader stops at the first reset, with the reset as its error). Messages without data
(heartbeats) are skipped. --ready-file is written when the response headers arrived.
Parsing works on raw socket bytes (one split and one regex per event) so the reader
stays cheap; its CPU time over the timed phase is reported (`reader_cpu_share` near 1
means the reader, not changegate, was the limit). Prints one line of JSON; exits 0 only
when every expected event arrived exactly once and in order.
"""
import argparse
import json
import os
import re
import socket
import sys
import time

SEQ = re.compile(rb'"seq" ?: ?(-?\d+)')


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class Stream:
    """The body of a chunked (or close-delimited) HTTP response, in pieces."""

    def __init__(self, sock):
        self.sock = sock
        self.raw = b""
        self.pos = 0  # what raw[:pos] held is consumed
        self.chunked = False
        self.left = 0  # bytes left in the current chunk
        self.crlf = False  # the CRLF after a chunk's data is due

    def more(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self.raw = self.raw[self.pos:] + data
        self.pos = 0

    def headers(self):
        while b"\r\n\r\n" not in self.raw:
            self.more()
        head, self.raw = self.raw[self.pos:].split(b"\r\n\r\n", 1)
        self.pos = 0
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1:2] != ["200"]:
            raise RuntimeError("response: " + lines[0])
        self.chunked = any(l.lower().startswith("transfer-encoding:") and "chunked" in l.lower()
                           for l in lines[1:])

    def body(self):
        """Returns the next piece of the body; raises EOFError at its end."""
        if not self.chunked:
            if self.pos >= len(self.raw):
                self.more()
            data, self.raw, self.pos = self.raw[self.pos:], b"", 0
            return data
        out = []
        while True:
            have = len(self.raw) - self.pos
            if self.left:
                if not have:
                    if out:
                        break
                    self.more()
                    continue
                n = min(have, self.left)
                out.append(self.raw[self.pos:self.pos + n])
                self.pos += n
                self.left -= n
                continue
            if self.crlf:
                if have < 2:
                    if out:
                        break
                    self.more()
                    continue
                self.pos += 2
                self.crlf = False
            nl = self.raw.find(b"\r\n", self.pos)
            if nl < 0:
                if out:
                    break
                self.more()
                continue
            size = int(self.raw[self.pos:nl].split(b";")[0], 16)
            if size == 0:
                if out:
                    break  # the end of the response, reported at the next call
                raise EOFError("end of response")
            self.pos = nl + 2
            self.left = size
            self.crlf = True
        return b"".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/events")
    ap.add_argument("--last-event-id", default=None)
    ap.add_argument("--first-seq", type=int, default=0)
    ap.add_argument("--expect", type=int, required=True, help="events of the timed phase")
    ap.add_argument("--live", type=int, default=0, help="events expected after it")
    ap.add_argument("--ready-file")
    ap.add_argument("--caught-up-file")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds, for everything")
    ap.add_argument("--linger", type=float, default=0.0,
                    help="seconds to wait for extra events at the end")
    args = ap.parse_args()

    total = args.expect + args.live
    seqs = []
    resets = 0
    first_id = last_id = None
    caught = None  # summary of the timed phase
    error = None
    cpu0 = time.process_time()
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    t_first = None
    sock = socket.create_connection((args.host, args.port), timeout=10)
    req = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n" % (
        args.path, args.host, args.port)
    if args.last_event_id:
        req += "Last-Event-ID: %s\r\n" % args.last_event_id
    sock.sendall((req + "\r\n").encode())
    stream = Stream(sock)
    buf = b""
    lingering, linger_end = False, None
    try:
        stream.headers()
        if args.ready_file:
            write_atomic(args.ready_file, "ready\n")
        while True:
            now = time.monotonic()
            if lingering:
                if now >= linger_end:
                    break
                sock.settimeout(linger_end - now)
            else:
                if now >= deadline:
                    error = "timeout"
                    break
                sock.settimeout(deadline - now)
            try:
                data = stream.body()
            except socket.timeout:
                continue
            buf += data
            if b"\n\n" not in buf:
                continue
            msgs = buf.split(b"\n\n")
            buf = msgs.pop()
            for m in msgs:
                if m.startswith(b"event: reset") or b"\nevent: reset" in m:
                    resets += 1
                    error = "reset: " + m.decode(errors="replace").replace("\n", " | ")
                    break
                if not (m.startswith(b"data:") or b"\ndata:" in m):
                    continue  # comment, retry, heartbeat
                i = m.find(b"id: ")
                if i >= 0:
                    last_id = m[i + 4:m.find(b"\n", i)].decode()
                    if first_id is None:
                        first_id = last_id
                s = SEQ.search(m)
                seqs.append(int(s.group(1)) if s else None)
                if t_first is None:
                    t_first = time.monotonic()
                if len(seqs) == args.expect and caught is None:
                    t = time.monotonic() - t0
                    cpu = time.process_time() - cpu0
                    caught = {"events": len(seqs), "seconds": round(t, 3),
                              "events_per_s": round(len(seqs) / t, 1) if t > 0 else None,
                              "first_event_s": round(t_first - t0, 3),
                              "reader_cpu_s": round(cpu, 3),
                              "reader_cpu_share": round(cpu / t, 2) if t > 0 else None}
                    if args.caught_up_file:
                        write_atomic(args.caught_up_file, json.dumps(caught) + "\n")
            if error:
                break
            if len(seqs) >= total and not lingering:
                lingering = True
                linger_end = time.monotonic() + args.linger
    except (EOFError, OSError, RuntimeError, ValueError) as e:
        error = str(e) or type(e).__name__
    sock.close()

    want = list(range(args.first_seq, args.first_seq + total))
    got = set(s for s in seqs if s is not None)
    gaps = len(set(want) - got)
    repeats = len(seqs) - len(set(seqs))
    unexpected = len(got - set(want))
    in_order = seqs == want
    live_ok = seqs[args.expect:] == want[args.expect:]
    ok = in_order and resets == 0 and error is None
    print(json.dumps({"received": len(seqs), "expected": total, "catchup": caught,
                      "live_received": max(0, len(seqs) - args.expect), "live_ok": live_ok,
                      "gaps": gaps, "repeats": repeats, "unexpected": unexpected,
                      "in_order": in_order, "resets": resets, "error": error,
                      "first_id": first_id, "last_id": last_id,
                      "first_seq": seqs[0] if seqs else None,
                      "last_seq": seqs[-1] if seqs else None, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
