#!/bin/bash
# The Quick start demo: installs what is needed, builds, then runs devmongo
# (the development MongoDB), changegate, a writer inserting a sample document
# every second, and a static server for the browser page. Ctrl-C stops all.
# Ports: DEMO_MONGO_PORT (27017), DEMO_HTTP_PORT (8080), DEMO_PAGE_PORT (8081).
# DEMO_SECONDS=N stops the demo by itself after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MONGO_PORT=${DEMO_MONGO_PORT:-27017}
HTTP_PORT=${DEMO_HTTP_PORT:-8080}
PAGE_PORT=${DEMO_PAGE_PORT:-8081}

source examples/lib.sh
demo_build
demo_state changegate-demo

demo_devmongo "$MONGO_PORT"
build/plain/src/changegate --mongo-uri "$URI" --listen "http://127.0.0.1:$HTTP_PORT" \
  --state-dir "$STATE" --cors-origin "http://127.0.0.1:$PAGE_PORT" \
  --cors-origin "http://localhost:$PAGE_PORT" 2>"$STATE/changegate.log" &
pids+=($!)
/usr/bin/python3 examples/demo/writer.py "$URI" &
pids+=($!)
/usr/bin/python3 -m http.server "$PAGE_PORT" --bind 127.0.0.1 --directory examples/browser \
  >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || { cat "$STATE/changegate.log"; exit 1; }

cat <<MSG

changegate demo is running (logs in $STATE).
  Watch changes:   curl -N http://127.0.0.1:$HTTP_PORT/events
  As NDJSON:       curl -sN 'http://127.0.0.1:$HTTP_PORT/events?format=ndjson' | jq .event.fullDocument
  Long-poll:       curl 'http://127.0.0.1:$HTTP_PORT/poll?timeout=5'
  In a browser:    http://127.0.0.1:$PAGE_PORT/?gateway=http://127.0.0.1:$HTTP_PORT
Press Ctrl-C to stop.
MSG
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait; fi
