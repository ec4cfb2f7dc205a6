#!/bin/bash
# The multi-user shop demo (--auth jwt): installs what is needed, builds, then runs
# devmongo, changegate with a token rule (each user sees only documents whose owner_id
# is their token's sub, deletes included), a writer changing alice's and bob's orders
# and inventory, and server.py (the app's stand-in: the page and its tokens).
# Ctrl-C stops all. Ports: DEMO_MONGO_PORT (27017), DEMO_HTTP_PORT (8080),
# DEMO_PAGE_PORT (8081). DEMO_TOKEN_TTL (30): token lifetime in seconds, short so that
# an expiry and its renewal show within a minute (a stream ends at exp plus
# --jwt-leeway, 30 s by default). DEMO_SECONDS=N stops the demo by itself after N
# seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MONGO_PORT=${DEMO_MONGO_PORT:-27017}
HTTP_PORT=${DEMO_HTTP_PORT:-8080}
PAGE_PORT=${DEMO_PAGE_PORT:-8081}
TTL=${DEMO_TOKEN_TTL:-30}

source examples/lib.sh
demo_build
demo_state changegate-auth-demo

# The secret changegate verifies tokens with and server.py signs them with: 48 random
# printable bytes (at least 32 are needed).
(umask 077 && head -c 36 /dev/urandom | base64 >"$STATE/jwt.secret")

demo_devmongo "$MONGO_PORT"
# shop.orders and shop.inventory with pre-images, so that deletes name their owner.
/usr/bin/python3 examples/auth/writer.py "$URI" --setup-only

build/plain/src/changegate --mongo-uri "$URI" --watch shop \
  --listen "http://127.0.0.1:$HTTP_PORT" --state-dir "$STATE" \
  --auth jwt --jwt-secret-file "$STATE/jwt.secret" --jwt-cookie cg_token \
  --auth-rule '{"fullDocument.owner_id": "$$jwt.sub"}' \
  --full-document-before-change whenAvailable \
  --cors-origin "http://127.0.0.1:$PAGE_PORT" --cors-origin "http://localhost:$PAGE_PORT" \
  2>"$STATE/changegate.log" &
pids+=($!)
/usr/bin/python3 examples/auth/writer.py "$URI" &
pids+=($!)
/usr/bin/python3 examples/auth/server.py --port "$PAGE_PORT" --secret-file "$STATE/jwt.secret" \
  --ttl "$TTL" >"$STATE/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || { cat "$STATE/changegate.log"; exit 1; }

cat <<MSG

changegate auth demo is running (logs in $STATE).
  alice's screen:  http://127.0.0.1:$PAGE_PORT/?user=alice&gateway=http://127.0.0.1:$HTTP_PORT
  bob's screen:    http://localhost:$PAGE_PORT/?user=bob&gateway=http://localhost:$HTTP_PORT
                   (another host name, so one browser keeps the two users' cookies apart;
                   or use another browser or a private window)
  Tokens last $TTL s; changegate ends a stream at its token's exp plus the leeway
                   (30 s): the page then fetches a fresh token and resumes.
  With curl:       TOKEN=\$(/usr/bin/python3 examples/auth/mint-token.py --secret-file $STATE/jwt.secret alice)
                   curl -N -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$HTTP_PORT/events
  Without a token: curl -i http://127.0.0.1:$HTTP_PORT/events     (401 token_missing)
Press Ctrl-C to stop.
MSG
# In the background, so that a SIGTERM to this script stops the demo at once too.
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS" & pids+=($!); wait $!; else wait; fi
