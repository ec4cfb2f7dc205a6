#!/bin/bash
# Installs everything changegate needs to build, test and run its demo on a
# fresh Debian 12 machine (as root). Safe to run again: it only installs what
# is missing. Node packages for the tests come from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential autoconf automake libtool pkg-config
  libmongoc-dev libbson-dev libmicrohttpd-dev libjansson-dev libpcre2-dev libssl-dev check
  python3 python3-pymongo python3-bson python3-mongomock python3-jwt python3-cryptography # tokens for the auth tests
  curl valgrind cppcheck clang-format
  prometheus  # promtool, for test_metrics
  clang libclang-rt-14-dev # tests/fuzz/run.sh: libFuzzer with ASan and UBSan
  jq chromium # test_node_eventsource reads NDJSON with jq; test_browser runs headless chromium
  # The FastCGI scenarios run changegate behind each web server, started by the test as a
  # foreground process on a free loopback port (tests/integration/webservers.py); the
  # packages' own services are kept from starting (see policy-rc.d below). Debian 12's
  # apache2 carries mod_proxy and mod_proxy_fcgi itself.
  nginx lighttpd apache2
  # The Debian package (tests/package/test_package.py): its build, lintian, and a systemd
  # booted in a container (systemd-nspawn) to run its units; libsystemd for sd_notify.
  libsystemd-dev debhelper lintian dpkg-dev systemd systemd-container man-db procps util-linux
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
  # No package's service may start while it is installed (nginx, lighttpd and apache2 would
  # otherwise stay running on port 80): a policy-rc.d that answers 101 ("action forbidden")
  # for the duration of apt-get, put back as it was afterwards, whatever happens. Docker
  # images already ship one; it is set aside and restored.
  policy=/usr/sbin/policy-rc.d
  restore_policy() {
    if [ -e "$policy.changegate-saved" ]; then mv -f "$policy.changegate-saved" "$policy"
    else rm -f "$policy"; fi
  }
  [ -e "$policy" ] && mv -f "$policy" "$policy.changegate-saved"
  trap restore_policy EXIT
  printf '#!/bin/sh\n# changegate tests/install-deps.sh: start no service while installing\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  restore_policy
  trap - EXIT
  # Should a service have started all the same (a systemd that ignores policy-rc.d), stop
  # the web servers just installed: the tests start their own, and port 80 stays free.
  for s in nginx lighttpd apache2; do
    case " ${missing[*]} " in *" $s "*) ;; *) continue ;; esac
    if service "$s" status >/dev/null 2>&1; then
      echo "install-deps: stopping the $s service that the package started"
      service "$s" stop >/dev/null 2>&1 || true
    fi
  done
  if command -v ss >/dev/null && [ -n "$(ss -Hltn 'sport = :80' 2>/dev/null)" ]; then
    echo "install-deps: warning: something listens on port 80 (the tests do not need it):" >&2
    ss -Hltnp 'sport = :80' >&2 || true
  fi
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
