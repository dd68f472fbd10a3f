#!/usr/bin/env bash
# Installs what the test suite needs, idempotently. Fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if ! have cargo; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
# C compiler for the bundled SQLite, make for jemalloc (the binary's allocator).
if ! have cc || ! have make; then
  apt_install build-essential
fi
# The crash test inspects the database with the sqlite3 command-line shell.
if ! have sqlite3; then
  apt_install sqlite3
fi
# NATS JetStream on 127.0.0.1:4222 for the NATS backend's tests: start it when it is down.
if ! port_open 4222; then
  have nats-server || apt_install nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for _ in $(seq 1 50); do port_open 4222 && break; sleep 0.2; done
  port_open 4222 || { echo "nats-server did not start on 127.0.0.1:4222" >&2; exit 1; }
fi

# The web UI's browser tests: Debian's Chromium (npm cannot download browsers here), Node.js and
# the locked playwright-core library. `npm ci` runs again only when the lock file changed.
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi
if ! have node || ! have npm; then
  apt_install nodejs npm
fi
e2e=web/e2e
lock_stamp="$e2e/node_modules/.package-lock.sha256"
lock_sum="$(sha256sum "$e2e/package-lock.json" | cut -d' ' -f1)"
if [ ! -d "$e2e/node_modules/playwright-core" ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_sum" ]; then
  (cd "$e2e" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >"$lock_stamp"
fi

# The Kafka backend's tests: the tansu broker, the confluent-kafka cross-check client, and what
# the bundled librdkafka build needs.
bash scripts/install-tansu.sh >/dev/null

# Python packages the tests run as independent counterparts (aiosmtpd: the SMTP server of the
# e-mail tests; the official MCP SDK; the icalendar parser, dateutil and recurring-ical-events
# for the calendar tests), in one venv: $TASKFLOW_TEST_VENV, default
# $HOME/.cache/taskflow/venv (tests find its interpreter through TASKFLOW_TEST_PYTHON, defaulting
# to <venv>/bin/python). Add a package as "<pip requirement>|<module to import>".
TEST_VENV="${TASKFLOW_TEST_VENV:-$HOME/.cache/taskflow/venv}"
TEST_PYTHON_PACKAGES=(
  "aiosmtpd|aiosmtpd"
  "mcp|mcp"
  "icalendar|icalendar"
  "python-dateutil|dateutil"
  "recurring-ical-events|recurring_ical_events"
)
if [ ! -x "$TEST_VENV/bin/python" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  mkdir -p "$(dirname "$TEST_VENV")"
  python3 -m venv "$TEST_VENV"
fi
missing_python=()
for entry in "${TEST_PYTHON_PACKAGES[@]}"; do
  if ! "$TEST_VENV/bin/python" -c "import ${entry#*|}" >/dev/null 2>&1; then
    missing_python+=("${entry%%|*}")
  fi
done
if [ "${#missing_python[@]}" -gt 0 ]; then
  "$TEST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${missing_python[@]}"
fi

echo "test prerequisites present"
