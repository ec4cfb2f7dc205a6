#!/usr/bin/env bash
# limit.sh: the fan-out limit of this machine, and changegate as a fraction of it.
#
# For each count N in SUBSCRIBERS_LIST (1000 5000): bench/rawfanout (a minimal epoll
# server writing changegate's SSE frame, framed once per event, to every connection: no
# HTTP library, no filtering, no MongoDB) with N loadclient subscribers, once per thread
# count in THREADS_LIST (1 2), writing EVENTS events as fast as the subscribers take them;
# the best of those runs is the limit at N. Then (CHANGEGATE_RUN=1, the default) the same
# N subscribers on changegate, with devmongo and bench/writer.py inserting the EVENTS
# documents as fast as it can (--rate 0, BATCH documents per insert_many), and
# changegate's deliveries/s as a fraction of the limit. The target: changegate at least
# 0.50 of the limit at 5,000 subscribers (printed, not a failure: the figures are noisy).
#
# EVENTS is DELIVERIES (10,000,000) / N unless set: about 5 s of fan-out at the limit.
# Every event stays in changegate's journal (--journal-size) and in rawfanout's ring
# (--ring): max(EVENTS, 10000). Measured per run: deliveries/s and latency (receipt -
# ts_us: the framing time for rawfanout, the writer's for changegate; saturated runs, so
# mostly the backlog), SSE bytes/s (deliveries/s x the frame's bytes, chunk framing not
# counted), the server's CPU (cores / µs per delivery), loadclient's CPU, the machine's
# busy share (and the cores other work took), gaps and repeats, which must be 0 (else
# exit 1). One row per run in bench/RESULTS.md (section limit). Knobs (environment):
# SUBSCRIBERS_LIST, THREADS_LIST, DELIVERIES, EVENTS, BATCH (100), DOC_BYTES (100),
# CHANGEGATE_RUN (0: rawfanout only), TIMEOUT (120 s: how long loadclient waits after
# connecting), CHANGEGATE, DEVMONGO, BENCH_COMMIT, KEEP_OUT=1, RESULTS (RESULTS=/dev/null:
# a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS_LIST=${SUBSCRIBERS_LIST:-1000 5000}
THREADS_LIST=${THREADS_LIST:-1 2}
DELIVERIES=${DELIVERIES:-10000000}
EVENTS=${EVENTS:-}
BATCH=${BATCH:-100}
DOC_BYTES=${DOC_BYTES:-100}
CHANGEGATE_RUN=${CHANGEGATE_RUN:-1}
TIMEOUT=${TIMEOUT:-120}
bench_init limit
echo "limit: building rawfanout"
cc -O2 -std=c11 -Wall -Wextra -pthread -o "$here/rawfanout" "$here/rawfanout.c"
size=DELIVERIES=$DELIVERIES
[ -z "$EVENTS" ] || size=EVENTS=$EVENTS
command_line="SUBSCRIBERS_LIST='$SUBSCRIBERS_LIST' THREADS_LIST='$THREADS_LIST' $size BATCH=$BATCH DOC_BYTES=$DOC_BYTES CHANGEGATE_RUN=$CHANGEGATE_RUN${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/limit.sh"
for n in $SUBSCRIBERS_LIST; do
    [ "$n" -gt 0 ] || bench_die 2 "SUBSCRIBERS_LIST: $n is not a count"
    [ "$(ulimit -n)" -ge $((n + 200)) ] ||
        bench_die 2 "ulimit -n is $(ulimit -n), too low for $n subscribers"
done
for t in $THREADS_LIST; do [ "$t" -gt 0 ] || bench_die 2 "THREADS_LIST: $t is not a count"; done

