#!/bin/sh
# Runs the Node.js driver test against devmongo: installs the locked `mongodb` package
# if node_modules is missing, then runs node's built-in test runner. Exits with its status.
set -e
cd "$(dirname "$0")/node"
if [ ! -d node_modules ]; then
    npm ci --no-audit --no-fund
fi
exec node --test
