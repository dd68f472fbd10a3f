#!/usr/bin/env bash
# Installs what the test suite needs, idempotently. Fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=""
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

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
echo "test prerequisites present"
