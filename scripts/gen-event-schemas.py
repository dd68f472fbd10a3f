#!/usr/bin/env python3
"""Writes docs/events/<type>.schema.json: one JSON Schema (2020-12) per CloudEvent type TaskFlow emits.

Run after changing an event's shape (a new incompatible shape is a new `.vN` type, never an edit).
The Rust tests validate every event the application produces against these files.
"""
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "events"

UUID = {"type": "string", "format": "uuid"}
INSTANT = {"type": "string", "format": "date-time"}
NULLABLE_INSTANT = {"type": ["string", "null"], "format": "date-time"}

TASK_SNAPSHOT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "user_id", "title", "description", "status", "priority", "tags", "due_at", "time_zone",
                 "recurrence", "series_id", "occurrence_index", "created_at", "updated_at", "completed_at", "version"],
    "properties": {
        "id": UUID,
        "user_id": UUID,
        "title": {"type": "string", "minLength": 1, "maxLength": 2000},
        "description": {"type": "string"},
        "status": {"enum": ["pending", "completed", "skipped"]},
        "priority": {"enum": ["none", "low", "medium", "high", "urgent"]},
        "tags": {"type": "array", "maxItems": 30, "items": {"type": "string", "minLength": 1}},
        "due_at": NULLABLE_INSTANT,
        "time_zone": {"type": "string", "minLength": 1},
        "recurrence": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["rule", "anchor", "dtstart"],
                    "properties": {
                        "rule": {"type": "string", "pattern": "^FREQ="},
                        "anchor": {"enum": ["due", "completion"]},
                        "dtstart": {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}"},
                    },
                },
            ]
        },
        "series_id": {"type": ["string", "null"], "format": "uuid"},
        "occurrence_index": {"type": "integer", "minimum": 0},
        "created_at": INSTANT,
        "updated_at": INSTANT,
        "completed_at": NULLABLE_INSTANT,
        "version": {"type": "integer", "minimum": 1},
        "reminders": {
            "type": "array",
            "maxItems": 10,
            "items": {
                "oneOf": [
                    {"type": "object", "additionalProperties": False, "required": ["before_due"],
                     "properties": {"before_due": {"type": "string", "pattern": "^P"}}},
                    {"type": "object", "additionalProperties": False, "required": ["at"],
                     "properties": {"at": INSTANT}},
                ]
            },
        },
    },
}


def envelope(event_type, data, subject_required=True):
    required = ["specversion", "id", "source", "type", "time", "datacontenttype", "partitionkey", "data"]
    if subject_required:
        required.append("subject")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:taskflow:event:{event_type}",
        "title": event_type,
        "description": f"CloudEvents 1.0 structured-mode event of type {event_type}.",
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {
            "specversion": {"const": "1.0"},
            "id": UUID,
            "source": {"const": "/taskflow"},
            "type": {"const": event_type},
            "subject": {"type": "string"},
            "time": INSTANT,
            "datacontenttype": {"const": "application/json"},
            "partitionkey": UUID,
            "traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
            "data": data,
        },
    }


def task_event(kind):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["schema_version", "event_type", "task_id", "user_id", "timestamp", "task_data"],
        "properties": {
            "schema_version": {"const": 1},
            "event_type": {"const": kind},
            "task_id": UUID,
            "user_id": UUID,
            "timestamp": INSTANT,
            "task_data": TASK_SNAPSHOT,
        },
    }


TASK_CHANGED = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "task_id", "user_id", "change", "version", "task", "timestamp"],
    "properties": {
        "schema_version": {"const": 1},
        "task_id": UUID,
        "user_id": UUID,
        "change": {"enum": ["upserted", "deleted"]},
        "version": {"type": "integer", "minimum": 1},
        "task": {"oneOf": [{"type": "null"}, TASK_SNAPSHOT]},
        "timestamp": INSTANT,
    },
}


