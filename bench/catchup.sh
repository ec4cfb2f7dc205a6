#!/usr/bin/env bash
# catchup.sh: how fast is a subscriber far behind the journal caught up from MongoDB?
#
# changegate keeps JOURNAL (1,000) events in memory. With no subscriber connected, the
# writer inserts EVENTS (50,000) ~DOC_BYTES (100) byte documents as fast as it can
# (WRITE_RATE, 100,000/s, is its target); devmongo's oplog (OPLOG, 200,000 entries)
# holds them all. Before that, one SSE reader takes the position of the very first event
# and leaves. Once changegate has received every event, a timed reader
# (bench/catchup_reader.py) connects with `Last-Event-ID: <first position>`: everything
# after it is older than the journal, so changegate opens a catch-up change stream
# (resumeAfter) and hands over to the journal when it reaches it. The reader must get
# seq 1 .. EVENTS-1 in order (no gap, no repeat, no reset); then the catch-up stream must
# be closed, and after LIVE (1,000) more inserts the same reader must get exactly those
# next (served from the journal).
#
# Reports catch-up events, seconds, events/s, changegate_catchup_events_total and
# changegate_catchup_streams_peak from /metrics and changegate's RSS, stops everything, and
# appends a dated row to bench/RESULTS.md (section catchup). Knobs (environment): EVENTS,
# LIVE, JOURNAL, OPLOG, DOC_BYTES, WRITE_RATE, TIMEOUT (600 s, the reader's limit),
# CHANGEGATE, DEVMONGO, KEEP_OUT=1, RESULTS (RESULTS=/dev/null: a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
EVENTS=${EVENTS:-50000}
LIVE=${LIVE:-1000}
JOURNAL=${JOURNAL:-1000}
OPLOG=${OPLOG:-200000}
DOC_BYTES=${DOC_BYTES:-100}
WRITE_RATE=${WRITE_RATE:-100000}
TIMEOUT=${TIMEOUT:-600}
bench_init catchup
command_line="EVENTS=$EVENTS LIVE=$LIVE JOURNAL=$JOURNAL OPLOG=$OPLOG DOC_BYTES=$DOC_BYTES WRITE_RATE=$WRITE_RATE${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/catchup.sh"
[ "$EVENTS" -gt $((JOURNAL + 1)) ] || bench_die 2 "EVENTS must exceed JOURNAL + 1 (the catch-up must start outside the journal)"
[ "$OPLOG" -ge $((EVENTS + LIVE)) ] || bench_die 2 "OPLOG ($OPLOG) must hold EVENTS + LIVE"
[ "$LIVE" -ge 0 ] || bench_die 2 "LIVE must be 0 or more"

metric() { # name: its value in changegate's /metrics
    curl -fsS "http://127.0.0.1:$cg_port/metrics" |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2; f = 1} END {if (f) print s}'
}
# Waits until metric NAME compares (-ge, -eq, ...) to VALUE; fails after SECONDS.
wait_metric() { # name op value seconds what
    local v
    for _ in $(seq $(($4 * 10))); do
        v=$(metric "$1")
        test "${v:-0}" "$2" "$3" && return 0
        sleep 0.1
    done
    bench_die 1 "$5 ($1 is ${v:-none}, wanted $2 $3)"
}
write() { # tag first-seq count
    "$PY" "$here/writer.py" --uri "$mongo_uri" --rate "$WRITE_RATE" --count "$3" \
        --first-seq "$2" --doc-bytes "$DOC_BYTES" >"$out/writer-$1.json"
    echo "catchup: writer ($1): $(cat "$out/writer-$1.json")"
}
reader() { # tag reader-options...: starts catchup_reader.py in the background, sets $rd_pid
    local tag=$1
    shift
    "$PY" "$here/catchup_reader.py" --port "$cg_port" --timeout "$TIMEOUT" "$@" \
        >"$out/reader-$tag.json" 2>"$out/reader-$tag.log" &
    rd_pid=$!
    bench_pids+=("$rd_pid")
}
wait_file() { # file pid what: waits for file while pid lives
    for _ in $(seq $((TIMEOUT * 20))); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$1" ] && return 0
    cat "$out"/reader-*.log "$out"/reader-*.json >&2 2>/dev/null || true
    bench_die 1 "$3"
}

bench_start_devmongo --oplog-size "$OPLOG"
bench_start_changegate main 100 --journal-size "$JOURNAL"
echo "catchup: changegate :$cg_port (pid $cg_pid), journal $JOURNAL, devmongo oplog $OPLOG"
rss_idle=$(bench_rss_kb "$cg_pid")
bench_sample_rss "$out/rss.txt" "$cg_pid"

# The position of the first event (seq 0): a reader listens while it is written, then leaves.
reader first --expect 1 --first-seq 0 --ready-file "$out/ready-first"
wait_file "$out/ready-first" "$rd_pid" "the first reader did not connect"
write first 0 1
wait "$rd_pid" || bench_die 1 "the first reader failed: $(cat "$out/reader-first.json")"
read -r first_id < <(bench_json "$out/reader-first.json" last_id)
[ -n "$first_id" ] || bench_die 1 "no position for the first event"
echo "catchup: first event at $first_id"

