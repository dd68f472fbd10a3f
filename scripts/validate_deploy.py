#!/usr/bin/env python3
"""Renders and validates TaskFlow's deployment artefacts. Run by scripts/validate-deploy.sh, which
installs the tools this needs into a virtualenv first.

What it checks:
- The Helm chart renders (with Helm's own Go engine, through helm-python-sdk) with every values
  file and several value combinations; combinations the chart must refuse are refused.
- `helm lint --strict` passes for every values file.
- Every rendered manifest, and every manifest under deploy/kafka and deploy/dapr, validates:
  Kubernetes kinds against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown
  fields are errors), Dapr / Strimzi / Prometheus Operator kinds against deploy/schemas/ (unknown
  fields are errors unless the schema preserves them).
- The chart README documents every value of values.yaml.
- The stdlib PromQL extraction of scripts/check-metric-names.py sees the same expressions a YAML
  parser sees, and the committed dashboards are what scripts/gen-dashboards.py generates.
- The alert rules, and the dashboards' PromQL, pass `promtool check rules` (when promtool is given).
- Terraform files parse (python-hcl2), every `var.x` is declared and every declared variable is used.

Usage: validate_deploy.py [--promtool PATH]
Exit status 0 when everything passes.
"""

import copy
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import hcl2
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/taskflow"
SCHEMAS = ROOT / "deploy/schemas"
KUBERNETES_VERSION = "1.31.0"
sys.path.insert(0, str(ROOT / "scripts"))

failures = []
expecting_failure = False


def fail(message):
    failures.append(message)
    print(f"  {'caught' if expecting_failure else 'FAIL'} {message}")


def ok(message):
    print(f"  ok   {message}")


def merge(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_values(*files):
    values = {}
    for name in files:
        values = merge(values, yaml.safe_load((CHART / name).read_text()) or {})
    return values


# Value sets the chart must render: (label, values).
RENDER_CASES = [
    ("values.yaml (defaults)", {}),
    ("values-minikube.yaml", load_values("values-minikube.yaml")),
    ("values-cloud.yaml", load_values("values-cloud.yaml")),
    ("values-managed-kafka.yaml", load_values("values-managed-kafka.yaml")),
    ("minikube + Redis pub/sub", load_values("values-minikube.yaml") | {"dapr": merge(load_values("values-minikube.yaml")["dapr"], {"pubsub": {"type": "redis", "redis": {"passwordSecret": "redis"}}})}),
    ("NATS bus without Dapr", {"bus": {"backend": "nats"}, "dapr": {"enabled": False}}),
    ("cloud + state store + prefixed topics + separate realtime", merge(load_values("values-cloud.yaml"), {"dapr": {"stateStore": {"enabled": True}}, "bus": {"topicPrefix": "prod."}, "components": {"realtime": {"enabled": True}}})),
    ("Kafka bus, SASL through Dapr component", merge(load_values("values-cloud.yaml"), {"dapr": {"pubsub": {"kafka": {"authType": "password", "saslSecret": "kafka-sasl", "tls": True}}}})),
    ("one process, in-memory bus", {
        "bus": {"backend": "memory"}, "dapr": {"enabled": False},
        "components": {
            "api": {"roles": ["api", "relay", "audit", "realtime", "scheduler", "notifier"], "replicas": 1,
                    "autoscaling": {"enabled": False}},
            "relay": {"enabled": False}, "scheduler": {"enabled": False},
            "notifier": {"enabled": False}, "audit": {"enabled": False},
        },
    }),
    ("Recreate rollout (switching the bus kind)", {"updateStrategy": "Recreate", "bus": {"backend": "nats"}}),
    ("everything optional off", {"ingress": {"enabled": False}, "networkPolicy": {"enabled": False},
                                 "metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False},
                                             "grafanaDashboards": {"enabled": False}},
                                 "migrations": {"enabled": False}, "serviceAccount": {"create": False},
                                 "dapr": {"enabled": False}, "bus": {"backend": "nats"}}),
]

