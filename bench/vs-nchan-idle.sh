#!/usr/bin/env bash
# vs-nchan-idle.sh: idle SSE subscribers, changegate against Nchan: SUBSCRIBERS (15,000)
# streams held HOLD (30) s with nothing published, heartbeats every HEARTBEAT (1) s on
# both (changegate --heartbeat; Nchan's nchan_eventsource_ping_interval): what does a
# held subscriber cost in memory, and what do the heartbeats cost in CPU?
#
# ROUNDS (2) rounds, each a changegate run then an Nchan run (a fresh devmongo +
# changegate with --max-subscribers SUBSCRIBERS + 100, or a fresh nginx; bench/nchan.sh):
#   1. after SETTLE (3) s, the gateway's VmRSS before any subscriber (changegate's
#      process; nginx master + worker): idle;
#   2. loadclient --hold opens SUBSCRIBERS streams to /events (256 connecting at a
#      time), then holds all of them HOLD s and closes them at once; the RSS when all
#      stream is "connected", the highest of 0.2 s samples until the close "held";
#      (held - idle) / SUBSCRIBERS is the gateway's memory per subscriber;
#   3. the gateway's CPU time over the hold (/proc/<pid>/stat ticks, from every stream
#      streaming to loadclient's end) as a share of one core;
#   4. no stream may be closed by the server, none may get an event (gaps and repeats
#      are zero: nothing is written), and each must get at least MIN_HEARTBEATS
#      heartbeats (default HOLD / HEARTBEAT / 2; Nchan's pings, "event: ping", count).
# Appends one row per setup to bench/RESULTS.md (section vs-nchan-idle), rounds separated
# by "; ", with changegate's bytes per subscriber and CPU share over Nchan's. The
# open-files hard limit (20,000 here) is per process: the gateway and loadclient each
# hold SUBSCRIBERS sockets. Knobs (environment): SUBSCRIBERS, HOLD, HEARTBEAT, SETTLE,
# MIN_HEARTBEATS, ROUNDS, NGINX, NCHAN_MODULE, NCHAN_CONNECTIONS, CHANGEGATE, DEVMONGO,
# BENCH_COMMIT, KEEP_OUT=1, RESULTS (RESULTS=/dev/null: a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-15000}
HOLD=${HOLD:-30}
HEARTBEAT=${HEARTBEAT:-1}
SETTLE=${SETTLE:-3}
ROUNDS=${ROUNDS:-2}
. "$(dirname "${BASH_SOURCE[0]}")/nchan.sh"
MIN_HEARTBEATS=${MIN_HEARTBEATS:-$((HOLD / HEARTBEAT / 2))}
bench_init vs-nchan-idle
nchan_ensure
[ "$ROUNDS" -ge 1 ] || bench_die 2 "ROUNDS must be 1 or more"
[ "$HOLD" -ge 1 ] || bench_die 2 "HOLD must be 1 s or more"
[ "$(ulimit -n)" -ge $((SUBSCRIBERS + 200)) ] ||
    bench_die 2 "ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS subscribers"
[ "$NCHAN_CONNECTIONS" -ge $((SUBSCRIBERS + 100)) ] ||
    bench_die 2 "NCHAN_CONNECTIONS ($NCHAN_CONNECTIONS) too low for $SUBSCRIBERS subscribers"
command_line="SUBSCRIBERS=$SUBSCRIBERS HOLD=$HOLD HEARTBEAT=$HEARTBEAT MIN_HEARTBEATS=$MIN_HEARTBEATS ROUNDS=$ROUNDS NCHAN_WORKERS=$NCHAN_WORKERS${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/vs-nchan-idle.sh"

