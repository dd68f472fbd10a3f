#!/usr/bin/env bash
# Runs every check and test TaskFlow has: formatting, lints, unit tests, integration tests
# against real services. Installs what it needs first (idempotent, fast when already present).
#
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Installing test prerequisites"
bash scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test (unit, integration, process tests)"
cargo test --workspace --all-features --locked --no-fail-fast
