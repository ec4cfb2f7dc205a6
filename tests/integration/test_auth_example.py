#!/usr/bin/python3
"""Story: the multi-user shop of examples/auth, end to end, in a real headless Chromium.
alice's screen and bob's screen each show exactly their own orders and inventory, live,
deletes included; their short-lived tokens expire in the middle of the flow, and while
changegate is down, and each page gets a fresh token from the app's server and
continues from its position: nothing missed, nothing repeated, nothing of anyone else's.

The example's own files are used as they are: server.py (the app's stand-in: the page
and /token, which mints with mint-token.py and sets the cg_token cookie), index.html,
and writer.py --setup-only (the collections, with changeStreamPreAndPostImages). Only
the writes are this scenario's own, so that it knows what each user must see.

1. devmongo starts; writer.py --setup-only creates shop.orders and shop.inventory with
   pre-images recorded. A 48-byte HS256 secret is written. server.py starts on a free
   port with --ttl 4 (x5 under CG_WRAPPER): its /token answers {user, exp} and sets an
   HttpOnly cg_token cookie; as=bearer answers the token, which PyJWT verifies with the
   secret (sub, exp - iat = the ttl); nothing but the page is served (not the secret).
2. changegate starts with --watch shop --auth jwt --jwt-secret-file --jwt-cookie cg_token
   --auth-rule '{"fullDocument.owner_id": "$$jwt.sub"}' --full-document-before-change
   whenAvailable and --cors-origin for the page's two origins: http://127.0.0.1:PAGE and
   http://localhost:PAGE (two host names, so that one Chromium keeps alice's and bob's
   cookies apart, as two people's browsers would), and --jwt-leeway 1 (a stream ends at
   exp + leeway; the demo keeps the default 30 s, 1 s keeps this scenario short).
   Without a token: 401 token_missing, with the CORS headers, so that a page can read
   why.
3. alice's page (http://127.0.0.1:PAGE/?user=alice, gateway on 127.0.0.1) and bob's
   page (http://localhost:PAGE/?user=bob, gateway on localhost) open and go live.
4. A writer makes seeded random changes (CG_AUTH_SEED) for alice, bob and carol (who
   has no page): inserts, $set updates, replaces and deletes of orders and inventory
   items, each document's _id naming its owner. It keeps writing until each page has
   met two more `expired` messages (expiries in the middle of the flow), then makes
   sure each user had every kind of change to both collections; a last order each ends
   the wait. Each page has exactly its user's changes so far (see 6).
5. changegate is stopped (SIGTERM), and changes are written while it is down until
   the tokens the pages hold are past exp + leeway; it then starts again on the same
   port and state dir. Each page's EventSource reconnects by itself with the spent
   cookie and gets 401, which closes it; the page gets a fresh token and opens a new
   EventSource from its saved position.
6. At the end, each page received exactly its user's changes, in write order, each
   once, with ids equal to the events' resume tokens: inserts, updates, replaces and
   deletes of both collections; not one event about another user's document (bob never
   sees alice's deletes, nor alice bob's). No reset, no reload, no page error. Every
   EventSource the page made came with a fresh token from /token; each one made after
   an expiry resumed from the position the expired message carried (?lastEventId=);
   every /events request carried its own user's cg_token, was answered 200 but for the
   one 401 of 5, and a token was never offered again after its stream expired or was
   refused. The tables show exactly the user's documents as MongoDB has them (a delete
   removed its row); the counter equals the changes received.
7. alice's page opened again in a new tab (as after a reload) resumes from the
   position alice's page saved (?lastEventId=), with her tables restored from
   localStorage; a new order of hers reaches both tabs, and is the only change the new
   one gets; both show exactly her documents. Screenshots of the tab in front at each
   step in tests/browser-artifacts/test_auth_example/.
"""

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from browser import Browser, artifacts_dir  # noqa: E402

import jwt  # noqa: E402  Debian's python3-jwt (PyJWT), to check server.py's tokens

EXAMPLE = os.path.join(h.REPO, "examples", "auth")
RULE = '{"fullDocument.owner_id": "$$jwt.sub"}'
TTL = int(4 * h.SLOW)
LEEWAY = 1                                 # streams end at exp + LEEWAY
USERS = ["alice", "bob", "carol"]          # carol has no page: her changes go nowhere
PAGES = {"alice": "127.0.0.1", "bob": "localhost"}
COLLS = ["orders", "inventory"]
EXPIRIES = 2                               # each page meets at least this many
RATE = 25.0                                # writes a second
SEED = int(os.environ.get("CG_AUTH_SEED") or 7)


