#!/usr/bin/env bash
# auth-fanout.sh: the cost of authorization rules with SUBSCRIBERS (10,000) authenticated
# subscribers (issue 7's benchmark).
#
# Subscriber i is user "user-<i>" with its own HS256 token (sub "user-<i>", minted by
# Debian's python3-jwt with a secret made for the run), sent as "Authorization: Bearer"
# (TOKEN_IN=header) or as ?access_token= (TOKEN_IN=query). bench/writer.py inserts EVENTS
# (2,000) documents at RATE (40)/s with owner_id "user-<seq % SUBSCRIBERS>", so every
# event belongs to exactly one subscriber (users past EVENTS get none), and loadclient
# (--stride, --events) checks that each got exactly its own events, in order (no gap,
# repeat or misrouted event). RATE is one that even the scan setup sustains here. Three
# setups, each with a fresh devmongo and changegate on loopback (SETUPS, in this order,
# ROUNDS (1) times):
#   rule    --auth jwt --auth-rule '{"fullDocument.owner_id": "$$jwt.sub"}': the rule's
#           equality puts each subscriber in the matching index under its own sub;
#   filter  --auth none, each subscriber with filter={"fullDocument.owner_id":"user-<i>"}
#           and no token: indexed the same way (does a rule cost what a filter costs?);
#   scan    --auth jwt with '{"$or": [{"fullDocument.owner_id": "$$jwt.sub"},
#           {"fullDocument.shared_with": "$$jwt.sub"}]}': the same events reach the same
#           subscribers (no document has shared_with), but an $or has no required
#           equality, so every subscriber is tried for every event (what the index saves).
# Measured per run: admission (the seconds until every subscriber streams, and
# changegate's CPU over them per subscriber: HTTP, token verification, the rule), the
# index's indexed/scanned counts (/metrics: changegate_subscribers_indexed, _scanned),
# changegate's CPU over IDLE (5) s with everyone connected and nothing
# written, then from the writer's start until the last subscriber has its events:
# deliveries/s, latency (receipt - the writer's ts_us), changegate's CPU (cores, µs per
# event = per delivery, each event having one recipient, and the same less the idle
# rate), VmRSS idle / connected / peak, loadclient's CPU, the machine's busy share and
# the part of it other work accounts for.
# Appends one row per setup to bench/RESULTS.md (section auth-fanout).
# Knobs (environment): SUBSCRIBERS, EVENTS, RATE, DOC_BYTES (100), TOKEN_IN, SETUPS,
# ROUNDS, IDLE, HEARTBEAT (3600 s: no heartbeats in the measurement), TIMEOUT (120 s
# after the writer's end), CHANGEGATE, DEVMONGO, BENCH_COMMIT, KEEP_OUT=1,
# RESULTS.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-10000}
EVENTS=${EVENTS:-2000}
RATE=${RATE:-40}
DOC_BYTES=${DOC_BYTES:-100}
TOKEN_IN=${TOKEN_IN:-header}
SETUPS=${SETUPS:-rule filter scan}
ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-5}
HEARTBEAT=${HEARTBEAT:-3600}
TIMEOUT=${TIMEOUT:-120}
bench_init auth-fanout
[ "$EVENTS" -gt 0 ] && [ "$RATE" -gt 0 ] || bench_die 2 "EVENTS and RATE must be positive"
DURATION=$(((EVENTS + RATE - 1) / RATE))
case $TOKEN_IN in header | query) ;; *) bench_die 2 "TOKEN_IN must be header or query" ;; esac
for setup in $SETUPS; do
    case $setup in rule | filter | scan) ;; *) bench_die 2 "unknown setup $setup (rule, filter, scan)" ;; esac
done
# changegate and loadclient each hold a socket per subscriber, under their own limit.
[ "$(ulimit -n)" -ge $((SUBSCRIBERS + 200)) ] ||
    bench_die 2 "ulimit -n is $(ulimit -n), too low for $SUBSCRIBERS subscribers"
command_line="SUBSCRIBERS=$SUBSCRIBERS EVENTS=$EVENTS RATE=$RATE DOC_BYTES=$DOC_BYTES TOKEN_IN=$TOKEN_IN SETUPS=\"$SETUPS\" ROUNDS=$ROUNDS IDLE=$IDLE HEARTBEAT=$HEARTBEAT${CHANGEGATE_SET:+ CHANGEGATE=$CHANGEGATE}${BENCH_COMMIT:+ BENCH_COMMIT=$BENCH_COMMIT} bench/auth-fanout.sh"
JOURNAL=$((EVENTS > 10000 ? EVENTS : 10000)) # however far behind, never a reset
RULE='{"fullDocument.owner_id": "$$jwt.sub"}'
SCAN_RULE='{"$or": [{"fullDocument.owner_id": "$$jwt.sub"}, {"fullDocument.shared_with": "$$jwt.sub"}]}'
# {"fullDocument.owner_id":"user-{i}"}, URL-encoded; loadclient puts the index in {i}.
filter_path='/events?filter=%7B%22fullDocument.owner_id%22%3A%22user-{i}%22%7D'
token_args=(--tokens "$out/tokens.txt")
[ "$TOKEN_IN" = query ] && token_args+=(--token-param access_token)

