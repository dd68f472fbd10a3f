"""Independent checks of TaskFlow's iCalendar export, driven by crates/taskflow/tests/api/calendar.rs.

    ics_check.py check EXPORT.ics EXPECTED.json   fields of every VTODO against the API's JSON;
                                                  recurrences expanded by dateutil and by
                                                  recurring-ical-events against TaskFlow's preview
    ics_check.py compare A.ics B.ics              the same to-dos (by SUMMARY) with the same fields

Prints one line "ok ..." and exits 0, or prints every difference and exits 1.
"""

import datetime as dt
import json
import sys

import icalendar
import recurring_ical_events
from dateutil import rrule

UTC = dt.timezone.utc
PRIORITY = {"urgent": 1, "high": 3, "medium": 5, "low": 7}


def utc(value):
    """An aware datetime in UTC from an icalendar property value or an RFC 3339 string."""
    if value is None:
        return None
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    if hasattr(value, "dt"):
        value = value.dt
    assert isinstance(value, dt.datetime), f"not a date-time: {value!r}"
    assert value.tzinfo is not None, f"floating date-time: {value!r}"
    return value.astimezone(UTC)


def todos(path):
    with open(path, "rb") as f:
        calendar = icalendar.Calendar.from_ical(f.read())
    return calendar, list(calendar.walk("VTODO"))


def categories(todo):
    found = todo.get("CATEGORIES")
    if found is None:
        return []
    if not isinstance(found, list):
        found = [found]
    return sorted(str(c) for group in found for c in group.cats)


def normal(todo):
    """The fields a round trip must keep, comparable across two exports."""
    due = todo.get("DUE")
    start = todo.get("DTSTART")
    alarms = sorted(str(a.get("TRIGGER").to_ical(), "utf-8") for a in todo.walk("VALARM"))
    return {
        "uid": str(todo.get("UID")),
        "summary": str(todo.get("SUMMARY")),
        "description": str(todo.get("DESCRIPTION", "")),
        "due": utc(due).isoformat() if due is not None else None,
        "due_tzid": due.params.get("TZID") if due is not None else None,
        "dtstart": utc(start).isoformat() if start is not None else None,
        "priority": int(todo.get("PRIORITY", 0)),
        "categories": categories(todo),
        "status": str(todo.get("STATUS")),
        "completed": utc(todo.get("COMPLETED")).isoformat() if todo.get("COMPLETED") else None,
        "rrule": todo.get("RRULE").to_ical().decode() if todo.get("RRULE") else None,
        "anchor": str(todo.get("X-TASKFLOW-ANCHOR", "due")),
        "alarms": alarms,
    }


def check(export_path, expected_path):
    problems = []
    calendar, found = todos(export_path)
    by_uid = {str(t.get("UID")): t for t in found}
    with open(expected_path) as f:
        expected = json.load(f)
    if str(calendar.get("VERSION")) != "2.0" or not calendar.get("PRODID"):
        problems.append("the calendar lacks VERSION:2.0 or PRODID")
    if len(found) != len(expected):
        problems.append(f"{len(found)} VTODOs, expected {len(expected)}")
    expanded = 0
    for task in expected:
        uid = f"{task['id']}@taskflow"
        todo = by_uid.get(uid)
        if todo is None:
            problems.append(f"no VTODO with UID {uid}")
            continue

        def same(what, got, want):
            if got != want:
                problems.append(f"{task['title']!r} {what}: {got!r} != {want!r}")

        same("SUMMARY", str(todo.get("SUMMARY")), task["title"])
        same("DESCRIPTION", str(todo.get("DESCRIPTION", "")), task["description"])
        due = todo.get("DUE")
        same("DUE", utc(due), utc(task["due_at"]))
        if due is not None:
            same("DUE TZID", due.params.get("TZID"), task["time_zone"])
        same("PRIORITY", int(todo.get("PRIORITY", 0)), PRIORITY.get(task["priority"], 0))
        same("CATEGORIES", categories(todo), sorted(task["tags"]))
        status = {"pending": "NEEDS-ACTION", "completed": "COMPLETED", "skipped": "CANCELLED"}
        same("STATUS", str(todo.get("STATUS")), status[task["status"]])
        if task["completed_at"]:
            same("COMPLETED", utc(todo.get("COMPLETED")), utc(task["completed_at"]).replace(microsecond=0))
        same("LAST-MODIFIED", utc(todo.get("LAST-MODIFIED")), utc(task["updated_at"]).replace(microsecond=0))
        same("SEQUENCE", int(todo.get("SEQUENCE")), task["version"] - 1)
        # Reminders: relative ones as a negative duration before DUE, fixed ones as UTC instants.
        triggers = sorted(str(a.get("TRIGGER").to_ical(), "utf-8") for a in todo.walk("VALARM"))
        wanted = []
        for reminder in task.get("reminders", []):
            if "before_due" in reminder:
                wanted.append("-" + reminder["before_due"])
            else:
                wanted.append(utc(reminder["at"]).strftime("%Y%m%dT%H%M%SZ"))
        same("VALARM triggers", triggers, sorted(wanted))
        # Only the pending occurrence of a series carries DTSTART and RRULE.
        recurrence = task["recurrence"] if task["status"] == "pending" else None
        if recurrence is None:
            same("RRULE", todo.get("RRULE"), None)
            continue
        rule_text = todo.get("RRULE").to_ical().decode()
        same("X-TASKFLOW-ANCHOR", str(todo.get("X-TASKFLOW-ANCHOR", "due")), recurrence["anchor"])
        start = todo.get("DTSTART").dt
        same("DTSTART (local)", start.replace(tzinfo=None).isoformat(), recurrence["dtstart"])
        want = [utc(o) for o in task.get("occurrences", [])]
        if not want:
            continue
        # dateutil: the rule from DTSTART, as many instants as TaskFlow previewed.
        rule = rrule.rrulestr(rule_text, dtstart=start)
        got = []
        for instant in rule:
            got.append(instant.astimezone(UTC))
            if len(got) == len(want):
                break
        same("dateutil occurrences", [g.isoformat() for g in got], [w.isoformat() for w in want])
        # recurring-ical-events: the same window over the whole calendar.
        window = recurring_ical_events.of(calendar, components=["VTODO"]).between(
            want[0] - dt.timedelta(seconds=1), want[-1] + dt.timedelta(seconds=1)
        )
        got = sorted(
            utc(o.get("DTSTART")) for o in window if str(o.get("UID")) == uid
        )
        same("recurring-ical-events occurrences", [g.isoformat() for g in got], [w.isoformat() for w in want])
        expanded += 1
    return problems, f"ok {len(expected)} VTODOs, {expanded} recurrences expanded"


def compare(a_path, b_path):
    problems = []
    _, a = todos(a_path)
    _, b = todos(b_path)
    a_fields = sorted((normal(t) for t in a), key=lambda n: n["summary"])
    b_fields = sorted((normal(t) for t in b), key=lambda n: n["summary"])
    if len(a_fields) != len(b_fields):
        problems.append(f"{len(a_fields)} VTODOs against {len(b_fields)}")
    for x, y in zip(a_fields, b_fields):
        for key in x:
            if x[key] != y[key]:
                problems.append(f"{x['summary']!r} {key}: {x[key]!r} != {y[key]!r}")
    return problems, f"ok {len(a_fields)} VTODOs keep their fields"


def main():
    mode, first, second = sys.argv[1:4]
    problems, ok = (check if mode == "check" else compare)(first, second)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(ok)


if __name__ == "__main__":
    main()
