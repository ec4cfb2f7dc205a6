#!/usr/bin/env bash
# vs-nchan-longpoll.sh: long-poll fan-out, changegate against Nchan: SUBSCRIBERS (5,000)
# long-poll clients looping, RATE (500) documents/s of ~DOC_BYTES (100) bytes for
# DURATION (10) s; every client must receive every event exactly once.
#
# ROUNDS (2) rounds, each a changegate run then an Nchan run, with the same loadclient
# (--mode longpoll, one request at a time per keep-alive connection) and documents
# (bench/writer.py on its absolute schedule; bench/nchan.sh for Nchan):
#   changegate: GET /poll?limit=1000&timeout=0 for the current position, then
#     /poll?limit=1000&timeout=POLL_TIMEOUT&lastEventId=<the last answer's>;
#   Nchan: GET /poll (nchan_longpoll_multipart_response on: every message after the
#     poll's id in one answer), If-Modified-Since / If-None-Match from the last answer's
#     Last-Modified / Etag.
# Measured per run: deliveries/s (clients x events / first write to last receipt),
# latency (receipt of the answer - the writer's ts_us) p50/p99/max, answers (polls)
# per client, the writer's rate, the gateway's CPU and RSS as in vs-nchan-sse. Appends
# one row per setup to bench/RESULTS.md (section vs-nchan-longpoll), rounds separated by
# "; ", with changegate's deliveries/s and p50 over Nchan's per round.
# Knobs (environment): SUBSCRIBERS, RATE, DURATION, DOC_BYTES, ROUNDS, PIPELINE,
# POLL_TIMEOUT (60 s, both), TIMEOUT (600 s: how long after DURATION loadclient waits
# for the last events), NGINX, NCHAN_MODULE, CHANGEGATE, DEVMONGO, BENCH_COMMIT,
# KEEP_OUT=1, RESULTS (RESULTS=/dev/null: a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/nchan.sh"
SUBSCRIBERS=${SUBSCRIBERS:-5000}
RATE=${RATE:-500}
DURATION=${DURATION:-10}
DOC_BYTES=${DOC_BYTES:-100}
ROUNDS=${ROUNDS:-2}
TIMEOUT=${TIMEOUT:-600}
bench_init vs-nchan-longpoll
nchan_ensure
EVENTS=$((RATE * DURATION))
[ "$EVENTS" -gt 0 ] || bench_die 2 "RATE x DURATION must be positive"
[ "$ROUNDS" -ge 1 ] || bench_die 2 "ROUNDS must be 1 or more"
[ "$(ulimit -n)" -ge $((SUBSCRIBERS + 200)) ] ||
    bench_die 2 "ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS clients"
VS_DURATION=$((DURATION + TIMEOUT))
command_line="SUBSCRIBERS=$SUBSCRIBERS RATE=$RATE DURATION=$DURATION DOC_BYTES=$DOC_BYTES ROUNDS=$ROUNDS PIPELINE=$PIPELINE POLL_TIMEOUT=$POLL_TIMEOUT NCHAN_WORKERS=$NCHAN_WORKERS${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/vs-nchan-longpoll.sh"

vs_ok=yes
for round in $(seq "$ROUNDS"); do
    for setup in changegate nchan; do
        vs_fanout "$setup" "$round" longpoll "$SUBSCRIBERS" "$EVENTS" --rate "$RATE" \
            --duration "$DURATION" --doc-bytes "$DOC_BYTES"
    done
done

header=$out/header.md
cat >"$header" <<'HDR'
Long-poll fan-out, changegate against Nchan (nginx module, Debian's libnginx-mod-nchan,
one worker; bench/nchan.sh), in alternating runs of one script (a fresh devmongo +
changegate, or a fresh nginx, each run), the same clients (loadclient --mode longpoll:
each loops on one request at a time on a keep-alive connection, passing the last
answer's position: changegate's `lastEventId`, `limit=1000`; Nchan's Last-Modified /
Etag as If-Modified-Since / If-None-Match, multipart answers on) and documents
(bench/writer.py on an absolute schedule: one insert_one each into devmongo, or POSTs
pipelined on one connection to Nchan's publisher). Figures for the rounds are separated
by ";". Seconds: first write to last receipt; deliveries/s = clients × events /
seconds; latency: receipt of the answer − the writer's `ts_us`; answers: polls
answered, all clients together (events per answer = deliveries / answers); "× Nchan":
changegate's deliveries/s and p50 over Nchan's, per round. CPU: changegate's process,
or the nginx worker's: cores / µs per delivery. RSS: changegate, or nginx master +
worker, idle / all connected / peak. All delivered: every client got every event, no
gap and no repeat on any connection.

| date | commit | setup | clients | rate asked/s | events | writer rate/s | seconds | deliveries/s | latency p50 ms | p99 ms | max ms | × Nchan deliveries / p50 | answers | gateway CPU: cores / µs per delivery | gateway RSS MB | loadclient CPU cores | host busy (others, cores) | all delivered | host (CPUs, load avg at end) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
date=$(date -u +%Y-%m-%dT%H:%MZ)
ratio=$(vs_ratios deliveries p50)
for setup in changegate nchan; do
    case $setup in
    changegate) name="changegate /poll (devmongo, insert_one)" ;;
    nchan) name="Nchan longpoll, multipart ($NCHAN_WORKERS worker(s), pipelined POSTs)" ;;
    esac
    row="| $date | $(bench_commit) | $name | $SUBSCRIBERS | $RATE | $EVENTS | ${bench_fig[$setup.rate]} | ${bench_fig[$setup.seconds]} | ${bench_fig[$setup.deliveries]} | ${bench_fig[$setup.p50]} | ${bench_fig[$setup.p99]} | ${bench_fig[$setup.max]} | $ratio | ${bench_fig[$setup.polls]} | ${bench_fig[$setup.cpu]} | ${bench_fig[$setup.rss]} | ${bench_fig[$setup.lc_cpu]} | ${bench_fig[$setup.host]} | ${bench_fig[$setup.ok]} | $(nproc) CPUs, load ${bench_fig[$setup.load]} | \`$command_line\` |"
    bench_append_row vs-nchan-longpoll "$header" "$row"
done
[ "$vs_ok" = yes ] || bench_die 1 "not every client received every event exactly once"
echo "vs-nchan-longpoll: PASS"