# changegate notices the closed connection at its next write: the first of these events.
echo "catchup: writing $((EVENTS - 1)) more documents with no subscriber"
write bulk 1 $((EVENTS - 1))
wait_metric changegate_events_received_total -ge "$EVENTS" "$TIMEOUT" "changegate did not receive every event"
wait_metric changegate_subscribers -eq 0 10 "the first reader is still connected"
[ "$(metric changegate_catchup_events_total)" = 0 ] || bench_die 1 "a catch-up stream ran before the timed reader"
rss_before=$(bench_rss_kb "$cg_pid")

echo "catchup: reader resumes after the first event; $((EVENTS - 1)) events to catch up"
cg_t0=$(bench_cpu_ticks "$cg_pid") dm_t0=$(bench_cpu_ticks "$dm_pid") wall0=$(date +%s.%N)
reader main --last-event-id "$first_id" --first-seq 1 --expect $((EVENTS - 1)) --live "$LIVE" \
    --linger 1 --caught-up-file "$out/caught-up"
wait_file "$out/caught-up" "$rd_pid" "the reader did not catch up"
cg_t1=$(bench_cpu_ticks "$cg_pid") dm_t1=$(bench_cpu_ticks "$dm_pid") wall1=$(date +%s.%N)
echo "catchup: caught up: $(cat "$out/caught-up")"
# Handover: the catch-up stream ends once the reader is served from the journal.
handover=yes
for _ in $(seq 100); do [ "$(metric changegate_catchup_streams)" = 0 ] && break; sleep 0.1; done
[ "$(metric changegate_catchup_streams)" = 0 ] || handover=no
if [ "$LIVE" -gt 0 ]; then
    write live "$EVENTS" "$LIVE"
fi
rd_rc=0
wait "$rd_pid" || rd_rc=$?
echo "catchup: reader: $(cat "$out/reader-main.json")"
catchup_events=$(metric changegate_catchup_events_total)
catchup_peak=$(metric changegate_catchup_streams_peak)
resets=$(curl -fsS "http://127.0.0.1:$cg_port/metrics" | awk '/^changegate_resets_total/ {s += $2} END {print s + 0}')
load=$(cut -d' ' -f1 /proc/loadavg)
rss_peak=$(bench_peak_kb "$out/rss.txt")
bench_stop_changegate

read -r n secs rate cpu_share in_order gaps repeats rd_resets live_ok live_n < <(bench_json "$out/reader-main.json" \
    catchup.events catchup.seconds catchup.events_per_s catchup.reader_cpu_share in_order gaps repeats resets \
    live_ok live_received)
read -r written_bulk rate_w < <(bench_json "$out/writer-bulk.json" written rate)
ok=yes
[ "$rd_rc" = 0 ] && [ "$in_order" = true ] && [ "$live_ok" = true ] && [ "$rd_resets" = 0 ] || ok=no
[ "$n" = $((EVENTS - 1)) ] && [ "$live_n" = "$LIVE" ] && [ "$written_bulk" = $((EVENTS - 1)) ] || ok=no
[ "$handover" = yes ] && [ "$resets" = 0 ] || ok=no
[ "${catchup_events:-0}" -gt 0 ] && [ "${catchup_peak:-0}" -ge 1 ] || ok=no # it was a catch-up

header=$(mktemp)
cat >"$header" <<'HDR'
One subscriber resumes with `Last-Event-ID` at the first of EVENTS events, all written
while nobody listened and all but the last JOURNAL older than changegate's journal: a
catch-up change stream from devmongo (`resumeAfter`) feeds it until the journal takes
over. Seconds run from connecting to the last of the EVENTS-1 events; events/s is EVENTS-1
over that. Catch-up events and streams peak are `changegate_catchup_events_total` and
`changegate_catchup_streams_peak` (the other events came from the journal). CPU share is
a process's CPU time over the catch-up's wall time (1.00: one CPU busy throughout). Exact:
seq 1 .. EVENTS-1 in order with no gap, repeat or reset, the catch-up stream closed
afterwards (handover), and the LIVE events written next arrived next, nothing else. RSS
is changegate's VmRSS: idle, after the writes (before the reader), peak.

| date | commit | events caught up | journal | seconds | events/s | catch-up events | catch-up streams peak | live events after | CPU share: changegate / devmongo / reader | RSS idle / before / peak MB | exact | host (CPUs, load avg during run) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
hz=$(getconf CLK_TCK)
share() { awk -v t="$1" -v hz="$hz" -v a="$wall0" -v b="$wall1" 'BEGIN {printf "%.2f", t / hz / (b - a)}'; }
row="| $(date -u +%Y-%m-%dT%H:%MZ) | $(bench_commit) | $n | $JOURNAL | $secs | $rate | $catchup_events | $catchup_peak | $live_n | $(share $((cg_t1 - cg_t0))) / $(share $((dm_t1 - dm_t0))) / $cpu_share | $(bench_mb "$rss_idle") / $(bench_mb "$rss_before") / $(bench_mb "$rss_peak") | $ok (in order $in_order, gaps $gaps, repeats $repeats, resets $resets, handover $handover) | $(nproc) CPUs, load $load | \`$command_line\` |"
bench_append_row catchup "$header" "$row"
rm -f "$header"
echo "catchup: bulk writer rate $rate_w/s"
[ "$ok" = yes ] || bench_die 1 "the catch-up was not exact"
echo "catchup: PASS"
