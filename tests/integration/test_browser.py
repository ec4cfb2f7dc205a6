#!/usr/bin/python3
"""Story: the example page (examples/browser/index.html), in a real headless Chromium,
shows every change once and in order across a restart of changegate, reconnecting by
itself with Last-Event-ID; a page from an origin not in --cors-origin gets nothing.

1. devmongo starts; the example page is served by two small static HTTP servers on two
   loopback ports: two origins, A and B. Gateway G1 starts with --cors-origin A only.
   A plain request with Origin B gets 403 {"error": "origin_not_allowed"}; with Origin A,
   200 with Access-Control-Allow-Origin A.
2. Headless Chromium (Debian's, started by this scenario so that its process group is
   stopped with the others) opens page A with ?gateway=G1, driven by puppeteer-core
   (tests/node-clients/browser.mjs). Once the page's EventSource is open, 100 documents
   {seq: 0..99} are inserted; the page shows them: window.changegate.events holds seq
   0..99 with ids equal to the events' resume tokens, the counter says 100, the newest
   row holds seq 99.
3. A writer inserts seq 100..199 while G1 gets SIGTERM (exit 0) mid-way; with G1 down,
   seq 200..249 are inserted and the page says "reconnecting"; G1 starts again with the
   same state dir on the same port and seq 250..299 follow. Without any reload, the
   page's EventSource reconnects by itself, its request carrying Last-Event-ID (the id of
   the last event it had), and the page ends with seq 0..299 exactly once, in order,
   no reset.
4. Page B (origin B) on G1 is refused: its EventSource is CLOSED, the gateway answered
   its /events request with 403; seq 300..309 reach page A and none reaches page B.
5. Gateway G2 starts with --cors-origin B (and refuses Origin A: 403); a new page B on G2
   shows exactly seq 310..329, written after it opened; page A has exactly 0..329.

Screenshots of each step are saved as PNG under tests/browser-artifacts/test_browser/ in
the directory the scenario runs in (the build directory under `make check`), or under
$CG_ARTIFACTS/test_browser/ when CG_ARTIFACTS is set.
"""
import functools
import http.server
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from browser import (PAGE_DIR, Browser, artifacts_dir, check_page_events,  # noqa: E402
                     check_resumed_page)


# --------------------------------------------------------------------------- helpers

class StaticSite:
    """examples/browser served over HTTP on a loopback port: one origin."""

    def __init__(self, sc, name):
        handler = functools.partial(_QuietHandler, directory=PAGE_DIR)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = "http://127.0.0.1:%d" % self.port
        self.name = name
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)
        self.thread.start()
        sc.closers.append(self.close)

    def url(self, gateway):
        return "%s/index.html?gateway=http://127.0.0.1:%d" % (self.origin, gateway.port)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass


def events_url(gateway):
    """The prefix of the page's requests to a gateway's /events (Browser.requests)."""
    return "http://127.0.0.1:%d/events" % gateway.port


def plain_get(gateway, origin):
    """GET /events with an Origin header, as a script would send it: (status, headers,
    JSON body or None). A 200 stream is closed after its headers."""
    s = h.HTTPStream(gateway.port, "/events", {"Origin": origin, "Accept": "text/event-stream"})
    try:
        status = s.read_headers(10 * h.SLOW)
        body = None
        if status != 200:
            body = h.json_body(s.read_all(10 * h.SLOW), "the %d answer" % status)
        return status, s.headers, body
    finally:
        s.close()


def check_refused(gateway, origin):
    status, hdrs, body = plain_get(gateway, origin)
    h.check(status == 403, "Origin %s on gateway %s: status %d, expected 403", origin,
            gateway.name, status)
    h.check(hdrs.get("content-type", "").startswith("application/json"),
            "403 answer's Content-Type is %r", hdrs.get("content-type"))
    h.check(isinstance(body, dict) and body.get("error") == "origin_not_allowed"
            and isinstance(body.get("message"), str) and origin in body["message"],
            "403 answer to Origin %s: %r, expected error origin_not_allowed naming it",
            origin, body)
    h.check("access-control-allow-origin" not in hdrs,
            "the 403 answer allows the origin anyway: %r", hdrs)


def check_allowed(gateway, origin):
    status, hdrs, body = plain_get(gateway, origin)
    h.check(status == 200, "Origin %s on gateway %s: status %d (%r), expected 200", origin,
            gateway.name, status, body)
    h.check(hdrs.get("access-control-allow-origin") == origin,
            "Origin %s: Access-Control-Allow-Origin is %r", origin,
            hdrs.get("access-control-allow-origin"))


# --------------------------------------------------------------------------- the story

