# lib.sh: what every bench/ scenario does the same way. Sourced, not run.
#
# After `bench_init NAME`, a scenario has: $here, $repo, $out (its log directory),
# $CHANGEGATE, $DEVMONGO, $PY, $RESULTS; every process started with bench_spawn is
# stopped on exit (also on failure or Ctrl-C), and bench/out/<run> is removed after a
# passing run unless KEEP_OUT=1.
#
# The commit column of a row is BENCH_COMMIT when set, else HEAD of this checkout. With
# CHANGEGATE pointing at a binary built elsewhere (say from `git archive` of an earlier
# commit while the checkout moved on), set BENCH_COMMIT to the commit it was built from;
# scenarios put it in the row's command.

bench_init() {
    bench_name=$1
    here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
    repo=$(cd "$here/.." && pwd)
    CHANGEGATE_SET=${CHANGEGATE:+1}
    CHANGEGATE=${CHANGEGATE:-$repo/src/changegate}
    DEVMONGO=${DEVMONGO:-$repo/tests/devmongo/devmongo}
    RESULTS=${RESULTS:-$here/RESULTS.md}
    PY=/usr/bin/python3
    [ -x "$CHANGEGATE" ] || bench_die 2 "$CHANGEGATE not built (autoreconf -fi && ./configure && make)"
    [ -x "$DEVMONGO" ] || bench_die 2 "$DEVMONGO missing"
    [ -z "$CHANGEGATE_SET" ] || [ -n "${BENCH_COMMIT:-}" ] ||
        echo "$bench_name: CHANGEGATE set without BENCH_COMMIT: the row names HEAD ($(bench_commit)); is that what $CHANGEGATE was built from?" >&2
    ulimit -n "$(ulimit -Hn)" # many sockets: the hard limit (20000 here)
    out=$here/out/$(date +%Y%m%d-%H%M%S)-$$
    mkdir -p "$out"
    bench_pids=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    echo "$bench_name: building loadclient"
    cc -O2 -std=c11 -Wall -o "$here/loadclient" "$here/loadclient.c"
}

# A run's figures by "<kind>.<column>", the rounds' separated by "; " (bench_add).
declare -A bench_fig=()
bench_add() { bench_fig[$1]=${bench_fig[$1]:+${bench_fig[$1]}; }$2; } # key value

bench_die() { # status message
    echo "$bench_name: $2" >&2
    exit "$1"
}

bench_cleanup() {
    local rc=$?
    bench_stop_all
    if [ $rc -ne 0 ]; then
        echo "$bench_name: FAILED (status $rc); logs in $out" >&2
        tail -n 30 "$out"/changegate*.log 2>/dev/null | sed 's/^/  /' >&2 || true
    elif [ -z "${KEEP_OUT:-}" ]; then
        rm -rf "$out"
        rmdir "$here/out" 2>/dev/null || true
    fi
    exit $rc
}

bench_stop_all() {
    local pid
    for pid in "${bench_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${bench_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    bench_pids=()
}

bench_free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts devmongo with extra options (e.g. --oplog-size N); sets $mongo_uri and $dm_pid.
bench_start_devmongo() { # [options...]
    local port log=$out/devmongo.log
    port=$(bench_free_port)
    "$DEVMONGO" --port "$port" --host 127.0.0.1 "$@" >"$log" 2>&1 &
    dm_pid=$!
    bench_pids+=($dm_pid)
    for _ in $(seq 200); do grep -q "devmongo ready on" "$log" && break; sleep 0.05; done
    grep -q "devmongo ready on" "$log" || bench_die 1 "devmongo did not start"
    mongo_uri="mongodb://127.0.0.1:$port/?replicaSet=rs0"
}

