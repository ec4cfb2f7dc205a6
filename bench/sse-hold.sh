#!/usr/bin/env bash
# sse-hold.sh: does changegate give its memory back after many SSE subscribers leave?
#
# Issue 5: SUBSCRIBERS (10,000) concurrent SSE subscribers held for HOLD (60) s with
# heartbeats, then all closed: changegate's RSS must return to within TOLERANCE (10) %
# of where it started. "Started" is read strictly: changegate's VmRSS once it is up,
# its watcher streaming and SETTLE s quiet, before any subscriber or event.
#
# Starts devmongo and changegate (--heartbeat HEARTBEAT, 1 s; --max-subscribers above the
# count), records the idle RSS, then CYCLES (2) times: loadclient opens SUBSCRIBERS
# subscriptions to /events and holds them HOLD s after the last one streams; meanwhile
# bench/writer.py inserts ~DOC_BYTES (100) byte documents at RATE (10)/s in bursts of
# BURST (20) with PAUSE (3) s quiet between bursts (changegate sends a heartbeat only on
# a stream idle for HEARTBEAT s, so a steady writer would suppress them all), as many
# bursts as end 5 s before the hold does. Every subscriber must get every event exactly
# once and at least MIN_HEARTBEATS heartbeats (default: one per pause). loadclient then
# closes every connection at once; /healthz "subscribers" must reach 0 within
# CLOSE_WAIT (30) s; after SETTLE (5) more seconds the RSS is recorded ("after").
# changegate's VmRSS is sampled every second throughout (KEEP_OUT=1 keeps the samples,
# with phases, in bench/out/<run>/rss.txt, and /proc/<pid>/smaps at idle and after
# each cycle).
#
# Passes only if every cycle delivered everything, emptied, and its RSS after is at
# most (1 + TOLERANCE/100) x idle, and changegate exits 0 on SIGTERM. The row also gives
# the growth of "after" per cycle (a leak grows every cycle; memory malloc keeps for
# reuse does not) and (peak - idle) / SUBSCRIBERS, the memory per held subscriber.
# MALLOC_PROBE=1: after the last cycle, attach gdb to changegate, print glibc's
# malloc_stats() into its log and call malloc_trim(0), and put the RSS after the trim in
# the row: how much of what was not returned is free memory glibc keeps (analysis only;
# it runs after every measurement above). Knobs (environment): SUBSCRIBERS, HOLD,
# CYCLES, HEARTBEAT, RATE, BURST, PAUSE, MIN_HEARTBEATS, SETTLE, CLOSE_WAIT, TOLERANCE,
# DOC_BYTES, MALLOC_PROBE, JOURNAL (changegate's --journal-size; its default, 10,000,
# when unset), PREFILL (events written before the idle baseline; default JOURNAL, so the
# journal is already full: its memory is bounded by design, not a leak), CHANGEGATE,
# BENCH_COMMIT, DEVMONGO, KEEP_OUT=1, RESULTS (RESULTS=/dev/null: a dry run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-10000}
HOLD=${HOLD:-60}
CYCLES=${CYCLES:-2}
HEARTBEAT=${HEARTBEAT:-1}
RATE=${RATE:-10}
BURST=${BURST:-20}
PAUSE=${PAUSE:-3}
SETTLE=${SETTLE:-5}
CLOSE_WAIT=${CLOSE_WAIT:-30}
TOLERANCE=${TOLERANCE:-10}
DOC_BYTES=${DOC_BYTES:-100}
MALLOC_PROBE=${MALLOC_PROBE:-0}
JOURNAL=${JOURNAL:-}
PREFILL=${PREFILL:-${JOURNAL:-0}}
bench_init sse-hold

# Bursts that fit: n bursts take n*BURST/RATE + (n-1)*PAUSE s, which must end 5 s
# before the hold does (writer start-up, last deliveries).
bursts=$(awk -v h="$HOLD" -v b="$BURST" -v r="$RATE" -v p="$PAUSE" \
    'BEGIN {n = int((h - 5 + p) / (b / r + p)); print (n > 0 ? n : 0)}')
[ "$bursts" -gt 0 ] || bench_die 2 "HOLD $HOLD s is too short for one burst of $BURST at $RATE/s"
awk -v p="$PAUSE" -v hb="$HEARTBEAT" 'BEGIN {exit !(p > hb)}' ||
    bench_die 2 "PAUSE ($PAUSE s) must exceed HEARTBEAT ($HEARTBEAT s), or no heartbeat flows"
