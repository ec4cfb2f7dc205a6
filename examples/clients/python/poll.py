#!/usr/bin/env python3
"""Follow changegate's changes by long-polling /poll, with the Python 3 standard library
only: for places where a stream does not get through (a proxy that buffers responses,
a serverless function). Same arguments as changes.py.

    python3 poll.py [GATEWAY] [NAME=VALUE ...]
    python3 poll.py http://127.0.0.1:8080 ns=shop.orders timeout=25
    python3 poll.py lastEventId=826B0486...      # resume after a position you kept

NAME=VALUE: /poll query parameters (ns, op, id, filter, fields, timeout, limit);
lastEventId=POS starts right after POS instead of from now.
stdout: one JSON line per change, {"event": CHANGE} (a poll answer has one position for
all its changes), and {"reset": {"reason": ..., "lastEventId": ...}} when continuity was
lost. stderr: errors and retries.
"""
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
params = {"timeout": "25"}     # seconds changegate holds a poll that has nothing to answer
last_id = None                 # where the next poll starts: the last answer's lastEventId
for arg in args:
    name, eq, value = arg.partition("=")
    if not name or not eq:
        sys.exit("usage: poll.py [GATEWAY] [NAME=VALUE ...]")
    if name == "lastEventId":
        last_id = value
    else:
        params[name] = value


def on_change(change):
    # Your work goes here (see changes.py).
    print(json.dumps({"event": change}, separators=(",", ":")), flush=True)


def on_reset(info):
    # Continuity was lost (see changes.py): reload your state, then keep applying changes.
    print(json.dumps({"reset": info}, separators=(",", ":")), flush=True)


def log(msg):
    print("poll: " + msg, file=sys.stderr, flush=True)


def main():
    global last_id
    failures = 0
    while True:
        query = dict(params, lastEventId=last_id or "")     # empty: from now
        url = gateway.rstrip("/") + "/poll?" + urllib.parse.urlencode(query)
        delay = None
        try:
            # The answer comes as soon as there are changes, else after `timeout` seconds.
            with urllib.request.urlopen(url, timeout=float(params["timeout"]) + 30) as resp:
                answer = json.load(resp)
            for change in answer["events"]:
                on_change(change)
            # Only once all of them are handled: if this process stops half-way, the next
            # poll from the same position gets the same changes again.
            last_id = answer["lastEventId"]
            failures = 0
            continue
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                body = json.loads(text)   # {"error": CODE, "message": ..., "lastEventId": ...}
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            if e.code == 410:
                # history_lost: the position cannot be continued. Reload your state, and go on
                # from the position the answer gives.
                last_id = body.get("lastEventId")
                on_reset({"reason": body.get("reason", body.get("error")), "lastEventId": last_id})
                continue
            if e.code == 400 and body.get("error") == "invalid_position" and last_id:
                # Not a position changegate can read: start from now, as after a reset.
                last_id = None
                on_reset({"reason": "invalid_position", "lastEventId": None})
                continue
            what = "%d %s: %s" % (e.code, body.get("error", ""),
                                  body.get("message") or text[:200].decode("utf-8", "replace"))
            if 400 <= e.code < 500 and e.code not in (408, 429):
                sys.exit("poll: refused: " + what)    # a bad parameter, token, URL: give up
            after = e.headers.get("Retry-After", "")
            delay = int(after) if after.isdigit() else None
            log("answered " + what)
        except Exception as e:            # unreachable, cut off, not JSON: try again
            log("%s: %s" % (type(e).__name__, e))
        failures += 1
        if delay is None:
            delay = min(3 * 2 ** (failures - 1), 60)   # 3 s, 6 s, 12 s, ... 60 s
        delay = delay / 2 + random.random() * delay / 2     # spread out: not all clients at once
        log("retrying in %.1f s %s" % (delay, "after " + last_id if last_id else "from now"))
        time.sleep(delay)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
