#!/bin/bash
# Installs everything changegate needs to build, test and run its demo on a
# fresh Debian 12 machine (as root). Safe to run again: it only installs what
# is missing. Node packages for the tests come from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential autoconf automake libtool pkg-config
  libmongoc-dev libbson-dev libmicrohttpd-dev libjansson-dev libpcre2-dev check
  python3 python3-pymongo python3-bson python3-mongomock
  curl valgrind cppcheck clang-format
  prometheus  # promtool, for test_metrics
  clang libclang-rt-14-dev # tests/fuzz/run.sh: libFuzzer with ASan and UBSan
  jq chromium # test_node_eventsource reads NDJSON with jq; test_browser runs headless chromium
)
# Node.js and npm: Debian's packages unless a node with npm is already there
# (some images ship their own, which Debian's npm package would conflict with).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Node.js driver test's packages (pinned by package-lock.json).
if [ -f tests/devmongo/node/package-lock.json ] && [ ! -d tests/devmongo/node/node_modules ]; then
  echo "install-deps: npm ci in tests/devmongo/node"
  (cd tests/devmongo/node && npm ci --no-audit --no-fund --loglevel=error)
fi
# The differential test's packages: mingo and bson (pinned by package-lock.json).
if [ -f tests/differential/package-lock.json ] && [ ! -d tests/differential/node_modules ]; then
  echo "install-deps: npm ci in tests/differential"
  (cd tests/differential && npm ci --no-audit --no-fund --loglevel=error)
fi
# The integration scenarios' real clients: puppeteer-core (drives Debian's chromium in
# test_browser) and eventsource (test_node_eventsource), pinned by package-lock.json.
if [ -f tests/node-clients/package-lock.json ] && [ ! -d tests/node-clients/node_modules ]; then
  echo "install-deps: npm ci in tests/node-clients"
  (cd tests/node-clients && npm ci --no-audit --no-fund --loglevel=error)
fi
