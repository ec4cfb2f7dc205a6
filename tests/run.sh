#!/bin/bash
# Runs the whole test suite, the way CI does:
#   1. installs what is missing (tests/install-deps.sh),
#   2. lint: clang-format and cppcheck,
#   3. a normal build and `make check` (unit tests, devmongo tests, integration),
#   4. the Debian package built, linted, installed, run under a real systemd (in a
#      container over this machine's root) and purged (as root only),
#   5. a build with AddressSanitizer + UndefinedBehaviorSanitizer and its `make check`,
#   6. the FastCGI record parser fuzzed for FUZZ_SECONDS (30) under ASan + UBSan,
#   7. a few integration scenarios with changegate under valgrind (no leaks, no
#      invalid accesses).
# Builds go to build/plain and build/asan. The last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash tests/install-deps.sh || exit 1

passed=0
failed=0
failures=()
record() { # name status
  if [ "$2" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}
# Adds the PASS/FAIL counts of an automake test-suite.log run.
count_suite() { # label builddir
  local log=$2/test-suite.log
  [ -f "$log" ] || { record "$1: no test-suite.log" 1; return; }
  for t in $(cd "$2" && find tests -name '*.trs' | sort); do
    local res
    res=$(sed -n 's/^:test-result: //p' "$2/$t")
    if [ "$res" = PASS ] || [ "$res" = SKIP ]; then record "$1 ${t%.trs}" 0
    else record "$1 ${t%.trs}" 1; fi
  done
}

JOBS=2
WERROR=""
[ "${CI:-}" = true ] && WERROR=--enable-werror

echo "== lint"
fmt_out=$(clang-format --dry-run --Werror src/*.c src/*.h tests/*.c tests/*.h tests/differential/*.c \
  tests/fuzz/*.c bench/*.c 2>&1)
record "clang-format" $?
[ -n "$fmt_out" ] && echo "$fmt_out" | head -20
cppcheck -q --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
  --suppress=missingIncludeSystem -I src src/ bench/ tests/differential/ tests/fuzz/
record "cppcheck" $?

[ -f configure ] || autoreconf -fi >/dev/null || exit 1

build() { # dir configure-args...
  local dir=$1; shift
  mkdir -p "$dir"
  (cd "$dir" && { [ -f Makefile ] || "$ROOT/configure" -q "$@"; } && make -s -j$JOBS) >"$dir.build.log" 2>&1
}

echo "== build and make check (plain)"
if build build/plain $WERROR; then
  record "build plain" 0
  (cd build/plain && make -s -j$JOBS check) >build/plain.check.log 2>&1 || tail -15 build/plain.check.log
  count_suite plain build/plain
else
  record "build plain" 1; tail -30 build/plain.build.log
fi

echo "== the Debian package: build, lintian, install, run under systemd, purge"
if [ "$(id -u)" = 0 ]; then
  timeout 900 /usr/bin/python3 tests/package/test_package.py >build/package.log 2>&1
  rc=$?
  record "package" $rc
  [ $rc = 0 ] || tail -40 build/package.log
else
  echo "skipped: tests/package/test_package.py installs the package, so it needs root"
fi

echo "== build and make check (ASan + UBSan)"
if build build/asan $WERROR --enable-sanitizers; then
  record "build asan" 0
  # A small quarantine: with ASan's default 256 MB of freed-but-held memory,
  # RSS measures the quarantine filling up, not changegate (test_stalled_client).
  (cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 make -s -j$JOBS check) >build/asan.check.log 2>&1 ||
     tail -15 build/asan.check.log
  count_suite asan build/asan
else
  record "build asan" 1; tail -30 build/asan.build.log
fi

echo "== fuzz: the FastCGI record parser (libFuzzer, ASan + UBSan, ${FUZZ_SECONDS:-30} s)"
FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash tests/fuzz/run.sh >build/fuzz.log 2>&1
rc=$?
record "fuzz fcgi_proto" $rc
[ $rc = 0 ] || tail -30 build/fuzz.log

echo "== integration under valgrind"
# Resume from the journal; catch-up streams, their handover and their
# failures (resets, 410); the watcher's own recoveries; hostile clients (limits,
# malformed heads, 5,000 half-way connections, clients leaving mid-response;
# about 40 s under valgrind with the full count); the FastCGI front end, raw and
# behind nginx with a browser; token verification and rules.
VALGRIND_SCENARIOS="test_sse_resume test_history_lost test_invalidate test_foreign_state
  test_watch_refused test_hangup test_hostile_clients test_fcgi_protocol test_fcgi_browser
  test_auth_tokens test_reload"
if [ -x build/plain/src/changegate ]; then
  for t in $VALGRIND_SCENARIOS; do
    CHANGEGATE=$ROOT/build/plain/src/changegate DEVMONGO=$ROOT/tests/devmongo/devmongo \
    CG_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99" \
      timeout 300 /usr/bin/python3 tests/integration/$t.py >build/valgrind-$t.log 2>&1
    rc=$?
    record "valgrind $t" $rc
    [ $rc = 0 ] || tail -40 build/valgrind-$t.log
  done
fi

for f in "${failures[@]}"; do echo "FAILED: $f"; done
for d in build/plain build/asan; do
  [ -f $d/test-suite.log ] && grep -q "^# FAIL: *[1-9]" $d/test-suite.log && \
    echo "see $d/test-suite.log and $d/tests/*.log"
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
