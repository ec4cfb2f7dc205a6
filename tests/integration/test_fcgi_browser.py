#!/usr/bin/python3
"""Story: a browser test through nginx. nginx serves the example page
(examples/browser/index.html) itself as static files and changegate's FastCGI socket at
/changegate/ (examples/nginx/*.conf verbatim), so the page and its stream share one origin
and no CORS is needed; in a real headless Chromium the page shows every change once and in
order, and across a restart of changegate behind nginx its EventSource reconnects by
itself through nginx with Last-Event-ID.

1. devmongo starts; changegate listens on a Unix FastCGI socket (--listen fcgi:unix:...,
   --fcgi-socket-owner :www-data when run as root), with no --cors-origin, so a request
   carrying any Origin would get 403. nginx (tests/integration/webservers.py) serves a
   copy of examples/browser at / and the socket at /changegate/ on one loopback port.
   Plain requests: /index.html is the page (text/html), /changegate/healthz is
   changegate's 200, /events outside /changegate/ is nginx's 404.
2. Headless Chromium (Debian's, started by this scenario; tests/integration/browser.py)
   opens http://127.0.0.1:<nginx>/index.html?gateway=http://127.0.0.1:<nginx>/changegate.
   The page's EventSource is on <gateway>/events, its request carries no Origin (same
   origin) and is answered 200. 100 documents {seq: 0..99} are inserted; the page has seq
   0..99 with ids equal to the events' resume tokens, the counter says 100, the newest row
   holds seq 99.
3. A writer inserts seq 100..199 while changegate gets SIGTERM (exit 0) mid-way: the
   page's stream ends cleanly and it says "reconnecting". changegate stays down until the
   page's own reconnect (`retry: 3000`, with Last-Event-ID) has met nginx's 502: an
   EventSource answered anything but 200 is closed for good, so the page, whose stream
   had been open, opens a new one from its saved position (?lastEventId=, with a growing
   delay). Meanwhile its socket file is gone, nginx answers /changegate/healthz with 502,
   and seq 200..249 are inserted; changegate starts again with the same state dir on the
   same socket and seq 250..299 follow. Without any reload, the page ends with seq 0..299
   exactly once, in order, no reset; every request after the first resumed from the id of
   the last event the page had (the header on EventSource's own reconnects, the query
   parameter on the page's new EventSource).

Screenshots (1-live.png, 2-reconnecting.png, 3-resumed.png) are saved under
tests/browser-artifacts/test_fcgi_browser/ in the directory the scenario runs in, or
under $CG_ARTIFACTS/test_fcgi_browser/ when CG_ARTIFACTS is set.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import webservers  # noqa: E402
from browser import (PAGE_DIR, Browser, artifacts_dir, check_page_events,  # noqa: E402
                     check_resumed_page)


def wire(br, page):
    """(url, status, error) of every request the page made, for failure messages."""
    return [(r["url"], r["status"], r["error"]) for r in br.call("net", page=page)["wire"]]


def check_stream_url(br, page, events):
    """The page's EventSource is on the gateway's /events (under nginx's /changegate/)."""
    url = br.eval(page, "window.changegate.source.url")
    h.check(url == events, "the page's EventSource is on %s, not on %s (the gateway given "
            "in ?gateway= plus /events): the page dropped the gateway's path (a URL "
            "resolved as new URL(\"/events\", gateway) keeps only its origin), so nginx "
            "answered its own 404 instead of passing the request to changegate; the page's "
            "requests (url, status, error): %r", url, events, wire(br, page))


def story(sc):
    shots = artifacts_dir("test_fcgi_browser")
    mongo = sc.devmongo()
    sock = os.path.join(webservers.socket_dir(sc), "changegate.sock")
    owner = []
    if webservers.WORKER_USER:
        owner = ["--fcgi-socket-owner", ":" + webservers.group_of(webservers.WORKER_USER)]
    cg = sc.changegate(mongo.uri, args=["--listen", "fcgi:unix:" + sock,
                                        "--allow-public-unauthenticated"] + owner)
    ws = webservers.nginx(sock, sc, root=PAGE_DIR)
    w = sc.writer(mongo.uri)
    coll = w.coll("shop", "orders")
    gateway = ws.url("/changegate")               # http://127.0.0.1:<nginx>/changegate
    events = gateway + "/events"
    page_url = ws.url("/index.html?gateway=" + gateway)

    # 1. One origin: nginx serves the page and passes /changegate/ to changegate.
    status, hdrs, body = h.request(ws.port, "GET", "/index.html")
    with open(os.path.join(PAGE_DIR, "index.html"), "rb") as f:
        h.check(status == 200 and body == f.read()
                and hdrs.get("content-type", "").startswith("text/html"),
                "nginx's /index.html: status %d, Content-Type %r, %d bytes (expected 200, "
                "text/html, examples/browser/index.html)", status, hdrs.get("content-type"),
                len(body))
    status, _, body = h.request(ws.port, "GET", "/changegate/healthz")
    h.check(status == 200 and (h.json_body(body, "/changegate/healthz") or {}).get("status"),
            "/changegate/healthz through nginx: %d %r", status, body[:300])
    status, _, body = h.request(ws.port, "GET", "/events")
    h.check(status == 404, "/events outside /changegate/ should be nginx's 404: %d %r",
            status, body[:300])
    h.say("nginx on %d serves the page at / and changegate at /changegate/ (healthz 200)",
          ws.port)

    # 2. The page, same origin, shows the first 100 inserts.
    br = Browser(sc, shots)
    br.open("a", page_url)
    br.wait("a", "window.changegate.opens === 1 || window.changegate.source.readyState === "
            "EventSource.CLOSED", "EventSource open (or closed)")
    check_stream_url(br, "a", events)
    h.check(br.eval("a", "window.changegate.opens") == 1,
            "the page's EventSource on %s did not open: %r; its requests (url, status, "
            "error): %r", events, br.summary("a"), wire(br, "a"))
    br.eval("a", "window.loadedOnce = 'same page'")     # gone if the page ever reloads
    w.insert_seq(0, 100, db="shop", coll="orders")
    check_page_events(br.wait_events("a", 100, 99), list(range(100)),
                      "the page, first 100")
    dom = br.eval("a", """({count: document.getElementById('count').textContent,
                           state: document.body.dataset.state,
                           gw: document.getElementById('gw').textContent,
                           top: document.querySelector('#rows tr td.doc').textContent})""")
    h.check(dom["count"] == "100" and dom["state"] == "live" and dom["gw"] == gateway,
            "the page's DOM: %r", dom)
    h.check(json.loads(dom["top"]).get("seq") == 99, "the page's newest row is %r, expected "
            "the document with seq 99", dom["top"])
    reqs = br.requests("a", events)
    h.check(len(reqs) == 1 and reqs[0][1] == 200 and "origin" not in reqs[0][0]
            and not reqs[0][2], "the page's one request to %s should carry no Origin (same "
            "origin) and be answered 200: %r", events, reqs)
    br.screenshot("a", "1-live.png")
    h.say("the page shows 100 events through nginx; counter %s, newest row seq 99; its "
          "request carried no Origin", dom["count"])

    # 3. Restart changegate behind nginx in the middle of a write burst.
    writer = sc.thread(lambda: h.insert_paced(coll, 100, 100, 0.005))
    br.wait_events("a", 110, 199)
    cg.stop()                                  # SIGTERM; asserts exit status 0
    got_before = br.received("a")
    h.say("changegate stopped with the page at %d events", len(got_before))
    br.wait("a", "document.body.dataset.state === 'reconnecting'", "state 'reconnecting'")
    writer.join(30)
    w.insert_seq(200, 50, db="shop", coll="orders")     # written while changegate is down
    h.check(not os.path.exists(sock), "changegate left its socket %s behind", sock)
    status, _, body = h.request(ws.port, "GET", "/changegate/healthz")
    h.check(status == 502, "/changegate/healthz through nginx with changegate down: %d %r "
            "(expected 502)", status, body[:300])
    last_before = br.eval("a", "window.changegate.events.at(-1).id")
    h.wait_until(lambda: any(r[1] == 502 for r in wire(br, "a") if r[0].startswith(events)),
                 20 * h.SLOW, "the page's reconnect to meet nginx's 502")
    br.screenshot("a", "2-reconnecting.png")
    cg.start()                                 # same socket, same state dir
    h.say("the page's reconnect met nginx's 502 while changegate was down; it is back on %s",
          sock)
    w.insert_seq(250, 50, db="shop", coll="orders")
    got = br.wait_events("a", 300, 299)
    check_page_events(got, list(range(300)), "the page across the restart")
    state = check_resumed_page(br, "a", 300, "the page")
    reqs = [(hd, url, status) for (hd, _, _, _), (url, status, _) in
            zip(br.requests("a", events), [r for r in wire(br, "a") if r[0].startswith(events)])]
    h.check(len(reqs) >= 3 and "last-event-id" not in reqs[0][0] and reqs[0][2] == 200
            and "lastEventId=" not in reqs[0][1],
            "the page's requests to %s (headers, url, status): %r", events, reqs)
    resumed = [hd.get("last-event-id") or dict(
        p.split("=", 1) for p in url.split("?", 1)[-1].split("&") if "=" in p).get("lastEventId")
        for hd, url, _ in reqs[1:]]
    h.check(all(r == last_before for r in resumed) and reqs[-1][2] == 200
            and 502 in [r[2] for r in reqs] and not any("origin" in r[0] for r in reqs),
            "every request after the first should resume from %s (the page's last event "
            "before the restart), one met nginx's 502, the last was answered 200, none carried "
            "an Origin: %r", last_before, [(r[0].get("last-event-id"), r[1], r[2]) for r in reqs])
    br.screenshot("a", "3-resumed.png")
    br.check_no_page_errors("a")
    br.call("quit")
    h.say("the page: seq 0..299 exactly once across the restart behind nginx; %d requests to "
          "%s, resumed with Last-Event-ID (%d opens), not reloaded; screenshots in %s",
          len(reqs), events, state["opens"], shots)


if __name__ == "__main__":
    h.run(story)