all_ok=yes
run() { # setup round
    local setup=$1 round=$2 tag=$1-idle-$2
    vs_start "$setup" "$tag" "$SUBSCRIBERS" 10000
    echo "vs-nchan-idle: $tag: $setup on :$vs_port (pids ${vs_rss_pids[*]})"
    sleep "$SETTLE"
    local idle conn held
    idle=$(bench_rss_kb "${vs_rss_pids[@]}")
    bench_sample_rss "$out/rss-$tag.txt" "${vs_rss_pids[@]}"
    bench_start_loadclient "$tag" --port "$vs_port" --path "$vs_sse_path" \
        --connections "$SUBSCRIBERS" --hold "$HOLD" --duration 300 --min-heartbeats "$MIN_HEARTBEATS"
    local cpu0 cpu1 busy0 all0 busy1 all1 wall0 wall lc_rc=0
    cpu0=$(bench_cpu_ticks "${vs_rss_pids[@]}")
    read -r busy0 all0 < <(bench_host_ticks)
    wall0=$EPOCHREALTIME
    conn=$(bench_rss_kb "${vs_rss_pids[@]}")
    echo "vs-nchan-idle: $tag: $SUBSCRIBERS streaming, RSS $(bench_mb "$idle") -> $(bench_mb "$conn") MB; holding ${HOLD}s"
    wait "$lc_pid" || lc_rc=$?
    wall=$(bench_seconds "$wall0" "$EPOCHREALTIME")
    cpu1=$(bench_cpu_ticks "${vs_rss_pids[@]}")
    read -r busy1 all1 < <(bench_host_ticks)
    held=$(bench_peak_kb "$out/rss-$tag.txt")
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "vs-nchan-idle: $tag: loadclient: $(cat "$out/loadclient-$tag.json")"
    vs_stop "$setup"
    local complete streaming closed gaps repeats events minh maxh connect_s lc_cpu
    read -r complete streaming closed gaps repeats events minh maxh connect_s lc_cpu < <(bench_json \
        "$out/loadclient-$tag.json" complete streaming closed_by_server gaps repeats events \
        min_heartbeats max_heartbeats connect_s cpu_s)
    local ok=yes per_sub share
    [ "$complete" = true ] && [ "$lc_rc" = 0 ] && [ "$streaming" = "$SUBSCRIBERS" ] &&
        [ "$closed" = 0 ] && [ "$gaps" = 0 ] && [ "$repeats" = 0 ] && [ "$events" = 0 ] || ok=no
    [ "$ok" = yes ] || all_ok=no
    per_sub=$(awk -v h="$held" -v i="$idle" -v n="$SUBSCRIBERS" 'BEGIN {printf "%.0f", (h - i) * 1024 / n}')
    share=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v s="$wall" 'BEGIN {printf "%.3f", t / hz / s}')
    vs_val[$setup.per_sub.$round]=$per_sub
    vs_val[$setup.share.$round]=$share
    bench_add "$setup.rss" "$(bench_mb "$idle") / $(bench_mb "$conn") / $(bench_mb "$held")"
    bench_add "$setup.per_sub" "$per_sub"
    bench_add "$setup.cpu" "$share"
    bench_add "$setup.hold" "$(printf %.1f "$wall")"
    bench_add "$setup.connect" "$connect_s"
    bench_add "$setup.heartbeats" "$minh-$maxh"
    bench_add "$setup.lc_cpu" "$(awk -v c="$lc_cpu" 'BEGIN {printf "%.1f", c}')"
    bench_add "$setup.host" "$(bench_host_busy $((busy1 - busy0)) $((all1 - all0)) $((cpu1 - cpu0)) "$lc_cpu" "$wall")"
    bench_add "$setup.load" "$load"
    bench_add "$setup.ok" "$ok (gaps $gaps, repeats $repeats, events $events, closed by server $closed)"
    echo "vs-nchan-idle: $tag: $per_sub bytes per subscriber, $share of a core over the hold, heartbeats $minh-$maxh per stream, ok $ok"
}

for round in $(seq "$ROUNDS"); do
    run changegate "$round"
    run nchan "$round"
done

header=$out/header.md
cat >"$header" <<'HDR'
Idle SSE subscribers held with heartbeats, changegate against Nchan (nginx module,
Debian's libnginx-mod-nchan, one worker; bench/nchan.sh), in alternating runs of one
script (a fresh devmongo + changegate, or a fresh nginx, each run). Nothing is
published; both send a heartbeat every HEARTBEAT seconds on each stream (changegate
`--heartbeat`, a `: heartbeat` comment; Nchan `nchan_eventsource_ping_interval`, an
`event: ping` message). Figures for the rounds are separated by ";". RSS: changegate's
VmRSS, or nginx master + worker (their shared memory counted in both), idle (before any
subscriber) / all connected / held (highest 0.2 s sample over the hold); bytes per
subscriber = (held − idle) / subscribers. CPU: the gateway's (changegate; nginx master
+ worker) over the hold (/proc ticks), as a share of one core. "× Nchan": changegate's
bytes per subscriber / CPU share over Nchan's, per round. Heartbeats: fewest-most per
stream. Connect: seconds until every stream had its first bytes (256 connecting at a
time). All held: every stream open until the client closed it, at least the minimum
of heartbeats each, no event (gaps and repeats 0 on every connection).

| date | commit | setup | subscribers | heartbeat s | hold s | gateway RSS MB | bytes per subscriber | gateway CPU, share of a core | × Nchan bytes / CPU | heartbeats per stream | connect s | loadclient CPU s | host busy (others, cores) | all held | host (CPUs, load avg at end) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
date=$(date -u +%Y-%m-%dT%H:%MZ)
ratio=$(vs_ratios per_sub share)
for setup in changegate nchan; do
    case $setup in
    changegate) name="changegate (--max-subscribers $((SUBSCRIBERS + 100)))" ;;
    nchan) name="Nchan ($NCHAN_WORKERS worker(s), worker_connections $NCHAN_CONNECTIONS)" ;;
    esac
    row="| $date | $(bench_commit) | $name | $SUBSCRIBERS | $HEARTBEAT | ${bench_fig[$setup.hold]} | ${bench_fig[$setup.rss]} | ${bench_fig[$setup.per_sub]} | ${bench_fig[$setup.cpu]} | $ratio | ${bench_fig[$setup.heartbeats]} | ${bench_fig[$setup.connect]} | ${bench_fig[$setup.lc_cpu]} | ${bench_fig[$setup.host]} | ${bench_fig[$setup.ok]} | $(nproc) CPUs, load ${bench_fig[$setup.load]} | \`$command_line\` |"
    bench_append_row vs-nchan-idle "$header" "$row"
done
[ "$all_ok" = yes ] || bench_die 1 "not every subscriber was held to the end with its heartbeats and no event"
echo "vs-nchan-idle: PASS"