# --------------------------------------------------------------------------- the app

class AppServer:
    """examples/auth/server.py on a free loopback port: the page and its tokens."""

    def __init__(self, sc, secret_file):
        self.port = h.free_port()
        argv = [h.PYTHON, os.path.join(EXAMPLE, "server.py"), "--port", str(self.port),
                "--bind", "127.0.0.1", "--secret-file", secret_file, "--ttl", str(TTL)]
        self.proc = h.Proc("server.py", argv, os.path.join(sc.tmp, "server.log"),
                           env=dict(os.environ, SERVER_LOG="1"))
        sc.procs.append(self.proc)

        def up():
            h.check(self.proc.alive(), "server.py exited: %s", self.proc.output()[-2000:])
            return self.get("/")[0] == 200
        h.wait_until(up, 20, "server.py to serve the page")
        h.say("server.py (pid %d) on 127.0.0.1:%d, tokens for %d s", self.proc.pid,
              self.port, TTL)

    def get(self, path):
        return h.request(self.port, "GET", path)

    def url(self, user):
        host = PAGES[user]
        return "http://%s:%d/?user=%s&gateway=http://%s:%%d" % (host, self.port, user, host)


def check_app_server(app, secret):
    status, hdrs, body = app.get("/token?user=alice")
    h.check(status == 200, "/token?user=alice: %d %r", status, body)
    cookie = hdrs.get("set-cookie", "")
    h.check(cookie.startswith("cg_token=") and "HttpOnly" in cookie and "Path=/" in cookie,
            "/token's Set-Cookie: %r", cookie)
    ans = json.loads(body)
    h.check(set(ans) == {"user", "exp"} and ans["user"] == "alice", "/token answered %r", ans)
    status, _, body = app.get("/token?user=alice&as=bearer")
    h.check(status == 200, "/token?as=bearer: %d %r", status, body)
    token = json.loads(body)["token"]
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    h.check(claims["sub"] == "alice" and claims["exp"] - claims["iat"] == TTL,
            "server.py's token has claims %r, expected sub alice and a %d s life", claims, TTL)
    for path in ("/jwt.secret", "/server.py", "/mint-token.py", "/../jwt.secret"):
        status, _, _ = app.get(path)
        h.check(status == 404, "server.py answered %s with %d, expected 404", path, status)
    status, _, _ = app.get("/token?user=" + "x" * 65)
    h.check(status == 400, "/token with a 65-character user: %d, expected 400", status)


def cookie_token(headers, what):
    """The cg_token cookie a request carried, and its sub (read without verifying)."""
    cookies = dict(p.strip().split("=", 1) for p in headers.get("cookie", "").split(";")
                   if "=" in p)
    token = cookies.get("cg_token")
    h.check(token, "%s carried no cg_token cookie: %r", what, headers)
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return token, claims.get("sub")


# --------------------------------------------------------------------------- the writes

