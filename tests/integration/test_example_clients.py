#!/usr/bin/python3
"""Story: the examples people copy do what they say. The client programs in
examples/clients/ (Node.js and Python, no dependencies) and every curl recipe in
examples/curl/README.md are run as they are, against devmongo and changegate.

1. devmongo and changegate start. Three example clients start from now, each printing
   one JSON line per change: node examples/clients/node/changes.mjs (SSE over fetch),
   python3 examples/clients/python/changes.py (SSE over urllib) and
   python3 examples/clients/python/poll.py (long-poll). /metrics shows their two streams
   and the waiting poll before anything is written.
2. seq 0..299 are inserted at a steady pace. Once every client has printed some of them,
   changegate gets SIGTERM (exit 0); the rest of the burst and seq 300..349 are inserted
   while it is down; it starts again on the same port with the same state dir, and seq
   350..399 follow. Once /metrics shows the clients back, seq 400 is written last (a
   client that came back from now would show a gap before it). Each client reconnects by
   itself from the last position it handled: each has printed seq 0..400 exactly once,
   in order, and no reset. The SSE clients' ids are the events' positions, the same in
   both.
3. A position another devmongo run issued (as a state file copied from another
   deployment would hold): the three clients started again with lastEventId=<it> each
   print a reset line first ({"reset": {"reason": "history_lost", "lastEventId": ...}}),
   then exactly seq 401..410, written after it. The clients of step 1 print 401..410
   with no reset.
4. Each ```sh block of examples/curl/README.md (found under its ### heading; a block
   this test has no check for fails it) runs in bash with the gateway's address put in
   for http://127.0.0.1:8080, its stdout a terminal as when pasted. The six streaming
   recipes run together while seven writes happen (inserts, an update, deletes, in
   shop.orders, shop.customers and other.things); each prints exactly what its heading
   says: every change as SSE, every change as NDJSON, only the documents, only
   shop.orders inserts and updates, only the deletes, only the paid orders of 100 or
   more with only their status and total. The resume recipe with LAST set to the third
   change's id prints exactly the four changes after it. The long-poll loop prints the
   changes written while it runs and keeps the position in last-event-id; run again,
   it prints exactly the changes written while it was stopped; with a foreign position
   in the file it prints a reset line and continues. /healthz says ok; the metrics
   recipe prints the three families it greps for.
"""
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WAIT = 30 * h.SLOW
EXAMPLES = os.path.join(h.REPO, "examples")
NODE_CLIENT = os.path.join(EXAMPLES, "clients", "node", "changes.mjs")
PY_CLIENT = os.path.join(EXAMPLES, "clients", "python", "changes.py")
POLL_CLIENT = os.path.join(EXAMPLES, "clients", "python", "poll.py")
CURL_README = os.path.join(EXAMPLES, "curl", "README.md")
PLACEHOLDER = "http://127.0.0.1:8080"


# --------------------------------------------------------------------------- the clients