def story(sc):
    shots = artifacts_dir("test_browser")
    mongo = sc.devmongo()
    site_a, site_b = StaticSite(sc, "site-a"), StaticSite(sc, "site-b")
    g1 = sc.changegate(mongo.uri, name="g1", args=["--cors-origin", site_a.origin])
    w = sc.writer(mongo.uri)
    coll = w.coll("shop", "orders")
    h.say("origins: A %s (allowed on g1), B %s", site_a.origin, site_b.origin)

    # 1. What a script sees: 403 JSON for origin B, CORS headers for origin A.
    check_refused(g1, site_b.origin)
    check_allowed(g1, site_a.origin)
    h.say("g1 answers Origin B with 403 origin_not_allowed, Origin A with its CORS header")

    # 2. Page A shows the first 100 inserts.
    br = Browser(sc, shots)
    br.open("a", site_a.url(g1))
    br.wait("a", "window.changegate.opens === 1", "EventSource open")
    br.eval("a", "window.loadedOnce = 'same page'")     # gone if the page ever reloads
    w.insert_seq(0, 100, db="shop", coll="orders")
    check_page_events(br.wait_events("a", 100, 99), list(range(100)), "page A, first 100")
    dom = br.eval("a", """({count: document.getElementById('count').textContent,
                           state: document.body.dataset.state,
                           top: document.querySelector('#rows tr td.doc').textContent})""")
    h.check(dom["count"] == "100" and dom["state"] == "live", "page A's DOM: %r", dom)
    h.check(json.loads(dom["top"]).get("seq") == 99, "page A's newest row is %r, expected "
            "the document with seq 99", dom["top"])
    br.screenshot("a", "1-page-a-live.png")
    h.say("page A shows 100 events; counter %s, newest row seq 99", dom["count"])

    # 3. Restart g1 in the middle of a write burst.
    writer = sc.thread(lambda: h.insert_paced(coll, 100, 100, 0.005))
    br.wait_events("a", 110, 199)
    g1.stop()                                  # SIGTERM; asserts exit status 0
    got_before = br.received("a")
    h.say("g1 stopped with page A at %d events", len(got_before))
    writer.join(30)
    w.insert_seq(200, 50, db="shop", coll="orders")     # written while g1 is down
    br.wait("a", "document.body.dataset.state === 'reconnecting'", "state 'reconnecting'")
    br.screenshot("a", "2-page-a-reconnecting.png")
    last_before = br.eval("a", "window.changegate.events.at(-1).id")
    g1.start()                                 # same port, same state dir
    w.insert_seq(250, 50, db="shop", coll="orders")
    got = br.wait_events("a", 300, 299)
    check_page_events(got, list(range(300)), "page A across the restart")
    state = check_resumed_page(br, "a", 300, "page A")
    reqs = br.requests("a", events_url(g1))
    h.check(len(reqs) >= 2 and "last-event-id" not in reqs[0][0] and reqs[0][1] == 200,
            "page A's /events requests (headers, status, error, CORS error): %r", reqs)
    h.check(all(r[0].get("last-event-id") == last_before for r in reqs[1:])
            and reqs[-1][1] == 200,
            "page A's reconnects should all carry Last-Event-ID %s (its last event before the "
            "restart), the last one answered 200: %r", last_before,
            [(r[0].get("last-event-id"), r[1], r[2]) for r in reqs])
    br.screenshot("a", "3-page-a-resumed.png")
    h.say("page A: seq 0..299 exactly once across the restart; %d requests to /events, "
          "resumed with Last-Event-ID (%d opens), not reloaded", len(reqs), state["opens"])

    # 4. Origin B is not allowed on g1: the page gets nothing.
    br.open("b-refused", site_b.url(g1))
    ready = br.wait("b-refused", "window.changegate.source.readyState === EventSource.CLOSED "
                    "&& window.changegate.errors", "EventSource CLOSED (refused)")
    w.insert_seq(300, 10, db="shop", coll="orders")
    check_page_events(br.wait_events("a", 310, 309), list(range(310)), "page A, 300..309")
    refused = br.eval("b-refused", """({events: window.changegate.events.length,
                                         opens: window.changegate.opens,
                                         state: window.changegate.source.readyState})""")
    h.check(refused == {"events": 0, "opens": 0, "state": 2},
            "page B on g1 (origin not allowed) should have no events, never open and be "
            "CLOSED: %r", refused)
    reqs = br.requests("b-refused", events_url(g1))
    h.check(len(reqs) == 1 and reqs[0][0].get("origin") == site_b.origin
            and reqs[0][1] == 403 and reqs[0][3],
            "page B should have sent one /events request to g1 with Origin %s, answered 403, "
            "a CORS error in the browser, not retried: %r", site_b.origin, reqs)
    br.screenshot("b-refused", "4-page-b-refused.png")
    h.say("page B on g1: refused (403, EventSource CLOSED after %r error(s)), no events while "
          "page A got 300..309", ready)

    # 5. A gateway that allows origin B serves it.
    g2 = sc.changegate(mongo.uri, name="g2", args=["--cors-origin", site_b.origin])
    check_refused(g2, site_a.origin)
    check_allowed(g2, site_b.origin)
    br.open("b", site_b.url(g2))
    br.wait("b", "window.changegate.opens === 1", "EventSource open on g2")
    w.insert_seq(310, 20, db="shop", coll="orders")
    check_page_events(br.wait_events("b", 20, 329), list(range(310, 330)), "page B on g2")
    check_page_events(br.wait_events("a", 330, 329), list(range(330)), "page A, 0..329")
    br.screenshot("b", "5-page-b-on-g2.png")
    br.check_no_page_errors("a", "b")
    br.call("quit")
    h.say("page B on g2 (origin B allowed) shows exactly seq 310..329; screenshots in %s",
          shots)


if __name__ == "__main__":
    h.run(story)
