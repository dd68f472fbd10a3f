//! Helpers shared by the test modules.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use taskflow_recurrence::{Anchor, RecurrenceRule, Schedule};

/// `YYYYMMDDTHHMMSS` (optionally with a trailing `Z`) or `YYYYMMDD` as a naive wall time.
pub fn wall(s: &str) -> NaiveDateTime {
    let s = s.trim().trim_end_matches('Z');
    if s.len() == 8 {
        NaiveDate::parse_from_str(s, "%Y%m%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
    } else {
        NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S").unwrap()
    }
}

/// A comma-separated list of wall times.
pub fn walls(list: &str) -> Vec<NaiveDateTime> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(wall)
        .collect()
}

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn schedule(rule: &str, tz: Tz, dtstart: &str) -> Schedule {
    let rule = RecurrenceRule::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    Schedule::new(rule, Anchor::Due, tz, wall(dtstart))
}

/// The instances of a due-anchored series from its start (dtstart only if it matches the
/// rule), by chaining `next_after`, at most `max`; the flag says whether the series ended.
pub fn instances(s: &Schedule, max: usize) -> (Vec<DateTime<Utc>>, bool) {
    let mut out = Vec::new();
    let mut current = s.start_utc() - TimeDelta::seconds(1);
    while out.len() < max {
        match s.next_after(current, current, 0).unwrap() {
            Some(next) => {
                assert!(next > current, "not increasing: {next} after {current}");
                out.push(next);
                current = next;
            }
            None => return (out, true),
        }
    }
    (out, false)
}

pub fn local(s: &Schedule, list: &[DateTime<Utc>]) -> Vec<NaiveDateTime> {
    list.iter()
        .map(|t| t.with_timezone(&s.time_zone).naive_local())
        .collect()
}