class Client:
    """An example client as a process; what it prints to stdout, as JSON lines, read by a
    thread as it comes (so the client never waits for the test). sse: its change lines
    are {"id", "event"} (else {"event"}, the poll client's)."""

    def __init__(self, sc, name, argv, sse):
        self.name, self.sse = name, sse
        self.proc = h.Proc(name, argv, os.path.join(sc.tmp, name + ".log"), pipes=True)
        sc.procs.append(self.proc)
        self.proc.popen.stdin.close()
        self.raw = []                 # lines, appended by the reader thread
        self.eof = threading.Event()
        self.out = []                 # the lines parsed so far
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.proc.popen.stdout:
                self.raw.append(line)
        except (OSError, ValueError):
            pass
        finally:
            self.eof.set()

    def read_until(self, pred, what):
        deadline = time.monotonic() + WAIT
        while True:
            ended = self.eof.is_set()
            for line in self.raw[len(self.out):]:
                try:
                    o = json.loads(line)
                except ValueError as e:
                    raise h.TestFailure("%s printed a line that is not JSON (%s): %r" % (
                        self.name, e, line[:300]))
                self.check_line(o)
                self.out.append(o)
            if pred():
                return
            h.check(not ended, "%s exited (status %s) while the test waited for %s; its "
                    "stderr ends: %s", self.name, self.proc.popen.poll(), what,
                    self.proc.output()[-1500:])
            h.check(time.monotonic() < deadline, "%s: timed out waiting for %s; it printed "
                    "%d lines, the last %r; its stderr ends: %s", self.name, what,
                    len(self.out), [shorten(o) for o in self.out[-2:]],
                    self.proc.output()[-1500:])
            time.sleep(0.05)

    def check_line(self, o):
        want = {"id", "event"} if self.sse else {"event"}
        h.check(isinstance(o, dict) and (set(o) == want or set(o) == {"reset"}),
                "%s printed %r; expected %s or {\"reset\"} lines", self.name, shorten(o),
                sorted(want))
        if "id" in o:
            h.check(o["id"] == h.position_of(o["event"]), "%s: id %r is not the event's "
                    "position %r", self.name, o["id"], o["event"].get("_id"))

    def seqs(self):
        return [h.seq_of(o["event"]) for o in self.out if "event" in o]

    def has_seq(self, seq):
        return lambda: seq in self.seqs()

    def resets(self):
        return [o["reset"] for o in self.out if "reset" in o]

    def stop(self):
        self.proc.stop(wait=5)


def shorten(o):
    text = json.dumps(o)
    return text if len(text) < 200 else text[:200] + "..."


def start_clients(sc, cg, suffix="", args=()):
    gateway = "http://127.0.0.1:%d" % cg.port
    return [
        Client(sc, "node-changes" + suffix, ["node", NODE_CLIENT, gateway] + list(args), True),
        Client(sc, "py-changes" + suffix, [h.PYTHON, PY_CLIENT, gateway] + list(args), True),
        Client(sc, "py-poll" + suffix, [h.PYTHON, POLL_CLIENT, gateway] + list(args), False),
    ]


def wait_subscribers(cg, what, **want):
    """Until /metrics' changegate_subscribers{transport} are exactly `want`."""
    seen = {}

    def pred():
        m = cg.metrics()
        seen.update((t, m.value("changegate_subscribers", transport=t)) for t in want)
        return seen == want
    try:
        h.wait_until(pred, WAIT, what, interval=0.1)
    except h.TestFailure as e:
        raise h.TestFailure("%s (subscribers %r, expected %r)" % (e, seen, want))


# --------------------------------------------------------------------------- the curl recipes

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def readme_recipes():
    """{### heading: the ```sh block under it} of examples/curl/README.md."""
    with open(CURL_README) as f:
        lines = f.read().split("\n")
    recipes, heading, i = {}, None, 0
    while i < len(lines):
        if lines[i].startswith("### "):
            heading = lines[i][4:].strip()
        elif lines[i].strip() == "```sh":
            end = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == "```"), None)
            h.check(end is not None, "%s: the ```sh block at line %d is not closed",
                    CURL_README, i + 1)
            h.check(heading is not None and heading not in recipes, "%s: the ```sh block at "
                    "line %d has no ### heading of its own", CURL_README, i + 1)
            recipes[heading] = "\n".join(lines[i + 1:end]) + "\n"
            i = end
        i += 1
    return recipes


