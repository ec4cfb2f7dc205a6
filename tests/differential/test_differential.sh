#!/bin/bash
# Differential test: changegate's C query matcher (match.h, through match_cli) against
# mingo, an independent JavaScript implementation of MongoDB's query language, on
# generated (filter, change event) pairs. Fails on any disagreement that
# known_differences.json does not explain. See README.md in this directory.
#
#   bash tests/differential/test_differential.sh        (from the build directory)
#   MATCH_CLI=path/to/match_cli PAIRS=N SEEDS="1 2" bash .../test_differential.sh
set -u
here="$(cd "$(dirname "$0")" && pwd)"
cli="${MATCH_CLI:-tests/differential/match_cli}"
pairs="${PAIRS:-10000}"
seeds="${SEEDS:-20240601 7}"

if [ ! -x "$cli" ]; then
  echo "test_differential: $cli not built (make check builds it; or set MATCH_CLI)" >&2
  exit 1
fi
if ! command -v node >/dev/null; then
  echo "test_differential: node not found (tests/install-deps.sh installs it)" >&2
  exit 1
fi
if [ ! -d "$here/node_modules/mingo" ]; then
  echo "test_differential: npm ci in $here"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status=0
for seed in $seeds; do
  echo "test_differential: seed $seed, $pairs pairs"
  node "$here/gen.mjs" "$seed" "$pairs" > "$work/pairs.jsonl" || { echo "FAIL: gen.mjs"; exit 1; }
  node "$here/run_mingo.mjs" < "$work/pairs.jsonl" > "$work/mingo.out" || { echo "FAIL: run_mingo.mjs"; exit 1; }
  "$cli" < "$work/pairs.jsonl" > "$work/c.out" || { echo "FAIL: match_cli exited with $?"; exit 1; }
  if [ -n "${DIFFERENTIAL_FLIP:-}" ]; then
    # self-check of the test: flip the C matcher's answer on line N
    awk -v n="$DIFFERENTIAL_FLIP" 'NR == n { $0 = ($0 == "1") ? "0" : "1" } { print }' \
      "$work/c.out" > "$work/c.flipped" && mv "$work/c.flipped" "$work/c.out"
  fi
  node "$here/compare.mjs" "$work/pairs.jsonl" "$work/mingo.out" "$work/c.out" \
    "$here/known_differences.json" || status=1
done
exit $status