events_for() { # subscribers
    local e=${EVENTS:-$((DELIVERIES / $1))}
    [ "$e" -gt 0 ] || bench_die 2 "no events for $1 subscribers (DELIVERIES, EVENTS)"
    echo "$e"
}
bench_forget() { # pid...: takes ended processes off bench_pids
    local keep=() p q
    for p in "${bench_pids[@]}"; do
        for q in "$@"; do [ "$p" = "$q" ] && continue 2; done
        keep+=("$p")
    done
    bench_pids=("${keep[@]}")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
mb_per_s() { awk -v d="$1" -v f="$2" 'BEGIN {printf "%.0f", d * f / 1e6}'; } # deliveries/s frame-bytes

# One rawfanout run; sets r_deliveries (0 when it failed) and appends its row's cells to
# rows[] (the "× limit" cell filled in once every run at N is known).
raw_run() { # subscribers threads
    local n=$1 t=$2 tag=raw-$1-t$2 events ring rf_port rf_pid busy0 all0 busy1 all1 wall0 wall
    events=$(events_for "$n")
    ring=$((events > 10000 ? events : 10000))
    rf_port=$(bench_free_port)
    read -r busy0 all0 < <(bench_host_ticks)
    wall0=$EPOCHREALTIME
    "$here/rawfanout" --port "$rf_port" --connections "$n" --events "$events" --threads "$t" \
        --ring "$ring" --doc-bytes "$DOC_BYTES" --ready-file "$out/listening-$tag" \
        >"$out/rawfanout-$tag.json" 2>"$out/rawfanout-$tag.log" &
    rf_pid=$!
    bench_pids+=("$rf_pid")
    for _ in $(seq 100); do [ -s "$out/listening-$tag" ] && break; sleep 0.05; done
    [ -s "$out/listening-$tag" ] || bench_die 1 "rawfanout did not listen: $(cat "$out/rawfanout-$tag.log")"
    # rawfanout starts writing as soon as all N are answered, which may be before
    # loadclient notices the last one streams: nothing is lost, as each stream's events
    # follow its first comment.
    cg_port=$rf_port # bench_start_loadclient's target
    bench_start_loadclient "$tag" --connections "$n" --expect "$events" --duration "$TIMEOUT"
    echo "limit: $tag: $n subscribers streaming; rawfanout writes $events events to each ($t thread(s))"
    local lc_rc=0 rf_rc=0
    wait "$lc_pid" || lc_rc=$?
    wait "$rf_pid" || rf_rc=$?
    bench_forget "$lc_pid" "$rf_pid" # ended: no signal for whatever reuses their pids
    wall=$(bench_seconds "$wall0" "$EPOCHREALTIME")
    read -r busy1 all1 < <(bench_host_ticks)
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "limit: $tag: rawfanout: $(cat "$out/rawfanout-$tag.json")"
    echo "limit: $tag: loadclient: $(cat "$out/loadclient-$tag.json")"
    local deliveries p50 p99 gaps repeats complete lc_cpu window frame rf_ok rf_cpu rf_total rf_run
    read -r deliveries p50 p99 gaps repeats complete lc_cpu window < <(bench_json \
        "$out/loadclient-$tag.json" deliveries_per_s latency_us.p50 latency_us.p99 gaps repeats \
        complete cpu_s window_s)
    read -r frame rf_ok rf_cpu rf_total rf_run < <(bench_json "$out/rawfanout-$tag.json" \
        frame_bytes ok cpu_s cpu_total_s run_s)
    local ok=yes
    [ "$complete" = true ] && [ "$gaps" = 0 ] && [ "$repeats" = 0 ] && [ "$lc_rc" = 0 ] &&
        [ "$rf_rc" = 0 ] && [ "$rf_ok" = true ] || ok=no
    [ "$ok" = yes ] || all_ok=no
    r_deliveries=$deliveries r_frame=$frame
    [ "$ok" = yes ] || r_deliveries=0
    # The server's CPU over its fan-out (from the first event framed until every client
    # closed), as cores and per delivery; loadclient's over the span of receipt.
    rows+=("$n|rawfanout, $t thread(s)|$deliveries|$(bench_ms "$p50")|$(bench_ms "$p99")|$(bench_cores "$rf_cpu" "$rf_run" 1) / $(bench_us_per "$rf_cpu" $((n * events)) 1)|$(bench_cores "$lc_cpu" "$window" 1)|$(bench_host_busy $((busy1 - busy0)) $((all1 - all0)) 0 "$rf_total $lc_cpu" "$wall")|$ok (gaps $gaps, repeats $repeats)|$load|$frame|$events|$(printf %.1f "$wall")")
    echo "limit: $tag: $deliveries deliveries/s, p50 $(bench_ms "$p50") ms, p99 $(bench_ms "$p99") ms, ok $ok"
}

sample_cpu() { printf -v "cg$1" %s "$(bench_cpu_ns "$cg_pid")"; } # bench_measure's sample

# One changegate run; sets c_deliveries and appends its row's cells to rows[].
cg_run() { # subscribers
    local n=$1 tag=cg-$1 events journal
    events=$(events_for "$n")
    journal=$((events > 10000 ? events : 10000))
    bench_start_devmongo
    bench_start_changegate "$tag" $((n + 100)) --journal-size "$journal"
    bench_start_loadclient "$tag" --path /events --connections "$n" --expect "$events" \
        --duration "$TIMEOUT"
    echo "limit: $tag: $n subscribers streaming on changegate (pid $cg_pid); writing $events as fast as the writer can (batches of $BATCH)"
    local cg0 cg1
    bench_measure "$tag" sample_cpu "$events" --rate 0 --count "$events" --batch "$BATCH" \
        --doc-bytes "$DOC_BYTES"
    [ "$m_ok" = yes ] || all_ok=no
    local cg_ns=$((cg1 - cg0)) window
    window=$(bench_json "$out/loadclient-$tag.json" window_s)
    c_deliveries=$m_deliveries
    [ "$m_ok" = yes ] || c_deliveries=0
    # Host busy: all but changegate (ns), devmongo (ticks), the writer and loadclient.
    local ours=$((cg_ns / (1000000000 / $(getconf CLK_TCK)) + m_dm))
    rows+=("$n|changegate (writer: $m_rate/s)|$m_deliveries|$(bench_ms "$m_p50")|$(bench_ms "$m_p99")|$(bench_cores "$cg_ns" "$m_wall" 1e9) / $(bench_us_per "$cg_ns" $((n * events)) 1e9)|$(bench_cores "$m_lc_cpu" "$window" 1)|$(bench_host_busy "$m_busy" "$m_all" "$ours" "$m_lc_cpu $m_wr_cpu" "$m_wall")|$m_ok (gaps $m_gaps, repeats $m_repeats)|$m_load|-|$events|$(printf %.1f "$m_wall")")
    echo "limit: $tag: $m_deliveries deliveries/s, p50 $(bench_ms "$m_p50") ms, p99 $(bench_ms "$m_p99") ms, ok $m_ok"
}

header=$(mktemp)
cat >"$header" <<'HDR'
The fan-out limit of this machine: bench/rawfanout, a minimal epoll server (no HTTP
library, no filtering, no MongoDB) that frames each event once in changegate's SSE layout
(the same bytes for the same 100-byte document, without HTTP chunk framing) and writes it
to N loadclient subscribers through a ring with a cursor per connection, as fast as they
take it; and changegate with the same N subscribers, devmongo and bench/writer.py
inserting the same number of events as fast as it can (`--rate 0 --batch`). Each row is
one run; the rawfanout runs at N differ in threads (`--threads`), and their best is the
limit. "× limit": deliveries/s over the limit at the same N (target: changegate ≥ 0.50
at 5,000). Every subscriber must get every event (gaps, repeats 0). Latency: receipt
minus `ts_us` (rawfanout: the time of framing; changegate: the writer's); the runs are
saturated, so it is mostly the backlog. Frame: rawfanout's mean frame bytes; SSE MB/s:
deliveries/s × that. Server CPU: cores over its run / µs per delivery (rawfanout from its
first event to its exit; changegate from the writer's start until the last delivery).
loadclient: its cores over the span of receipt (it reads every byte of every delivery on
one thread, so it is part of what the limit measures). Host busy: the machine's busy
share and, in brackets, the cores other work took (it disturbs the figures). Seconds:
the run's wall time (rawfanout: from its start, connecting included; changegate: from
the writer's start).

| date | commit | server | subscribers | events/subscriber | seconds | deliveries/s | × limit | SSE MB/s | frame bytes | latency p50 ms | latency p99 ms | server CPU: cores / µs per delivery | loadclient CPU cores | host busy (others, cores) | all delivered | host (CPUs, load avg at end) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR

all_ok=yes
date=$(date -u +%Y-%m-%dT%H:%MZ)
summary=()
for n in $SUBSCRIBERS_LIST; do
    rows=()
    limit=0 frame=0
    for t in $THREADS_LIST; do
        raw_run "$n" "$t"
        if awk -v a="$r_deliveries" -v b="$limit" 'BEGIN {exit !(a > b)}'; then limit=$r_deliveries; fi
        frame=$r_frame
    done
    c_deliveries=
    if [ "$CHANGEGATE_RUN" = 1 ]; then cg_run "$n"; fi
    for r in "${rows[@]}"; do
        IFS='|' read -r sn server deliveries p50 p99 cpu lc host ok load fb events seconds <<<"$r"
        [ "$fb" = - ] && fb=$frame
        row="| $date | $(bench_commit) | $server | $sn | $events | $seconds | $deliveries | $(ratio "$deliveries" "$limit") | $(mb_per_s "$deliveries" "$fb") | $fb | $p50 | $p99 | $cpu | $lc | $host | $ok | $(nproc) CPUs, load $load | \`$command_line\` |"
        bench_append_row limit "$header" "$row"
    done
    line="$n subscribers: limit $limit deliveries/s"
    [ -n "$c_deliveries" ] && line+=", changegate $c_deliveries = $(ratio "$c_deliveries" "$limit") of it"
    summary+=("$line")
done
rm -f "$header"
for line in "${summary[@]}"; do echo "limit: $line"; done
echo "limit: target: changegate at least 0.50 of the limit at 5,000 subscribers"
[ "$all_ok" = yes ] || bench_die 1 "not every subscriber received every event exactly once"
echo "limit: PASS"