# The secret (64 printable bytes and a newline, which changegate strips) and one token
# per subscriber, line i for user-<i>, valid for two hours.
echo "auth-fanout: minting $SUBSCRIBERS tokens"
"$PY" - "$SUBSCRIBERS" "$out/jwt.secret" "$out/tokens.txt" <<'PYEOF'
import base64, os, sys, time
import jwt  # Debian's python3-jwt
n, secret_file, tokens_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
secret = base64.urlsafe_b64encode(os.urandom(48)).decode()
with open(secret_file, "w") as f:
    f.write(secret + "\n")
now = int(time.time())
with open(tokens_file, "w") as f:
    for i in range(n):
        f.write(jwt.encode({"sub": "user-%d" % i, "iat": now, "exp": now + 7200}, secret,
                           algorithm="HS256") + "\n")
PYEOF

# bench_measure's sample: changegate's CPU in ns, before (0) and after (1).
sample_cpu() { printf -v "cg$1" %s "$(bench_cpu_ns "$cg_pid")"; }

# One run of a setup; adds its figures to bench_fig[].
run() { # setup round
    local setup=$1 tag=$1$2 path=/events lc_auth=() cg_auth=()
    case $setup in
    rule) cg_auth=(--auth jwt --jwt-secret-file "$out/jwt.secret" --auth-rule "$RULE") ;;
    scan) cg_auth=(--auth jwt --jwt-secret-file "$out/jwt.secret" --auth-rule "$SCAN_RULE") ;;
    filter) path=$filter_path ;;
    esac
    [ "$setup" = filter ] || lc_auth=("${token_args[@]}")
    bench_start_devmongo
    bench_start_changegate "$tag" $((SUBSCRIBERS + 100)) --journal-size "$JOURNAL" \
        --heartbeat "$HEARTBEAT" "${cg_auth[@]}"
    local refused=-
    if [ "$setup" != filter ]; then # no token, no stream
        refused=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$cg_port/events" || true)
        [ "$refused" = 401 ] || bench_die 1 "$tag: /events without a token answered $refused, not 401"
    fi
    local cg_idle cg_conn a0 a1 counts=-
    cg_idle=$(bench_rss_kb "$cg_pid")
    bench_sample_rss "$out/rss-$tag.txt" "$cg_pid"
    a0=$(bench_cpu_ns "$cg_pid") # changegate's CPU in ns throughout (its threads live on)
    bench_start_loadclient "$tag" --path "$path" --connections "$SUBSCRIBERS" \
        --stride "$SUBSCRIBERS" --events "$EVENTS" --duration $((DURATION + TIMEOUT)) "${lc_auth[@]}"
    a1=$(bench_cpu_ns "$cg_pid")
    cg_conn=$(bench_rss_kb "$cg_pid")
    counts=$(bench_index_counts "$cg_port")
    local i0 i1
    i0=$(bench_cpu_ns "$cg_pid")
    sleep "$IDLE"
    i1=$(bench_cpu_ns "$cg_pid")
    echo "auth-fanout: $tag: $SUBSCRIBERS subscribers streaming (index indexed/scanned: $counts; idle $(bench_cores $((i1 - i0)) "$IDLE" 1e9) cores); writing $RATE/s, $EVENTS events"
    local cg0 cg1
    bench_measure "$tag" sample_cpu "$EVENTS" --rate "$RATE" --count "$EVENTS" \
        --doc-bytes "$DOC_BYTES" --owners "$SUBSCRIBERS" --owner-field owner_id --owner-prefix user-
    [ "$m_ok" = yes ] || all_ok=no
    local cg_ns=$((cg1 - cg0)) net
    # less what changegate spends idle with everyone connected
    net=$(awk -v t=$cg_ns -v i=$((i1 - i0)) -v idle="$IDLE" -v s="$m_wall" 'BEGIN {printf "%.0f", t - i / idle * s}')
    bench_add_measured "$setup" $((cg_ns * $(getconf CLK_TCK) / 1000000000))
    bench_add "$setup.cpu" "$(bench_cores $cg_ns "$m_wall" 1e9) / $(bench_us_per $cg_ns "$EVENTS" 1e9)"
    bench_add "$setup.us" "$(bench_us_per $cg_ns "$EVENTS" 1e9)"
    bench_add "$setup.idle" "$(bench_cores $((i1 - i0)) "$IDLE" 1e9) / $(bench_us_per "$net" "$EVENTS" 1e9)"
    bench_add "$setup.admission" "$(printf %.2f "$m_connect_s") / $(bench_us_per $((a1 - a0)) "$SUBSCRIBERS" 1e9)"
    bench_add "$setup.index" "$counts"
    bench_add "$setup.rss" "$(bench_mb "$cg_idle") / $(bench_mb "$cg_conn") / $(bench_mb "$(bench_peak_kb "$out/rss-$tag.txt")")"
    bench_add "$setup.ok" "$m_ok (gaps $m_gaps, repeats $m_repeats, misrouted $m_misrouted)"
    bench_add "$setup.refused" "$refused"
    echo "auth-fanout: $tag: $m_deliveries deliveries/s, p50 $(bench_ms "$m_p50") ms, p99 $(bench_ms "$m_p99") ms, changegate $(bench_us_per $cg_ns "$EVENTS" 1e9) us CPU per event ($(bench_us_per "$net" "$EVENTS" 1e9) over idle), admission $(bench_us_per $((a1 - a0)) "$SUBSCRIBERS" 1e9) us per subscriber, ok $m_ok"
}

