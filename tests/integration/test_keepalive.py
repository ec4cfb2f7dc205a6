#!/usr/bin/python3
"""Story: a long-poll client keeps one HTTP/1.1 connection for everything.

1. devmongo and changegate start; 300 documents are written.
2. On ONE keep-alive connection the client sends, in turn: a poll from the start
   with limit=1000 (one large answer), a poll with limit=5, a request with an
   unknown parameter (400), /healthz (200), an unknown path (404), and a poll that
   waits (timeout=1) and answers empty. Every answer is complete and valid JSON,
   none says "Connection: close", and the socket is the same one throughout.
3. The events of the first two polls are the writes, in order.
"""
import http.client
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 300


def story(sc):
    dm = sc.devmongo()
    cg = sc.changegate(dm.uri)
    start = h.json_body(h.request(cg.port, "GET", "/healthz")[2])["lastEventId"]
    sc.writer(dm.uri).insert_seq(0, N)
    # Wait (on other connections) until the gateway holds all of them.
    seen, pos = 0, start
    while seen < N:
        status, body, _ = cg.poll(lastEventId=pos, timeout=5, limit=1000)
        h.check(status == 200 and body["events"], "waiting for the writes: %r", body)
        seen, pos = seen + len(body["events"]), body["lastEventId"]
    h.say("%d documents written and seen by changegate", N)

    conn = http.client.HTTPConnection("127.0.0.1", cg.port, timeout=30)
    conn.connect()
    sock = conn.sock

    def get(path, want_status):
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        h.check(resp.status == want_status, "GET %s answered %d, expected %d: %r", path,
                resp.status, want_status, body[:300])
        h.check((resp.getheader("Connection") or "").lower() != "close",
                "GET %s answered with Connection: close", path)
        h.check(conn.sock is sock, "GET %s: the connection was not kept alive", path)
        return json.loads(body)

    big = get("/poll?" + h.query({"lastEventId": start, "limit": 1000, "timeout": 5}), 200)
    seqs = [e["fullDocument"]["seq"] for e in big["events"]]
    h.check(seqs == list(range(N)), "large answer: seqs %r...", seqs[:10])
    small = get("/poll?" + h.query({"lastEventId": start, "limit": 5}), 200)
    h.check([e["fullDocument"]["seq"] for e in small["events"]] == [0, 1, 2, 3, 4],
            "small answer: %r", small)
    err = get("/poll?colour=red", 400)
    h.check(err["error"] == "unknown_parameter", "error answer: %r", err)
    health = get("/healthz", 200)
    h.check(health["status"] == "ok", "health: %r", health)
    get("/nope", 404)
    idle = get("/poll?" + h.query({"lastEventId": big["lastEventId"], "timeout": 1}), 200)
    h.check(idle["events"] == [] and idle["lastEventId"] == big["lastEventId"],
            "idle poll: %r", idle)
    conn.close()
    h.say("six requests answered on one kept-alive connection")


h.run(story)