EXPECT=$((bursts * BURST))
MIN_HEARTBEATS=${MIN_HEARTBEATS:-$((bursts > 1 ? bursts - 1 : 1))}
command_line="SUBSCRIBERS=$SUBSCRIBERS HOLD=$HOLD CYCLES=$CYCLES HEARTBEAT=$HEARTBEAT RATE=$RATE BURST=$BURST PAUSE=$PAUSE SETTLE=$SETTLE TOLERANCE=$TOLERANCE"
[ "$MALLOC_PROBE" = 0 ] || command_line+=" MALLOC_PROBE=$MALLOC_PROBE"
[ -z "$JOURNAL" ] || command_line+=" JOURNAL=$JOURNAL"
[ "$PREFILL" = 0 ] || command_line+=" PREFILL=$PREFILL"
command_line+="${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/sse-hold.sh"
[ "$(ulimit -n)" -ge $((SUBSCRIBERS + 200)) ] ||
    bench_die 2 "ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS subscribers"
[ "$CYCLES" -ge 1 ] || bench_die 2 "CYCLES must be 1 or more"
[ "$MALLOC_PROBE" = 0 ] || command -v gdb >/dev/null || bench_die 2 "MALLOC_PROBE needs gdb"

phase() { echo "$1" >"$out/phase"; }
subscribers() { # /healthz "subscribers" (empty if unreadable)
    curl -sS --max-time 2 "http://127.0.0.1:$cg_port/healthz" 2>/dev/null |
        sed -n 's/.*"subscribers": *\([0-9]*\).*/\1/p'
}
joined() { local IFS=$1; shift; echo "$*"; }
# MALLOC_PROBE=1: gdb makes changegate print malloc_stats() to its log (after calling
# malloc_trim(0) first with "trim"); prints "<in use kB> <system kB> <arenas>" from
# the statistics' totals. Analysis only, always after the RSS it could disturb.
malloc_probe() { # tag [trim]
    local calls=(-ex 'call (void) malloc_stats()')
    [ "${2:-}" = trim ] && calls=(-ex 'call (int) malloc_trim(0)' "${calls[@]}")
    gdb -p "$cg_pid" -batch "${calls[@]}" >>"$out/gdb-$1.log" 2>&1 || true
    sleep 0.5
    awk '/^Arena [0-9]+:/ {a++} /^Total \(incl. mmap\):/ {t = 1; arenas = a; a = 0; next}
         t && /^system bytes/ {sys = $4} t && /^in use bytes/ {use = $5; t = 0}
         END {printf "%.0f %.0f %d\n", use / 1024, sys / 1024, arenas}' "$out/changegate-main.log"
}

bench_start_devmongo
bench_start_changegate main $((SUBSCRIBERS + 100)) --heartbeat "$HEARTBEAT" ${JOURNAL:+--journal-size "$JOURNAL"}
echo "sse-hold: changegate :$cg_port (pid $cg_pid); $CYCLES cycles of $SUBSCRIBERS subscribers held ${HOLD}s, $EXPECT events each ($bursts bursts of $BURST at $RATE/s, ${PAUSE}s pauses), heartbeat ${HEARTBEAT}s"
if [ "$PREFILL" -gt 0 ]; then
    # The journal is bounded memory that events fill by design: fill it before the
    # idle baseline, so that "after" compares like with like (seq far from the hold's).
    echo "sse-hold: filling the journal with $PREFILL events before the baseline"
    "$PY" "$here/writer.py" --uri "$mongo_uri" --rate 5000 --count "$PREFILL" \
        --doc-bytes "$DOC_BYTES" --first-seq 1000000 >"$out/writer-prefill.json" 2>&1 ||
        bench_die 1 "the prefill writer failed"