class Recipe:
    """A README block run by bash as if pasted into a terminal: its stdout is a
    pseudo-terminal (jq then writes each line at once, in colour), read by a thread;
    stderr goes to the log. Its own process group, stopped with the scenario's others."""

    def __init__(self, sc, heading, script, port, cwd=None):
        self.heading = heading
        h.check(PLACEHOLDER in script, "recipe %r does not use %s", heading, PLACEHOLDER)
        self.script = script.replace(PLACEHOLDER, "http://127.0.0.1:%d" % port)
        name = "recipe-" + re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:40]
        master, slave = pty.openpty()
        self.proc = h.Proc(name, ["bash", "-c", self.script], os.path.join(sc.tmp, name + ".log"),
                           cwd=cwd or sc.tmp, stdout=slave)
        sc.procs.append(self.proc)
        os.close(slave)
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.eof = threading.Event()
        threading.Thread(target=self._read, args=(master,), daemon=True).start()

    def _read(self, fd):
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:           # EIO: every process holding the terminal is gone
                    break
                if not data:
                    break
                with self.lock:
                    self.raw += data
        finally:
            os.close(fd)
            self.eof.set()

    def text(self):
        """What it printed, as text, without the terminal's CRs and jq's colours."""
        with self.lock:
            raw = bytes(self.raw)
        return ANSI.sub("", raw.decode("utf-8", "replace").replace("\r\n", "\n"))

    def lines(self):
        """The complete lines printed so far, blank ones left out."""
        text = self.text()
        return [ln for ln in text[:text.rfind("\n") + 1].split("\n") if ln.strip()]

    def json_lines(self):
        out = []
        for ln in self.lines():
            try:
                out.append(json.loads(ln))
            except ValueError as e:
                raise h.TestFailure("recipe %r printed a line that is not JSON (%s): %r" % (
                    self.heading, e, ln[:300]))
        return out

    def wait_for(self, pred, what):
        deadline = time.monotonic() + WAIT
        while True:
            done = self.eof.is_set()
            if pred():
                return
            h.check(not done and time.monotonic() < deadline, "recipe %r: %s %s; it printed "
                    "%r; its stderr: %s", self.heading, "ended before" if done else
                    "timed out waiting for", what, self.text()[-1500:],
                    self.proc.output()[-1000:])
            time.sleep(0.05)

    def finish(self):
        """For a recipe that ends by itself: its exit status, once its output is complete."""
        try:
            rc = self.proc.popen.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            raise h.TestFailure("recipe %r did not end within %.0fs; it printed %r" % (
                self.heading, WAIT, self.text()[-1000:]))
        self.eof.wait(10)
        self.proc.stop(wait=0, sig=None)
        return rc

    def stop(self):
        self.proc.stop(wait=5)
        self.eof.wait(10)


# The writes the streaming recipes watch, in order, and the change each one makes:
# (db, coll, operationType, documentKey._id).
def shop_writes(client):
    shop, other = client["shop"], client["other"]
    shop.orders.insert_one({"_id": 1, "status": "new", "total": 40})
    shop.orders.insert_one({"_id": 2, "status": "paid", "total": 120})
    shop.customers.insert_one({"_id": "ann", "name": "Ann"})
    shop.customers.delete_one({"_id": "ann"})
    shop.orders.update_one({"_id": 1}, {"$set": {"status": "paid", "total": 150}})
    other.things.insert_one({"_id": 7, "status": "paid", "total": 999})
    shop.orders.delete_one({"_id": 2})


CHANGES = [("shop", "orders", "insert", 1), ("shop", "orders", "insert", 2),
           ("shop", "customers", "insert", "ann"), ("shop", "customers", "delete", "ann"),
           ("shop", "orders", "update", 1), ("other", "things", "insert", 7),
           ("shop", "orders", "delete", 2)]
ORDER1 = {"_id": 1, "status": "new", "total": 40}
ORDER2 = {"_id": 2, "status": "paid", "total": 120}
ANN = {"_id": "ann", "name": "Ann"}
ORDER1_PAID = {"_id": 1, "status": "paid", "total": 150}
THING7 = {"_id": 7, "status": "paid", "total": 999}


def sse_changes(r):
    """The SSE recipe's messages as (key, id); comments only the preamble and heartbeats."""
    items = h.SSEParser().feed(r.text().encode())
    comments = {i.text for i in items if isinstance(i, h.Comment)}
    h.check(comments <= {"changegate", "heartbeat"}, "recipe %r: comments %r", r.heading,
            comments)
    return [(h.key_of(h.check_sse_event(m)), m.id_field) for m in items
            if isinstance(m, h.Message)]


