//! Time: the injected clock and validated IANA time zones.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validation::FieldError;

/// Source of "now". Production uses [`SystemClock`]; tests use [`ManualClock`] to control time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant, truncated to microseconds (the precision we store).
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start.trunc_subsecs(6)))
    }

    /// Moves the clock forward (or backward, for a negative delta).
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to.trunc_subsecs(6);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A validated IANA time zone name such as `Europe/Berlin` or `UTC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// Coordinated Universal Time.
    pub const UTC: TimeZone = TimeZone(chrono_tz::Tz::UTC);

    /// Parses an IANA name (case-sensitive as in the tz database, e.g. `America/New_York`).
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        chrono_tz::Tz::from_str(name.trim()).map(Self).map_err(|_| {
            FieldError::new(
                "time_zone",
                "invalid_time_zone",
                format!(
                    "`{}` is not an IANA time zone; use a name like `Europe/Berlin` or `UTC`",
                    truncate_for_message(name)
                ),
            )
        })
    }

    /// The chrono-tz zone.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::UTC
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        TimeZone::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// Shortens user input quoted back in an error message so a huge value cannot flood a response.
pub(crate) fn truncate_for_message(input: &str) -> String {
    const MAX: usize = 64;
    if input.chars().count() <= MAX {
        input.to_owned()
    } else {
        let mut short: String = input.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iana_names() {
        assert_eq!(
            TimeZone::parse("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert_eq!(TimeZone::parse("UTC").unwrap(), TimeZone::UTC);
    }

    #[test]
    fn rejects_unknown_zones_with_a_short_message() {
        let err = TimeZone::parse("Mars/Olympus").unwrap_err();
        assert_eq!(err.code, "invalid_time_zone");
        let long = "x".repeat(10_000);
        let err = TimeZone::parse(&long).unwrap_err();
        assert!(err.message.len() < 200);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start.trunc_subsecs(6));
        clock.advance(TimeDelta::seconds(5));
        assert_eq!(clock.now(), start.trunc_subsecs(6) + TimeDelta::seconds(5));
    }
}
