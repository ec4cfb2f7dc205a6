#!/usr/bin/python3
"""Mints a changegate token (a JWT signed with HS256) for one user.

This is the tiny piece an application's backend replaces: after its own login,
the backend signs a token saying who the user is (`sub`), until when (`exp`),
and optionally their `tenant` and a `changegate` claim that narrows what they
may see; changegate (--auth jwt --jwt-secret-file FILE) verifies it and fills
its --auth-rule, e.g. {"fullDocument.owner_id": "$$jwt.sub"}, from it.

    mint-token.py --secret-file FILE alice                 # prints the token
    mint-token.py --secret-file FILE --ttl 60 --tenant acme alice
    mint-token.py --secret-file FILE --fields fullDocument.item,fullDocument.qty \\
                  --filter '{"ns.coll": "orders"}' alice

The secret file is read as changegate reads it: its bytes without one trailing
newline, at least 32 of them. Needs Debian's python3-jwt (PyJWT) under
/usr/bin/python3. server.py imports mint() and read_secret() from here.
"""
import argparse
import json
import sys
import time

import jwt  # Debian's python3-jwt (PyJWT)


def read_secret(path):
    """The secret as changegate takes it: the file's bytes minus one trailing newline."""
    with open(path, "rb") as f:
        secret = f.read()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    if len(secret) < 32:
        raise ValueError("%s: a secret needs at least 32 bytes, this one has %d"
                         % (path, len(secret)))
    return secret


def mint(secret, user, ttl=300, tenant=None, fields=None, filter=None, now=None):
    """A signed token for `user`, valid `ttl` seconds from `now` (default: now). `fields`
    (a list of dotted paths) and `filter` (a dict, a MongoDB query over the change event)
    go into the `changegate` claim: the most this token may see, ANDed with the rule."""
    now = int(time.time()) if now is None else int(now)
    claims = {"sub": user, "iat": now, "exp": now + int(ttl)}
    if tenant:
        claims["tenant"] = tenant
    narrow = {}
    if filter:
        narrow["filter"] = filter
    if fields:
        narrow["fields"] = list(fields)
    if narrow:
        claims["changegate"] = narrow
    return jwt.encode(claims, secret, algorithm="HS256")


def main():
    ap = argparse.ArgumentParser(description="Mint a changegate token (HS256) for a user.")
    ap.add_argument("user", help="the token's sub claim")
    ap.add_argument("--secret-file", required=True, help="the file given to --jwt-secret-file")
    ap.add_argument("--ttl", type=int, default=300, help="seconds until exp (default 300)")
    ap.add_argument("--tenant", help="a tenant claim, for rules such as "
                    '{"fullDocument.tenant": "$$jwt.tenant"}')
    ap.add_argument("--fields", help="comma-separated paths: the most the token may see")
    ap.add_argument("--filter", help="a JSON filter the token's events must also match")
    args = ap.parse_args()
    try:
        secret = read_secret(args.secret_file)
        narrow = json.loads(args.filter) if args.filter else None
    except (OSError, ValueError) as e:
        sys.exit("mint-token: %s" % e)
    fields = [f for f in args.fields.split(",") if f] if args.fields else None
    print(mint(secret, args.user, args.ttl, args.tenant, fields, narrow))


if __name__ == "__main__":
    main()