def reminder_event(extra_required=(), extra=None):
    properties = {
        "schema_version": {"const": 1},
        "reminder_id": UUID,
        "task_id": UUID,
        "user_id": UUID,
        "title": {"type": "string"},
        "due_at": NULLABLE_INSTANT,
        "remind_at": INSTANT,
        "timestamp": INSTANT,
    }
    properties.update(extra or {})
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["schema_version", "reminder_id", "task_id", "user_id", "title", "due_at", "remind_at",
                     "timestamp", *extra_required],
        "properties": properties,
    }


def notification_event(extra_required=(), extra=None):
    properties = {
        "schema_version": {"const": 1},
        "delivery_id": UUID,
        "reminder_id": UUID,
        "task_id": UUID,
        "user_id": UUID,
        "channel": {"enum": ["in_app", "webhook", "email"]},
        "attempts": {"type": "integer", "minimum": 1},
        "timestamp": INSTANT,
    }
    properties.update(extra or {})
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["schema_version", "delivery_id", "reminder_id", "task_id", "user_id", "channel", "attempts",
                     "timestamp", *extra_required],
        "properties": properties,
    }


NOTIFICATION_CREATED = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "user_id", "notification", "timestamp"],
    "properties": {
        "schema_version": {"const": 1},
        "user_id": UUID,
        "timestamp": INSTANT,
        "notification": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "kind", "title", "body", "task_id", "reminder_id", "created_at", "read_at"],
            "properties": {
                "id": UUID,
                "kind": {"enum": ["reminder"]},
                "title": {"type": "string"},
                "body": {"type": "string"},
                "task_id": {"type": ["string", "null"], "format": "uuid"},
                "reminder_id": {"type": ["string", "null"], "format": "uuid"},
                "created_at": INSTANT,
                "read_at": NULLABLE_INSTANT,
            },
        },
    },
}

DEAD_LETTER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dead_letter_id", "consumer", "topic", "event_id", "event_type", "error", "attempts", "event"],
    "properties": {
        "dead_letter_id": UUID,
        "consumer": {"type": "string"},
        "topic": {"type": "string"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "error": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 1},
        "event": {},
    },
}

SCHEMAS = {
    **{f"taskflow.task.{k}.v1": envelope(f"taskflow.task.{k}.v1", task_event(k))
       for k in ["created", "updated", "completed", "reopened", "skipped", "deleted"]},
    "taskflow.task.changed.v1": envelope("taskflow.task.changed.v1", TASK_CHANGED),
    "taskflow.reminder.scheduled.v1": envelope("taskflow.reminder.scheduled.v1", reminder_event(
        ["event_type", "fire_at"], {"event_type": {"const": "reminder.scheduled"}, "fire_at": INSTANT})),
    "taskflow.reminder.cancelled.v1": envelope("taskflow.reminder.cancelled.v1", reminder_event(
        ["event_type", "reason"], {"event_type": {"const": "reminder.cancelled"},
                                   "reason": {"enum": ["task_closed", "task_deleted", "replanned"]}})),
    "taskflow.reminder.due.v1": envelope("taskflow.reminder.due.v1", reminder_event(
        ["event_type", "time_zone", "fire_at", "fired_at", "fire_count", "late_by_ms"],
        {"event_type": {"const": "reminder.due"}, "time_zone": {"type": "string", "minLength": 1},
         "fire_at": INSTANT, "fired_at": INSTANT, "fire_count": {"type": "integer", "minimum": 1},
         "late_by_ms": {"type": "integer", "minimum": 0}})),
    "taskflow.notification.created.v1": envelope("taskflow.notification.created.v1", NOTIFICATION_CREATED),
    "taskflow.notification.delivered.v1": envelope("taskflow.notification.delivered.v1", notification_event()),
    "taskflow.notification.failed.v1": envelope("taskflow.notification.failed.v1", notification_event(
        ["error", "dead"], {"error": {"type": "string"}, "dead": {"type": "boolean"}})),
    "taskflow.deadletter.v1": envelope("taskflow.deadletter.v1", DEAD_LETTER, subject_required=False),
}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, schema in SCHEMAS.items():
        (OUT / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {len(SCHEMAS)} schemas to {OUT}")