def ndjson_changes(r):
    """The NDJSON recipe's change lines as (key, id); the others only heartbeats."""
    out = []
    for o in r.json_lines():
        if not h.is_heartbeat(o):
            out.append((h.key_of(h.check_ndjson_event(o)), o["id"]))
    return out


# heading: (transport, what it must print: a function of the recipe giving a list,
# the list expected). The six run together over shop_writes().
STREAMING = {
    "Watch every change as Server-Sent Events":
        ("sse", lambda r: [k for k, _ in sse_changes(r)], CHANGES),
    "One JSON object per line (NDJSON)":
        ("ndjson", lambda r: [k for k, _ in ndjson_changes(r)], CHANGES),
    "Only the documents":
        ("ndjson", Recipe.json_lines, [ORDER1, ORDER2, ANN, ORDER1_PAID, THING7]),
    "Only some collections and operations":
        ("ndjson", Recipe.json_lines, [{"op": "insert", "id": 1, "doc": ORDER1},
                                       {"op": "insert", "id": 2, "doc": ORDER2},
                                       {"op": "update", "id": 1, "doc": ORDER1_PAID}]),
    "Select with jq":
        ("ndjson", Recipe.lines, ["customers ann deleted", "orders 2 deleted"]),
    "A filter and fields, encoded by curl":
        ("ndjson", Recipe.json_lines, [{"status": "paid", "total": 120},
                                       {"status": "paid", "total": 150},
                                       {"status": "paid", "total": 999}]),
}
OTHERS = ["Resume after a position", "Long-poll in a loop, keeping the position in a file",
          "Is it healthy?", "Metrics"]


def comparable(item):
    """JSON objects as their text with sorted keys (hashable, and whatever the key order)."""
    return json.dumps(item, sort_keys=True) if isinstance(item, (dict, list)) else item


def read_file(path):
    with open(path) as f:
        return f.read()


