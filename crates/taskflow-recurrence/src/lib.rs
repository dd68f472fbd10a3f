//! RFC 5545 recurrence for TaskFlow tasks, evaluated in the task's time zone.
//!
//! # What it does
//!
//! A recurring task stores a [`RecurrenceRule`] (normalised RRULE text such as
//! `FREQ=WEEKLY;BYDAY=MO,WE`, or one of the presets `daily`, `weekdays`, `weekly`,
//! `biweekly`, `monthly`, `yearly`) and a [`Schedule`]: the rule, an [`Anchor`], an IANA time
//! zone and the local wall-clock start (`dtstart`) of the series. When an occurrence is
//! completed or skipped, [`Schedule::next_after`] gives the due instant of the next one;
//! [`Schedule::preview`] lists upcoming ones; [`Schedule::validate`] checks a new series;
//! [`RecurrenceRule::describe`] renders English ("every 2 weeks on Monday and Friday at
//! 18:30").
//!
//! Supported rule parts: `FREQ` (DAILY, WEEKLY, MONTHLY, YEARLY), `INTERVAL` (1..=1000),
//! `COUNT` (1..=1 000 000), `UNTIL` (a UTC date-time `…T…Z`, or a date, meaning "through that
//! local day"), `BYDAY` (with ordinals like `1MO`, `-1FR` for MONTHLY/YEARLY), `BYMONTHDAY`
//! (negatives count from the month end), `BYMONTH`, `BYYEARDAY`, `BYWEEKNO`, `BYSETPOS` and
//! `WKST`. A task happens at most once a day, at the time of day of `dtstart`, so
//! SECONDLY/MINUTELY/HOURLY and `BYHOUR`/`BYMINUTE`/`BYSECOND` are rejected, as are
//! `DTSTART`/`EXDATE`/`RDATE` inside the text and RFC 7529 `RSCALE`/`SKIP`.
//!
//! # Floating-time expansion
//!
//! Expansion is done by the [`rrule`] crate, which has open DST bugs when it expands in a real
//! zone (duplicate or missing instances around a transition, `between()` at a boundary). This
//! crate never lets it see a zone: `dtstart`'s *wall-clock fields* are handed to it as a UTC
//! DTSTART, so its arithmetic happens in "floating" local time without DST. Every produced
//! wall time is then localised here with `chrono-tz` ([`resolve_local`]):
//!
//! * a wall time that does not exist (spring-forward gap) is moved forward by the length of
//!   the gap, as RFC 5545 §3.3.5 prescribes (02:30 in a one-hour gap becomes 03:30);
//! * an ambiguous wall time (fall-back overlap) takes the *first* (earlier) instant.
//!
//! So a 09:00 Europe/Berlin daily task stays at 09:00 local across both DST changes, and a
//! 02:30 or 01:30 daily task gets exactly one occurrence per day. `COUNT` and `UNTIL` are
//! applied by this crate, not by the engine: `UNTIL` (a UTC instant) is compared with the
//! localised instants; a date-only `UNTIL` with the local date. Should localisation ever map
//! two instances to the same instant (a whole skipped day, as in Samoa in 2011), the
//! duplicate is dropped.
//!
//! # Anchors
//!
//! * [`Anchor::Due`]: occurrences follow the rule's calendar from `dtstart`. The next one is
//!   the first instance strictly after `max(current_due, now)`, so missed occurrences are
//!   skipped, never created in bulk. `COUNT` counts instances of the rule from `dtstart`.
//! * [`Anchor::Completion`]: the rule is re-anchored at completion: DTSTART becomes (local
//!   date of `now`, time of day of `dtstart`), and the next occurrence is the first instance
//!   strictly after `max(now, that DTSTART)`: "every 3 days" completed on the 10th at 15:00
//!   for a 09:00 task is next due on the 13th at 09:00. BYxxx defaults (e.g. the weekday of a
//!   plain `FREQ=WEEKLY`) come from the new DTSTART. `COUNT` limits the number of occurrences
//!   in the series (the caller passes the 0-based index of the current one).
//!
//! `UNTIL` applies to both. A `dtstart` that does not match the rule is not an instance (as
//! in python-dateutil and libical); the task's own first due date is the caller's business.
//!
//! # Details the rule leaves open
//!
//! As RFC 5545 §3.3.10 says, what the rule does not give comes from DTSTART: the day of a
//! plain `FREQ=MONTHLY`, the weekday of a plain `FREQ=WEEKLY`, the date of a plain
//! `FREQ=YEARLY` (the engine does these), and, like libical (the engine does not), the month
//! of `FREQ=YEARLY;BYMONTHDAY=…` without `BYMONTH` (so `BYMONTHDAY=29` from 29 February is a
//! leap-day rule, not every 29th) and the weekday of `BYWEEKNO` without `BYDAY`. WEEKLY rules
//! are expanded from the first day (per `WKST`) of the start's week and instances before the
//! start dropped, so `BYSETPOS` sees the whole first week as the RFC intends (the engine
//! would start that week's set at DTSTART).
//!
//! # Limits and cost
//!
//! Hostile rules must not hang a request:
//!
//! * input longer than [`MAX_RULE_LEN`] characters, `INTERVAL` over [`MAX_INTERVAL`] and
//!   `COUNT` over [`MAX_COUNT`] are rejected at parse time, as are `BYMONTH`/`BYMONTHDAY`
//!   combinations that never exist (February 30): [`RecurrenceError::NoOccurrences`];
//! * the search for an occurrence stops [`MAX_SEARCH_YEARS`] (1000) years past the moment
//!   searched from ([`RecurrenceError::NoOccurrences`]); the engine itself gives up after
//!   100 000 consecutive periods without an instance (its `limit()` mode) and beyond year
//!   10 000;
//! * one call examines at most [`MAX_EXAMINED`] instances and runs at most [`TIME_BUDGET`]
//!   (the clock is read every 16 examined instances), else
//!   [`RecurrenceError::TooExpensive`].
//!
//! Cost: the rule text is parsed once, in [`RecurrenceRule::parse`]; the parsed engine rule is
//! kept inside and only cloned and re-validated when an expansion is started (a few small
//! allocations). For [`Anchor::Due`] rules without `COUNT`, expansion restarts at the start
//! of the latest rule period (aligned to `dtstart`'s periods, `INTERVAL` and `WKST`) lying at
//! least three days before the searched moment, which yields exactly the instances of a full
//! expansion, so `next_after` costs a few periods' worth of instances however old the series
//! is. With `COUNT`, instances must be counted from `dtstart`, so a fresh search costs the
//! number of instances between `dtstart` and now (bounded by the limits above).
//!
//! A [`Schedule`] also remembers, in a small private cache behind a `Mutex` (it stays `Send`,
//! `Sync` and `Clone`; clones start with an empty cache; `==` and `Debug` ignore it), the
//! engine cursor of its last successful [`Anchor::Due`] search, positioned just after the
//! instance it returned. The next `next_after` on the same value resumes that cursor instead
//! of starting a new expansion when the cursor was built for the same rule, zone and
//! `dtstart` (the fields are public, so they are compared), has not passed the searched
//! moment, and a fresh search would not start later than where the cursor stands. Every
//! instance up to the one returned has been consumed and instances come in increasing
//! order, so continuing yields exactly what a fresh search yields. Walking a series
//! occurrence by occurrence (preview-like chains, catching up) therefore costs about one
//! period of engine work plus one localisation per call, about 0.25 µs for a daily and
//! 1 µs for a monthly rule in release builds; with `COUNT` the instance count carries on
//! from the saved cursor, so the [`MAX_EXAMINED`] limit is hit exactly when a fresh search
//! would hit it. If another thread is using the same `Schedule` at that moment, the call
//! simply does a fresh search.
//! [`Anchor::Completion`] expands from the completion day and costs a few instances.

mod describe;
mod error;
mod rule;
mod schedule;

pub use error::RecurrenceError;
pub use rule::{Frequency, MAX_COUNT, MAX_INTERVAL, MAX_RULE_LEN, RecurrenceRule, Until};
pub use schedule::{
    Anchor, MAX_EXAMINED, MAX_PREVIEW, MAX_SEARCH_YEARS, Occurrence, Schedule, TIME_BUDGET,
    resolve_local,
};