# Value sets the chart must refuse: (label, values, words the error must contain).
REFUSE_CASES = [
    ("in-memory bus with several Deployments", {"bus": {"backend": "memory"}, "dapr": {"enabled": False}}, "memory"),
    ("an autoscaled relay", {"components": {"relay": {"autoscaling": {"enabled": True}}}}, "relay"),
    ("consumers beyond the partitions", {"bus": {"partitions": 3}}, "partitions"),
    ("Dapr bus without Dapr", {"dapr": {"enabled": False}}, "dapr.enabled"),
    ("unknown bus", {"bus": {"backend": "rabbitmq"}, "dapr": {"enabled": False}}, "bus.backend"),
    ("unknown update strategy", {"updateStrategy": "BlueGreen"}, "updateStrategy"),
]


def render(values):
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name="taskflow", namespace="taskflow", is_install=True)


def documents(text, origin):
    for doc in yaml.safe_load_all(text):
        if doc:
            yield origin, doc


def schema_for(doc):
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    path = SCHEMAS / f"{group}_{version}_{doc.get('kind')}.yaml"
    return path if group and path.exists() else None


def structural(schema):
    """A CRD structural schema as JSON Schema where undeclared fields are errors."""
    if isinstance(schema, list):
        return [structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: structural(v) for k, v in schema.items() if k != "x-kubernetes-preserve-unknown-fields"}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    return out


SCHEMA_CACHE = {}


def validate_custom(doc, path):
    if path not in SCHEMA_CACHE:
        SCHEMA_CACHE[path] = jsonschema.Draft7Validator(structural(yaml.safe_load(path.read_text())))
    errors = sorted(SCHEMA_CACHE[path].iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


def validate_document(origin, doc):
    label = f"{origin}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    schema = schema_for(doc)
    if schema:
        errors = validate_custom(doc, schema)
    elif "." in doc.get("apiVersion", "").split("/")[0] and not doc["apiVersion"].split("/")[0].endswith("k8s.io"):
        errors = [f"no schema for {doc['apiVersion']} {doc.get('kind')} in deploy/schemas/"]
    else:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            errors = []
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            errors = [str(getattr(error, "message", error))]
    for error in errors:
        fail(f"{label}: {error}")
    return not errors


# Manifests each with one mistake the validators must catch (so a passing run means something).
BROKEN = [
    ("misspelt probe field", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
            "containers": [{"name": "c", "image": "i", "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSecond": 3}}]}}}}),
    ("Dapr metadata item with a typo", {"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "x"},
                                        "spec": {"type": "pubsub.kafka", "version": "v1", "metadata": [{"name": "a", "valu": "b"}]}}),
    ("Resiliency retries as a string", {"apiVersion": "dapr.io/v1alpha1", "kind": "Resiliency", "metadata": {"name": "x"},
                                        "spec": {"policies": {"retries": {"a": {"maxRetries": "3"}}}, "targets": {}}}),
    ("Subscription without routes", {"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription", "metadata": {"name": "x"},
                                     "spec": {"pubsubname": "p", "topic": "t", "route": "/r"}}),
    ("KafkaTopic with 0 partitions", {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic", "metadata": {"name": "x"},
                                      "spec": {"partitions": 0}}),
    ("Kafka listener on a reserved port", {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "Kafka", "metadata": {"name": "x"},
                                           "spec": {"kafka": {"listeners": [{"name": "plain", "port": 9000, "type": "internal", "tls": False}]}}}),
    ("unknown custom resource", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}),
]


def check_validators_bite():
    global expecting_failure
    print("== The validators reject broken manifests")
    for label, doc in BROKEN:
        before = len(failures)
        expecting_failure = True
        caught = not validate_document("self-test", doc)
        expecting_failure = False
        del failures[before:]
        if caught:
            ok(f"rejects: {label}")
        else:
            fail(f"the validators accepted a broken manifest: {label}")


