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

step "deployment artefacts: render and validate"
bash scripts/validate-deploy.sh

step "cargo test (unit, integration, process tests)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-features --locked --no-fail-fast 2>&1 | tee "$log" || status=$?

step "Browser tests of the web UI (headless Chromium, web/e2e)"
# The debug binary the cargo test step built (a no-op build when it is fresh).
e2e_log="$(mktemp)"
trap 'rm -f "$log" "$e2e_log"' EXIT
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
e2e_status=0
# One file at a time: each starts its own server and browser, and the machine may have 2 cores.
one_at_a_time=""
node --help | grep -q -- --test-concurrency && one_at_a_time="--test-concurrency=1"
if cargo build -p taskflow --locked; then
  (cd web/e2e && TASKFLOW_BIN="$target/debug/taskflow" E2E_ARTIFACTS="$target/e2e-artifacts" \
    node --test $one_at_a_time --test-reporter=tap tests/ </dev/null) 2>&1 | tee "$e2e_log" || e2e_status=$?
else
  e2e_status=$?
  echo "# fail 1" >>"$e2e_log"
fi
[ "$e2e_status" = 0 ] || status=$e2e_status
# Count them like cargo's results, so the closing line below includes them.
awk '/^# pass / { p += $3 } /^# (fail|cancelled) / { f += $3 } /^# (skipped|todo) / { s += $3 }
     END { printf "test result: browser. %d passed; %d failed; %d ignored\n", p, f, s }' "$e2e_log" | tee -a "$log"
echo "screenshots: $target/e2e-artifacts"

# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test
# binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
