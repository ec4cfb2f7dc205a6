#!/usr/bin/env bash
# sse-fanout.sh: 1,000 SSE subscribers, 1,000 inserts/s of ~100-byte documents for 10 s.
#
# Builds bench/loadclient, starts devmongo and changegate on free loopback ports,
# connects the subscribers, runs bench/writer.py, checks that every subscriber received
# every event (no gap, no repeat), samples changegate's RSS, stops everything, and
# appends a dated row to bench/RESULTS.md.
#
# Knobs (environment): SUBSCRIBERS (1000), RATE (1000), DURATION (10 s), DOC_BYTES (100),
# CHANGEGATE (src/changegate), DEVMONGO (tests/devmongo/devmongo), KEEP_OUT=1 keeps
# bench/out/<run>/ (logs, samples) after a passing run. RESULTS=path overrides the file
# the row is appended to (RESULTS=/dev/null for a dry run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
DOC_BYTES=${DOC_BYTES:-100}
CHANGEGATE_SET=${CHANGEGATE:+1}
CHANGEGATE=${CHANGEGATE:-$repo/src/changegate}
DEVMONGO=${DEVMONGO:-$repo/tests/devmongo/devmongo}
RESULTS=${RESULTS:-$here/RESULTS.md}
PY=/usr/bin/python3
EXPECT=$(( RATE * DURATION ))
[ "$EXPECT" -gt 0 ] || { echo "sse-fanout: RATE x DURATION must be positive" >&2; exit 2; }
command_line="SUBSCRIBERS=$SUBSCRIBERS RATE=$RATE DURATION=$DURATION DOC_BYTES=$DOC_BYTES${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE} bench/sse-fanout.sh"

[ -x "$CHANGEGATE" ] || { echo "sse-fanout: $CHANGEGATE not built (autoreconf -fi && ./configure && make)" >&2; exit 2; }
[ -x "$DEVMONGO" ] || { echo "sse-fanout: $DEVMONGO missing" >&2; exit 2; }

# Many sockets: raise the open-file limit to the hard limit (20000 here).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $(( SUBSCRIBERS + 200 )) ]; then
    echo "sse-fanout: ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS subscribers" >&2
    exit 2
fi

out=$here/out/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$out"
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ $rc -ne 0 ]; then
        echo "sse-fanout: FAILED (status $rc); logs in $out" >&2
        tail -n 30 "$out/changegate.log" 2>/dev/null | sed 's/^/  changegate: /' >&2 || true
    elif [ -z "${KEEP_OUT:-}" ]; then
        rm -rf "$out"
        rmdir "$here/out" 2>/dev/null || true
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

echo "sse-fanout: building loadclient"
cc -O2 -std=c11 -Wall -o "$here/loadclient" "$here/loadclient.c"

mport=$(free_port)
"$DEVMONGO" --port "$mport" --host 127.0.0.1 >"$out/devmongo.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q "devmongo ready on" "$out/devmongo.log" && break; sleep 0.05; done
grep -q "devmongo ready on" "$out/devmongo.log" || { echo "sse-fanout: devmongo did not start" >&2; exit 1; }
uri="mongodb://127.0.0.1:$mport/?replicaSet=rs0"

cport=$(free_port)
mkdir -p "$out/state"
"$CHANGEGATE" --mongo-uri "$uri" --watch '*' --listen "http://127.0.0.1:$cport" \
    --state-dir "$out/state" --max-subscribers $(( SUBSCRIBERS + 100 )) \
    --log-level info >"$out/changegate.log" 2>&1 &
cg_pid=$!
pids+=($cg_pid)
healthy=
for _ in $(seq 200); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$cport/healthz" 2>/dev/null; then healthy=1; break; fi
    sleep 0.1
done
[ -n "$healthy" ] || { echo "sse-fanout: changegate never became healthy" >&2; exit 1; }
echo "sse-fanout: devmongo :$mport, changegate :$cport (pid $cg_pid)"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$cg_pid/status" 2>/dev/null || echo 0; }
rss_idle=$(rss_kb)

# Subscribers. The writer starts once every one of them has the stream's first bytes.
"$here/loadclient" --host 127.0.0.1 --port "$cport" --path /events \
    --connections "$SUBSCRIBERS" --expect "$EXPECT" --duration $(( DURATION + 60 )) \
    --ready-file "$out/ready" >"$out/loadclient.json" 2>"$out/loadclient.log" &
