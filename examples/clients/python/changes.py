#!/usr/bin/env python3
"""Follow changegate's change stream over Server-Sent Events with the Python 3 standard
library only. Copy it, then put your application's work in on_change() and on_reset().

    python3 changes.py [GATEWAY] [NAME=VALUE ...]
    python3 changes.py http://127.0.0.1:8080 ns=shop.orders op=insert,update
    python3 changes.py lastEventId=826B0486...      # resume after a position you kept

GATEWAY: changegate's address (default: $GATEWAY, else http://127.0.0.1:8080).
NAME=VALUE: /events query parameters (ns, op, id, filter, fields); lastEventId=POS
starts right after POS instead of from now.
stdout: one JSON line per change, {"id": POSITION, "event": CHANGE}, and a line
{"reset": {"reason": ..., "lastEventId": ...}} when continuity was lost.
stderr: what the client is doing (connected, errors, reconnecting).
For networks where a stream does not get through, poll.py does the same with /poll.
"""
import codecs
import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

args = sys.argv[1:]
gateway = os.environ.get("GATEWAY") or "http://127.0.0.1:8080"
if args and re.match(r"https?://", args[0]):
    gateway = args.pop(0)
params = []
last_id = None       # the position of the last message handled: where a reconnect resumes
for arg in args:
    name, eq, value = arg.partition("=")
    if not name or not eq:
        sys.exit("usage: changes.py [GATEWAY] [NAME=VALUE ...]")
    if name == "lastEventId":
        last_id = value
    else:
        params.append((name, value))
url = gateway.rstrip("/") + "/events" + ("?" + urllib.parse.urlencode(params) if params else "")


def on_change(id, change):
    # Your work goes here. To resume after this process restarts, store `id` together
    # with what you made of the change (same transaction), and start from it next time.
    print(json.dumps({"id": id, "event": change}, separators=(",", ":")), flush=True)


def on_reset(info):
    # changegate cannot prove that nothing was missed (history_lost: the position left
    # MongoDB's oplog, or comes from another deployment). Changes continue from
    # info["lastEventId"], but whatever you built from earlier changes may be stale:
    # reload it (from MongoDB or your API) now, then keep applying changes.
    print(json.dumps({"reset": info}, separators=(",", ":")), flush=True)


def log(msg):
    print("changes: " + msg, file=sys.stderr, flush=True)


retry_ms = 3000      # the reconnection delay; the server sets it with `retry:`
failures = 0         # failed attempts in a row: each one after the first doubles the delay
MAX_DELAY = 60.0
# changegate sends a heartbeat every 15 s (--heartbeat) on an idle stream, so a minute
# without a byte means the connection is dead (a proxy or NAT dropped it).
IDLE = 60.0
NEWLINE = re.compile(r"\r\n|\r|\n")


class RetryLater(Exception):
    """A connection that did not give a stream, worth retrying later."""

    def __init__(self, msg, retry_after=None):
        super().__init__(msg)
        self.retry_after = retry_after


def lines(resp):
    """The lines of the stream as they arrive; they end with LF, CR or CRLF."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")   # drops a leading BOM
    buf = ""
    after_cr = False                  # the last chunk ended with CR: a first LF ends nothing
    while True:
        chunk = resp.read1(65536)     # whatever has arrived (blocks at most IDLE seconds)
        if not chunk:
            return                    # the server ended the stream
        buf += decoder.decode(chunk)
        if after_cr and buf.startswith("\n"):
            buf = buf[1:]
        after_cr = buf.endswith("\r")
        start = 0
        for m in NEWLINE.finditer(buf):
            yield buf[start:m.start()]
            start = m.end()
        buf = buf[start:]


def follow():
    """One connection: returns what happened when the server ends the stream; raises on
    errors."""
    global last_id, failures, retry_ms
    headers = {"Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id        # resume exactly after it
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=IDLE)
    except urllib.error.HTTPError as e:
        return refused(e.code, e.read(), e.headers)
    with resp:
        ctype = resp.headers.get("Content-Type", "")
        if resp.status != 200 or not ctype.startswith("text/event-stream"):
            raise RetryLater("%d but not an event stream (%s)" % (resp.status, ctype))
        failures = 0
        log("connected to %s %s" % (url, "after " + last_id if last_id else "from now"))

        # The event-stream format (WHATWG HTML, "Server-sent events"): "field: value"
        # lines (one space after the colon is dropped); a line starting with ":" is a
        # comment (changegate's ": heartbeat"); a blank line ends a message. data lines
        # are joined with "\n"; an incomplete message at the end of the stream is dropped.
        data, type_, id_ = "", "", last_id
        for line in lines(resp):
            if line == "":
                # End of a message. Every change has an id; a message with an id and no
                # data (after a heartbeat) only moves the position forward.
                if data:
                    payload = json.loads(data[:-1])
                    if type_ in ("", "message"):
                        on_change(id_, payload)
                    elif type_ == "reset":
                        on_reset(payload)
                    else:
                        log('ignored an "%s" message' % type_)
                last_id = id_                     # handled: resume after it
                data, type_ = "", ""
                continue
            field, colon, value = line.partition(":")
            if not field:
                continue                          # a comment
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data += value + "\n"
            elif field == "event":
                type_ = value
            elif field == "id" and "\0" not in value:
                id_ = value
            elif field == "retry" and re.fullmatch(r"[0-9]+", value):
                retry_ms = int(value)
    return "the stream ended"


def refused(status, text, headers):
    """A status other than 200: retry later, start over, or give up."""
    global last_id
    try:
        body = json.loads(text)       # changegate's errors: {"error": CODE, "message": ...}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status == 400 and body.get("error") == "invalid_position" and last_id:
        # The position we hold is not one changegate can read: start from now, and treat
        # it as a reset (what was built up to it cannot be continued).
        last_id = None
        on_reset({"reason": "invalid_position", "lastEventId": None})
        return "the position was refused (invalid_position): starting from now"
    what = "%d %s: %s" % (status, body.get("error", ""),
                          body.get("message") or text[:200].decode("utf-8", "replace"))
    if 400 <= status < 500 and status not in (408, 429):
        # A bad parameter or filter, a missing or expired token (with --auth jwt: get a
        # fresh one and reconnect), a wrong URL: retrying the same request cannot help.
        sys.exit("changes: refused: " + what)
    # 503 too_many_subscribers, a proxy's 502 while changegate restarts, ...: later.
    after = headers.get("Retry-After", "")
    raise RetryLater("answered " + what, int(after) if after.isdigit() else None)


def main():
    global failures
    while True:
        delay = None
        try:
            log(follow())
        except Exception as e:        # whatever went wrong, resume from last_id
            failures += 1
            delay = getattr(e, "retry_after", None)
            log("%s: %s" % (type(e).__name__, e))
        if delay is None:
            delay = min(retry_ms / 1000 * 2 ** max(0, failures - 1), MAX_DELAY)
        delay = delay / 2 + random.random() * delay / 2   # spread out: not all clients at once
        log("reconnecting in %.1f s %s" % (delay, "after " + last_id if last_id else "from now"))
        time.sleep(delay)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