all_ok=yes
for round in $(seq "$ROUNDS"); do
    for setup in $SETUPS; do run "$setup" "$round"; done
done

header=$(mktemp)
cat >"$header" <<'HDR'
Authenticated subscribers, one user each (token sub `user-<i>`); every event belongs to
one user (`fullDocument.owner_id`), so it has exactly one recipient. **rule**: `--auth
jwt --auth-rule '{"fullDocument.owner_id": "$$jwt.sub"}'`; **filter**: `--auth none`,
each subscriber with `filter={"fullDocument.owner_id":"user-<i>"}` and no token;
**scan**: `--auth jwt` with `{"$or": [{"fullDocument.owner_id": "$$jwt.sub"},
{"fullDocument.shared_with": "$$jwt.sub"}]}` (the same recipients, but no required
equality for the matching index). A fresh devmongo and changegate per run; rounds
separated by ";". Admission: seconds until every subscriber streamed / changegate's CPU
µs per subscriber over them (HTTP, token check, rule). Index: subscribers indexed /
scanned (read with gdb; /metrics does not show them). From the writer's start until the
last subscriber had its events: changegate CPU as cores / µs per event (= per delivery:
one recipient each); idle: changegate's cores over IDLE s with everyone connected and
nothing written, and the µs per event less that rate; "× filter" compares µs per event
with the filter setup's. "No token": the answer to /events without one. RSS:
changegate's VmRSS idle / all connected / peak. Host busy: the machine's CPUs not idle,
and in brackets the cores busy with other work than this run (it disturbs the figures).
Exact: each subscriber got exactly its own events (gaps, repeats, misrouted all 0).

| date | commit | setup | subscribers | events | writer rate/s | seconds | deliveries/s | latency p50 ms | latency p99 ms | changegate CPU: cores / µs per event | idle: cores / µs per event over idle | × filter | admission: s / µs per subscriber | index: indexed / scanned | RSS MB | no token | loadclient CPU cores | host busy (others, cores) | exact | host (CPUs, load avg at end) | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
date=$(date -u +%Y-%m-%dT%H:%MZ)
for setup in $SETUPS; do
    ratio=-
    if [ -n "${bench_fig[filter.us]:-}" ]; then
        ratio=$(paste -d' ' <(tr ';' '\n' <<<"${bench_fig[$setup.us]}") <(tr ';' '\n' <<<"${bench_fig[filter.us]}") |
            awk '{printf "%s%.2f", (NR > 1 ? "; " : ""), ($2 > 0 ? $1 / $2 : 0)}')
    fi
    case $setup in
    rule) label="rule (jwt, indexed)" ;;
    filter) label="filter (no auth, indexed)" ;;
    scan) label="rule with \$or (jwt, scanned)" ;;
    esac
    row="| $date | $(bench_commit) | $label | $SUBSCRIBERS | $EVENTS | ${bench_fig[$setup.rate]} | ${bench_fig[$setup.seconds]} | ${bench_fig[$setup.deliveries]} | ${bench_fig[$setup.p50]} | ${bench_fig[$setup.p99]} | ${bench_fig[$setup.cpu]} | ${bench_fig[$setup.idle]} | $ratio | ${bench_fig[$setup.admission]} | ${bench_fig[$setup.index]} | ${bench_fig[$setup.rss]} | ${bench_fig[$setup.refused]} | ${bench_fig[$setup.lc_cpu]} | ${bench_fig[$setup.host]} | ${bench_fig[$setup.ok]} | $(nproc) CPUs, load ${bench_fig[$setup.load]} | \`$command_line\` |"
    bench_append_row auth-fanout "$header" "$row"
done
rm -f "$header"
[ "$all_ok" = yes ] || bench_die 1 "a subscriber did not get exactly its own events"
echo "auth-fanout: PASS"
