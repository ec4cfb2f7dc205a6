"""A real browser for the integration scenarios: Debian's Chromium, headless, driven by
tests/node-clients/browser.mjs (puppeteer-core), and the example page's view of what it
received. Used by test_browser (the page on static servers, changegate over HTTP) and
test_fcgi_browser (the page and changegate behind nginx).

    shots = browser.artifacts_dir("test_x")      # PNGs go there
    br = browser.Browser(sc, shots)              # Chromium is one of the scenario's processes
    br.open("a", url)                            # a new tab, loaded
    br.wait("a", "window.changegate.opens === 1", "EventSource open")
    got = br.wait_events("a", 100, 99)           # [(seq, id, resume token's _data)]
    browser.check_page_events(got, list(range(100)), "page A")
    br.requests("a", "http://127.0.0.1:8080/events")   # the page's requests on the wire
    br.screenshot("a", "1-live.png")
"""
import os
import shutil

import harness as h

CHROMIUM = os.environ.get("CG_CHROMIUM") or "/usr/bin/chromium"
PAGE_DIR = os.path.join(h.REPO, "examples", "browser")
WAIT = 30 * h.SLOW          # the bound on every wait for the page


def artifacts_dir(name):
    """$CG_ARTIFACTS/NAME, or tests/browser-artifacts/NAME under the current directory,
    emptied: each run replaces the screenshots."""
    base = os.environ.get("CG_ARTIFACTS") or os.path.join(os.getcwd(), "tests",
                                                           "browser-artifacts")
    path = os.path.join(os.path.abspath(base), name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


class Browser:
    """Debian's Chromium, headless, as one of the scenario's processes (its own process
    group, stopped with the others whatever happens), driven through the DevTools
    protocol by tests/node-clients/browser.mjs (puppeteer-core)."""

    def __init__(self, sc, shots):
        clients = h.node_clients("puppeteer-core")
        h.check(os.access(CHROMIUM, os.X_OK), "%s not found: run tests/install-deps.sh "
                "(Debian package chromium)", CHROMIUM)
        self.shots = shots
        profile = sc.mkdir("chromium-profile")
        argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--password-store=basic",
                # Pages in background tabs keep their timers (EventSource reconnects).
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", "--window-size=1100,800",
                "--remote-debugging-port=0", "--user-data-dir=" + profile, "about:blank"]
        self.proc = h.Proc("chromium", argv, os.path.join(sc.tmp, "chromium.log"))
        sc.procs.append(self.proc)
        port_file = os.path.join(profile, "DevToolsActivePort")

        def endpoint():
            if not self.proc.alive():
                raise h.TestFailure("chromium exited with status %s:\n%s" % (
                    self.proc.popen.returncode, self.proc.output()[-3000:]))
            with open(port_file) as f:
                lines = f.read().splitlines()
            return len(lines) >= 2 and "ws://127.0.0.1:%s%s" % (lines[0], lines[1])
        ws = h.wait_until(endpoint, WAIT, "chromium's DevToolsActivePort file")
        self.driver = h.JSONLinesProc(sc, "browser-driver",
                                      ["node", os.path.join(clients, "browser.mjs"), ws],
                                      cwd=clients)
        self.n = 0
        h.say("chromium (pid %d) up, driver connected to %s", self.proc.pid, ws)

    def call(self, cmd, **kw):
        self.n += 1
        kw.update(cmd=cmd, n=self.n)
        self.driver.send(kw)
        try:
            ans = self.driver.next(timeout=20 * h.SLOW)
        except TimeoutError:
            raise h.TestFailure("the browser driver did not answer %r within 20 s; its "
                                "stderr:\n%s" % (kw, self.driver.stderr()[-3000:]))
        h.check(ans is not None, "the browser driver exited; its stderr:\n%s",
                self.driver.stderr()[-3000:])
        h.check(ans.get("n") == self.n, "the browser driver answered %r to %r", ans, kw)
        h.check(ans.get("ok"), "the browser driver failed %s: %s", cmd, ans.get("error"))
        return ans

    def open(self, page, url):
        self.call("open", page=page, url=url)
        h.say("page %s open: %s", page, url)

    def eval(self, page, expr):
        return self.call("eval", page=page, expr=expr).get("value")

    def screenshot(self, page, name):
        path = os.path.join(self.shots, name)
        self.call("screenshot", page=page, path=path)
        h.check(os.path.getsize(path) > 1000, "screenshot %s is empty", path)
        h.say("screenshot %s", path)

    def wait(self, page, expr, what):
        """Evaluate expr in the page until it is truthy (bounded); return its value."""
        return h.wait_until(lambda: self.eval(page, expr), WAIT, "page %s: %s" % (page, what),
                            interval=0.1)

    def received(self, page):
        """[(seq, id, resume token's _data)] of the events the page received, in order."""
        return [(e["change"].get("fullDocument", {}).get("seq"), e["id"],
                 e["change"].get("_id", {}).get("_data"))
                for e in self.eval(page, "window.changegate.events")]

    def summary(self, page):
        """What the example page says about itself, for failure messages."""
        return self.eval(page, """({
            events: window.changegate.events.length,
            last_seq: window.changegate.events.at(-1)?.change.fullDocument?.seq,
            resets: window.changegate.resets, opens: window.changegate.opens,
            errors: window.changegate.errors, readyState: window.changegate.source.readyState,
            url: window.changegate.source.url, state: document.body.dataset.state})""")

    def wait_events(self, page, n, last_seq):
        """Wait until the page has n events, or one with seq last_seq (the last written: a
        page that lost some stops short of n); return received(page)."""
        try:
            self.wait(page, "window.changegate.events.length >= %d || (window.changegate.events"
                      ".at(-1)?.change.fullDocument?.seq ?? -1) >= %d" % (n, last_seq),
                      "%d events, up to seq %d" % (n, last_seq))
        except h.TestFailure as e:
            raise h.TestFailure("%s; the page has %r" % (e, self.summary(page)))
        return self.received(page)

    def requests(self, page, prefix):
        """The page's requests to URLs starting with prefix as the network saw them, in
        order: (headers as sent, lowercase names; status answered or None; error or None;
        CORS error or None)."""
        return [({k.lower(): v for k, v in (r["sent"] or {}).items()}, r["status"], r["error"],
                 r["cors"])
                for r in self.call("net", page=page)["wire"]
                if (r["url"] or "").startswith(prefix)]

    def check_no_page_errors(self, *pages):
        for page in pages:
            errors = [e for e in self.call("net", page=page)["log"] if e["kind"] == "pageerror"]
            h.check(not errors, "page %s raised: %r", page, errors)


def check_resumed_page(br, page, count, what):
    """After a restart: the same page (window.loadedOnce == 'same page', set by the
    scenario before), no reset, reopened at least once, `count` events shown, live."""
    state = br.eval(page, """({opens: window.changegate.opens, resets: window.changegate.resets,
                              loaded: window.loadedOnce, state: document.body.dataset.state,
                              count: document.getElementById('count').textContent})""")
    h.check(state["loaded"] == "same page", "%s was reloaded: %r", what, state)
    h.check(state["resets"] == [], "%s got resets: %r", what, state["resets"])
    h.check(state["opens"] >= 2, "%s's EventSource opened %d times, expected a reconnect",
            what, state["opens"])
    h.check(state["count"] == str(count) and state["state"] == "live", "%s's DOM: %r", what,
            state)
    return state


def check_page_events(got, want_seqs, what):
    """The page got exactly want_seqs, in order, each id its event's resume token."""
    h.check_sequence([g[0] for g in got], want_seqs, what)
    for seq, ident, data in got:
        h.check(ident and ident == data, "%s: seq %s has id %r but resume token %r", what,
                seq, ident, data)
    h.check(len({g[1] for g in got}) == len(got), "%s: ids are not unique", what)
