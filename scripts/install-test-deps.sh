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
# C compiler for the bundled SQLite.
if ! have cc; then
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

# The Kafka backend's tests: the tansu broker, the confluent-kafka cross-check client, and what
# the bundled librdkafka build needs.
bash scripts/install-tansu.sh >/dev/null

# The MCP and iCalendar tests drive independent Python clients (the official MCP SDK, the
# icalendar parser, dateutil and recurring-ical-events) from a virtualenv of their own; the
# Rust tests find its interpreter through TASKFLOW_TEST_PYTHON (default: the one below).
venv="$HOME/.cache/taskflow/venv"
if [ ! -x "$venv/bin/python" ]; then
  have python3 || apt_install python3
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
fi
if ! "$venv/bin/python" -c 'import mcp, icalendar, dateutil, recurring_ical_events' >/dev/null 2>&1; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet mcp icalendar python-dateutil recurring-ical-events >&2
fi

echo "test prerequisites present"
