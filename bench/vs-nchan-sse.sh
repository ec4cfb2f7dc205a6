#!/usr/bin/env bash
# vs-nchan-sse.sh: SSE fan-out at saturation, changegate against Nchan: for each count in
# SUBSCRIBERS_LIST ("1000 5000"), that many SSE subscribers and EVENTS (4,000) documents
# of ~DOC_BYTES (100) bytes written as fast as the writer can; every subscriber must
# receive every event exactly once.
#
# ROUNDS (2) rounds per count, each a changegate run then an Nchan run (changegate, nchan,
# changegate, nchan), with the same loadclient and documents: changegate's come from
# devmongo (bench/writer.py --rate 0: insert_many batches of BATCH, 100), Nchan's are
# POSTed to its publisher (PIPELINE, 8, in flight on one connection; bench/nchan.sh).
# deliveries/s = subscribers x EVENTS / (first write to last receipt). Also latency
# (receipt - the writer's ts_us) p50/p99/max, the CPU of changegate or of the nginx
# worker (cores, µs per delivery), the gateway's VmRSS (changegate; nginx master +
# worker) idle / all connected / peak, loadclient's CPU, the machine's busy share. Appends
# one row per setup and count to bench/RESULTS.md (section vs-nchan-sse), rounds
# separated by "; ", with changegate's deliveries/s over Nchan's per round.
# Knobs (environment): SUBSCRIBERS_LIST, EVENTS, DOC_BYTES, ROUNDS, BATCH, PIPELINE,
# HEARTBEAT (15 s, both), TIMEOUT (900 s: loadclient's limit for a run), NGINX,
# NCHAN_MODULE, CHANGEGATE, DEVMONGO, BENCH_COMMIT, KEEP_OUT=1, RESULTS (RESULTS=/dev/null:
# a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/nchan.sh"
SUBSCRIBERS_LIST=${SUBSCRIBERS_LIST:-1000 5000}
EVENTS=${EVENTS:-4000}
DOC_BYTES=${DOC_BYTES:-100}
ROUNDS=${ROUNDS:-2}
BATCH=${BATCH:-100}
TIMEOUT=${TIMEOUT:-900}
bench_init vs-nchan-sse
nchan_ensure
[ "$EVENTS" -gt 0 ] || bench_die 2 "EVENTS must be positive"
[ "$ROUNDS" -ge 1 ] || bench_die 2 "ROUNDS must be 1 or more"
for n in $SUBSCRIBERS_LIST; do
    [ "$(ulimit -n)" -ge $((n + 200)) ] || bench_die 2 "ulimit -n is $(ulimit -n), too low for $n subscribers"
    [ "$NCHAN_CONNECTIONS" -ge $((n + 100)) ] || bench_die 2 "NCHAN_CONNECTIONS too low for $n subscribers"
done
VS_DURATION=$TIMEOUT
command_line="SUBSCRIBERS_LIST='$SUBSCRIBERS_LIST' EVENTS=$EVENTS DOC_BYTES=$DOC_BYTES ROUNDS=$ROUNDS BATCH=$BATCH PIPELINE=$PIPELINE HEARTBEAT=$HEARTBEAT NCHAN_WORKERS=$NCHAN_WORKERS${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/vs-nchan-sse.sh"

header=$out/header.md
cat >"$header" <<'HDR'
SSE fan-out at saturation, changegate against Nchan (nginx module, Debian's
libnginx-mod-nchan, one worker; bench/nchan.sh), in alternating runs of one script (a
fresh devmongo + changegate, or a fresh nginx, each run). The writer sends the events
as fast as it can: into devmongo with insert_many batches (changegate), or as POSTs
pipelined on one connection to Nchan's publisher, which answers each once it has
written the message to every subscriber. Figures for the rounds are separated by ";".
Seconds: from the first write to the last receipt; deliveries/s = subscribers × events
/ seconds; "× Nchan": changegate's deliveries/s over Nchan's, per round. Latency:
receipt − the writer's `ts_us` (taken just before the insert or the POST is sent).
CPU: changegate's process, or the nginx worker's, over the writer's start to the last
receipt: cores / µs per delivery. RSS: changegate's VmRSS, or nginx master + worker
(their shared memory counted in both), idle / all connected / peak. Host busy: the
share of all CPUs not idle (others: cores used by other work than this run).
All delivered: every subscriber got every event, no gap and no repeat on any connection.

| date | commit | setup | subscribers | events | writer rate/s | seconds | deliveries/s | × Nchan | latency p50 ms | p99 ms | max ms | gateway CPU: cores / µs per delivery | gateway RSS MB | loadclient CPU cores | host busy (others, cores) | all delivered | host (CPUs, load avg at end) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
vs_ok=yes
for subs in $SUBSCRIBERS_LIST; do
    bench_fig=() vs_val=()
    for round in $(seq "$ROUNDS"); do
        vs_fanout changegate "$round" sse "$subs" "$EVENTS" --rate 0 --count "$EVENTS" \
            --batch "$BATCH" --doc-bytes "$DOC_BYTES"
        vs_fanout nchan "$round" sse "$subs" "$EVENTS" --rate 0 --count "$EVENTS" \
            --doc-bytes "$DOC_BYTES"
    done
    date=$(date -u +%Y-%m-%dT%H:%MZ)
    ratio=$(vs_ratios deliveries)
    for setup in changegate nchan; do
        case $setup in
        changegate) name="changegate (devmongo, insert_many)" ;;
        nchan) name="Nchan ($NCHAN_WORKERS worker(s), pipelined POSTs)" ;;
        esac
        row="| $date | $(bench_commit) | $name | $subs | $EVENTS | ${bench_fig[$setup.rate]} | ${bench_fig[$setup.seconds]} | ${bench_fig[$setup.deliveries]} | $ratio | ${bench_fig[$setup.p50]} | ${bench_fig[$setup.p99]} | ${bench_fig[$setup.max]} | ${bench_fig[$setup.cpu]} | ${bench_fig[$setup.rss]} | ${bench_fig[$setup.lc_cpu]} | ${bench_fig[$setup.host]} | ${bench_fig[$setup.ok]} | $(nproc) CPUs, load ${bench_fig[$setup.load]} | \`$command_line\` |"
        bench_append_row vs-nchan-sse "$header" "$row"
    done
done

[ "$vs_ok" = yes ] || bench_die 1 "not every subscriber received every event exactly once"
echo "vs-nchan-sse: PASS"
