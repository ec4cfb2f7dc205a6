#!/bin/bash
# What the demos (examples/demo.sh, examples/auth/demo.sh) share: the build, a state
# directory with every process started recorded and stopped on exit, and devmongo.
# Sourced from the repository's root.

# Installs what is needed and builds into build/plain.
demo_build() {
  bash tests/install-deps.sh
  [ -f configure ] || autoreconf -fi >/dev/null
  mkdir -p build/plain
  (cd build/plain && { [ -f Makefile ] || "$ROOT/configure" -q; } && make -s -j2) \
    >build/demo-build.log 2>&1 || { tail -30 build/demo-build.log; exit 1; }
}

# STATE: a fresh directory (named after $1) for logs and state; pids: the processes to
# stop, all of them, when the demo ends however it ends.
demo_state() {
  STATE=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  trap demo_cleanup EXIT INT TERM
}

demo_cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$STATE"
  echo "demo stopped"
}

# Starts devmongo on port $1 and waits until it is ready; sets URI.
demo_devmongo() {
  tests/devmongo/devmongo --port "$1" >"$STATE/devmongo.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do grep -q "ready on" "$STATE/devmongo.log" && break; sleep 0.1; done
  grep -q "ready on" "$STATE/devmongo.log" || { cat "$STATE/devmongo.log"; exit 1; }
  URI="mongodb://127.0.0.1:$1/?replicaSet=rs0"
}