fi
phase idle
# Every second: time, phase, VmRSS (kB), 1-minute load average. Shell built-ins only
# (but sleep), so that the samples stay on time when the CPUs are busy.
sampler() {
    local t next ph rss load k v rest
    next=${EPOCHREALTIME%.*}
    while [ -e "/proc/$cg_pid" ]; do
        t=$EPOCHREALTIME
        ph=$(<"$out/phase")
        rss=0
        while read -r k v _; do [ "$k" = VmRSS: ] && { rss=$v; break; }; done <"/proc/$cg_pid/status" || true
        read -r load rest </proc/loadavg
        echo "$t $ph $rss $load"
        next=$((next + 1))
        t=${EPOCHREALTIME/./}
        t=$((next * 1000000 - 10#$t))
        [ "$t" -gt 0 ] || t=0
        sleep "$(printf '%d.%06d' $((t / 1000000)) $((t % 1000000)))"
    done
}
sampler >"$out/rss.txt" 2>/dev/null &
bench_pids+=($!)
sleep "$SETTLE"
rss_idle=$(bench_rss_kb "$cg_pid")
cp "/proc/$cg_pid/smaps" "$out/smaps-idle.txt" 2>/dev/null || true
echo "sse-hold: idle RSS $(bench_mb "$rss_idle") MB"
probes=()
if [ "$MALLOC_PROBE" != 0 ]; then
    read -r use sys arenas < <(malloc_probe idle)
    probes+=("idle $use/$sys")
    echo "sse-hold: malloc at idle: $use kB in use, $sys kB from the system, $arenas arenas"
fi

ok=yes delivered=yes
why=()
cycle_figs=() after=() peak=() per_sub=() hb_min=() hb_max=() close_s=() rate_w=()
for k in $(seq "$CYCLES"); do
    first=$(((k - 1) * EXPECT))
    phase "c$k-connect"
    bench_start_loadclient "c$k" --path /events --connections "$SUBSCRIBERS" \
        --expect "$EXPECT" --first-seq "$first" --hold "$HOLD" --duration 120 \
        --min-heartbeats "$MIN_HEARTBEATS"
    phase "c$k-hold"
    rss_conn=$(bench_rss_kb "$cg_pid")
    echo "sse-hold: cycle $k: $SUBSCRIBERS subscribers streaming, RSS $(bench_mb "$rss_conn") MB; holding ${HOLD}s"
    "$PY" "$here/writer.py" --uri "$mongo_uri" --rate "$RATE" --count "$EXPECT" \
        --first-seq "$first" --burst "$BURST" --pause "$PAUSE" --doc-bytes "$DOC_BYTES" \
        >"$out/writer-c$k.json"
    echo "sse-hold: cycle $k: writer: $(cat "$out/writer-c$k.json")"
    lc_rc=0
    wait "$lc_pid" || lc_rc=$?
    t_closed=$(date +%s.%N)
    phase "c$k-close"
    echo "sse-hold: cycle $k: loadclient (exit $lc_rc): $(cat "$out/loadclient-c$k.json")"
    read -r complete gaps repeats hmin hmax failed closed minr < <(bench_json "$out/loadclient-c$k.json" \
        complete gaps repeats min_heartbeats max_heartbeats failed closed_by_server min_received)
    written=$(bench_json "$out/writer-c$k.json" written)
    rate_w+=("$(bench_json "$out/writer-c$k.json" rate_writing)")
    hb_min+=("$hmin") hb_max+=("$hmax")
    if [ "$lc_rc" != 0 ] || [ "$complete" != true ] || [ "$gaps" != 0 ] || [ "$repeats" != 0 ] ||
        [ "$written" != "$EXPECT" ]; then
        ok=no delivered=no
        why+=("cycle $k: delivery (complete $complete, min received $minr of $EXPECT, gaps $gaps, repeats $repeats, failed $failed, closed by server $closed, heartbeats min $hmin < $MIN_HEARTBEATS?, written $written)")
    fi
    # Every subscriber gone from changegate's count, within CLOSE_WAIT s.
    n=""
    for _ in $(seq $((CLOSE_WAIT * 10))); do
        n=$(subscribers)
        [ "$n" = 0 ] && break
        sleep 0.1
    done
    close_s+=("$(awk -v a="$t_closed" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')")
    if [ "$n" != 0 ]; then
        ok=no
        why+=("cycle $k: /healthz still counts ${n:-?} subscribers ${CLOSE_WAIT}s after they closed")
    fi
    phase "c$k-settle"
    sleep "$SETTLE"
    a=$(bench_rss_kb "$cg_pid")
    cp "/proc/$cg_pid/smaps" "$out/smaps-after-c$k.txt" 2>/dev/null || true
    phase "c$k-after"
    # Peak: the highest sample of the cycle (connecting, holding, closing, settling).
    p=$(awk -v c="c$k-" 'index($2, c) == 1 && $3 > m {m = $3} END {print m + 0}' "$out/rss.txt")
    [ "$p" -ge "$rss_conn" ] || p=$rss_conn
    [ "$p" -ge "$a" ] || p=$a
    after+=("$a") peak+=("$p")
    per_sub+=("$(awk -v p="$p" -v i="$rss_idle" -v n="$SUBSCRIBERS" 'BEGIN {printf "%.0f", (p - i) * 1024 / n}')")
    cycle_figs+=("$(bench_mb "$rss_conn") / $(bench_mb "$p") / $(bench_mb "$a")")
    echo "sse-hold: cycle $k: RSS connected / peak / after close MB: ${cycle_figs[-1]} (idle $(bench_mb "$rss_idle")); subscribers 0 after ${close_s[-1]}s; ${per_sub[-1]} bytes per subscriber at peak"
    if [ "$MALLOC_PROBE" != 0 ]; then
        read -r use sys arenas < <(malloc_probe "c$k")
        probes+=("c$k $use/$sys")
        echo "sse-hold: cycle $k: malloc after close: $use kB in use, $sys kB from the system, $arenas arenas"
    fi
    if ! awk -v a="$a" -v i="$rss_idle" -v t="$TOLERANCE" 'BEGIN {exit !(a <= i * (1 + t / 100))}'; then
        ok=no
        why+=("cycle $k: RSS after close $(bench_mb "$a") MB > $(bench_mb "$rss_idle") MB idle + ${TOLERANCE}%")
    fi
done
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$cg_pid/status")

trim="-"
if [ "$MALLOC_PROBE" != 0 ]; then
    phase trim
    read -r use sys arenas < <(malloc_probe trim trim)
    sleep 1
    trim=$(bench_rss_kb "$cg_pid")
    probes+=("trimmed $use/$sys")
    echo "sse-hold: after malloc_trim(0): RSS $(bench_mb "$trim") MB; malloc: $use kB in use, $sys kB from the system"
    trim="$(bench_mb "$trim") (malloc in use/system kB: $(joined ';' "${probes[@]}" | sed 's/;/, /g'))"
fi
load_max=$(awk '$4 > m {m = $4} END {print m + 0}' "$out/rss.txt")
load=$(cut -d' ' -f1 /proc/loadavg)
bench_stop_changegate

last=$((CYCLES - 1))
ratio=$(awk -v a="${after[$last]}" -v i="$rss_idle" 'BEGIN {printf "%.3f", a / i}')
if [ "$CYCLES" -gt 1 ]; then
    growth="$(awk -v a="${after[$last]}" -v b="${after[0]}" -v c="$last" 'BEGIN {printf "%+.0f kB", (a - b) / c}') per cycle"
else
    growth="- (1 cycle)"
fi
hb="$(joined / "${hb_min[@]}")–$(joined / "${hb_max[@]}")"

header=$(mktemp)
cat >"$header" <<'HDR'
Issue 5: SUBSCRIBERS SSE subscribers held HOLD s, with heartbeats, then all closed, in
CYCLES cycles against one changegate. RSS is changegate's VmRSS: idle (up, streaming,
quiet, before any subscriber or event), then per cycle all connected / peak (highest 1
s sample of the cycle) / after close (once /healthz counts 0 subscribers, plus SETTLE
s). The rule: after ≤ (1 + TOLERANCE/100) × idle for every cycle. Growth is the change
of "after" per cycle after the first (a leak grows every cycle). Per subscriber: (peak
− idle) / subscribers. Figures with "/" are per cycle. The writer inserts in bursts at
the rate given with quiet pauses, since heartbeats only flow on an idle stream; each
subscriber must get every event exactly once and at least one heartbeat per pause.
"after malloc_trim" (with MALLOC_PROBE=1, measured after everything else): RSS once
gdb had changegate call malloc_trim(0), and glibc's malloc_stats() totals (in use /
from the system, kB) at idle, after each cycle and after the trim.

