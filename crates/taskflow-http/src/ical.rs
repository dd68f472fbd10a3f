//! Tasks as iCalendar (RFC 5545) VTODOs, written and read with the `icalendar` crate.
//!
//! Export ([`calendar_for`]): one VTODO per task with `UID` `<task id>@taskflow` (stable for
//! the task's life; an imported task keeps the UID it came with, see [`export_uids`]), `SUMMARY`, `DESCRIPTION`, `DUE` in the task's zone (`TZID` = its IANA
//! name), `PRIORITY` mapped onto 1–9 ([`priority_to_ical`]), `CATEGORIES` (tags), `STATUS`
//! (+ `COMPLETED`), `CREATED`, `LAST-MODIFIED`, `SEQUENCE` (version − 1), and for the pending
//! occurrence of a repeating task `DTSTART` (the series start, local) with `RRULE` (a date-only `UNTIL` is written as
//! the UTC instant ending that local day, as RFC 5545 requires with a zoned `DTSTART`) and
//! `X-TASKFLOW-ANCHOR:completion` when the next occurrence follows completion.
//!
//! Import ([`read_calendar`]): every VTODO becomes an [`ImportedTodo`] or a [`Skipped`] with
//! the reason; text that is not iCalendar at all is an error.
//!
//! Reminders map onto VALARM ([`alarm_for`], [`reminder_from_alarm`]): a reminder before the
//! due date is a relative trigger `TRIGGER;RELATED=END:-PT1H` (for a VTODO, END is the due
//! date), one at a fixed instant an absolute trigger `TRIGGER;VALUE=DATE-TIME:…Z`.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone as _, Utc};
use icalendar::{Alarm, Calendar, Component, EventLike, Property, Todo, TodoStatus};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule, Until, resolve_local};
use taskflow_domain::reminder::{Offset, ReminderPlan, ReminderSpec};
use taskflow_domain::{
    Description, NewTask, Priority, RecurrenceSpec, Tag, Tags, Task, TaskId, TaskStatus, TimeZone,
    Title,
};

/// Suffix of the UIDs of exported tasks.
pub const UID_SUFFIX: &str = "@taskflow";

/// Product identifier written into every calendar.
pub const PRODID: &str = "-//TaskFlow//TaskFlow//EN";

/// Local time of day of a due date given as a date only (the end of that day, as quick add).
pub const DATE_ONLY_DUE_TIME: NaiveTime = match NaiveTime::from_hms_opt(23, 59, 0) {
    Some(t) => t,
    None => NaiveTime::MIN,
};

/// The UID of a task: `<task id>@taskflow`.
pub fn task_uid(id: TaskId) -> String {
    format!("{id}{UID_SUFFIX}")
}

/// The UIDs `tasks` are exported under, in their order. A task imported from a VTODO keeps
/// that VTODO's UID, so the calendar it came from recognises it; as one VTODO stands for a
/// whole series, of several occurrences sharing an imported UID only the latest keeps it
/// (a UID names one component of a calendar). Every other task gets [`task_uid`].
pub fn export_uids(tasks: &[Task]) -> Vec<String> {
    let mut latest: HashMap<&str, (u32, TaskId)> = HashMap::new();
    for task in tasks {
        if let Some(uid) = task.ical_uid.as_deref() {
            let entry = latest
                .entry(uid)
                .or_insert((task.occurrence_index, task.id));
            if task.occurrence_index > entry.0 {
                *entry = (task.occurrence_index, task.id);
            }
        }
    }
    tasks
        .iter()
        .map(|task| match task.ical_uid.as_deref() {
            Some(uid) if latest.get(uid).is_some_and(|&(_, id)| id == task.id) => uid.to_owned(),
            _ => task_uid(task.id),
        })
        .collect()
}

/// The task id in one of our UIDs.
pub fn task_id_in_uid(uid: &str) -> Option<TaskId> {
    uid.strip_suffix(UID_SUFFIX)?.parse().ok()
}

/// RFC 5545 PRIORITY (1 highest … 9 lowest, 0 undefined) of a priority: urgent 1, high 3,
/// medium 5, low 7; `None` for no priority (the property is left out).
pub fn priority_to_ical(priority: Priority) -> Option<u32> {
    match priority {
        Priority::Urgent => Some(1),
        Priority::High => Some(3),
        Priority::Medium => Some(5),
        Priority::Low => Some(7),
        Priority::None => None,
    }
}

