#!/usr/bin/python3
"""Story: MongoDB refuses changegate's change stream (its user lacks the right to watch):
changegate says so clearly on /healthz and in its log, keeps retrying, and streams as
soon as the right is granted; a refusal in the middle of streaming loses nothing.

devmongo has no users, so the refusal is MongoDB's own answer to a missing privilege,
injected with failCommand for changegate's appName only: error 13 (Unauthorized).

1. failCommand alwaysOn: every `aggregate` from appName "changegate" fails with 13.
   changegate starts; /healthz answers 503 {"error": "not_ready", "message": ...} whose
   message says MongoDB refused the change stream, error 13, Unauthorized, and which
   privilege is missing. Its log has that line at level error, once, although the
   watcher keeps retrying.
2. The fail point is turned off (the right is granted): /healthz turns 200 by itself and
   an SSE subscriber gets seq 0..49.
3. While streaming, one `getMore` is refused with 13 (the right revoked for a moment).
   100 more writes (50..149): the subscriber gets all of them exactly once, in order,
   no reset; /healthz is 200 again at the end.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def refusal_lines(cg):
    return [ln for ln in cg.stderr().splitlines() if "refused the change stream" in ln]


def story(sc):
    mongo = sc.devmongo()
    h.fail_command(mongo.uri, "alwaysOn", failCommands=["aggregate"], errorCode=13,
                   appName="changegate")
    cg = sc.changegate(mongo.uri, wait_healthy=False)

    def refused():  # 503 "connecting to MongoDB" may come first
        status, b = cg.health_json()
        h.check(status == 503, "/healthz answered %d %r while MongoDB refuses", status, b)
        return b if "refused" in b.get("message", "") else None
    body = h.wait_until(refused, 20 * h.SLOW, "/healthz to say MongoDB refused the stream")
    msg = body.get("message", "")
    h.check(body.get("error") == "not_ready", "/healthz 503 body %r lacks error not_ready", body)
    for part in ("refused the change stream", "error 13", "Unauthorized", "changeStream"):
        h.check(part in msg, "/healthz message %r does not say %r", msg, part)
    h.say("/healthz 503: %s", msg)

    time.sleep(3)  # several retries (backoff from 100 ms)
    lines = refusal_lines(cg)
    h.check(len(lines) == 1, "the refusal should be logged once while it lasts; log has %d "
            "such lines: %r", len(lines), lines[:3])
    h.check(" error: " in lines[0], "the refusal is not logged at level error: %r", lines[0])
    h.say("logged once, at level error: %s", lines[0])

    h.fail_command(mongo.uri, "off")
    ok = cg.wait_health(200)
    h.say("the right is granted: /healthz 200 %s", ok)
    s = sc.track(cg.sse())
    w = sc.writer(mongo.uri)
    w.insert_seq(0, 50, "app", "refused")
    got = [h.seq_of(h.check_sse_event(m)) for m in s.read_messages(50)]

    h.fail_command(mongo.uri, {"times": 1}, failCommands=["getMore"], errorCode=13,
                   appName="changegate")
    w.insert_seq(50, 100, "app", "refused")
    msgs = s.read_messages(100, timeout=40)
    for m in msgs:
        h.check(m.type == "message", "the subscriber got `event: %s` %s after a refused "
                "getMore; expected data only", m.type, m.data)
    got += [h.seq_of(h.check_sse_event(m)) for m in msgs]
    h.check_sequence(got, list(range(150)), "subscriber across a refused getMore")
    extra = s.drain(0.3)
    h.check(not extra, "extra messages after seq 149: %r", extra[:3])
    cg.wait_health(200)
    h.check(len(refusal_lines(cg)) >= 2, "the refused getMore was not logged: %r",
            refusal_lines(cg))
    h.say("a refused getMore: the subscriber got 0..149 exactly once, no reset; "
          "/healthz 200")


if __name__ == "__main__":
    h.run(story)
