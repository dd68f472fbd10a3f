#!/usr/bin/env python3
"""Checks that TaskFlow's alert rules and Grafana dashboards only query metrics that exist.

Reads the PromQL of every alert rule (deploy/helm/taskflow/files/prometheus/alerts.yaml) and every
dashboard target and variable query (deploy/helm/taskflow/files/dashboards/*.json), extracts the
metric names, strips the histogram suffixes _bucket/_sum/_count, and compares them with the
metric families of a scraped /metrics text. Names in deploy/monitoring/external-metrics.txt
(Prometheus, kube-state-metrics, cAdvisor) are allowed as they are.

Standard library only: crates/taskflow/tests/metric_names.rs runs it with the system python3.

Usage: python3 scripts/check-metric-names.py SCRAPED_METRICS_FILE
       python3 scripts/check-metric-names.py --list   (print the names the rules/dashboards use)
Exit status 0 when every name is known, 1 otherwise (the unknown names are printed).
"""

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy/helm/taskflow/files/prometheus/alerts.yaml"
DASHBOARDS = ROOT / "deploy/helm/taskflow/files/dashboards"
EXTERNAL = ROOT / "deploy/monitoring/external-metrics.txt"

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "atan2", "inf", "nan",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def rule_expressions(text):
    """The `expr:` values of a Prometheus rule file: one-line values and `|`/`>` block scalars."""
    expressions = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        if not match:
            i += 1
            continue
        indent, value = len(match.group(1)), match.group(2).strip()
        if value[:1] in ("|", ">"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            expressions.append(" ".join(block))
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        expressions.append(value)
        i += 1
    return expressions


def dashboard_expressions(path):
    """Every target `expr` and every variable query of a Grafana dashboard JSON."""
    data = json.loads(path.read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append(value)
                elif key == "query" and isinstance(value, str) and "(" in value:
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data.get("panels", []))
    walk(data.get("templating", {}))
    return found


def metric_names(expr):
    """Metric names an expression selects (Grafana variables and label matchers removed)."""
    # Grafana's label_values(metric, label) names a metric as its first argument.
    names = set(re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,", expr))
    text = re.sub(r"label_values\([^)]*\)", " ", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", text)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", text)  # Grafana variables
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def base_name(name):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_list(path):
    if not path.exists():
        return set()
    return {
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }


def exported_families(scrape):
    """Metric family names of a Prometheus text exposition (histogram series folded)."""
    families = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            families.add(base_name(re.split(r"[{\s]", line, maxsplit=1)[0]))
    return families


def used_names():
    """{metric name: [where it is used]} over the alert rules and dashboards."""
    used = {}
    for expr in rule_expressions(ALERTS.read_text()):
        for name in metric_names(expr):
            used.setdefault(name, []).append(ALERTS.name)
    for path in sorted(DASHBOARDS.glob("*.json")):
        for expr in dashboard_expressions(path):
            for name in metric_names(expr):
                used.setdefault(name, []).append(path.name)
    return used


def main(argv):
    if argv[1:] == ["--list"]:
        for name in sorted(used_names()):
            print(name)
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    exported = exported_families(Path(argv[1]).read_text())
    allowed = read_list(EXTERNAL)
    used = used_names()
    if not used:
        print("no metric names found in the alert rules and dashboards", file=sys.stderr)
        return 1
    unknown = {}
    for name, where in sorted(used.items()):
        base = base_name(name)
        if name in allowed or base in exported or name in exported:
            continue
        unknown[name] = sorted(set(where))
    checked = len(used)
    if unknown:
        print(f"{len(unknown)} of {checked} metric names used by alerts/dashboards are not exported:")
        for name, where in unknown.items():
            print(f"  {name}  (used in {', '.join(where)})")
        return 1
    print(f"all {checked} metric names used by alerts and dashboards are exported or allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