def check_chart():
    print("== Helm chart: render and validate")
    kinds = set()
    for label, values in RENDER_CASES:
        try:
            rendered = render(values)
        except Exception as error:  # noqa: BLE001 - report every render failure
            fail(f"render {label}: {error}")
            continue
        count = good = 0
        for template, text in sorted(rendered.items()):
            if not template.endswith((".yaml", ".yml")) or not text.strip():
                continue
            try:
                docs = list(documents(text, template))
            except yaml.YAMLError as error:
                fail(f"{label}: {template} is not YAML: {error}")
                continue
            for origin, doc in docs:
                count += 1
                kinds.add(doc.get("kind"))
                good += validate_document(f"{label}: {origin}", doc)
                if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
                    check_settings_env(label, doc.get("data", {}))
        ok(f"{label}: {good}/{count} manifests valid")
    ok("kinds rendered: " + ", ".join(sorted(k for k in kinds if k)))
    for strategy in ["RollingUpdate", "Recreate"]:
        rendered = render({"updateStrategy": strategy})
        types = {
            doc["spec"]["strategy"]["type"]
            for template, text in rendered.items()
            if template.endswith((".yaml", ".yml")) and text.strip()
            for _, doc in documents(text, template)
            if doc.get("kind") == "Deployment"
        }
        if types == {strategy}:
            ok(f"updateStrategy {strategy}: every Deployment rolls out with it")
        else:
            fail(f"updateStrategy {strategy}: Deployments roll out with {sorted(types)}")
    for label, values, words in REFUSE_CASES:
        try:
            render(values)
            fail(f"the chart rendered `{label}`, which it must refuse")
        except Exception as error:  # noqa: BLE001
            if words in str(error):
                ok(f"refuses {label}")
            else:
                fail(f"`{label}` failed for another reason: {error}")
    print("== helm lint --strict")
    for values_file in ["values.yaml", "values-minikube.yaml", "values-cloud.yaml", "values-managed-kafka.yaml"]:
        values = {} if values_file == "values.yaml" else load_values(values_file)
        report = helm.lint(str(CHART), values, strict=True, namespace="taskflow", kube_version=KUBERNETES_VERSION)
        problems = [m for m in report.get("messages", []) if m.get("severity") not in ("INFO", 1, "1")]
        infos = [m for m in report.get("messages", []) if m not in problems]
        if problems:
            for message in problems:
                fail(f"helm lint ({values_file}): {message}")
        else:
            ok(f"helm lint {values_file}" + (f" ({len(infos)} info)" if infos else ""))


# Settings keys the binary knows, from crates/taskflow/src/settings.rs and the backends' structs.
def known_settings():
    sources = [
        "crates/taskflow/src/settings.rs", "crates/taskflow-http/src/auth.rs",
        "crates/taskflow-http/src/rate_limit.rs", "crates/taskflow-bus/src/backends/kafka.rs",
        "crates/taskflow-bus/src/backends/nats.rs", "crates/taskflow-bus/src/backends/dapr/mod.rs",
        "crates/taskflow-bus/src/lib.rs",
    ]
    fields = set()
    for source in sources:
        fields |= set(re.findall(r"^\s*pub (\w+):", (ROOT / source).read_text(), re.M))
    return fields


SETTINGS_FIELDS = None


def check_settings_env(label, data):
    """Every TASKFLOW_A__B key of the ConfigMap names fields that exist (the binary refuses unknown ones)."""
    global SETTINGS_FIELDS
    if SETTINGS_FIELDS is None:
        SETTINGS_FIELDS = known_settings()
    for key in data:
        if not key.startswith("TASKFLOW_"):
            fail(f"{label}: ConfigMap key {key} is not a TASKFLOW_ setting")
            continue
        for part in key[len("TASKFLOW_"):].lower().split("__"):
            if part not in SETTINGS_FIELDS and part not in {"bus", "database", "log", "auth", "rate_limit", "secrets", "topics", "kafka", "nats", "dapr"}:
                fail(f"{label}: {key}: `{part}` is not a settings field the binary knows")


