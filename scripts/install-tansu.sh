#!/usr/bin/env bash
# Installs what the Kafka backend's tests need, idempotently, and prints the tansu binary's path.
#
# - tansu (crates.io, Apache-2.0): a Kafka-protocol broker, run by crates/taskflow-bus/tests/kafka.rs
#   with its in-memory storage engine. Built from source with `cargo install` into
#   ${TASKFLOW_TOOLS:-$HOME/.cache/taskflow/tools} (12 minutes on an idle 2-core machine, ~28 under load), only when
#   <tools>/bin/tansu is missing or is not version $TANSU_VERSION.
# - python3's confluent-kafka (PyPI), used by scripts/kafka_crosscheck.py as an independent client.
# - what the bundled librdkafka build of the `rdkafka` crate needs: make, gcc, g++, perl, and
#   pkg-config with libssl-dev for its `ssl` feature (Debian packages, installed only if missing).
#
# Fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
TOOLS="${TASKFLOW_TOOLS:-$HOME/.cache/taskflow/tools}"
TANSU="$TOOLS/bin/tansu"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# librdkafka (bundled by rdkafka-sys) is built with its own configure script and make.
missing=()
have make || missing+=(make)
have cc || missing+=(gcc)
have c++ || missing+=(g++)
have perl || missing+=(perl)
# The `ssl` feature (SASL_SSL for Redpanda Cloud / Confluent Cloud) links the system OpenSSL.
have pkg-config || missing+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then
  missing+=(libssl-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# The independent Kafka client of the cross-check.
if have python3 && ! python3 -c 'import confluent_kafka' >/dev/null 2>&1; then
  python3 -m pip install --quiet confluent-kafka >&2
fi

# cargo install records what it installed in <root>/.crates.toml, e.g. "tansu 0.6.0 (registry+...)".
has_wanted_version() {
  grep -q "^\"tansu $TANSU_VERSION " "$TOOLS/.crates.toml" 2>/dev/null
}

if [ ! -x "$TANSU" ] || ! has_wanted_version; then
  if ! have cargo; then
    echo "cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
  fi
  mkdir -p "$TOOLS"
  echo "building tansu $TANSU_VERSION into $TOOLS (takes ~12 minutes on 2 cores)" >&2
  # A private target dir keeps this build from contending with the workspace's lock.
  CARGO_TARGET_DIR="${TANSU_BUILD_TARGET:-$TOOLS/.tansu-build}" \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
    --root "$TOOLS" --force >&2
  rm -rf "${TANSU_BUILD_TARGET:-$TOOLS/.tansu-build}"
fi

echo "$TANSU"
