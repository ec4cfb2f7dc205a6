#!/usr/bin/python3
"""Story: changegate starts with a state directory whose saved position this deployment
never issued (the directory was copied from another deployment, or --mongo-uri now
points elsewhere). It must not wait silently for a position that will never come, nor
pretend continuity: it starts from now, says so in its log (error), on /healthz
("warning") and /metrics (changegate_watcher_history_lost 1), and streams new events.

1. A first devmongo runs just long enough to give a resume token: a position from
   another deployment, from the past. From it a second one is made with a clusterTime in
   2038: a position from the future.
2. For each of the two: devmongo starts; changegate starts with
   STATE_DIR/changegate.position holding that position (as both saved positions). An
   SSE subscriber connects and 3 documents are inserted. The subscriber gets exactly
   those 3, perhaps after one `history_lost` reset (mongod refuses a never-issued past
   position only at the first event after it, and then changegate starts again from
   where it had opened, so that event is not skipped; a position from the future is
   refused at once, before the subscriber came). Then /healthz answers 200 with a
   "warning", /metrics has changegate_watcher_history_lost 1, and the log has an error
   line naming the position.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def start_with_state(sc, mongo, pos, name):
    state = sc.mkdir(name + "-state")
    with open(os.path.join(state, "changegate.position"), "w") as f:
        json.dump({"version": 1, "resumeAfter": pos, "position": pos}, f)
    return sc.changegate(mongo.uri, state_dir=state, name=name)


def check_reported(cg, pos, name):
    body = cg.wait_health(200)
    h.check(isinstance(body.get("warning"), str) and body["warning"].strip(),
            "%s: /healthz 200 without a warning about the lost position: %r", name, body)
    m = cg.metrics()
    h.check(m.value("changegate_watcher_history_lost") == 1,
            "%s: changegate_watcher_history_lost is %s", name,
            m.value("changegate_watcher_history_lost"))
    errors = [ln for ln in cg.stderr().splitlines() if " error: " in ln and pos in ln]
    h.check(errors, "%s: no error line in the log names the lost position %s", name, pos)
    return body, errors[0]


def story(sc):
    foreign = h.foreign_position(sc)
    future = foreign[:2] + "7FFFFFF0" + foreign[10:]
    mongo = sc.devmongo()
    w = sc.writer(mongo.uri)
    seq = 0
    for pos, what in ((foreign, "from another deployment"), (future, "from the future")):
        name = "changegate-" + what.split()[-1]
        cg = start_with_state(sc, mongo, pos, name)
        s = sc.track(cg.sse())
        w.insert_seq(seq, 3, "fs", "docs")
        resets, got = [], []
        while len(got) < 3:
            m = s.read_messages(1)[0]
            if m.type == "reset":
                h.check(not got and not resets, "%s: a reset after events: %r", name, m)
                h.check(m.json().get("reason") == "history_lost", "%s: reset %r", name, m.data)
                resets.append(m)
                continue
            got.append(h.seq_of(h.check_sse_event(m)))
        h.check_sequence(got, list(range(seq, seq + 3)), "subscriber (%s)" % what)
        extra = s.drain(0.3)
        h.check(not extra, "%s: extra messages %r", name, extra[:3])
        body, line = check_reported(cg, pos, name)
        s.close()
        cg.stop()
        seq += 3
        h.say("saved position %s: %d reset(s), then exactly the 3 new events; /healthz "
              "warning; logged %r", what, len(resets), line.split(" error: ", 1)[1][:200])


if __name__ == "__main__":
    h.run(story)