class ShopWriter:
    """Seeded random changes for alice, bob and carol until told to stop. Remembers, for
    each user, the changes their page must show, as (operation, collection, _id, seq):
    seq is the step that wrote the change (None for a delete)."""

    def __init__(self, db):
        self.db = db
        self.rng = random.Random(SEED)
        self.live = {(u, c): [] for u in USERS for c in COLLS}
        self.want = {u: [] for u in USERS}
        self.stop = threading.Event()
        self.step = 0
        self.n = 0

    def new_id(self, user, coll):
        self.n += 1
        return "%s-%s-%d" % (user, coll, self.n)

    def body(self, user, coll):
        if coll == "orders":
            return {"owner_id": user, "seq": self.step,
                    "item": self.rng.choice(["coffee", "tea", "bagel", "juice"]),
                    "qty": self.rng.randint(1, 5), "status": "new"}
        return {"owner_id": user, "seq": self.step,
                "sku": self.rng.choice(["CUP-01", "TEE-02", "BAG-03"]),
                "name": self.rng.choice(["mug", "t-shirt", "tote bag"]),
                "stock": self.rng.randint(0, 20)}

    def one(self, user=None, coll=None, op=None):
        rng = self.rng
        user = user or rng.choice(USERS)
        coll = coll or rng.choice(COLLS)
        live = self.live[(user, coll)]
        r = rng.random()
        op = op or ("insert" if not live or r < 0.4 else "update" if r < 0.65
                    else "replace" if r < 0.75 else "delete")
        c = self.db[coll]
        if op == "insert":
            doc = dict(self.body(user, coll), _id=self.new_id(user, coll))
            c.insert_one(doc)
            live.append(doc["_id"])
            key = doc["_id"]
        else:
            key = rng.choice(live)
            if op == "update":
                change = ({"status": rng.choice(["paid", "shipped", "delivered"])}
                          if coll == "orders" else {"stock": rng.randint(0, 20)})
                c.update_one({"_id": key}, {"$set": dict(change, seq=self.step)})
            elif op == "replace":
                c.replace_one({"_id": key}, self.body(user, coll))
            else:
                c.delete_one({"_id": key})
                live.remove(key)
        self.want[user].append((op, coll, key, None if op == "delete" else self.step))
        self.step += 1

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            delay = t0 + self.step / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.one()
        # Each kind of change to both collections for each user, should the dice not
        # have thrown them all.
        for user in USERS:
            for coll in COLLS:
                for op in ("update", "replace", "delete"):
                    if not any(w[:2] == (op, coll) for w in self.want[user]):
                        if not self.live[(user, coll)]:
                            self.one(user, coll, "insert")
                        self.one(user, coll, op)


def key_of(change):
    """(operation, collection, _id, seq) of a change event as the page got it: the seq an
    update wrote is in updatedFields (an update's fullDocument is looked up later, so it
    may hold a later write's seq, or be null once the document is deleted)."""
    op = change.get("operationType")
    if op == "update":
        seq = change.get("updateDescription", {}).get("updatedFields", {}).get("seq")
    elif op == "delete":
        seq = None
    else:
        seq = (change.get("fullDocument") or {}).get("seq")
    return (op, change.get("ns", {}).get("coll"), change.get("documentKey", {}).get("_id"), seq)


def owner_of(change):
    doc = change.get("fullDocument") or change.get("fullDocumentBeforeChange") or {}
    _id = str(change.get("documentKey", {}).get("_id"))
    return doc.get("owner_id"), _id.split("-")[0]


# --------------------------------------------------------------------------- the story