def check_static_manifests():
    print("== Strimzi, Dapr and Minikube manifests")
    manifests = sorted((ROOT / "deploy/kafka").glob("*.yaml")) + sorted((ROOT / "deploy/dapr").rglob("*.yaml"))
    manifests += [p for p in sorted((ROOT / "deploy/minikube").glob("*.yaml")) if not p.name.endswith("-values.yaml")]
    for path in manifests:
        docs = list(documents(path.read_text(), str(path.relative_to(ROOT))))
        good = sum(validate_document(origin, doc) for origin, doc in docs)
        ok(f"{path.relative_to(ROOT)}: {good}/{len(docs)} valid")
    topics = {d["spec"]["topicName"]: d["spec"] for _, d in documents((ROOT / "deploy/kafka/topics.yaml").read_text(), "topics")}
    wanted = {"task-events", "reminders", "task-updates"}
    missing = {t for t in wanted | {f"{t}.dlq" for t in wanted}} - set(topics)
    if missing:
        fail(f"deploy/kafka/topics.yaml lacks {sorted(missing)}")
    elif topics["task-events"]["partitions"] != 12:
        fail("task-events must have 12 partitions")
    elif not all("retention.ms" in spec.get("config", {}) for spec in topics.values()):
        fail("every KafkaTopic needs retention.ms")
    else:
        ok("topics: task-events (12 partitions), reminders, task-updates and their .dlq, all with retention")


def value_paths(node, prefix=""):
    """Documented value paths: leaves, with free-form maps and lists as leaves and components.<name>."""
    free_form = {"resources", "podSecurityContext", "containerSecurityContext", "annotations", "labels",
                 "topicsByRole", "extraEnv", "nodeSelector", "affinity", "podAnnotations", "commonLabels",
                 "ingressControllerNamespaceSelector", "monitoringNamespaceSelector", "daprNamespaceSelector",
                 "namespaceSelector", "sidecarResources"}
    if isinstance(node, dict) and node and prefix.rsplit(".", 1)[-1] not in free_form:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if prefix == "components":
                path = "components.<name>"
            yield from value_paths(value, path)
    else:
        yield prefix


