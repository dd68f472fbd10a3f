#!/usr/bin/env python3
"""Writes TaskFlow's Grafana dashboards (deploy/helm/taskflow/files/dashboards/*.json).

The dashboards are data kept in this script so that panels stay uniform; the chart provisions the
generated JSON files as ConfigMaps for Grafana's dashboard sidecar.

Usage: python3 scripts/gen-dashboards.py [--check]
  --check  exit 1 when the committed files differ from what this script generates.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "deploy/helm/taskflow/files/dashboards"
RATE = "$__rate_interval"

# Each dashboard: uid, title, and rows of panels (title, unit, [(legend, PromQL)], kind).
DASHBOARDS = {
    "api": {
        "title": "TaskFlow / API",
        "panels": [
            ("Requests per second by route", "reqps",
             [("{{route}} {{status}}", f'sum by (route, status) (rate(http_requests_total{{pod=~"$pod"}}[{RATE}]))')]),
            ("5xx ratio", "percentunit",
             [("5xx", f'sum(rate(http_requests_total{{status=~"5..", pod=~"$pod"}}[{RATE}])) / sum(rate(http_requests_total{{pod=~"$pod"}}[{RATE}]))')]),
            ("Latency p50 / p99 by route", "s",
             [("p50 {{route}}", f'histogram_quantile(0.5, sum by (le, route) (rate(http_request_duration_seconds_bucket{{pod=~"$pod"}}[{RATE}])))'),
              ("p99 {{route}}", f'histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{{pod=~"$pod"}}[{RATE}])))')]),
            ("Rate-limited requests (429)", "reqps",
             [("{{route}}", f'sum by (route) (rate(http_requests_total{{status="429", pod=~"$pod"}}[{RATE}]))')]),
            ("SQLite group commit size (single-node deployments)", "short",
             [("mean", f'sum(rate(sqlite_group_commit_size_sum[{RATE}])) / sum(rate(sqlite_group_commit_size_count[{RATE}]))')]),
            ("Pod restarts (15 min)", "short",
             [("{{pod}}", 'sum by (pod) (increase(kube_pod_container_status_restarts_total{container="taskflow", pod=~"$pod"}[15m]))')]),
            ("CPU by pod", "short",
             [("{{pod}}", f'sum by (pod) (rate(container_cpu_usage_seconds_total{{container="taskflow", pod=~"$pod"}}[{RATE}]))')]),
            ("Memory by pod", "bytes",
             [("{{pod}}", 'sum by (pod) (container_memory_working_set_bytes{container="taskflow", pod=~"$pod"})')]),
            ("SQLite: queue waits, transactions and commits p99 (single-node deployments)", "s",
             [("queue wait p99", f'histogram_quantile(0.99, sum by (le) (rate(sqlite_write_queue_seconds_bucket[{RATE}])))'),
              ("group transaction p99", f'histogram_quantile(0.99, sum by (le) (rate(sqlite_group_commit_seconds_bucket[{RATE}])))'),
              ("commit (log write and sync) p99", f'histogram_quantile(0.99, sum by (le) (rate(sqlite_commit_seconds_bucket[{RATE}])))'),
              ("checkpoint p99", f'histogram_quantile(0.99, sum by (le) (rate(sqlite_checkpoint_seconds_bucket[{RATE}])))'),
              ("reader queue wait p99", f'histogram_quantile(0.99, sum by (le) (rate(sqlite_read_queue_seconds_bucket[{RATE}])))')]),
        ],
    },
    "events": {
        "title": "TaskFlow / Events",
        "panels": [
            ("Published per second by topic", "ops",
             [("{{topic}} ({{backend}})", f"sum by (topic, backend) (rate(events_published_total[{RATE}]))")]),
            ("Consumed per second by group", "ops",
             [("{{group}} ← {{topic}}", f"sum by (topic, group) (rate(events_consumed_total[{RATE}]))")]),
            ("Consumer lag p99 (creation → consumption)", "s",
             [("{{group}} ← {{topic}}", f"histogram_quantile(0.99, sum by (le, topic, group) (rate(event_consume_delay_seconds_bucket[{RATE}])))")]),
            ("Outbox backlog", "short", [("unpublished rows", "max(outbox_backlog)")]),
            ("Oldest unpublished outbox row", "s", [("age", "max(outbox_oldest_age_seconds)")]),
            ("Outbox publish delay p99", "s",
             [("p99", f"histogram_quantile(0.99, sum by (le) (rate(outbox_publish_delay_seconds_bucket[{RATE}])))")]),
            ("Publish failures per second", "ops",
             [("failures", f"sum(rate(outbox_publish_failures_total[{RATE}]))")]),
            ("Handler failures per second", "ops",
             [("{{group}} ← {{topic}}", f"sum by (topic, group) (rate(event_handler_failures_total[{RATE}]))")]),
            ("Dead-lettered (1 h)", "short",
             [("{{group}} ← {{topic}}", "sum by (topic, group) (increase(events_dead_lettered_total[1h]))")]),
            ("Dapr deliveries dropped (1 h)", "short",
             [("{{topic}}", "sum by (topic) (increase(dapr_deliveries_dropped_total[1h]))")]),
        ],
    },
    "reminders": {
        "title": "TaskFlow / Reminders",
        "panels": [
            ("Pending reminders", "short", [("pending", "sum(reminders_pending)")]),
            ("Fired per second", "ops", [("fired", f"sum(rate(reminders_fired_total[{RATE}]))")]),
            ("Late reminders per second", "ops", [("late", f"sum(rate(reminders_late_total[{RATE}]))")]),
            ("Lateness p50 / p99", "s",
             [("p50", f"histogram_quantile(0.5, sum by (le) (rate(reminder_lateness_seconds_bucket[{RATE}])))"),
              ("p99", f"histogram_quantile(0.99, sum by (le) (rate(reminder_lateness_seconds_bucket[{RATE}])))")]),
            ("Reminder events consumed (reminders topic)", "ops",
             [("{{group}}", f'sum by (group) (rate(events_consumed_total{{topic=~".*reminders"}}[{RATE}]))')]),
            ("Scheduler replicas available", "short",
             [("{{deployment}}", 'sum by (deployment) (kube_deployment_status_replicas_available{deployment=~".*taskflow-scheduler"})')]),
        ],
    },
    "notifications": {
        "title": "TaskFlow / Notifications",
        "panels": [
            ("Deliveries per second by channel and outcome", "ops",
             [("{{channel}} {{outcome}}", f"sum by (channel, outcome) (rate(notification_deliveries_total[{RATE}]))")]),
            ("Failure ratio by channel (alert at 5 %)", "percentunit",
             [("{{channel}}", f'sum by (channel) (rate(notification_deliveries_total{{outcome=~"retry|dead"}}[{RATE}])) / sum by (channel) (rate(notification_deliveries_total[{RATE}]))')]),
            ("Dead deliveries", "short", [("dead", "sum(notification_deliveries_dead)")]),
            ("Notifier handler failures", "ops",
             [("{{group}}", f'sum by (group) (rate(event_handler_failures_total{{topic=~".*reminders"}}[{RATE}]))')]),
            ("Notifier replicas (HPA)", "short",
             [("{{horizontalpodautoscaler}}", 'sum by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas{horizontalpodautoscaler=~".*taskflow-notifier"})')]),
        ],
    },
    "realtime": {
        "title": "TaskFlow / Realtime",
        "panels": [
            ("Open sessions by pod", "short", [("{{pod}}", 'sum by (pod) (realtime_sessions{pod=~"$pod"})')]),
            ("Task updates handler failures", "ops",
             [("{{pod}}", f'sum by (pod) (rate(event_handler_failures_total{{topic=~".*task-updates"}}[{RATE}]))')]),
            ("Update feed lag p99 (task-updates)", "s",
             [("p99", f'histogram_quantile(0.99, sum by (le) (rate(event_consume_delay_seconds_bucket{{topic=~".*task-updates"}}[{RATE}])))')]),
            ("Updates consumed per second", "ops",
             [("{{pod}}", f'sum by (pod) (rate(events_consumed_total{{topic=~".*task-updates"}}[{RATE}]))')]),
        ],
    },
}


def panel(index, title, unit, targets):
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard(uid, spec):
    return {
        "uid": f"taskflow-{uid}",
        "title": spec["title"],
        "tags": ["taskflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                {
                    "name": "pod",
                    "type": "query",
                    "label": "Pod",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(http_requests_total, pod)", "refId": "pods"},
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                },
            ]
        },
        "panels": [panel(i, *p) for i, p in enumerate(spec["panels"])],
    }


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for uid, spec in DASHBOARDS.items():
        text = json.dumps(dashboard(uid, spec), indent=2, ensure_ascii=False) + "\n"
        path = OUT / f"{uid}.json"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("dashboards differ from scripts/gen-dashboards.py; run it:", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
