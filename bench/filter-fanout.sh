#!/usr/bin/env bash
# filter-fanout.sh: does matching cost stay flat as filtered subscribers grow?
#
# Indexed runs: SUBSCRIBERS (10,000) and then BASE (100) SSE subscribers, each with
# filter {"fullDocument.owner": "u<i>"}, a distinct owner per subscriber; the writer
# inserts RATE (2,000)/s for DURATION (10) s with owner "u<seq % subscribers>", so every
# event belongs to exactly one subscriber. loadclient checks that each subscriber gets
# exactly its events (no gap, repeat, or misrouted event). changegate's CPU time over
# the run, divided by the events, is its CPU per event; the row gives both and their
# ratio (the target: within 1.5x).
# Scanned runs: SCANNED (2,000) subscribers whose filter has no equality to index by
# ({"fullDocument.seq": {"$lt": 0}}, which never matches), then none: the difference in
# CPU per event, divided by SCANNED, is the cost per event per scanned subscriber.
#
# Every run starts a fresh devmongo and changegate on loopback and stops them. Appends one
# row to bench/RESULTS.md (section filter-fanout). Knobs (environment): SUBSCRIBERS, BASE,
# RATE, DURATION, SCANNED, DOC_BYTES (100), CHANGEGATE, DEVMONGO, KEEP_OUT=1, RESULTS.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-10000}
BASE=${BASE:-100}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
SCANNED=${SCANNED:-2000}
DOC_BYTES=${DOC_BYTES:-100}
bench_init filter-fanout
EVENTS=$((RATE * DURATION))
command_line="SUBSCRIBERS=$SUBSCRIBERS BASE=$BASE RATE=$RATE DURATION=$DURATION SCANNED=$SCANNED${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/filter-fanout.sh"
# {"fullDocument.owner": "u{i}"}, URL-encoded; loadclient puts the index in {i}.
owner_path='/events?filter=%7B%22fullDocument.owner%22%3A%22u{i}%22%7D'
scan_path='/events?filter=%7B%22fullDocument.seq%22%3A%7B%22%24lt%22%3A0%7D%7D'

# One run: writes EVENTS documents; sets run_ticks (changegate's CPU), run_rate (the
# writer's achieved rate) and run_ok (every subscriber got exactly its events).
run() { # tag subscribers path stride expect-per-subscriber
    local tag=$1 n=$2 path=$3 stride=$4 expect=$5
    bench_start_devmongo
    bench_start_changegate "$tag" $((n + 100))
    local lc_args=(--connections "$n" --path "$path" --duration $((DURATION + 90)))
    if [ "$stride" -gt 0 ]; then
        lc_args+=(--stride "$stride" --expect "$expect")
    fi
    if [ "$n" -gt 0 ]; then
        bench_start_loadclient "$tag" "${lc_args[@]}"
    fi
    local t0 t1 rc=0 ok=yes
    t0=$(bench_cpu_ticks "$cg_pid")
    "$PY" "$here/writer.py" --uri "$mongo_uri" --rate "$RATE" --duration "$DURATION" \
        --doc-bytes "$DOC_BYTES" --owners "$((stride > 0 ? stride : 1))" >"$out/writer-$tag.json"
    if [ "$n" -gt 0 ] && [ "$stride" -gt 0 ]; then
        wait "$lc_pid" || rc=$?
        [ $rc = 0 ] || ok=no
    else
        sleep 2 # let the gateway finish the last events (nobody receives them)
    fi
    t1=$(bench_cpu_ticks "$cg_pid")
    bench_stop_changegate
    bench_stop_all
    run_ticks=$((t1 - t0))
    run_rate=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rate"])' "$out/writer-$tag.json")
    run_ok=$ok
}

hz=$(getconf CLK_TCK)
per_event_us() { awk -v t="$1" -v hz="$hz" -v e="$EVENTS" 'BEGIN {printf "%.1f", t / hz / e * 1e6}'; }

echo "filter-fanout: $SUBSCRIBERS subscribers, one owner each, $RATE inserts/s for ${DURATION}s"
run big "$SUBSCRIBERS" "$owner_path" "$SUBSCRIBERS" $((EVENTS / SUBSCRIBERS))
ticks_n=$run_ticks rate_n=$run_rate ok_n=$run_ok
echo "filter-fanout:   $(per_event_us "$ticks_n") us CPU per event; loadclient: $(cat "$out/loadclient-big.json")"
echo "filter-fanout: $BASE subscribers, one owner each"
run base "$BASE" "$owner_path" "$BASE" $((EVENTS / BASE))
ticks_b=$run_ticks rate_b=$run_rate ok_b=$run_ok
echo "filter-fanout:   $(per_event_us "$ticks_b") us CPU per event"
echo "filter-fanout: $SCANNED subscribers with an unindexable filter that never matches"
run scanned "$SCANNED" "$scan_path" 0 0
ticks_s=$run_ticks
echo "filter-fanout: no subscribers"
run none 0 "$scan_path" 0 0
ticks_0=$run_ticks

read -r ratio scan_ns < <(awk -v n="$ticks_n" -v b="$ticks_b" -v s="$ticks_s" -v z="$ticks_0" \
    -v hz="$hz" -v e="$EVENTS" -v m="$SCANNED" \
    'BEGIN {printf "%.2f %.0f\n", (b > 0 ? n / b : 0), (s - z) / hz / e / m * 1e9}')
ok=yes
[ "$ok_n" = yes ] && [ "$ok_b" = yes ] || ok=no

header=$(mktemp)
cat >"$header" <<'HDR'
Filtered fan-out: every subscriber has its own `fullDocument.owner`, so each event has
exactly one recipient; the matching index must keep changegate's CPU per event nearly
flat as subscribers grow. CPU is changegate's user+system time during the run over the
events written (clock ticks, 10 ms resolution). "scanned" is the extra CPU per event per
subscriber whose filter cannot be indexed.

| date | commit | subscribers | events | writer rate/s | CPU/event at N | CPU/event at base | ratio | each got exactly its events | scanned: ns per event per subscriber | host | command |
|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
row="| $(date -u +%Y-%m-%dT%H:%MZ) | $(bench_commit) | $SUBSCRIBERS vs $BASE | $EVENTS | $rate_n / $rate_b | $(per_event_us "$ticks_n") us | $(per_event_us "$ticks_b") us | $ratio | $ok | $scan_ns ns ($SCANNED scanned) | $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg) | \`$command_line\` |"
bench_append_row filter-fanout "$header" "$row"
rm -f "$header"
[ "$ok" = yes ] || bench_die 1 "a subscriber did not get exactly its events"
echo "filter-fanout: PASS"
