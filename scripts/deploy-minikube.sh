#!/usr/bin/env bash
# From a running Minikube to a working TaskFlow, in one command:
#   Strimzi with a single-node KRaft Kafka and TaskFlow's topics, Dapr, PostgreSQL, cert-manager,
#   kube-prometheus-stack and Zipkin, the TaskFlow image built inside Minikube, the Helm chart with
#   values-minikube.yaml — then a verification: every rollout finished, /readyz answers, and a task
#   created through the API reaches the audit log through the outbox, Kafka and Dapr.
#
# Idempotent: run it again after a change (helm upgrade --install, kubectl apply, secrets created
# only when missing). Needs minikube, kubectl, helm and curl on PATH, and a started Minikube
# (`minikube start --cpus 4 --memory 8g --cni calico`; Calico enforces the NetworkPolicies).
#
# Environment: SKIP_BUILD=1 reuses the image taskflow:dev already in Minikube; NAMESPACE (taskflow).
set -euo pipefail
cd "$(dirname "$0")/.."

NAMESPACE="${NAMESPACE:-taskflow}"
STRIMZI_VERSION=0.45.0
DAPR_VERSION=1.15.4
CERT_MANAGER_VERSION=v1.16.2
MONITORING_VERSION=66.3.1

say() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "$1 is missing: install it first" >&2; exit 1; }; }
for tool in minikube kubectl helm curl; do need "$tool"; done
minikube status >/dev/null || { echo "Minikube is not running: minikube start --cpus 4 --memory 8g --cni calico" >&2; exit 1; }

namespace() { kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }
# Creates a generic Secret only when it does not exist yet (generated values stay stable).
secret_once() {
  local ns="$1" name="$2"
  shift 2
  if ! kubectl -n "$ns" get secret "$name" >/dev/null 2>&1; then
    kubectl -n "$ns" create secret generic "$name" "$@" >/dev/null
  fi
}
random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

say "Minikube add-ons: ingress, metrics-server"
minikube addons enable ingress >/dev/null
minikube addons enable metrics-server >/dev/null

say "Helm repositories"
helm repo add strimzi https://strimzi.io/charts/ --force-update >/dev/null
helm repo add dapr https://dapr.github.io/helm-charts/ --force-update >/dev/null
helm repo add jetstack https://charts.jetstack.io --force-update >/dev/null
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
helm repo update >/dev/null

for ns in kafka dapr-system postgres monitoring cert-manager "$NAMESPACE"; do namespace "$ns"; done

say "cert-manager $CERT_MANAGER_VERSION and a self-signed ClusterIssuer"
helm upgrade --install cert-manager jetstack/cert-manager -n cert-manager --version "$CERT_MANAGER_VERSION" \
  --set crds.enabled=true --wait --timeout 10m >/dev/null
kubectl apply -f deploy/minikube/selfsigned-issuer.yaml >/dev/null

say "Monitoring: kube-prometheus-stack $MONITORING_VERSION, Zipkin"
helm upgrade --install monitoring prometheus-community/kube-prometheus-stack -n monitoring \
  --version "$MONITORING_VERSION" -f deploy/minikube/monitoring-values.yaml --wait --timeout 15m >/dev/null
kubectl apply -f deploy/minikube/zipkin.yaml >/dev/null

say "PostgreSQL"
secret_once postgres postgres --from-literal=password="$(random)"
kubectl apply -f deploy/minikube/postgres.yaml >/dev/null
kubectl -n postgres rollout status statefulset/postgres --timeout 5m

say "Strimzi $STRIMZI_VERSION, Kafka (KRaft, one node), topics"
helm upgrade --install strimzi strimzi/strimzi-kafka-operator -n kafka --version "$STRIMZI_VERSION" \
  --wait --timeout 10m >/dev/null
kubectl apply -f deploy/kafka/kafka-minikube.yaml >/dev/null
kubectl -n kafka wait kafka/taskflow-kafka --for=condition=Ready --timeout 15m
kubectl apply -f deploy/kafka/topics.yaml >/dev/null
kubectl -n kafka wait kafkatopic --all --for=condition=Ready --timeout 5m

say "Dapr $DAPR_VERSION"
helm upgrade --install dapr dapr/dapr -n dapr-system --version "$DAPR_VERSION" --wait --timeout 10m >/dev/null

say "TaskFlow secrets"
pg_password="$(kubectl -n postgres get secret postgres -o jsonpath='{.data.password}' | base64 -d)"
secret_once "$NAMESPACE" taskflow \
  --from-literal=database-url="postgres://taskflow:${pg_password}@postgres.postgres:5432/taskflow" \
  --from-literal=jwt-secret="$(random)"
secret_once "$NAMESPACE" taskflow-dapr-app-token --from-literal=token="$(random)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "Building the image inside Minikube (taskflow:dev; the first build takes a while)"
  minikube image build -t taskflow:dev -f deploy/Dockerfile .
fi

say "TaskFlow chart"
helm upgrade --install taskflow deploy/helm/taskflow -n "$NAMESPACE" \
  -f deploy/helm/taskflow/values-minikube.yaml --wait --timeout 15m

say "Verification"
for deployment in $(kubectl -n "$NAMESPACE" get deploy -l app.kubernetes.io/instance=taskflow -o name); do
  kubectl -n "$NAMESPACE" rollout status "$deployment" --timeout 5m
done
port=18080
kubectl -n "$NAMESPACE" port-forward svc/taskflow-api "$port:80" >/dev/null 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 60); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 1; done
curl -fsS "$base/readyz" >/dev/null || { echo "/readyz does not answer" >&2; exit 1; }
echo "readyz: ok"

email="smoke-$(date +%s)@example.com"
token="$(curl -fsS -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"minikube smoke test\"}" "$base/api/v1/auth/register" \
  | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')"
[ -n "$token" ] || { echo "registration failed" >&2; exit 1; }
task="$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"title":"Hello from Minikube"}' "$base/api/v1/tasks" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -1)"
[ -n "$task" ] || { echo "creating a task failed" >&2; exit 1; }
echo "created task $task; waiting for the audit consumer (outbox -> relay -> Dapr -> Kafka -> audit)"
for _ in $(seq 1 60); do
  if curl -fsS -H "authorization: Bearer $token" "$base/api/v1/audit?task_id=$task" | grep -q 'taskflow.task.created.v1'; then
    echo "audit entry found: the event went through Kafka and Dapr"
    echo
    echo "TaskFlow is running. API: kubectl -n $NAMESPACE port-forward svc/taskflow-api 8080:80"
    echo "Grafana (admin/taskflow): kubectl -n monitoring port-forward svc/monitoring-grafana 3000:80"
    echo "Zipkin: kubectl -n monitoring port-forward svc/zipkin 9411:9411"
    exit 0
  fi
  sleep 2
done
echo "the task's event did not reach the audit log within 2 minutes; see" >&2
echo "  kubectl -n $NAMESPACE logs deploy/taskflow-relay -c daprd; kubectl -n $NAMESPACE logs deploy/taskflow-audit -c taskflow" >&2
exit 1