lc_pid=$!
pids+=($lc_pid)
for _ in $(seq 600); do [ -s "$out/ready" ] && break; kill -0 $lc_pid 2>/dev/null || break; sleep 0.05; done
[ -s "$out/ready" ] || { echo "sse-fanout: subscribers did not connect" >&2; cat "$out/loadclient.log" >&2; exit 1; }
echo "sse-fanout: $(cat "$out/ready") subscribers streaming; writing $RATE/s for ${DURATION}s"
rss_connected=$(rss_kb)

# RSS sampler.
( while kill -0 $cg_pid 2>/dev/null; do echo "$(date +%s.%N) $(rss_kb)"; sleep 0.2; done ) >"$out/rss.txt" &
sampler=$!
pids+=($sampler)

"$PY" "$here/writer.py" --uri "$uri" --rate "$RATE" --duration "$DURATION" \
    --doc-bytes "$DOC_BYTES" >"$out/writer.json"
echo "sse-fanout: writer: $(cat "$out/writer.json")"

lc_rc=0
wait $lc_pid || lc_rc=$?
kill $sampler 2>/dev/null || true
summary=$(cat "$out/loadclient.json")
echo "sse-fanout: loadclient: $summary"
[ -s "$out/loadclient.log" ] && sed 's/^/  loadclient: /' "$out/loadclient.log"

load=$(cut -d' ' -f1 /proc/loadavg)
rss_peak=$(awk '$2 > m {m = $2} END {print m + 0}' "$out/rss.txt")
rss_end=$(rss_kb)

# Stop changegate: it must exit 0.
kill -TERM $cg_pid
cg_rc=0
wait $cg_pid || cg_rc=$?

read -r deliveries p50 p99 gaps repeats complete written rate_w < <("$PY" - "$out/loadclient.json" "$out/writer.json" <<'EOF'
import json, sys
lc = json.load(open(sys.argv[1])); w = json.load(open(sys.argv[2]))
print(lc["deliveries_per_s"], lc["latency_us"]["p50"], lc["latency_us"]["p99"], lc["gaps"],
      lc["repeats"], str(lc["complete"]).lower(), w["written"], w["rate"])
EOF
)

ok=yes
[ "$complete" = true ] && [ "$gaps" = 0 ] && [ "$repeats" = 0 ] && [ "$lc_rc" = 0 ] || ok=no
[ "$written" = "$EXPECT" ] || ok=no
[ "$cg_rc" = 0 ] || { echo "sse-fanout: changegate exited $cg_rc after SIGTERM" >&2; ok=no; }

if [ ! -s "$RESULTS" ] && [ "$RESULTS" != /dev/null ]; then
    cat >"$RESULTS" <<'EOF'
# Benchmark results

One row per run of a bench/ scenario, appended by the script. Latency is receipt time at the
subscriber minus the writer's `ts_us` (same host, same clock). RSS is changegate's VmRSS.
devmongo, the writer and the load client run on the same machine as changegate and compete
with it for CPU: compare rows from the same host only, and read the load column.

| date | commit | scenario | subscribers | events/subscriber | writer rate/s | deliveries/s | latency p50 ms | latency p99 ms | RSS idle / connected / peak MB | all delivered | host (CPUs, load avg during run) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
fi
# The commit checked out; the command column names the binary when CHANGEGATE was given.
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo uncommitted)
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }
row="| $(date -u +%Y-%m-%dT%H:%MZ) | $commit | sse-fanout | $SUBSCRIBERS | $EXPECT | $rate_w | $deliveries | $(ms "$p50") | $(ms "$p99") | $(mb "$rss_idle") / $(mb "$rss_connected") / $(mb "$rss_peak") | $ok (gaps $gaps, repeats $repeats) | $(nproc) CPUs, load $load | \`$command_line\` |"
echo "$row" >>"$RESULTS"
echo "sse-fanout: $row"
if [ "$ok" != yes ]; then
    echo "sse-fanout: not every subscriber received every event exactly once" >&2
    exit 1
fi
echo "sse-fanout: PASS"