/// The priority of an RFC 5545 PRIORITY: 1 urgent, 2–4 high, 5 medium, 6–9 low, else none.
pub fn priority_from_ical(value: u32) -> Priority {
    match value {
        1 => Priority::Urgent,
        2..=4 => Priority::High,
        5 => Priority::Medium,
        6..=9 => Priority::Low,
        _ => Priority::None,
    }
}

fn utc_stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

fn local_stamp(at: NaiveDateTime) -> String {
    at.format("%Y%m%dT%H%M%S").to_string()
}

fn zoned(key: &str, local: NaiveDateTime, zone: TimeZone) -> Property {
    let mut property = Property::new(key, local_stamp(local));
    property.add_parameter("TZID", zone.name());
    property
}

/// The VALARM of one reminder; `title` is what the alarm shows.
pub fn alarm_for(spec: &ReminderSpec, title: &str) -> Alarm {
    let mut trigger = match spec {
        ReminderSpec::BeforeDue(offset) => {
            let mut p = Property::new("TRIGGER", format!("-{}", offset.to_iso()));
            p.add_parameter("RELATED", "END");
            p
        }
        ReminderSpec::At(at) => {
            let mut p = Property::new("TRIGGER", utc_stamp(*at));
            p.add_parameter("VALUE", "DATE-TIME");
            p
        }
    };
    // `display` sets ACTION and DESCRIPTION; the TRIGGER is replaced by ours, written exactly.
    Alarm::display(title, chrono::Duration::zero())
        .append_property(trigger.done())
        .done()
}

/// The VALARMs of a reminder plan.
pub fn alarms_for(plan: &ReminderPlan, title: &str) -> Vec<Alarm> {
    plan.specs().iter().map(|s| alarm_for(s, title)).collect()
}

/// The reminder a VALARM describes. `start_is_due` says whether the VTODO's start is its due
/// date (no `DTSTART`, or the same instant), so a trigger relative to the start is one
/// relative to the due date. Errors say why the alarm cannot be a reminder.
pub fn reminder_from_alarm<C: Component>(
    alarm: &C,
    start_is_due: bool,
) -> Result<ReminderSpec, String> {
    let trigger = alarm
        .properties()
        .get("TRIGGER")
        .ok_or("the VALARM has no TRIGGER")?;
    let value = trigger.value().trim();
    let is_date_time = trigger
        .params()
        .get("VALUE")
        .is_some_and(|p| p.value().eq_ignore_ascii_case("DATE-TIME"))
        || (value.len() >= 15 && value.as_bytes().first().is_some_and(u8::is_ascii_digit));
    if is_date_time {
        return parse_utc(value)
            .map(ReminderSpec::At)
            .ok_or_else(|| format!("the trigger `{value}` is not a UTC date-time"));
    }
    let related_end = trigger
        .params()
        .get("RELATED")
        .is_some_and(|p| p.value().eq_ignore_ascii_case("END"));
    if !related_end && !start_is_due {
        return Err("a trigger relative to the start of a to-do that starts before its due date is not supported".into());
    }
    let Some(before) = value.strip_prefix('-') else {
        return Err(format!(
            "the trigger `{value}` fires after the due date; only reminders before it are supported"
        ));
    };
    Offset::parse("TRIGGER", before)
        .map(ReminderSpec::BeforeDue)
        .map_err(|e| e.message)
}

/// The reminder plan of a VTODO's VALARMs, and for each alarm that is not a reminder, why.
pub fn reminder_plan_from_alarms<C: Component>(
    alarms: &[C],
    start_is_due: bool,
) -> (ReminderPlan, Vec<String>) {
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for alarm in alarms.iter().filter(|c| c.component_kind() == "VALARM") {
        match reminder_from_alarm(alarm, start_is_due) {
            Ok(spec) => specs.push(spec),
            Err(why) => problems.push(why),
        }
    }
    match ReminderPlan::new(specs) {
        Ok(plan) => (plan, problems),
        Err(errors) => {
            problems.extend(errors.into_vec().into_iter().map(|e| e.message));
            (ReminderPlan::default(), problems)
        }
    }
}

