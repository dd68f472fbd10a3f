//! Quiet hours: a daily wall-clock window in the user's time zone during which notifications
//! wait instead of going out.
//!
//! The window is `[start, end)` in local wall-clock time and may wrap midnight (22:00–07:00);
//! `start == end` means no quiet hours. Membership is decided by the wall-clock time the user's
//! clock shows at the instant, so on the night clocks fall back a repeated hour is quiet (or
//! not) both times it is shown. The release instant is the next time the clock shows `end`:
//!
//! - `end` in a spring-forward gap (02:30 on a day that jumps from 02:00 to 03:00): the first
//!   instant after the gap (03:00 in the new offset);
//! - `end` shown twice (fall-back): the earlier of the two that is still after the instant.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A daily quiet window in local wall-clock time, to the minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuietHours {
    /// First quiet minute.
    #[serde(
        serialize_with = "serialize_hhmm",
        deserialize_with = "deserialize_hhmm"
    )]
    start: NaiveTime,
    /// First minute no longer quiet.
    #[serde(
        serialize_with = "serialize_hhmm",
        deserialize_with = "deserialize_hhmm"
    )]
    end: NaiveTime,
}

impl QuietHours {
    /// Quiet from `start` until `end` (both truncated to the minute).
    pub fn new(start: NaiveTime, end: NaiveTime) -> Self {
        Self {
            start: to_minute(start),
            end: to_minute(end),
        }
    }

    /// Parses `HH:MM` times (24-hour clock), e.g. `("22:00", "07:00")`.
    pub fn parse(start: &str, end: &str) -> Result<Self, InvalidQuietHours> {
        Ok(Self::new(parse_hhmm(start)?, parse_hhmm(end)?))
    }

    /// First quiet minute.
    pub fn start(&self) -> NaiveTime {
        self.start
    }

    /// First minute no longer quiet.
    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// Whether the window is empty (`start == end`): never quiet.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether the wall-clock time `time` is quiet.
    pub fn contains(&self, time: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// `None` if `instant` is not within quiet hours in `tz`; otherwise the instant they end
    /// (see the module docs for DST transitions). The result is always after `instant`.
    pub fn release_at(&self, tz: Tz, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = instant.with_timezone(&tz).naive_local();
        let time = local.time();
        if !self.contains(time) {
            return None;
        }
        // In a wrapping window the part before midnight ends tomorrow.
        let end_date = if self.start > self.end && time >= self.start {
            local.date().succ_opt()?
        } else {
            local.date()
        };
        first_instant_showing(tz, end_date.and_time(self.end), instant)
    }

    /// When a notification due at `instant` may go out: `instant` itself outside quiet hours,
    /// else the end of the quiet hours.
    pub fn next_allowed(&self, tz: Tz, instant: DateTime<Utc>) -> DateTime<Utc> {
        self.release_at(tz, instant).unwrap_or(instant)
    }
}

/// The first instant after `after` at which clocks in `tz` show `wall` (or, if they skip it,
/// the first instant after the skipped stretch).
fn first_instant_showing(
    tz: Tz,
    wall: NaiveDateTime,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => {
            let (first, second) = (first.with_timezone(&Utc), second.with_timezone(&Utc));
            let (earlier, later) = (first.min(second), first.max(second));
            Some(if earlier > after { earlier } else { later })
        }
        LocalResult::None => {
            // A gap: the clocks jump over `wall`. Transitions of every zone in use fall on a
            // whole minute, so the first wall-clock minute that exists again is the instant
            // the gap ends. Gaps are at most a day long (Samoa, 2011).
            (1..=2 * 24 * 60).find_map(|minutes| {
                tz.from_local_datetime(&(wall + TimeDelta::minutes(minutes)))
                    .earliest()
                    .map(|at| at.with_timezone(&Utc))
            })
        }
    }
}

impl fmt::Display for QuietHours {
    /// `22:00-07:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

impl FromStr for QuietHours {
    type Err = InvalidQuietHours;

    /// Parses `HH:MM-HH:MM`, e.g. `22:00-07:00`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (start, end) = text.split_once('-').ok_or_else(|| {
            InvalidQuietHours(format!(
                "`{}` is not a range; use HH:MM-HH:MM such as 22:00-07:00",
                shorten(text)
            ))
        })?;
        Self::parse(start, end)
    }
}

/// A quiet-hours time that is not `HH:MM`; the text says what was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuietHours(String);