def story(sc):
    shots = artifacts_dir("test_auth_example")
    mongo = sc.devmongo()
    setup = subprocess.run([h.PYTHON, os.path.join(EXAMPLE, "writer.py"), mongo.uri,
                            "--setup-only"], capture_output=True, text=True, timeout=60)
    h.check(setup.returncode == 0, "writer.py --setup-only: %s", setup.stderr[-2000:])
    w = sc.writer(mongo.uri)
    db = w.client.shop
    for coll in db.command("listCollections")["cursor"]["firstBatch"]:
        h.check(coll["options"].get("changeStreamPreAndPostImages") == {"enabled": True},
                "shop.%s was created without pre-images: %r", coll["name"], coll["options"])
    h.say("shop.orders and shop.inventory created with changeStreamPreAndPostImages")

    secret = base64.urlsafe_b64encode(os.urandom(36))              # 48 printable bytes
    secret_file = os.path.join(sc.mkdir("keys"), "jwt.secret")
    with open(secret_file, "wb") as f:
        f.write(secret + b"\n")
    app = AppServer(sc, secret_file)
    check_app_server(app, secret)
    origins = ["http://%s:%d" % (host, app.port) for host in ("127.0.0.1", "localhost")]
    cg = sc.changegate(mongo.uri, watch="shop", args=[
        "--auth", "jwt", "--jwt-secret-file", secret_file, "--jwt-cookie", "cg_token",
        "--auth-rule", RULE, "--full-document-before-change", "whenAvailable",
        "--cors-origin", origins[0], "--cors-origin", origins[1],
        "--jwt-leeway", str(LEEWAY)])
    status, hdrs, body = h.request(cg.port, "GET", "/events", {"Origin": origins[0]})
    h.check(status == 401 and h.json_body(body).get("error") == "token_missing"
            and hdrs.get("access-control-allow-origin") == origins[0],
            "/events without a token: %d %r %r", status, hdrs, body)
    h.say("changegate with --auth jwt; no token: 401 token_missing (readable by the page)")

    # 3. alice's and bob's screens.
    br = Browser(sc, shots)
    pages = [u for u in USERS if u in PAGES]
    for user in pages:
        br.open(user, app.url(user) % cg.port)
        page_wait(br, user, "window.changegate.opens === 1", "EventSource open")
        br.eval(user, "window.loadedOnce = 'same page'")

    # 4. Changes flow until each page has met EXPIRIES more expiries.
    shop = ShopWriter(db)
    before = {user: br.eval(user, "window.changegate.expired.length") for user in pages}
    writer = sc.thread(shop.run, name="shop-writer")
    for user in pages:
        page_wait(br, user, "window.changegate.expired.length >= %d" % (
            before[user] + EXPIRIES), "%d token expiries while changes flow" % EXPIRIES)
    br.screenshot("bob", "1-bob-after-expiries.png")    # bob's tab is in front
    shop.stop.set()
    writer.join(30)
    last_order(br, shop, pages)
    for user in pages:
        check_events(br, user, shop)
    h.say("%d changes written so far: %s; each page has exactly its own", shop.step,
          ", ".join("%s %d" % (u, len(shop.want[u])) for u in USERS))

    # 5. changegate restarts once the pages' tokens are spent.
    refusals = restart(br, cg, shop, pages)

    # 6. Everything, from the start.
    for user in pages:
        check_events(br, user, shop)
        check_connections(br, user, cg, refusals[user])
        check_tables(br, user, db)
    br.screenshot("bob", "3-bob-final.png")

    # 7. alice's page opened again (as after a reload): her tables come back from
    # localStorage and the page resumes from its saved position.
    position = br.eval("alice", "window.changegate.position")
    br.open("alice-again", app.url("alice") % cg.port)
    page_wait(br, "alice-again", "window.changegate.opens === 1", "EventSource open")
    first = br.eval("alice-again", "window.changegate.connects[0]")
    h.check(_param(first["url"], "lastEventId") == position,
            "alice's page opened again should resume from its saved position %s: %r",
            position, first)
    shop.one("alice", "orders", "insert")
    last = json.dumps(shop.want["alice"][-1][2])
    for page in ("alice", "alice-again"):
        got = page_wait(br, page, "window.changegate.events.some(e => JSON.stringify("
                        "e.change.documentKey._id) === %s) && window.changegate.events"
                        ".map(e => e.id)" % json.dumps(last), "alice's new order")
        h.check(page == "alice" or len(got) == 1, "alice's page opened again got %d changes "
                "after its saved position, expected only her new order", len(got))
        check_tables(br, page, db, "alice")
    check_events(br, "alice", shop)
    h.say("alice's page opened again resumed from the saved position with her tables "
          "restored; her new order reached both tabs")
    br.screenshot("alice-again", "4-alice-opened-again.png")    # in front
    br.check_no_page_errors(*pages, "alice-again")
    br.call("quit")
    h.say("%d changes (seed %d): %s; screenshots in %s", shop.step, SEED,
          ", ".join("%s %d" % (u, len(shop.want[u])) for u in USERS), shots)


def page_wait(br, user, expr, what):
    try:
        return br.wait(user, expr, what)
    except h.TestFailure as e:
        raise h.TestFailure("%s; the page: %r" % (e, summary(br, user)))


def summary(br, page):
    return br.eval(page, """({events: window.changegate.events.length,
        expired: window.changegate.expired.length, tokens: window.changegate.tokens.length,
        resets: window.changegate.resets, opens: window.changegate.opens,
        errors: window.changegate.errors, refused: window.changegate.refused,
        readyState: window.changegate.source && window.changegate.source.readyState,
        connects: window.changegate.connects, state: document.body.dataset.state})""")


def last_order(br, shop, pages):
    """A last order for each user, and each page waited for until it shows its own."""
    for user in USERS:
        shop.one(user, "orders", "insert")
    for user in pages:
        last = json.dumps(shop.want[user][-1][2])
        page_wait(br, user, "window.changegate.events.some(e => JSON.stringify("
                  "e.change.documentKey._id) === %s)" % json.dumps(last),
                  "the last order, %s" % shop.want[user][-1][2])