def check_readme():
    print("== Chart README documents every value")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_.<>]+)`", readme))
    paths = sorted(set(value_paths(values)))
    missing = [p for p in paths if p not in documented]
    for path in missing:
        fail(f"deploy/helm/taskflow/README.md does not list the value `{path}`")
    if not missing:
        ok(f"all {len(paths)} values listed")


def check_monitoring(promtool):
    print("== Alert rules and dashboards")
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_metric_names", ROOT / "scripts/check-metric-names.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    alerts_text = checker.ALERTS.read_text()
    parsed = [r["expr"].strip() for g in yaml.safe_load(alerts_text)["groups"] for r in g["rules"]]
    extracted = [e.strip() for e in checker.rule_expressions(alerts_text)]
    normalise = lambda e: " ".join(e.split())  # noqa: E731
    if [normalise(e) for e in parsed] != [normalise(e) for e in extracted]:
        fail("check-metric-names.py reads the alert expressions differently from a YAML parser")
    else:
        ok(f"{len(parsed)} alert expressions read alike by the checker and by YAML")
    headings = {h.strip().lower() for h in re.findall(r"^### (.+)$", (ROOT / "docs/operations.md").read_text(), re.M)}
    linked = True
    for group in yaml.safe_load(alerts_text)["groups"]:
        for rule in group["rules"]:
            url = rule.get("annotations", {}).get("runbook_url", "")
            anchor = url.partition("#")[2]
            if "docs/operations.md#" not in url or anchor not in headings:
                fail(f"alert {rule['alert']}: runbook_url {url!r} does not name a `### …` section of docs/operations.md")
                linked = False
    if linked:
        ok("every alert links to a runbook section of docs/operations.md")
    generated = subprocess.run([sys.executable, str(ROOT / "scripts/gen-dashboards.py"), "--check"], capture_output=True, text=True)
    if generated.returncode:
        fail(generated.stdout + generated.stderr)
    else:
        ok("dashboards are what scripts/gen-dashboards.py generates")
    if not promtool:
        fail("promtool not given: alert rules and dashboard PromQL not checked")
        return
    result = subprocess.run([promtool, "check", "rules", str(checker.ALERTS)], capture_output=True, text=True)
    if result.returncode:
        fail(f"promtool check rules alerts.yaml:\n{result.stdout}{result.stderr}")
    else:
        ok("promtool check rules: alerts.yaml")
    rules = []
    for path in sorted(checker.DASHBOARDS.glob("*.json")):
        for i, expr in enumerate(checker.dashboard_expressions(path)):
            if expr.startswith("label_values("):
                continue
            promql = expr.replace("$__rate_interval", "5m").replace("$pod", ".*")
            rules.append({"record": f"dashboard:{path.stem}:{i}", "expr": promql})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, handle)
    result = subprocess.run([promtool, "check", "rules", handle.name], capture_output=True, text=True)
    Path(handle.name).unlink()
    if result.returncode:
        fail(f"dashboard PromQL does not parse:\n{result.stdout}{result.stderr}")
    else:
        ok(f"promtool parses all {len(rules)} dashboard queries")


def check_terraform():
    print("== Terraform")
    folders = sorted({p.parent for p in (ROOT / "deploy/terraform").rglob("*.tf")})
    if not folders:
        fail("no Terraform under deploy/terraform")
    for folder in folders:
        declared, used, outputs = set(), set(), set()
        for path in sorted(folder.glob("*.tf")):
            text = path.read_text()
            try:
                parsed = hcl2.loads(text)
            except Exception as error:  # noqa: BLE001
                fail(f"{path.relative_to(ROOT)} does not parse: {error}")
                continue
            for block in parsed.get("variable", []):
                declared |= {k.strip('"') for k in block}
            for block in parsed.get("output", []):
                outputs |= {k.strip('"') for k in block}
            used |= set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", text))
        name = folder.relative_to(ROOT)
        if used - declared:
            fail(f"{name}: undeclared variables {sorted(used - declared)}")
        if declared - used:
            fail(f"{name}: variables never used {sorted(declared - used)}")
        if not outputs:
            fail(f"{name}: no outputs")
        if not (used - declared or declared - used) and outputs:
            ok(f"{name}: parses; {len(declared)} variables all declared and used; outputs: {', '.join(sorted(outputs))}")


def check_dockerfile_inputs():
    """The Dockerfile's dependency layer copies every crate's manifest, and the build gets the
    web UI's sources (taskflow-web embeds web/ at compile time)."""
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    for manifest in sorted((ROOT / "crates").glob("*/Cargo.toml")):
        relative = manifest.relative_to(ROOT).as_posix()
        if f"COPY {relative} {relative}" not in dockerfile:
            fail(f"deploy/Dockerfile does not copy {relative} into the dependency layer")
    if "COPY web web" not in dockerfile or "!web/" not in ignore:
        fail("the image build does not get web/ (COPY web web and !web/ in .dockerignore)")
    ok("Dockerfile copies every crate manifest and the web UI sources")


def main(argv):
    promtool = argv[argv.index("--promtool") + 1] if "--promtool" in argv else None
    check_validators_bite()
    check_chart()
    check_static_manifests()
    check_readme()
    check_monitoring(promtool)
    check_terraform()
    check_dockerfile_inputs()
    if failures:
        print(f"\n{len(failures)} problem(s) found")
        return 1
    print("\ndeployment artefacts: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
