#!/usr/bin/env bash
# Renders and validates TaskFlow's deployment artefacts without a cluster or a Docker engine:
# the Helm chart (rendered by Helm's own engine with every values file, linted, every manifest
# checked against the Kubernetes schemas and the Dapr/Strimzi CRD schemas), the Strimzi and Dapr
# manifests, alert rules and dashboards (promtool), Terraform (parsed), the GitHub workflows
# (actionlint, workflow schema), the Dockerfile (hadolint), shell scripts (shellcheck), YAML style.
#
# Installs its tools idempotently (fast when present): Python packages into
# ${TASKFLOW_DEPLOY_VENV:-$HOME/.cache/taskflow/venv-deploy}, promtool from Debian's prometheus
# package (extracted, not installed: no service is set up), shellcheck from Debian.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

VENV="${TASKFLOW_DEPLOY_VENV:-$HOME/.cache/taskflow/venv-deploy}"
TOOLS="${TASKFLOW_TOOLS:-$HOME/.cache/taskflow/tools}"
REQUIREMENTS=scripts/validate-deploy-requirements.txt
status=0
step() { printf -- '-- %s\n' "$*"; }
failed() { echo "FAILED: $*" >&2; status=1; }

# Python tools: reinstalled only when the requirements file changes.
stamp="$VENV/.requirements.sha256"
wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  step "installing validation tools into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$wanted" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"

# promtool, from Debian's prometheus package without installing the server.
PROMTOOL="$TOOLS/bin/promtool"
if [ ! -x "$PROMTOOL" ]; then
  step "extracting promtool from Debian's prometheus package"
  work="$(mktemp -d)"
  (cd "$work" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$work/root/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$work"
fi
if ! have shellcheck; then
  apt_install shellcheck
fi

step "versions: $(helm_version="$("$VENV/bin/python" -c 'import helm_python as h; print(h.helm_sdk_version())')"; echo "helm SDK $helm_version"), $("$PROMTOOL" --version 2>&1 | head -1 | cut -d' ' -f1-3), hadolint $(hadolint --version | awk '{print $NF}'), actionlint $(actionlint --version | head -1 | awk '{print $NF}'), $(shellcheck --version | sed -n 's/^version: /shellcheck /p'), $(yamllint --version)"

step "chart, manifests, monitoring, Terraform"
"$VENV/bin/python" scripts/validate_deploy.py --promtool "$PROMTOOL" || failed "scripts/validate_deploy.py"

step "metric-name checker refuses an empty scrape"
empty="$(mktemp)"
if python3 scripts/check-metric-names.py "$empty" >/dev/null 2>&1; then
  failed "check-metric-names.py accepted a scrape without any metric"
fi
rm -f "$empty"

step "hadolint deploy/Dockerfile"
hadolint --config deploy/.hadolint.yaml deploy/Dockerfile || failed "hadolint"

step "actionlint .github/workflows"
actionlint -no-color -oneline || failed "actionlint"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml || failed "workflow schema"

step "shellcheck scripts"
shellcheck -x scripts/validate-deploy.sh scripts/deploy-minikube.sh || failed "shellcheck"

step "yamllint"
yamllint --strict -c .yamllint.yaml deploy .github || failed "yamllint"

if [ "$status" -ne 0 ]; then
  echo "deployment artefacts: validation FAILED" >&2
else
  echo "deployment artefacts: validation passed"
fi
exit "$status"