def check_curl_recipes(sc, cg, w, foreign):
    h.check(shutil.which("jq") is not None, "jq not found: run tests/install-deps.sh")
    recipes = readme_recipes()
    unknown = [t for t in recipes if t not in STREAMING and t not in OTHERS]
    h.check(not unknown, "%s has recipes this test does not check: %r (add a check for each)",
            CURL_README, unknown)
    missing = [t for t in list(STREAMING) + OTHERS if t not in recipes]
    h.check(not missing, "%s lacks the recipes %r", CURL_README, missing)

    # The streaming recipes, together, over the same writes.
    running = {t: Recipe(sc, t, recipes[t], cg.port) for t in STREAMING}
    per_transport = {}
    for transport, _, _ in STREAMING.values():
        per_transport[transport] = per_transport.get(transport, 0) + 1
    wait_subscribers(cg, "the %d streaming recipes to subscribe" % len(STREAMING),
                     poll=0, **per_transport)
    shop_writes(w.client)
    for t, (_, got, want) in STREAMING.items():
        running[t].wait_for(lambda: len(got(running[t])) >= len(want), "%d items" % len(want))
    time.sleep(0.5 * h.SLOW)     # anything printed after the expected items shows up too
    for t, (_, got, want) in STREAMING.items():
        running[t].stop()
        h.check_sequence([comparable(o) for o in got(running[t])],
                         [comparable(o) for o in want], "recipe %r" % t)
    ids = [i for _, i in ndjson_changes(running["One JSON object per line (NDJSON)"])]
    h.check_sequence([i for _, i in sse_changes(running["Watch every change as Server-Sent "
                                                        "Events"])], ids,
                     "the SSE recipe's ids vs the NDJSON recipe's")
    h.say("the %d streaming recipes printed exactly their changes of the 7 writes: %s",
          len(STREAMING), "; ".join(STREAMING))

    # Resume after the third change.
    t = "Resume after a position"
    script, n = re.subn(r"(?m)^LAST=\S+", "LAST=" + ids[2], recipes[t])
    h.check(n == 1, "recipe %r has no line LAST=<position> for the test to fill in", t)
    r = Recipe(sc, t, script, cg.port)
    r.wait_for(lambda: len(sse_changes(r)) >= 4, "4 changes")
    time.sleep(0.5 * h.SLOW)
    r.stop()
    got = sse_changes(r)
    h.check_sequence([k for k, _ in got], CHANGES[3:], "recipe %r from the 3rd change" % t)
    h.check_sequence([i for _, i in got], ids[3:], "recipe %r: ids" % t)
    h.say("the resume recipe, LAST = the 3rd change's id, printed exactly the 4 after it")

    # The long-poll loop: from now; then again from its file; then from a foreign position.
    t = "Long-poll in a loop, keeping the position in a file"
    loop_dir = sc.mkdir("poll-loop")
    saved = os.path.join(loop_dir, "last-event-id")
    orders = w.coll("shop", "orders")

    def run_loop(before, after, expect_reset=False):
        """One run of the loop in loop_dir: it must print a reset line (expect_reset), the
        orders `before` (written while it was not running), then the orders `after`
        (written once its poll waits), and keep the last one's position in its file."""
        r = Recipe(sc, t, recipes[t], cg.port, cwd=loop_dir)
        first = 1 if expect_reset else 0
        r.wait_for(lambda: len(r.json_lines()) >= first + len(before),
                   "%d lines" % (first + len(before)))
        wait_subscribers(cg, "the poll loop's poll to wait", poll=1)
        for k in after:
            orders.insert_one({"_id": k, "seq": k})
        r.wait_for(lambda: len(r.json_lines()) >= first + len(before) + len(after),
                   "%d lines" % (first + len(before) + len(after)))
        last = h.position_of(r.json_lines()[-1])
        h.wait_until(lambda: read_file(saved).strip() == last, WAIT,
                     "last-event-id to hold the last change's position %s" % last)
        r.stop()
        lines = r.json_lines()
        if expect_reset:
            reset = lines.pop(0)
            h.check(set(reset) == {"reset"} and reset["reset"].get("error") == "history_lost"
                    and isinstance(reset["reset"].get("lastEventId"), str),
                    "recipe %r with a foreign position: first line %r, expected {\"reset\": "
                    "{\"error\": \"history_lost\", ..., \"lastEventId\": ...}}", t, reset)
        h.check_sequence([h.key_of(e) for e in lines],
                         [("shop", "orders", "insert", k) for k in before + after],
                         "recipe %r" % t)

    run_loop([], [100, 101, 102])                     # from now
    for k in (103, 104):                              # while the loop is not running
        orders.insert_one({"_id": k, "seq": k})
    run_loop([103, 104], [105])                       # from its file
    with open(saved, "w") as f:
        f.write(foreign + "\n")
    run_loop([], [106, 107], expect_reset=True)      # from a foreign position
    h.say("the long-poll loop printed what was written while it ran, kept its position in "
          "a file and continued from it when run again; a foreign position: a reset line, "
          "then the new changes")

    # Finite ones.
    r = Recipe(sc, "Is it healthy?", recipes["Is it healthy?"], cg.port)
    rc = r.finish()
    health = h.json_body(r.text().encode(), "the output of recipe 'Is it healthy?'")
    h.check(rc == 0 and isinstance(health, dict) and health.get("status") == "ok",
            "recipe 'Is it healthy?' exited %d "
            "printing %r", rc, r.text()[:500])
    r = Recipe(sc, "Metrics", recipes["Metrics"], cg.port)
    rc = r.finish()
    text = r.text()
    h.check(rc == 0, "recipe 'Metrics' exited %d printing %r", rc, text[:500])
    m = h.Metrics(h.parse_metrics(text))
    names = {name for name, _ in m}
    h.check(names == {"changegate_subscribers", "changegate_events_received_total",
                      "changegate_watcher_lag_seconds"}, "recipe 'Metrics' printed %r", text)
    h.check(m.value("changegate_events_received_total") >= len(CHANGES),
            "recipe 'Metrics': changegate_events_received_total %s",
            m.value("changegate_events_received_total"))
    h.say("/healthz recipe: status %s; the metrics recipe printed %s", health["status"],
          ", ".join(sorted(names)))


