#!/usr/bin/python3
"""Story: MongoDB fails the watcher's getMore with errors the driver must not resume
from by itself. changegate reopens the stream from its saved position, so subscribers
lose nothing, get nothing twice and see no reset: a non-resumable error is not a lost
history (only ChangeStreamHistoryLost and its kin are).

1. devmongo and changegate start; an SSE subscriber and an op=insert NDJSON subscriber
   connect. seq 0..99 are inserted and received.
2. The watcher's next getMore fails with 175 QueryPlanKilled (not resumable, no label),
   then 100 more inserts (100..199).
3. Its next getMore fails with 8 UnknownError labelled NonResumableChangeStreamError,
   then 100 more (200..299).
4. Both subscribers have exactly 0..299, in order, no reset;
   changegate_watcher_history_lost is 0 and no history_lost reset was counted; the log
   says MongoDB refused the stream, naming each error code.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def story(sc):
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)
    s = sc.track(cg.sse())
    nd = sc.track(cg.ndjson(params=[("op", "insert")]))
    w = sc.writer(mongo.uri)
    w.insert_seq(0, 100, "nr", "docs")
    got_s = [h.seq_of(h.check_sse_event(m)) for m in s.read_messages(100)]
    got_n = [h.seq_of(h.check_ndjson_event(o)) for o in nd.read_events(100)]

    faults = ((175, None, "175 QueryPlanKilled, no label"),
              (8, ["NonResumableChangeStreamError"], "8 labelled NonResumableChangeStreamError"))
    for k, (code, labels, what) in enumerate(faults):
        data = {"failCommands": ["getMore"], "errorCode": code, "appName": "changegate"}
        if labels is not None:
            data["errorLabels"] = labels
        h.fail_command(mongo.uri, {"times": 1}, **data)
        first = 100 * (k + 1)
        w.insert_seq(first, 100, "nr", "docs")
        msgs = s.read_messages(100, timeout=40)
        for m in msgs:
            h.check(m.type == "message", "after getMore error %s: `event: %s` %s", what, m.type,
                    m.data)
        got_s += [h.seq_of(h.check_sse_event(m)) for m in msgs]
        got_n += [h.seq_of(h.check_ndjson_event(o)) for o in nd.read_events(100, timeout=40)]
        h.say("getMore failed with %s: the next 100 events arrived", what)

    h.check_sequence(got_s, list(range(300)), "SSE subscriber")
    h.check_sequence(got_n, list(range(300)), "NDJSON op=insert subscriber")
    extra = s.drain(0.3)
    h.check(not extra, "SSE: extra after seq 299: %r", extra[:3])
    m = cg.metrics()
    h.check(m.value("changegate_watcher_history_lost") == 0,
            "a non-resumable error was taken for a lost history")
    h.check(m.total("changegate_resets_total") == 0, "resets were counted: %s",
            m.total("changegate_resets_total"))
    log = cg.stderr()
    for code in (175, 8):
        h.check("refused the change stream on * (error %d" % code in log,
                "the log does not report error %d", code)
    h.say("0..299 exactly once on both, no reset, watcher_history_lost 0; the log names "
          "errors 175 and 8")


if __name__ == "__main__":
    h.run(story)
