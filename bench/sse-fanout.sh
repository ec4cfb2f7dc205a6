#!/usr/bin/env bash
# sse-fanout.sh: SUBSCRIBERS (1,000) SSE subscribers, RATE (1,000) inserts/s of ~DOC_BYTES
# (100) byte documents for DURATION (10) s; every subscriber must receive every event.
#
# Starts devmongo and changegate on free loopback ports, connects the subscribers,
# runs bench/writer.py, checks that every subscriber received every event (no gap, no
# repeat), samples changegate's RSS, stops everything, and appends a dated row to
# bench/RESULTS.md (section sse-fanout). Knobs (environment): SUBSCRIBERS, RATE, DURATION,
# DOC_BYTES, CHANGEGATE, DEVMONGO, KEEP_OUT=1, RESULTS (RESULTS=/dev/null: a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
DOC_BYTES=${DOC_BYTES:-100}
bench_init sse-fanout
EXPECT=$((RATE * DURATION))
[ "$EXPECT" -gt 0 ] || bench_die 2 "RATE x DURATION must be positive"
command_line="SUBSCRIBERS=$SUBSCRIBERS RATE=$RATE DURATION=$DURATION DOC_BYTES=$DOC_BYTES${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/sse-fanout.sh"
[ "$(ulimit -n)" -ge $((SUBSCRIBERS + 200)) ] ||
    bench_die 2 "ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS subscribers"

bench_start_devmongo
bench_start_changegate main $((SUBSCRIBERS + 100))
echo "sse-fanout: changegate :$cg_port (pid $cg_pid)"
rss_idle=$(bench_rss_kb "$cg_pid")

# The writer starts once every subscriber has the stream's first bytes.
bench_start_loadclient main --path /events --connections "$SUBSCRIBERS" --expect "$EXPECT" \
    --duration $((DURATION + 60))
echo "sse-fanout: $SUBSCRIBERS subscribers streaming; writing $RATE/s for ${DURATION}s"
rss_connected=$(bench_rss_kb "$cg_pid")
bench_sample_rss "$out/rss.txt" "$cg_pid"

"$PY" "$here/writer.py" --uri "$mongo_uri" --rate "$RATE" --duration "$DURATION" \
    --doc-bytes "$DOC_BYTES" >"$out/writer.json"
echo "sse-fanout: writer: $(cat "$out/writer.json")"
lc_rc=0
wait "$lc_pid" || lc_rc=$?
echo "sse-fanout: loadclient: $(cat "$out/loadclient-main.json")"
load=$(cut -d' ' -f1 /proc/loadavg)
rss_peak=$(bench_peak_kb "$out/rss.txt")
bench_stop_changegate

read -r deliveries p50 p99 gaps repeats complete written rate_w < <("$PY" - "$out/loadclient-main.json" "$out/writer.json" <<'PYEOF'
import json, sys
lc = json.load(open(sys.argv[1])); w = json.load(open(sys.argv[2]))
print(lc["deliveries_per_s"], lc["latency_us"]["p50"], lc["latency_us"]["p99"], lc["gaps"],
      lc["repeats"], str(lc["complete"]).lower(), w["written"], w["rate"])
PYEOF
)
ok=yes
[ "$complete" = true ] && [ "$gaps" = 0 ] && [ "$repeats" = 0 ] && [ "$lc_rc" = 0 ] || ok=no
[ "$written" = "$EXPECT" ] || ok=no

header=$(mktemp)
cat >"$header" <<'HDR'
Every subscriber receives every event (no filter). Latency is receipt time at the
subscriber minus the writer's `ts_us`. RSS is changegate's VmRSS.

| date | commit | scenario | subscribers | events/subscriber | writer rate/s | deliveries/s | latency p50 ms | latency p99 ms | RSS idle / connected / peak MB | all delivered | host (CPUs, load avg during run) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
row="| $(date -u +%Y-%m-%dT%H:%MZ) | $(bench_commit) | sse-fanout | $SUBSCRIBERS | $EXPECT | $rate_w | $deliveries | $(bench_ms "$p50") | $(bench_ms "$p99") | $(bench_mb "$rss_idle") / $(bench_mb "$rss_connected") / $(bench_mb "$rss_peak") | $ok (gaps $gaps, repeats $repeats) | $(nproc) CPUs, load $load | \`$command_line\` |"
bench_append_row sse-fanout "$header" "$row"
rm -f "$header"
[ "$ok" = yes ] || bench_die 1 "not every subscriber received every event exactly once"
echo "sse-fanout: PASS"
