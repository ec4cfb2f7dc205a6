#!/usr/bin/python3
"""Story: a subscriber that connects while a freshly started changegate is still opening
its change stream gets every event written after it connected.

Found by the package test: systemd reports the service ready as soon as it listens, so a
client may subscribe before the watcher's first getMore has answered. "From now" must
then mean from that moment, not from whenever the watcher first found MongoDB quiet.

1. devmongo runs; a failpoint holds the next getMore for 2 s (blockConnection), so the
   watcher of a changegate started with no saved position sits inside its first getMore.
2. changegate starts (no state); an SSE subscriber connects at once, before /healthz
   says 200, and gets its stream's opening.
3. Three documents are written while the getMore is held: they come in that first
   batch. The subscriber gets all three, in order, and nothing else.
4. The same after a restart: changegate stops on a quiet stream, so its saved position is
   a postBatchResumeToken that no event carries; it restarts from it with the getMore
   held again. A subscriber that connects at once gets the three documents written next,
   and none of the earlier ones replayed into the journal.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def early_subscriber(sc, mongo, w, state, first, what):
    """Starts changegate with its first getMore held; subscribes at once; writes three."""
    h.fail_command(w.client, {"times": 1}, failCommands=["getMore"], blockConnection=True,
                   blockTimeMS=int(2000 * h.SLOW))
    cg = sc.changegate(mongo.uri, wait_healthy=False, state_dir=state)
    cg.wait_listening()
    sse = sc.track(cg.sse(params=[("ns", "early.docs")]))
    h.say("%s: subscribed while the watcher's first getMore is held", what)
    w.insert_seq(first, 3, db="early", coll="docs")
    msgs = sse.read_messages(3, timeout=20)
    seqs = [m.json()["fullDocument"]["seq"] for m in msgs]
    want = list(range(first, first + 3))
    h.check(seqs == want, "%s: the early subscriber got seq %s, expected %s", what, seqs, want)
    h.say("%s: it got the three documents written after it connected: %s", what, seqs)
    cg.wait_health(200)
    return cg, sse


def story(sc):
    mongo = sc.devmongo()
    w = sc.writer(mongo.uri)
    state = sc.mkdir("state")
    cg, sse = early_subscriber(sc, mongo, w, state, 1, "fresh start")
    sse.close()
    # Quiet for a moment: the position saved at the stop is a postBatchResumeToken.
    time.sleep(1.5)
    cg.stop()
    with open(os.path.join(state, "changegate.position")) as f:
        saved = json.load(f)["position"]
    h.check(saved.endswith("FF"), "the saved position %s is not a postBatchResumeToken's", saved)
    early_subscriber(sc, mongo, w, state, 4, "restart")
    sc.finish()


if __name__ == "__main__":
    h.run(story)