def restart(br, cg, shop, pages):
    """Stop changegate; write while it is down until the tokens the pages hold are past
    exp + leeway; start it again; write more. The first answered request of each page
    afterwards is EventSource's own reconnect with the spent token: 401, and the page
    makes a new EventSource with a fresh token from its position. Returns the refused
    tokens by user, for check_connections."""
    refusals = {user: [] for user in pages}
    seen = {}
    for user in pages:
        page_wait(br, user, "document.body.dataset.state === 'live'", "live")
    cg.stop()
    for user in pages:
        # The stream's end: the EventSource retries by itself (CONNECTING), cookie as is.
        page_wait(br, user, "document.body.dataset.state === 'reconnecting'", "reconnecting")
        seen[user] = br.eval(user, """({requests: 0, connects: window.changegate.connects.length,
            expired: window.changegate.expired.length, exp: window.changegate.tokens.at(-1),
            position: window.changegate.position})""")
        seen[user]["requests"] = len(br.requests(user, events_url(user, cg)))
    for _ in range(20):
        shop.one()
    spent = max(s["exp"] for s in seen.values()) + LEEWAY
    while time.time() < spent + 1.5:          # the held tokens are spent while it is down
        time.sleep(0.1)
    cg.start()
    for _ in range(20):
        shop.one()
    last_order(br, shop, pages)
    for user in pages:
        s = seen[user]
        st = br.eval(user, "({connects: window.changegate.connects, expired: "
                     "window.changegate.expired, events: window.changegate.events.length})")
        reqs = [r for r in br.requests(user, events_url(user, cg))[s["requests"]:]
                if r[1] is not None]
        h.check(reqs, "%s's page sent no /events request answered after the restart", user)
        sent, status = reqs[0][0], reqs[0][1]
        token, _ = cookie_token(sent, "%s's first request after the restart" % user)
        exp = json.loads(b64decode(token.split(".")[1]))["exp"]
        h.check(exp == s["exp"],
                "%s's first request after the restart should be EventSource's own reconnect "
                "with the spent token (exp %s): exp %s, headers %r", user, s["exp"], exp, sent)
        # The first EventSource made after the restart (more follow if a token expires
        # again before the last orders arrive).
        new = st["connects"][s["connects"]:]
        h.check(status == 401 and new and new[0]["why"] == "closed",
                "%s's spent token should get 401 and the page open a new EventSource "
                "(status %s, expired since %r, new EventSources %r)", user, status,
                st["expired"][s["expired"]:], new)
        h.check(_param(new[0]["url"], "lastEventId") == s["position"],
                "%s's page after the 401 should resume from its position %s: %s", user,
                s["position"], new[0]["url"])
        refusals[user].append(token)
        check_events(br, user, shop)
    h.say("changegate restarted once the pages' tokens were spent: each page's EventSource "
          "came back with its spent cookie, got 401, and the page opened a new one with a "
          "fresh token from its position")
    br.screenshot("bob", "2-bob-after-restart.png")
    return refusals


def events_url(user, cg):
    return "http://%s:%d/events" % (PAGES[user], cg.port)


def _param(url, name):
    return (urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get(name) or [None])[0]