# Runs nginx in the foreground from CONF (its prefix, error log and pid file in DIR),
# waits until URL answers, and checks it has WORKERS workers. Sets ng_pid (the master),
# ng_workers and ng_procs (master and workers: their RSS is summed); all are stopped on
# exit with the rest of bench_pids.
bench_run_nginx() { # dir conf url workers
    local dir=$1 conf=$2 url=$3 want=$4 workers=()
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$conf" >"$dir/stderr.log" 2>&1 &
    ng_pid=$!
    bench_pids+=("$ng_pid")
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && break
        kill -0 "$ng_pid" 2>/dev/null || break
        sleep 0.1
    done
    curl -fsS -o /dev/null "$url" ||
        bench_die 1 "nginx did not answer $url: $(tail -n 5 "$dir/error.log" "$dir/stderr.log")"
    read -ra workers <"/proc/$ng_pid/task/$ng_pid/children" || true # no newline at its end
    [ ${#workers[@]} = "$want" ] || bench_die 1 "nginx has ${#workers[@]} workers, not $want"
    ng_workers=("${workers[@]}")
    bench_pids+=("${ng_workers[@]}") # stopped by their master; listed in case it is killed
    ng_procs=("$ng_pid" "${ng_workers[@]}")
}

# Starts changegate with extra options; sets $cg_pid and $cg_port; waits for /healthz.
bench_start_changegate() { # tag max-subscribers [options...]
    local tag=$1 max=$2
    shift 2
    cg_port=$(bench_free_port)
    mkdir -p "$out/state-$tag"
    "$CHANGEGATE" --mongo-uri "$mongo_uri" --watch '*' --listen "http://127.0.0.1:$cg_port" \
        --state-dir "$out/state-$tag" --max-subscribers "$max" --log-level "${BENCH_LOG_LEVEL:-info}" "$@" \
        >"$out/changegate-$tag.log" 2>&1 &
    cg_pid=$!
    bench_pids+=($cg_pid)
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "http://127.0.0.1:$cg_port/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    bench_die 1 "changegate never became healthy"
}

# Starts loadclient in the background (sets $lc_pid) and waits until every
# subscriber has the stream's first bytes. It connects to changegate ($cg_port) unless
# the options name another --port (a later option wins), e.g. a web server's in front.
bench_start_loadclient() { # tag loadclient-options...
    local tag=$1
    shift
    "$here/loadclient" --host 127.0.0.1 --port "$cg_port" --ready-file "$out/ready-$tag" "$@" \
        >"$out/loadclient-$tag.json" 2>"$out/loadclient-$tag.log" &
    lc_pid=$!
    bench_pids+=($lc_pid)
    for _ in $(seq 1200); do
        [ -s "$out/ready-$tag" ] && return 0
        kill -0 $lc_pid 2>/dev/null || break
        sleep 0.05
    done
    cat "$out/loadclient-$tag.log" >&2
    bench_die 1 "subscribers did not connect"
}

# The measured span of a fan-out run, once bench_start_loadclient has every subscriber
# streaming: runs bench/writer.py with WRITER-OPTIONS (its JSON in $out/writer-TAG.json)
# and waits for loadclient, then prints both summaries and stops changegate (it must exit
# 0) and everything else. SAMPLE, a function, is called with 0 just before the writer
# starts and with 1 once loadclient is done, to read the scenario's own counters (it sees
# the caller's locals). Sets, over the span: m_wall (seconds), m_busy and m_all (host
# ticks: bench_host_ticks), m_dm (devmongo's CPU ticks), m_load (load average at its
# end), m_lc_rc (loadclient's status); from loadclient's summary m_deliveries, m_p50,
# m_p99 (µs), m_gaps, m_repeats, m_misrouted, m_complete, m_lc_cpu, m_connect_s; from
# the writer's m_written, m_rate, m_wr_cpu; and m_ok: yes when loadclient passed, with
# no gap, repeat or misrouted event, and the writer wrote WRITTEN documents.
bench_measure() { # tag sample written writer-options...
    local tag=$1 sample=$2 want=$3 busy0 all0 busy1 all1 dm0 wall0
    shift 3
    read -r busy0 all0 < <(bench_host_ticks)
    dm0=$(bench_cpu_ticks "$dm_pid")
    "$sample" 0
    wall0=$EPOCHREALTIME
    "$PY" "$here/writer.py" --uri "$mongo_uri" "$@" >"$out/writer-$tag.json"
    m_lc_rc=0
    wait "$lc_pid" || m_lc_rc=$?
    m_wall=$(bench_seconds "$wall0" "$EPOCHREALTIME")
    "$sample" 1
    m_dm=$(($(bench_cpu_ticks "$dm_pid") - dm0))
    read -r busy1 all1 < <(bench_host_ticks)
    m_busy=$((busy1 - busy0)) m_all=$((all1 - all0))
    m_load=$(cut -d' ' -f1 /proc/loadavg)
    echo "$bench_name: $tag: writer: $(cat "$out/writer-$tag.json")"
    echo "$bench_name: $tag: loadclient: $(cat "$out/loadclient-$tag.json")"
    bench_stop_changegate
    bench_stop_all
    read -r m_deliveries m_p50 m_p99 m_gaps m_repeats m_misrouted m_complete m_lc_cpu m_connect_s \
        < <(bench_json "$out/loadclient-$tag.json" deliveries_per_s latency_us.p50 latency_us.p99 \
            gaps repeats misrouted complete cpu_s connect_s)
    read -r m_written m_rate m_wr_cpu < <(bench_json "$out/writer-$tag.json" written rate cpu_s)
    m_ok=yes
    [ "$m_complete" = true ] && [ "$m_gaps" = 0 ] && [ "$m_repeats" = 0 ] &&
        [ "$m_misrouted" = 0 ] && [ "$m_lc_rc" = 0 ] && [ "$m_written" = "$want" ] || m_ok=no
}
# Adds bench_measure's common figures under KIND: rate, seconds, deliveries, p50, p99
# (ms), lc_cpu (loadclient's cores), host (bench_host_busy, OURS being the CPU ticks of
# the run's processes besides devmongo, the writer and loadclient) and load.
bench_add_measured() { # kind ours-ticks
    bench_add "$1.rate" "$m_rate"
    bench_add "$1.seconds" "$(printf %.1f "$m_wall")"
    bench_add "$1.deliveries" "$m_deliveries"
    bench_add "$1.p50" "$(bench_ms "$m_p50")"
    bench_add "$1.p99" "$(bench_ms "$m_p99")"
    bench_add "$1.lc_cpu" "$(awk -v c="$m_lc_cpu" -v s="$m_wall" 'BEGIN {printf "%.2f", c / s}')"
    bench_add "$1.host" "$(bench_host_busy "$m_busy" "$m_all" $(($2 + m_dm)) "$m_lc_cpu $m_wr_cpu" "$m_wall")"
    bench_add "$1.load" "$m_load"
}

# Stops changegate with SIGTERM; it must exit 0.
bench_stop_changegate() {
    kill -TERM "$cg_pid"
    local rc=0
    wait "$cg_pid" || rc=$?
    [ $rc = 0 ] || bench_die 1 "changegate exited $rc after SIGTERM"
}

bench_mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; } # kB -> MB, one decimal
# Prints the values of KEYs (dotted paths) in a JSON file, space-separated: Python's
# str(), with booleans and null lower-case.
bench_json() { # file key...
    "$PY" - "$@" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
out = []
for k in sys.argv[2:]:
    v = d
    for part in k.split("."):
        v = v[part] if v is not None else None
    out.append(str(v).lower() if isinstance(v, bool) or v is None else str(v))
print(" ".join(out))
PYEOF
}
bench_ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; } # us -> ms, one decimal
# VmRSS of processes, summed, in kB (0 for one that is gone).
bench_rss_kb() { # pid...
    local p
    for p in "$@"; do cat "/proc/$p/status" 2>/dev/null; done | awk '/^VmRSS:/ {s += $2} END {print s + 0}'
}
# Every 0.2 s while the first PID lives, appends "<time> <kB>" to FILE: the VmRSS of
# the PIDs summed. Runs in the background and is stopped with the rest.
bench_sample_rss() { # file pid...
    local file=$1
    shift
    (while kill -0 "$1" 2>/dev/null; do
        echo "$(date +%s.%N) $(bench_rss_kb "$@")"
        sleep 0.2
    done) >"$file" &
    bench_pids+=($!)
}
bench_peak_kb() { awk '$2 > m {m = $2} END {print m + 0}' "$1"; } # the highest sample
# User + system CPU time of processes, summed, in clock ticks.
bench_cpu_ticks() { # pid...
    local p
    for p in "$@"; do cat "/proc/$p/stat"; done | awk '{s += $14 + $15} END {print s + 0}'
}
# The machine's CPU time so far, in clock ticks: "<busy> <total>" (busy: all but idle
# and iowait), summed over its CPUs.
bench_host_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# CPU time of processes so far in ns, summed over their threads: the scheduler's own
# count (/proc/<pid>/task/*/schedstat), exact where bench_cpu_ticks has 10 ms steps; a
# thread that has ended no longer counts, so use it across spans in which none ends.
bench_cpu_ns() { # pid...
    local p
    for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done | awk '{s += $1} END {printf "%.0f\n", s}'
}
# CPU time (clock ticks, or units of which UNITS make a second: 1e9 for bench_cpu_ns) as
# cores (CPU seconds per second of wall time) and as µs per item, two decimals.
bench_cores() { awk -v t="$1" -v hz="${3:-$(getconf CLK_TCK)}" -v s="$2" 'BEGIN {printf "%.2f", t / hz / s}'; } # cpu seconds [units]
bench_us_per() { awk -v t="$1" -v hz="${3:-$(getconf CLK_TCK)}" -v n="$2" 'BEGIN {printf "%.2f", t / hz / n * 1e6}'; } # cpu items [units]
# Wall seconds between two $EPOCHREALTIME readings.
bench_seconds() { awk -v a="$1" -v b="$2" 'BEGIN {print b - a}'; } # start end
# The machine's busy share over a run and, in brackets, the cores busy with other work
# than the run's own processes (which disturbs the figures): "<busy>% (others <cores>)".
# busy and all are bench_host_ticks differences; ours the run's processes' CPU ticks;
# cpu_s the CPU seconds of processes that report their own (loadclient, the writer).
bench_host_busy() { # busy-ticks all-ticks ours-ticks "cpu_s ..." seconds
    awk -v b="$1" -v t="$2" -v ours="$3" -v cpu="$4" -v hz="$(getconf CLK_TCK)" -v s="$5" 'BEGIN {
        o = (b - ours) / hz; n = split(cpu, c, " "); for (i = 1; i <= n; i++) o -= c[i];
        printf "%.0f%% (others %.2f)", 100 * b / t, (o > 0 ? o : 0) / s}'
}
# The matching index of a running changegate: "<indexed>/<scanned>" subscribers
# (cg_index_indexed_count/scanned_count; /metrics does not show them), read with gdb from
# main()'s hub, which stops changegate for about 0.3 s. Needs gdb, ptrace rights and
# changegate's debug info (the default -g); "-" when any is missing.
bench_index_counts() { # port: "indexed/scanned" subscribers, from /metrics
    curl -s "http://127.0.0.1:$1/metrics" |
        awk '/^changegate_subscribers_indexed / {i = $2} /^changegate_subscribers_scanned / {s = $2}
             END {print (i != "" && s != "" ? i "/" s : "-")}'
}
bench_commit() { # BENCH_COMMIT (the binary's source), else HEAD of the checkout
    [ -n "${BENCH_COMMIT:-}" ] && { echo "$BENCH_COMMIT"; return; }
    git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo uncommitted
}

# Appends a row to the table under "## <section>" in RESULTS.md, creating the
# section (heading, text, table header) when it is not there yet.
bench_append_row() { # section header-file row
    local section=$1 header=$2 row=$3
    [ "$RESULTS" = /dev/null ] && { echo "$row"; return; }
    if ! grep -q "^## $section\$" "$RESULTS" 2>/dev/null; then
        { echo; echo "## $section"; echo; cat "$header"; } >>"$RESULTS"
    fi
    "$PY" - "$RESULTS" "$section" "$row" <<'PYEOF'
import sys
path, section, row = sys.argv[1:]
lines = open(path).read().split("\n")
start = lines.index("## " + section)
end = start + 1
while end < len(lines) and not lines[end].startswith("## "):
    end += 1
last = max(i for i in range(start, end) if lines[i].startswith("|"))
lines.insert(last + 1, row)
open(path, "w").write("\n".join(lines))
PYEOF
    echo "$row"
}