/// The RRULE text to export: a date-only UNTIL becomes the UTC instant that ends that day in
/// the task's zone (RFC 5545 wants UNTIL in UTC when DTSTART has a zone).
pub fn export_rule(rule: &RecurrenceRule, zone: TimeZone) -> String {
    match rule.until_bound() {
        Some(Until::Date(date)) => {
            let end = date
                .and_hms_opt(23, 59, 59)
                .map(|t| resolve_local(zone.tz(), t));
            let until = end.map_or_else(|| date.format("%Y%m%d").to_string(), utc_stamp);
            rule.as_str()
                .split(';')
                .map(|part| {
                    if part.starts_with("UNTIL=") {
                        format!("UNTIL={until}")
                    } else {
                        part.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(";")
        }
        _ => rule.as_str().to_owned(),
    }
}

/// The VTODO of one task exported under `uid`, stamped at `now`.
pub fn todo_for(task: &Task, uid: &str, now: DateTime<Utc>) -> Todo {
    let mut todo = Todo::new();
    todo.uid(uid)
        .timestamp(now)
        .summary(task.title.as_str())
        .created(task.created_at)
        .last_modified(task.updated_at)
        .sequence(u32::try_from(task.version.saturating_sub(1)).unwrap_or(u32::MAX));
    if !task.description.as_str().is_empty() {
        todo.description(task.description.as_str());
    }
    if let Some(p) = priority_to_ical(task.priority) {
        todo.priority(p);
    }
    if !task.tags.is_empty() {
        todo.categories(task.tags.to_strings());
    }
    let zone = task.time_zone;
    if let Some(due) = task.due_at {
        todo.append_property(zoned(
            "DUE",
            due.with_timezone(&zone.tz()).naive_local(),
            zone,
        ));
    }
    match task.status {
        TaskStatus::Pending => {
            todo.status(TodoStatus::NeedsAction);
        }
        TaskStatus::Completed => {
            todo.status(TodoStatus::Completed);
            todo.percent_complete(100);
            if let Some(at) = task.completed_at {
                todo.completed(at);
            }
        }
        TaskStatus::Skipped => {
            todo.status(TodoStatus::Cancelled);
        }
    }
    // Only the pending occurrence carries the series: completed or skipped occurrences are
    // history, and a second RRULE would show every instance twice in a subscribed calendar.
    if let Some(recurrence) = &task.recurrence
        && task.status == TaskStatus::Pending
    {
        todo.append_property(zoned("DTSTART", recurrence.dtstart, zone));
        todo.add_property("RRULE", export_rule(&recurrence.rule, zone));
        if recurrence.anchor == Anchor::Completion {
            todo.add_property("X-TASKFLOW-ANCHOR", "completion");
        }
    }
    for alarm in alarms_for(&task.reminders, task.title.as_str()) {
        todo.alarm(alarm);
    }
    todo.done()
}

/// A whole calendar of `tasks`, named `name`, stamped at `now`.
pub fn calendar_for(tasks: &[Task], name: &str, now: DateTime<Utc>) -> String {
    let mut calendar = Calendar::new();
    calendar.append_property(Property::new("PRODID", PRODID));
    calendar.name(name);
    calendar.ttl(&chrono::Duration::hours(1));
    for (task, uid) in tasks.iter().zip(export_uids(tasks)) {
        calendar.push(todo_for(task, &uid, now));
    }
    calendar.done().to_string()
}

/// One VTODO that can become a task.
#[derive(Clone, Debug)]
pub struct ImportedTodo {
    /// Its UID.
    pub uid: String,
    /// The task fields.
    pub task: NewTask,
    /// Whether (and when) it was completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Its VALARMs as reminders.
    pub reminders: ReminderPlan,
    /// Parts that were understood but are not carried over, with the reason.
    pub not_applied: Vec<String>,
}

/// A VTODO that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its UID, when it has one.
    pub uid: Option<String>,
    /// 0-based position among the calendar's VTODOs.
    pub index: usize,
    /// Stable code: `missing_uid`, `missing_summary`, `invalid_field`, `cancelled`,
    /// `unsupported_recurrence`, `already_imported`, `already_exists`.
    pub code: &'static str,
    /// Explanation.
    pub reason: String,
}

fn parse_utc(value: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(value.strip_suffix('Z')?, "%Y%m%dT%H%M%S").ok()?;
    Some(Utc.from_utc_datetime(&naive))
}

/// An IANA zone from a TZID, also when a calendar program prefixed it
/// (`/mozilla.org/20050126_1/Europe/Berlin`).
fn zone_from_tzid(tzid: &str) -> Option<TimeZone> {
    let tzid = tzid.trim().trim_matches('"');
    if let Ok(zone) = TimeZone::parse(tzid) {
        return Some(zone);
    }
    let parts: Vec<&str> = tzid.split('/').collect();
    (1..parts.len()).find_map(|i| TimeZone::parse(&parts[i..].join("/")).ok())
}

/// A DATE or DATE-TIME property as an instant; date-only values are due at the end of the
/// day. The zone is the TZID's, else `fallback` (floating times).
fn instant_of(
    property: &Property,
    fallback: TimeZone,
    not_applied: &mut Vec<String>,
) -> Result<(DateTime<Utc>, Option<TimeZone>), String> {
    let value = property.value().trim();
    let key = property.key().to_owned();
    if let Some(at) = parse_utc(value) {
        return Ok((at, None));
    }
    let zone = match property.params().get("TZID") {
        Some(tzid) => match zone_from_tzid(tzid.value()) {
            Some(zone) => Some(zone),
            None => {
                not_applied.push(format!(
                    "{key}: the zone `{}` is unknown; read in {}",
                    tzid.value(),
                    fallback.name()
                ));
                None
            }
        },
        None => None,
    };
    let tz = zone.unwrap_or(fallback);
    if let Ok(local) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
        return Ok((resolve_local(tz.tz(), local), zone));
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y%m%d") {
        return Ok((
            resolve_local(tz.tz(), date.and_time(DATE_ONLY_DUE_TIME)),
            zone,
        ));
    }
    Err(format!(
        "{key} `{value}` is not an iCalendar date or date-time"
    ))
}

/// Turns an imported RRULE into one `RecurrenceRule::parse` accepts: a floating UNTIL
/// (no `Z`) is read in the task's zone and written in UTC.
fn import_rule(text: &str, zone: TimeZone) -> String {
    text.trim()
        .trim_start_matches("RRULE:")
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((key, value))
                if key.eq_ignore_ascii_case("UNTIL")
                    && value.len() == 15
                    && !value.ends_with('Z') =>
            {
                match NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
                    Ok(local) => format!("UNTIL={}", utc_stamp(resolve_local(zone.tz(), local))),
                    Err(_) => part.to_owned(),
                }
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn skipped(
    uid: Option<&str>,
    index: usize,
    code: &'static str,
    reason: impl Into<String>,
) -> Skipped {
    Skipped {
        uid: uid.map(str::to_owned),
        index,
        code,
        reason: reason.into(),
    }
}

fn todo_to_import(
    todo: &Todo,
    index: usize,
    default_zone: TimeZone,
    now: DateTime<Utc>,
) -> Result<ImportedTodo, Skipped> {
    let uid = todo.get_uid().map(str::trim).filter(|u| !u.is_empty());
    let Some(uid) = uid else {
        return Err(skipped(None, index, "missing_uid", "the VTODO has no UID"));
    };
    if uid.chars().count() > 255 {
        return Err(skipped(
            None,
            index,
            "invalid_field",
            "the UID is longer than 255 characters",
        ));
    }
    let some = Some(uid);
    let invalid = |why: String| skipped(some, index, "invalid_field", why);
    let status = todo
        .property_value("STATUS")
        .map(|s| s.trim().to_ascii_uppercase());
    if status.as_deref() == Some("CANCELLED") {
        return Err(skipped(
            some,
            index,
            "cancelled",
            "cancelled to-dos are not imported",
        ));
    }
    let summary = todo.get_summary().unwrap_or_default();
    if summary.trim().is_empty() {
        return Err(skipped(
            some,
            index,
            "missing_summary",
            "the VTODO has no SUMMARY",
        ));
    }
    let title = Title::parse(summary).map_err(|e| invalid(format!("SUMMARY: {}", e.message)))?;
    let description = match todo.get_description() {
        Some(text) => {
            Description::parse(text).map_err(|e| invalid(format!("DESCRIPTION: {}", e.message)))?
        }
        None => Description::default(),
    };
    let priority = todo
        .get_priority()
        .map_or(Priority::None, priority_from_ical);
    let mut not_applied = Vec::new();
    let mut tags = Vec::new();
    for category in todo.get_categories().unwrap_or_default() {
        let candidate = category.trim().to_lowercase();
        if candidate.is_empty() {
            continue;
        }
        match Tag::parse(&candidate) {
            Ok(_) if tags.len() < 30 => {
                if !tags.contains(&candidate) {
                    tags.push(candidate);
                }
            }
            Ok(_) => not_applied.push(format!(
                "CATEGORIES `{category}`: a task has at most 30 tags"
            )),
            Err(e) => not_applied.push(format!("CATEGORIES `{category}`: {}", e.message)),
        }
    }
    let tags = Tags::parse(&tags).map_err(|_| invalid("CATEGORIES are not valid tags".into()))?;

    let due_property = todo.properties().get("DUE");
    let start_property = todo.properties().get("DTSTART");
    let mut zone = None;
    let due = match due_property {
        Some(p) => {
            let (at, z) = instant_of(p, default_zone, &mut not_applied).map_err(invalid)?;
            zone = z;
            Some(at)
        }
        None => None,
    };
    let start = match start_property {
        Some(p) => {
            let (at, z) = instant_of(p, default_zone, &mut not_applied).map_err(invalid)?;
            zone = zone.or(z);
            Some(at)
        }
        None => None,
    };
    let rrule = todo.property_value("RRULE");
    // A repeating to-do without DUE repeats from its start.
    let due = due.or(if rrule.is_some() { start } else { None });
    let task_zone = zone.unwrap_or(default_zone);
    let recurrence = match rrule {
        Some(text) => {
            if due.is_none() {
                return Err(skipped(
                    some,
                    index,
                    "unsupported_recurrence",
                    "a repeating to-do needs DUE or DTSTART",
                ));
            }
            let rule = RecurrenceRule::parse(&import_rule(text, task_zone)).map_err(|e| {
                skipped(some, index, "unsupported_recurrence", format!("RRULE: {e}"))
            })?;
            let anchor = match todo.property_value("X-TASKFLOW-ANCHOR") {
                Some(a) if a.trim().eq_ignore_ascii_case("completion") => Anchor::Completion,
                _ => Anchor::Due,
            };
            Some(RecurrenceSpec { rule, anchor })
        }
        None => None,
    };
    for key in ["RDATE", "EXDATE"] {
        if todo.properties().contains_key(key) || todo.multi_properties().contains_key(key) {
            not_applied.push(format!(
                "{key} is not supported; the rule alone is imported"
            ));
        }
    }
    let completed = status.as_deref() == Some("COMPLETED")
        || todo.get_percent_complete() == Some(100)
        || todo.get_completed().is_some();
    let completed_at = completed.then(|| todo.get_completed().unwrap_or(now));
    let start_is_due = match (start, due) {
        (None, _) => true,
        (Some(s), Some(d)) => s == d,
        (Some(_), None) => false,
    };
    let (reminders, problems) = reminder_plan_from_alarms(todo.components(), start_is_due);
    not_applied.extend(problems.into_iter().map(|p| format!("VALARM: {p}")));
    Ok(ImportedTodo {
        uid: uid.to_owned(),
        task: NewTask {
            title,
            description,
            priority,
            tags,
            due_at: due,
            time_zone: Some(task_zone),
            recurrence,
            reminders: ReminderPlan::default(),
        },
        completed_at,
        reminders,
        not_applied,
    })
}

/// Reads every VTODO of an iCalendar text (one or more VCALENDARs). `Err` when the text is
/// not iCalendar at all; VTODOs that cannot become tasks are [`Skipped`] with the reason.
pub fn read_calendar(
    text: &str,
    default_zone: TimeZone,
    now: DateTime<Utc>,
) -> Result<Vec<Result<ImportedTodo, Skipped>>, String> {
    if !text
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCALENDAR")
    {
        return Err("the body does not start with BEGIN:VCALENDAR".into());
    }
    let calendar: Calendar = text.parse().map_err(|e: String| {
        let first = e
            .lines()
            .next()
            .unwrap_or("unreadable")
            .chars()
            .take(200)
            .collect::<String>();
        format!("the body is not valid iCalendar: {first}")
    })?;
    Ok(calendar
        .todos()
        .enumerate()
        .map(|(i, todo)| todo_to_import(todo, i, default_zone, now))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn round_trip(alarm: Alarm, start_is_due: bool) -> Result<ReminderSpec, String> {
        let mut todo = Todo::new();
        todo.uid("x").alarm(alarm);
        let text = Calendar::new().push(todo.done()).done().to_string();
        let calendar: Calendar = text.parse().unwrap();
        let todo = calendar.todos().next().unwrap();
        reminder_from_alarm(&todo.components()[0], start_is_due)
    }

    #[test]
    fn reminders_before_due_are_relative_triggers_on_the_due_date() {
        let spec = ReminderSpec::BeforeDue(Offset::parse("x", "PT1H").unwrap());
        let text = Calendar::new()
            .push(Todo::new().uid("x").alarm(alarm_for(&spec, "Pay")).done())
            .done()
            .to_string();
        assert!(text.contains("TRIGGER;RELATED=END:-PT1H"), "{text}");
        assert!(text.contains("ACTION:DISPLAY"), "{text}");
        assert_eq!(round_trip(alarm_for(&spec, "Pay"), true).unwrap(), spec);
        // RELATED=END names the due date even when the to-do starts earlier.
        assert_eq!(round_trip(alarm_for(&spec, "Pay"), false).unwrap(), spec);
    }

    #[test]
    fn reminders_at_an_instant_are_absolute_triggers() {
        let at = Utc.with_ymd_and_hms(2027, 1, 3, 8, 0, 0).unwrap();
        let spec = ReminderSpec::At(at);
        let text = Calendar::new()
            .push(Todo::new().uid("x").alarm(alarm_for(&spec, "Pay")).done())
            .done()
            .to_string();
        assert!(
            text.contains("TRIGGER;VALUE=DATE-TIME:20270103T080000Z"),
            "{text}"
        );
        assert_eq!(round_trip(alarm_for(&spec, "Pay"), true).unwrap(), spec);
    }

    #[test]
    fn plans_round_trip_through_valarms_and_odd_alarms_are_explained() {
        let plan = ReminderPlan::new(vec![
            ReminderSpec::BeforeDue(Offset::parse("x", "P1D").unwrap()),
            ReminderSpec::BeforeDue(Offset::parse("x", "PT15M").unwrap()),
            ReminderSpec::At(Utc.with_ymd_and_hms(2027, 5, 1, 6, 30, 0).unwrap()),
        ])
        .unwrap();
        let mut todo = Todo::new();
        todo.uid("x");
        for alarm in alarms_for(&plan, "T") {
            todo.alarm(alarm);
        }
        let text = Calendar::new().push(todo.done()).done().to_string();
        let calendar: Calendar = text.parse().unwrap();
        let parsed = calendar.todos().next().unwrap();
        let (back, problems) = reminder_plan_from_alarms(parsed.components(), true);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(back, plan);

        let odd = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:y\r\n\
                   BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:PT5M\r\nEND:VALARM\r\n\
                   BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-P1Y\r\nEND:VALARM\r\n\
                   BEGIN:VALARM\r\nACTION:DISPLAY\r\nEND:VALARM\r\n\
                   BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT10M\r\nEND:VALARM\r\n\
                   END:VTODO\r\nEND:VCALENDAR\r\n";
        let calendar: Calendar = odd.parse().unwrap();
        let todo = calendar.todos().next().unwrap();
        let (plan, problems) = reminder_plan_from_alarms(todo.components(), true);
        assert_eq!(
            plan.specs(),
            [ReminderSpec::BeforeDue(
                Offset::parse("x", "PT10M").unwrap()
            )]
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        // Relative to a start that is not the due date: not a reminder we can keep.
        let (plan, problems) = reminder_plan_from_alarms(todo.components(), false);
        assert!(plan.is_empty());
        assert_eq!(problems.len(), 4);
    }

    fn repeating_task(now: DateTime<Utc>) -> Task {
        let new = NewTask {
            title: Title::parse("Standup, daily; short").unwrap(),
            description: Description::parse("notes").unwrap(),
            priority: Priority::High,
            tags: Tags::parse(&["work", "team"]).unwrap(),
            due_at: Some(Utc.with_ymd_and_hms(2027, 3, 22, 8, 30, 0).unwrap()),
            time_zone: Some(TimeZone::parse("Europe/Berlin").unwrap()),
            recurrence: Some(RecurrenceSpec {
                rule: RecurrenceRule::parse("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR").unwrap(),
                anchor: Anchor::Completion,
            }),
            reminders: Default::default(),
        };
        Task::create(taskflow_domain::UserId::new(), TimeZone::UTC, new, now).unwrap()
    }

    #[test]
    fn a_task_becomes_a_vtodo_that_reads_back_as_the_same_fields() {
        let now = Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap();
        let task = repeating_task(now);
        let text = calendar_for(std::slice::from_ref(&task), "TaskFlow", now);
        for line in [
            "BEGIN:VTODO",
            "DUE;TZID=Europe/Berlin:20270322T093000",
            "DTSTART;TZID=Europe/Berlin:20270322T093000",
            "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
            "X-TASKFLOW-ANCHOR:completion",
            "PRIORITY:3",
            "STATUS:NEEDS-ACTION",
            "SEQUENCE:0",
            "SUMMARY:Standup\\, daily\\; short",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            text.contains(&format!("UID:{}@taskflow", task.id)),
            "{text}"
        );
        let read = read_calendar(&text, TimeZone::UTC, now).unwrap();
        let imported = read[0].as_ref().unwrap();
        assert_eq!(imported.uid, task_uid(task.id));
        assert_eq!(imported.task.title, task.title);
        assert_eq!(imported.task.due_at, task.due_at);
        assert_eq!(imported.task.time_zone, Some(task.time_zone));
        assert_eq!(imported.task.tags, task.tags);
        assert_eq!(imported.task.priority, task.priority);
        let recurrence = imported.task.recurrence.as_ref().unwrap();
        assert_eq!(recurrence.anchor, Anchor::Completion);
        assert_eq!(recurrence.rule.as_str(), "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR");
        assert!(imported.completed_at.is_none());
        assert!(
            imported.not_applied.is_empty(),
            "{:?}",
            imported.not_applied
        );

        // A completed occurrence is history: exported without the series.
        let done = task.completed(now).unwrap().unwrap().task;
        let text = calendar_for(&[done], "TaskFlow", now);
        assert!(
            text.contains("STATUS:COMPLETED") && text.contains("COMPLETED:20270301T120000Z"),
            "{text}"
        );
        assert!(
            !text.contains("RRULE") && !text.contains("DTSTART"),
            "{text}"
        );
    }

    #[test]
    fn an_imported_uid_names_only_the_latest_occurrence_of_its_series() {
        let now = Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap();
        let mut first = repeating_task(now);
        first.ical_uid = Some("standup@other.example".into());
        let change = first.completed(now).unwrap().unwrap();
        let next = change.next_occurrence.expect("the series goes on");
        assert_eq!(
            next.ical_uid, first.ical_uid,
            "the UID travels with the series"
        );
        let plain = repeating_task(now);
        let tasks = [next.clone(), change.task.clone(), plain.clone()];
        assert_eq!(
            export_uids(&tasks),
            [
                "standup@other.example".to_owned(),
                task_uid(change.task.id),
                task_uid(plain.id),
            ]
        );
    }

    #[test]
    fn priorities_map_onto_one_to_nine_and_back() {
        for p in [
            Priority::Urgent,
            Priority::High,
            Priority::Medium,
            Priority::Low,
        ] {
            assert_eq!(priority_from_ical(priority_to_ical(p).unwrap()), p);
        }
        assert_eq!(priority_to_ical(Priority::None), None);
        assert_eq!(priority_from_ical(0), Priority::None);
        assert_eq!(priority_from_ical(2), Priority::High);
        assert_eq!(priority_from_ical(9), Priority::Low);
    }

    #[test]
    fn date_only_until_is_exported_as_the_utc_end_of_the_local_day() {
        let rule = RecurrenceRule::parse("FREQ=DAILY;UNTIL=20270131").unwrap();
        let zone = TimeZone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            export_rule(&rule, zone),
            "FREQ=DAILY;UNTIL=20270131T225959Z"
        );
        assert_eq!(
            import_rule("FREQ=DAILY;UNTIL=20270131T235959", zone),
            "FREQ=DAILY;UNTIL=20270131T225959Z"
        );
    }

    #[test]
    fn zones_are_found_in_prefixed_tzids() {
        assert_eq!(
            zone_from_tzid("/mozilla.org/20050126_1/Europe/Berlin")
                .unwrap()
                .name(),
            "Europe/Berlin"
        );
        assert!(zone_from_tzid("W. Europe Standard Time").is_none());
    }

    #[test]
    fn text_that_is_not_icalendar_is_an_error() {
        let now = Utc::now();
        assert!(read_calendar("hello", TimeZone::UTC, now).is_err());
        assert!(read_calendar("BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\n", TimeZone::UTC, now).is_err());
    }
}