def b64decode(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def check_events(br, user, shop):
    """Exactly this user's changes so far, in order, once; nothing of anyone else's."""
    got = br.eval(user, "window.changegate.events")
    changes = [e["change"] for e in got]
    foreign = [key_of(c) for c in changes if owner_of(c) != (user, user)]
    h.check(not foreign, "%s's page got %d changes of other users' documents, e.g. %r",
            user, len(foreign), foreign[:5])
    h.check_sequence([key_of(c) for c in changes], shop.want[user], "%s's page" % user)
    for e in got:
        h.check(e["id"] and e["id"] == e["change"]["_id"]["_data"],
                "%s's page: event %r has id %r", user, key_of(e["change"]), e["id"])
    h.check(len({e["id"] for e in got}) == len(got), "%s's page: ids are not unique", user)
    kinds = {(k[0], k[1]) for k in shop.want[user]}
    for need in [(op, coll) for op in ("insert", "update", "replace", "delete")
                 for coll in COLLS]:
        h.check(need in kinds, "the writes gave %s no %s of %s (seed %d)", user, need[0],
                need[1], SEED)
    st = br.eval(user, """({resets: window.changegate.resets, loaded: window.loadedOnce,
        count: document.getElementById('count').textContent})""")
    h.check(st["resets"] == [], "%s's page got resets: %r", user, st["resets"])
    h.check(st["loaded"] == "same page", "%s's page was reloaded", user)
    h.check(st["count"] == str(len(got)), "%s's counter says %s, the page has %d changes",
            user, st["count"], len(got))
    others = [u for u in USERS if u != user]
    h.say("%s's page: exactly its %d changes (%d deletes), none of %s's (%d deletes)", user,
          len(got), sum(1 for k in shop.want[user] if k[0] == "delete"), " or ".join(others),
          sum(1 for u in others for k in shop.want[u] if k[0] == "delete"))


def check_connections(br, user, cg, refused_tokens):
    """Each EventSource the page made came with a fresh token; each made after an expiry
    resumed from the position the expired message carried; every request carried the
    user's own token, answered 200 but for the refusals of restart(); no token was
    offered again once its stream had expired or it had been refused."""
    # Taken while the page is live (it may meet another expiry meanwhile).
    st = page_wait(br, user, """document.body.dataset.state === 'live' &&
        window.changegate.tokens.length === window.changegate.connects.length &&
        ({expired: window.changegate.expired, tokens: window.changegate.tokens,
          connects: window.changegate.connects})""", "live")
    connects, expired = st["connects"], st["expired"]
    h.check(connects[0]["why"] == "start" and not _param(connects[0]["url"], "lastEventId"),
            "%s's first EventSource: %r", user, connects[0])
    after_expiry = [c for c in connects if c["why"] == "expired"]
    h.check(len(after_expiry) == len(expired) and len(expired) >= EXPIRIES,
            "%s's page: %d expiries, %d EventSources after one: %r", user, len(expired),
            len(after_expiry), connects)
    for i, (ex, c) in enumerate(zip(expired, after_expiry)):
        h.check(ex["lastEventId"] and ex["lastEventId"] == ex["id"]
                and _param(c["url"], "lastEventId") == ex["lastEventId"],
                "%s's expiry %d (%r) should be followed by an EventSource from its position: "
                "%s", user, i, ex, c["url"])
    h.check(sum(1 for c in connects if c["why"] == "closed") == len(refused_tokens),
            "%s's page made EventSources after refusals other than the restart's: %r", user,
            connects)
    reqs = [r for r in br.requests(user, events_url(user, cg)) if r[1] is not None]
    tokens = []
    for i, (sent, status, error, cors) in enumerate(reqs):
        token, sub = cookie_token(sent, "%s's /events request %d" % (user, i))
        h.check(sub == user, "%s's /events request %d carried %s's token", user, i, sub)
        h.check(not cors and (status == 200 or status == 401 and token in refused_tokens),
                "%s's /events request %d: status %s, error %s, CORS %s", user, i, status,
                error, cors)
        if tokens and token != tokens[-1]:
            h.check(token not in tokens, "%s's page offered a spent token again (request %d)",
                    user, i)
        tokens.append(token)
    h.check(len(set(tokens)) >= len(connects),
            "%s's page used %d tokens for %d EventSources: one was opened without a fresh "
            "token", user, len(set(tokens)), len(connects))
    h.say("%s's page: %d expiries, each followed by a fresh token and an EventSource from "
          "the expired message's position; %d /events requests, each with its own token, "
          "%d refused (401) after the restart", user, len(expired), len(reqs),
          len(refused_tokens))


def check_tables(br, page, db, user=None):
    """The page's tables: exactly the user's documents as MongoDB has them."""
    user = user or page
    columns = {"orders": ["owner_id", "item", "qty", "status"],
               "inventory": ["owner_id", "sku", "name", "stock"]}
    for coll, cols in columns.items():
        rows = br.eval(page, """[...document.querySelectorAll('#%s tbody tr')].map(tr =>
            [tr.dataset.key, ...[...tr.cells].slice(1).map(td => td.textContent)])""" % coll)
        want = sorted([json.dumps(d["_id"])] + ["" if d.get(c) is None else str(d[c])
                                                for c in cols]
                      for d in db[coll].find({"owner_id": user}))
        h.check(sorted(rows) == want, "page %s's %s table:\n  shows %r\n  MongoDB has %r",
                page, coll, sorted(rows), want)
    h.say("page %s's tables show exactly the documents MongoDB has for %s", page, user)


if __name__ == "__main__":
    h.run(story, timeout=float(os.environ.get("CG_TEST_TIMEOUT") or 120 * h.SLOW))