| date | commit | subscribers × cycles, hold | heartbeat s | events/subscriber/cycle (rate in bursts) | heartbeats/subscriber min–max | RSS idle MB | per cycle: connected / peak / after close MB | after/idle (last cycle) | growth | bytes/subscriber at peak | close → 0 subscribers s | after malloc_trim MB | all delivered | result | host (CPUs, load avg) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
result=PASS
[ "$ok" = yes ] || result="FAIL: $(joined ';' "${why[@]}" | sed 's/;/; /g')"
row="| $(date -u +%Y-%m-%dT%H:%MZ) | $(bench_commit) | $SUBSCRIBERS × $CYCLES, ${HOLD} s | $HEARTBEAT | $EXPECT ($(joined / "${rate_w[@]}")/s; $bursts bursts, ${PAUSE} s pauses) | $hb | $(bench_mb "$rss_idle") | $(joined ';' "${cycle_figs[@]}" | sed 's/;/; /g') | $ratio (limit $(awk -v t="$TOLERANCE" 'BEGIN {printf "%.2f", 1 + t / 100}')) | $growth | $(joined / "${per_sub[@]}") | $(joined / "${close_s[@]}") | $trim | $delivered | $result | $(nproc) CPUs, load max $load_max, end $load | \`$command_line\` |"
bench_append_row sse-hold "$header" "$row"
rm -f "$header"
echo "sse-hold: idle $(bench_mb "$rss_idle") MB; VmHWM $(bench_mb "$hwm") MB; after/idle $ratio; growth $growth"
if [ "$ok" != yes ]; then
    printf 'sse-hold: %s\n' "${why[@]}" >&2
    bench_die 1 "FAIL"
fi
echo "sse-hold: PASS"