def story(sc):
    h.check(shutil.which("node") is not None, "node not found: run tests/install-deps.sh")
    mongo = sc.devmongo()
    cg = sc.changegate(mongo.uri)
    w = sc.writer(mongo.uri)
    items = w.coll("app", "items")

    # 1. The three example clients, from now.
    clients = start_clients(sc, cg)
    wait_subscribers(cg, "the example clients to subscribe", sse=2, poll=1)
    h.say("the Node.js and Python SSE clients and the poll client are subscribed")

    # 2. A restart in the middle of a write burst.
    writer = sc.thread(lambda: h.insert_paced(items, 0, 300, 0.01))
    for c in clients:
        c.read_until(lambda: len(c.seqs()) >= 30, "30 changes")
    cg.stop()                                   # SIGTERM; asserts exit status 0
    writer.join(60)
    h.insert_paced(items, 300, 50, 0)           # while changegate is down
    cg.start()                                  # same port, same state dir
    h.insert_paced(items, 350, 50, 0)
    h.say("changegate was stopped after the clients had %s changes; seq 300..349 written "
          "while it was down; restarted; seq 350..399 written", [len(c.seqs()) for c in clients])
    # seq 400 last, once every client is back: a client that came back from now instead
    # of from its position gets it after a gap.
    wait_subscribers(cg, "the example clients to come back", sse=2, poll=1)
    items.insert_one({"seq": 400})
    for c in clients:
        c.read_until(c.has_seq(400), "seq 400")
        h.check_sequence(c.seqs(), list(range(401)), "%s across the restart" % c.name)
        h.check(not c.resets(), "%s printed a reset: %r", c.name, c.resets())
    node_ids = [o["id"] for o in clients[0].out]
    h.check_sequence([o["id"] for o in clients[1].out], node_ids, "the Python client's ids "
                     "vs the Node.js client's")
    h.say("each client printed seq 0..400 exactly once, in order, across the restart; the "
          "SSE clients' ids agree")

    # 3. A position from another deployment: a reset line, then only the new changes.
    foreign = h.foreign_position(sc, later=True)
    again = start_clients(sc, cg, suffix="-foreign", args=["lastEventId=" + foreign])
    for c in again:
        c.read_until(lambda: c.out, "its first line (a reset)")
        resets = c.resets()
        h.check(len(resets) == 1 and len(c.out) == 1, "%s started from a foreign position "
                "printed %r first; expected a reset line", c.name, shorten(c.out[0]))
        h.check(resets[0].get("reason") == "history_lost" and isinstance(
            resets[0].get("lastEventId"), str), "%s: reset %r, expected reason history_lost "
            "and a lastEventId", c.name, resets[0])
    h.insert_paced(items, 401, 10, 0)
    for c in clients + again:
        c.read_until(c.has_seq(410), "seq 410")
    for c in again:
        h.check_sequence(c.seqs(), list(range(401, 411)), "%s after its reset" % c.name)
        h.check(len(c.resets()) == 1, "%s printed %d resets", c.name, len(c.resets()))
    for c in clients:
        h.check_sequence(c.seqs(), list(range(411)), c.name)
        h.check(not c.resets(), "%s printed a reset: %r", c.name, c.resets())
    h.say("started from a foreign position, each client printed a reset line (%s), then "
          "exactly seq 401..410", again[0].resets()[0]["reason"])
    for c in clients + again:
        c.stop()

    # 4. The curl recipes.
    check_curl_recipes(sc, cg, w, foreign)


if __name__ == "__main__":
    h.run(story)
