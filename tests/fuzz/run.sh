#!/bin/bash
# Builds the FastCGI protocol fuzz target with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (Debian's clang and libclang-rt-14-dev, see
# tests/install-deps.sh), then runs it for FUZZ_SECONDS (default 30) on the
# seed corpus tests/fuzz/corpus/fcgi. Exits nonzero on a crash, a leak, a
# sanitizer report, a broken promise (see fuzz_fcgi_proto.c) or a slow input.
#
# Builds and new inputs go to FUZZ_OUT (default build/fuzz); a failing input
# is left there as crash-*, leak-*, timeout-* (replay: build/fuzz/fuzz_fcgi_proto FILE).
# The seeds are regenerated (tests/fuzz/gen_corpus.c) only when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
OUT=${FUZZ_OUT:-build/fuzz}
CLANG=${CLANG:-clang}
SEEDS=tests/fuzz/corpus/fcgi

command -v "$CLANG" >/dev/null || { echo "fuzz: $CLANG not found: apt-get install clang" >&2; exit 2; }
mkdir -p "$OUT/corpus"

# Only the module under test: fcgi_proto.c needs nothing but libc.
"$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Werror -I src tests/fuzz/fuzz_fcgi_proto.c src/fcgi_proto.c \
  -o "$OUT/fuzz_fcgi_proto" ||
  { echo "fuzz: build failed (libFuzzer: apt-get install libclang-rt-14-dev)" >&2; exit 2; }

if [ -z "$(ls -A "$SEEDS" 2>/dev/null)" ]; then
  mkdir -p "$SEEDS"
  "$CLANG" -I src tests/fuzz/gen_corpus.c src/fcgi_proto.c -o "$OUT/gen_corpus"
  "$OUT/gen_corpus" "$SEEDS"
fi

# -max_len: room for a record of 64 KiB plus what surrounds it; -timeout: one
# input taking 10 s is a bug (an input runs in well under a millisecond).
# The first directory receives what the fuzzer finds; the seeds stay as they are.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$OUT/fuzz_fcgi_proto" -max_total_time="$FUZZ_SECONDS" -max_len=140000 -timeout=10 \
  -rss_limit_mb=1024 -dict=tests/fuzz/fcgi.dict -print_final_stats=1 -artifact_prefix="$OUT/" \
  "$OUT/corpus" "$SEEDS"
