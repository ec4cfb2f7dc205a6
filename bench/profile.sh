#!/usr/bin/env bash
# profile.sh: where changegate's instructions go per delivery, by callgrind.
#
# Instruction counts do not depend on what else the machine is doing (seconds do), so a
# change to the fan-out path can be judged by this row before and after it. Starts
# devmongo, changegate under `valgrind --tool=callgrind`, SUBSCRIBERS (500) SSE
# subscribers and the writer (EVENTS (2,000) documents of ~DOC_BYTES (100) bytes at RATE
# (500)/s, in batches of 10); every subscriber must get every event. Then stops
# changegate (callgrind writes its counts at exit) and appends a row with the total
# instructions, instructions per delivery, and the functions that cost the most, each
# with its share. The counts include start-up and the watcher's work per event: compare
# rows with the same SUBSCRIBERS and EVENTS. KEEP_OUT=1 keeps the callgrind file
# (callgrind_annotate reads it).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-500}
EVENTS=${EVENTS:-2000}
RATE=${RATE:-500}
DOC_BYTES=${DOC_BYTES:-100}
TOP=${TOP:-8}
bench_init profile
command -v valgrind >/dev/null || bench_die 2 "valgrind is not installed"
command_line="SUBSCRIBERS=$SUBSCRIBERS EVENTS=$EVENTS RATE=$RATE DOC_BYTES=$DOC_BYTES${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/profile.sh"

bench_start_devmongo
cg_port=$(bench_free_port)
mkdir -p "$out/state"
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$CHANGEGATE" \
    --mongo-uri "$mongo_uri" --watch '*' --listen "http://127.0.0.1:$cg_port" \
    --state-dir "$out/state" --max-subscribers $((SUBSCRIBERS + 100)) --log-level warn \
    >"$out/changegate-main.log" 2>&1 &
cg_pid=$!
bench_pids+=($cg_pid)
for _ in $(seq 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$cg_port/healthz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$cg_port/healthz" || bench_die 1 "changegate never became healthy"

bench_start_loadclient main --path /events --connections "$SUBSCRIBERS" --expect "$EVENTS" \
    --duration 300
"$PY" "$here/writer.py" --uri "$mongo_uri" --rate "$RATE" --count "$EVENTS" \
    --doc-bytes "$DOC_BYTES" >"$out/writer.json"
lc_rc=0
wait "$lc_pid" || lc_rc=$?
kill -TERM "$cg_pid"
cg_rc=0
wait "$cg_pid" || cg_rc=$?
[ "$cg_rc" = 0 ] || bench_die 1 "changegate exited with status $cg_rc"
lc=$out/loadclient-main.json
read -r deliveries gaps repeats complete < <(bench_json "$lc" events gaps repeats complete)
ok=yes
[ "$lc_rc" = 0 ] && [ "$gaps" = 0 ] && [ "$repeats" = 0 ] && [ "$complete" = true ] || ok=no

# callgrind_annotate: "N (P%)  file:function [object]" per line, most first.
total=$(callgrind_annotate "$out/callgrind.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
top=$(callgrind_annotate "$out/callgrind.out" | "$PY" -c '
import re, sys
n, found = int(sys.argv[1]), []
for line in sys.stdin:
    m = re.match(r"\s*[\d,]+ \(\s*([\d.]+%)\)\s+(\S+)", line)
    if m and "PROGRAM" not in line and len(found) < n:
        fn = re.sub(r"\.(isra|part|constprop).*", "", m.group(2).split(":")[-1])
        found.append("%s %s" % (fn, m.group(1)))
print(", ".join(found))' "$TOP")
per=$(awk -v t="$total" -v d="$deliveries" 'BEGIN {printf "%.0f", d ? t / d : 0}')
echo "profile: $total instructions, $per per delivery; top: $top"

header=$(mktemp)
cat >"$header" <<'EOF'
Instruction counts of changegate under `valgrind --tool=callgrind` (bench/profile.sh):
repeatable whatever else the machine does, so they show what a change to the fan-out
path costs or saves. Totals include start-up and the watcher's per-event work; compare
rows with the same subscribers and events. "Top" lists the functions with the most
instructions of their own (self cost) and their share of the total.

| date | commit | subscribers × events | deliveries | instructions | per delivery | top functions (self) | all delivered | command |
|---|---|---|---|---|---|---|---|---|
EOF
bench_append_row profile "$header" "| $(date -u +%Y-%m-%dT%H:%MZ) | $(bench_commit) | $SUBSCRIBERS × $EVENTS | $deliveries | $total | $per | $top | $ok (gaps $gaps, repeats $repeats) | \`$command_line\` |"
rm -f "$header"
[ "$ok" = yes ] || bench_die 1 "not every subscriber got every event exactly once"