fn parse_hhmm(text: &str) -> Result<NaiveTime, InvalidQuietHours> {
    let trimmed = text.trim();
    let well_formed = trimmed.len() == 5
        && trimmed.as_bytes()[2] == b':'
        && trimmed
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 2 || b.is_ascii_digit());
    well_formed
        .then(|| NaiveTime::parse_from_str(trimmed, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| {
            InvalidQuietHours(format!(
                "`{}` is not a time of day; use HH:MM on a 24-hour clock such as 22:00 or 07:30",
                shorten(text)
            ))
        })
}

fn to_minute(time: NaiveTime) -> NaiveTime {
    NaiveTime::from_hms_opt(time.hour(), time.minute(), 0).unwrap_or(time)
}

fn shorten(text: &str) -> String {
    text.chars().take(32).collect()
}

fn serialize_hhmm<S: Serializer>(time: &NaiveTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&time.format("%H:%M"))
}

fn deserialize_hhmm<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_hhmm(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn quiet(start: &str, end: &str) -> QuietHours {
        QuietHours::parse(start, end).unwrap()
    }

    /// `release_at` of `hours` in `tz` for each `(instant, expected release)`, all RFC 3339.
    fn check(hours: QuietHours, tz: Tz, cases: &[(&str, Option<&str>)]) {
        for (instant, expected) in cases {
            let released = hours.release_at(tz, utc(instant));
            assert_eq!(
                released,
                expected.map(utc),
                "{hours} in {tz} at {instant}: got {:?}",
                released.map(|r| r.with_timezone(&tz).to_rfc3339())
            );
            if let Some(released) = released {
                assert!(released > utc(instant));
            }
        }
    }

    #[test]
    fn window_wrapping_midnight() {
        check(
            quiet("22:00", "07:00"),
            Berlin,
            &[
                ("2026-01-15T21:59:59+01:00", None),
                (
                    "2026-01-15T22:00:00+01:00",
                    Some("2026-01-16T07:00:00+01:00"),
                ),
                (
                    "2026-01-15T23:30:00+01:00",
                    Some("2026-01-16T07:00:00+01:00"),
                ),
                (
                    "2026-01-16T00:00:00+01:00",
                    Some("2026-01-16T07:00:00+01:00"),
                ),
                (
                    "2026-01-16T06:59:59+01:00",
                    Some("2026-01-16T07:00:00+01:00"),
                ),
                ("2026-01-16T07:00:00+01:00", None),
                ("2026-01-16T12:00:00+01:00", None),
                // Month and year ends.
                (
                    "2026-12-31T23:00:00+01:00",
                    Some("2027-01-01T07:00:00+01:00"),
                ),
            ],
        );
    }

    #[test]
    fn window_within_one_day() {
        check(
            quiet("12:00", "14:30"),
            New_York,
            &[
                ("2026-06-01T11:59:00-04:00", None),
                (
                    "2026-06-01T12:00:00-04:00",
                    Some("2026-06-01T14:30:00-04:00"),
                ),
                (
                    "2026-06-01T14:29:59-04:00",
                    Some("2026-06-01T14:30:00-04:00"),
                ),
                ("2026-06-01T14:30:00-04:00", None),
                ("2026-06-01T23:00:00-04:00", None),
            ],
        );
    }

    #[test]
    fn equal_start_and_end_means_never_quiet() {
        let none = quiet("08:00", "08:00");
        assert!(none.is_empty());
        for instant in ["2026-01-15T08:00:00+01:00", "2026-01-15T03:00:00+01:00"] {
            assert_eq!(none.release_at(Berlin, utc(instant)), None);
            assert_eq!(none.next_allowed(Berlin, utc(instant)), utc(instant));
        }
    }

    #[test]
    fn berlin_spring_forward() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST.
        check(
            quiet("22:00", "07:00"),
            Berlin,
            &[
                // Eight real hours, nine on the wall clock.
                (
                    "2026-03-28T23:00:00+01:00",
                    Some("2026-03-29T07:00:00+02:00"),
                ),
                (
                    "2026-03-29T01:59:00+01:00",
                    Some("2026-03-29T07:00:00+02:00"),
                ),
                (
                    "2026-03-29T03:00:00+02:00",
                    Some("2026-03-29T07:00:00+02:00"),
                ),
            ],
        );
        // The end falls into the gap: released when the gap ends, at 03:00 CEST.
        check(
            quiet("23:00", "02:30"),
            Berlin,
            &[
                (
                    "2026-03-29T01:30:00+01:00",
                    Some("2026-03-29T03:00:00+02:00"),
                ),
                (
                    "2026-03-28T23:00:00+01:00",
                    Some("2026-03-29T03:00:00+02:00"),
                ),
                ("2026-03-29T03:00:00+02:00", None),
            ],
        );
        // The start falls into the gap: quiet from the first instant after it.
        check(
            quiet("02:15", "06:00"),
            Berlin,
            &[
                ("2026-03-29T01:59:59+01:00", None),
                (
                    "2026-03-29T03:00:00+02:00",
                    Some("2026-03-29T06:00:00+02:00"),
                ),
            ],
        );
    }

    #[test]
    fn berlin_fall_back() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00–02:59 is shown twice.
        check(
            quiet("22:00", "02:30"),
            Berlin,
            &[
                // Before the repeated hour: the earlier 02:30.
                (
                    "2026-10-25T01:00:00+02:00",
                    Some("2026-10-25T02:30:00+02:00"),
                ),
                (
                    "2026-10-24T23:00:00+02:00",
                    Some("2026-10-25T02:30:00+02:00"),
                ),
                // First pass after 02:30: not quiet.
                ("2026-10-25T02:40:00+02:00", None),
                // Second pass: the clock shows 02:10 again, quiet until the later 02:30.
                (
                    "2026-10-25T02:10:00+01:00",
                    Some("2026-10-25T02:30:00+01:00"),
                ),
                ("2026-10-25T02:30:00+01:00", None),
            ],
        );
        check(
            quiet("22:00", "07:00"),
            Berlin,
            &[(
                "2026-10-24T22:30:00+02:00",
                Some("2026-10-25T07:00:00+01:00"),
            )],
        );
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT.
        check(
            quiet("22:00", "07:00"),
            New_York,
            &[(
                "2026-03-08T01:30:00-05:00",
                Some("2026-03-08T07:00:00-04:00"),
            )],
        );
        check(
            quiet("21:00", "02:15"),
            New_York,
            &[
                (
                    "2026-03-08T01:59:00-05:00",
                    Some("2026-03-08T03:00:00-04:00"),
                ),
                (
                    "2026-03-07T21:00:00-05:00",
                    Some("2026-03-08T03:00:00-04:00"),
                ),
            ],
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00–01:59 is shown twice.
        check(
            quiet("22:00", "01:30"),
            New_York,
            &[
                (
                    "2026-11-01T00:30:00-04:00",
                    Some("2026-11-01T01:30:00-04:00"),
                ),
                ("2026-11-01T01:45:00-04:00", None),
                (
                    "2026-11-01T01:15:00-05:00",
                    Some("2026-11-01T01:30:00-05:00"),
                ),
            ],
        );
    }

    #[test]
    fn half_hour_transitions() {
        // Lord Howe Island, 2026-10-04: 02:00 (+10:30) becomes 02:30 (+11:00).
        check(
            quiet("22:00", "02:15"),
            chrono_tz::Australia::Lord_Howe,
            &[(
                "2026-10-04T01:50:00+10:30",
                Some("2026-10-04T02:30:00+11:00"),
            )],
        );
    }

    #[test]
    fn parses_and_prints_hh_mm() {
        let hours = quiet("22:00", "07:30");
        assert_eq!(hours.start(), NaiveTime::from_hms_opt(22, 0, 0).unwrap());
        assert_eq!(hours.to_string(), "22:00-07:30");
        assert_eq!("22:00-07:30".parse::<QuietHours>().unwrap(), hours);
        assert_eq!(
            serde_json::to_value(hours).unwrap(),
            serde_json::json!({"start": "22:00", "end": "07:30"})
        );
        let back: QuietHours =
            serde_json::from_value(serde_json::json!({"start": "22:00", "end": "07:30"})).unwrap();
        assert_eq!(back, hours);
        for bad in [
            "24:00", "7:00", "22:00:00", "", "22h", "ab:cd", "22:60", "+1:00",
        ] {
            let error = QuietHours::parse(bad, "07:00").unwrap_err();
            assert!(error.to_string().contains("HH:MM"), "{bad}: {error}");
        }
        assert!("22:00".parse::<QuietHours>().is_err());
        assert!(
            serde_json::from_value::<QuietHours>(
                serde_json::json!({"start": "25:00", "end": "07:00"})
            )
            .is_err()
        );
        let seconds = QuietHours::new(
            NaiveTime::from_hms_opt(22, 0, 42).unwrap(),
            NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
        );
        assert_eq!(seconds, quiet("22:00", "07:00"));
    }
}
