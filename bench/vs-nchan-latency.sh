#!/usr/bin/env bash
# vs-nchan-latency.sh: latency at a fixed rate, changegate against Nchan: SUBSCRIBERS
# (1,000) SSE subscribers, RATE (1,000) documents/s of ~DOC_BYTES (100) bytes for
# DURATION (10) s; every subscriber must receive every event exactly once.
#
# ROUNDS (2) rounds, each a changegate run then an Nchan run, with the same loadclient and
# documents (bench/writer.py on its absolute schedule: into devmongo one insert_one each
# for changegate, POSTs pipelined on one connection to Nchan's publisher; bench/nchan.sh).
# Measured per run: latency (receipt - the writer's ts_us, taken just before the insert
# or the POST is sent) p50/p99/max, the rate the writer achieved and how far behind its
# schedule it fell (Nchan answers a POST only once every subscriber has the message, so
# a publisher it cannot keep up with falls behind: the latency then leaves out the time
# the writer waited), deliveries/s, the gateway's CPU and RSS as in vs-nchan-sse.
# Appends one row per setup to bench/RESULTS.md (section vs-nchan-latency), rounds
# separated by "; ", with changegate's p50 / p99 / max over Nchan's per round.
# Knobs (environment): SUBSCRIBERS, RATE, DURATION, DOC_BYTES, ROUNDS, PIPELINE,
# HEARTBEAT (15 s, both), TIMEOUT (600 s: how long after DURATION loadclient waits for
# the last events), NGINX, NCHAN_MODULE, CHANGEGATE, DEVMONGO, BENCH_COMMIT, KEEP_OUT=1,
# RESULTS (RESULTS=/dev/null: a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/nchan.sh"
SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
DOC_BYTES=${DOC_BYTES:-100}
ROUNDS=${ROUNDS:-2}
TIMEOUT=${TIMEOUT:-600}
bench_init vs-nchan-latency
nchan_ensure
EVENTS=$((RATE * DURATION))
[ "$EVENTS" -gt 0 ] || bench_die 2 "RATE x DURATION must be positive"
[ "$ROUNDS" -ge 1 ] || bench_die 2 "ROUNDS must be 1 or more"
[ "$(ulimit -n)" -ge $((SUBSCRIBERS + 200)) ] ||
    bench_die 2 "ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS subscribers"
VS_DURATION=$((DURATION + TIMEOUT))
command_line="SUBSCRIBERS=$SUBSCRIBERS RATE=$RATE DURATION=$DURATION DOC_BYTES=$DOC_BYTES ROUNDS=$ROUNDS PIPELINE=$PIPELINE HEARTBEAT=$HEARTBEAT NCHAN_WORKERS=$NCHAN_WORKERS${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/vs-nchan-latency.sh"

vs_ok=yes
for round in $(seq "$ROUNDS"); do
    for setup in changegate nchan; do
        vs_fanout "$setup" "$round" sse "$SUBSCRIBERS" "$EVENTS" --rate "$RATE" \
            --duration "$DURATION" --doc-bytes "$DOC_BYTES"
        # Whether the writer kept to RATE (within 5%): when it did not, the gateway could
        # not take the events as fast (Nchan) or the source could not (devmongo).
        kept=no
        awk -v r="${vs_val[$setup.rate.$round]}" -v want="$RATE" 'BEGIN {exit !(r >= 0.95 * want)}' && kept=yes
        bench_add "$setup.kept" "$kept"
    done
done

header=$out/header.md
cat >"$header" <<'HDR'
Latency at a fixed rate, changegate against Nchan (nginx module, Debian's
libnginx-mod-nchan, one worker; bench/nchan.sh), in alternating runs of one script (a
fresh devmongo + changegate, or a fresh nginx, each run), the same SSE subscribers
(loadclient) and documents (bench/writer.py on an absolute schedule: one insert_one
each into devmongo, or POSTs pipelined on one connection to Nchan's publisher, which
answers each once it has written the message to every subscriber). Figures for the
rounds are separated by ";". Latency: receipt − the writer's `ts_us`, taken just before
the insert or the POST is sent; "× Nchan": changegate's p50 / p99 / max over Nchan's,
per round (below 1: changegate's is lower). Writer rate: what it achieved, "kept" when
within 5% of the rate asked; behind: how late on its schedule it fell at worst (a
gateway that cannot keep up holds the writer back; the time it waited is not in the
latency). Seconds: first write to last receipt; deliveries/s = subscribers × events /
seconds. CPU: changegate's process, or the nginx worker's: cores / µs per delivery.
RSS: changegate, or nginx master + worker, idle / all connected / peak. All delivered:
every subscriber got every event, no gap and no repeat on any connection.

| date | commit | setup | subscribers | rate asked/s | events | writer rate/s (kept) | writer behind s | latency p50 ms | p99 ms | max ms | × Nchan p50 / p99 / max | seconds | deliveries/s | gateway CPU: cores / µs per delivery | gateway RSS MB | loadclient CPU cores | host busy (others, cores) | all delivered | host (CPUs, load avg at end) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
date=$(date -u +%Y-%m-%dT%H:%MZ)
ratio=$(vs_ratios p50 p99 max)
for setup in changegate nchan; do
    case $setup in
    changegate) name="changegate (devmongo, insert_one)" ;;
    nchan) name="Nchan ($NCHAN_WORKERS worker(s), pipelined POSTs)" ;;
    esac
    row="| $date | $(bench_commit) | $name | $SUBSCRIBERS | $RATE | $EVENTS | ${bench_fig[$setup.rate]} (${bench_fig[$setup.kept]}) | ${bench_fig[$setup.behind]} | ${bench_fig[$setup.p50]} | ${bench_fig[$setup.p99]} | ${bench_fig[$setup.max]} | $ratio | ${bench_fig[$setup.seconds]} | ${bench_fig[$setup.deliveries]} | ${bench_fig[$setup.cpu]} | ${bench_fig[$setup.rss]} | ${bench_fig[$setup.lc_cpu]} | ${bench_fig[$setup.host]} | ${bench_fig[$setup.ok]} | $(nproc) CPUs, load ${bench_fig[$setup.load]} | \`$command_line\` |"
    bench_append_row vs-nchan-latency "$header" "$row"
done
[ "$vs_ok" = yes ] || bench_die 1 "not every subscriber received every event exactly once"
echo "vs-nchan-latency: PASS"
