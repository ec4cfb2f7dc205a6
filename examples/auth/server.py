#!/usr/bin/python3
"""A stand-in for a shop application's web server: it serves the page
(index.html) and hands out changegate tokens. It has NO login: whoever asks
for /token?user=alice gets alice's token. A real application does this part
after its own login, from the signed-in user's session, never from a
parameter the browser chooses.

    server.py --secret-file FILE [--port 8081] [--bind 127.0.0.1] [--ttl 300]

  GET /                    index.html
  GET /token?user=NAME     mints a token for NAME (mint-token.py) and sets it as the
                           cookie cg_token (HttpOnly, SameSite=Strict, Path=/);
                           answers {"user": NAME, "exp": SECONDS}. The browser sends
                           the cookie to changegate on the same host (cookies are
                           not kept apart by port), with EventSource's
                           withCredentials.
  GET /token?user=NAME&as=bearer
                           no cookie; answers {"user", "exp", "token"}, for curl:
                           Authorization: Bearer <token>

Only index.html is served: the secret file is never within reach.
"""
import argparse
import importlib.util
import json
import os
import re
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("mint_token", os.path.join(HERE, "mint-token.py"))
mint_token = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mint_token)

COOKIE = "cg_token"
USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Handler(BaseHTTPRequestHandler):
    secret = b""
    ttl = 300

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            with open(os.path.join(HERE, "index.html"), "rb") as f:
                return self.answer(200, f.read(), "text/html; charset=utf-8")
        if url.path != "/token":
            return self.answer(404, b"not found\n", "text/plain")
        query = urllib.parse.parse_qs(url.query)
        user = (query.get("user") or [""])[0]
        if not USER.match(user):
            return self.answer(400, b'{"error": "user: 1 to 64 of A-Z a-z 0-9 _ . -"}\n',
                               "application/json")
        now = int(time.time())
        token = mint_token.mint(self.secret, user, self.ttl, now=now)
        claims = {"user": user, "exp": now + self.ttl}
        if (query.get("as") or [""])[0] == "bearer":
            claims["token"] = token
            return self.answer(200, json.dumps(claims).encode(), "application/json")
        cookie = "%s=%s; Path=/; HttpOnly; SameSite=Strict" % (COOKIE, token)
        return self.answer(200, json.dumps(claims).encode(), "application/json",
                           [("Set-Cookie", cookie)])

    def answer(self, status, body, ctype, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        if os.environ.get("SERVER_LOG"):
            sys.stderr.write("server.py: %s\n" % (fmt % args))


def main():
    ap = argparse.ArgumentParser(description="The shop app's stand-in: page and tokens.")
    ap.add_argument("--secret-file", required=True, help="the file given to --jwt-secret-file")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--ttl", type=int, default=300, help="token lifetime in seconds")
    args = ap.parse_args()
    Handler.secret = mint_token.read_secret(args.secret_file)
    Handler.ttl = args.ttl
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    print("server.py: http://%s:%d/ (tokens for %d s)" % (args.bind, server.server_address[1],
                                                          args.ttl), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
