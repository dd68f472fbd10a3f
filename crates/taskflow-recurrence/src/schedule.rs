//! Evaluation of a rule for one series: anchors, zone localisation and limits.

use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use chrono::{
    DateTime, Datelike, Days, LocalResult, Month, Months, NaiveDate, NaiveDateTime, Offset,
    TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::rule::{Frequency, Until};
use crate::{RecurrenceError, RecurrenceRule};

/// How far past the moment being searched from an occurrence is looked for, in years.
pub const MAX_SEARCH_YEARS: u32 = 1000;
/// Most rule instances one evaluation may examine before giving up with
/// [`RecurrenceError::TooExpensive`].
pub const MAX_EXAMINED: u32 = 100_000;
/// Wall-clock budget of one evaluation (one `next_after`, `validate` or `preview` call).
pub const TIME_BUDGET: Duration = Duration::from_millis(500);
/// Most occurrences [`Schedule::preview`] returns.
pub const MAX_PREVIEW: usize = 100;

/// Earliest and latest accepted year of a schedule's `dtstart`.
const START_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// What the next occurrence of a series is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The fixed calendar of the rule from the series start; missed occurrences are skipped.
    Due,
    /// The rule restarted at the completion day (e.g. "3 days after I last did it").
    Completion,
}

/// The schedule of one series: rule + anchor + the wall-clock start of the series in its
/// time zone.
///
/// Build it with [`Schedule::new`]. Besides the public parts it holds a small private cache
/// (see [`Schedule::next_after`]) that is ignored by `==`, `Debug` and not copied by `clone`.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The recurrence rule.
    pub rule: RecurrenceRule,
    /// What the next occurrence is computed from.
    pub anchor: Anchor,
    /// The IANA zone in whose wall-clock time the rule is evaluated.
    pub time_zone: Tz,
    /// Local wall time of the series' first occurrence (DTSTART); its time of day is the time
    /// of day of every occurrence.
    pub dtstart: NaiveDateTime,
    /// Where the last [`Anchor::Due`] search stopped, to resume a chain of calls there.
    resume: ResumeCache,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("rule", &self.rule)
            .field("anchor", &self.anchor)
            .field("time_zone", &self.time_zone)
            .field("dtstart", &self.dtstart)
            .finish()
    }
}

/// One occurrence of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Occurrence {
    /// The instant the occurrence is due.
    pub utc: DateTime<Utc>,
    /// Its wall-clock time in the series' zone (after any DST gap shift).
    pub local: NaiveDateTime,
    /// 0-based position in the series.
    pub index: u32,
}

/// Turns a local wall time in `tz` into an instant, the RFC 5545 way: a time that does not
/// exist (spring-forward gap) is moved forward by the length of the gap (02:30 in a one-hour
/// gap becomes 03:30), and an ambiguous time (fall-back overlap) takes the earlier instant.
pub fn resolve_local(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
        LocalResult::None => resolve_gap(tz, wall),
    }
}

fn resolve_gap(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    // Interpret the wall time with the offset in force before the transition; the instant
    // then reads as `wall + gap length` on the clock.
    let probe = wall.checked_sub_signed(TimeDelta::days(1)).unwrap_or(wall);
    let before = tz.offset_from_utc_datetime(&probe).fix();
    let candidate = wall
        .checked_sub_signed(TimeDelta::seconds(i64::from(before.local_minus_utc())))
        .map(|naive| Utc.from_utc_datetime(&naive));
    if let Some(instant) = candidate
        && instant.with_timezone(&tz).naive_local() > wall
    {
        return instant;
    }
    // Unusual history (two transitions within a day): take the first existing minute.
    for minutes in 1..=(3 * 24 * 60) {
        let Some(later) = wall.checked_add_signed(TimeDelta::minutes(minutes)) else {
            break;
        };
        if let Some(t) = tz.from_local_datetime(&later).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    Utc.from_utc_datetime(&wall)
}

/// The first day of the latest period of the rule (aligned to the periods counted from
/// `start`, honouring INTERVAL and WKST) that begins after `start`'s period and on or before
/// `target`; `None` if there is no such period.
fn aligned_period_start(
    freq: Frequency,
    interval: u16,
    wkst: chrono::Weekday,
    start: NaiveDate,
    target: NaiveDate,
) -> Option<NaiveDate> {
    let n = i64::from(interval.max(1));
    match freq {
        Frequency::Daily => {
            let days = (target - start).num_days();
            let k = days.div_euclid(n) * n;
            (k > 0).then(|| start.checked_add_days(Days::new(u64::try_from(k).ok()?)))?
        }
        Frequency::Weekly => {
            let back =
                (start.weekday().num_days_from_monday() + 7 - wkst.num_days_from_monday()) % 7;
            let week_start = start.checked_sub_days(Days::new(u64::from(back)))?;
            let weeks = (target - week_start).num_days().div_euclid(7);
            let k = weeks.div_euclid(n) * n;
            (k > 0).then(|| week_start.checked_add_days(Days::new(u64::try_from(k * 7).ok()?)))?
        }
        Frequency::Monthly => {
            let month_index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
            let k = (month_index(target) - month_index(start)).div_euclid(n) * n;
            if k <= 0 {
                return None;
            }
            let first = start.with_day(1)?;
            first.checked_add_months(Months::new(u32::try_from(k).ok()?))
        }
        Frequency::Yearly => {
            let k = (i64::from(target.year()) - i64::from(start.year())).div_euclid(n) * n;
            if k <= 0 {
                return None;
            }
            NaiveDate::from_ymd_opt(start.year().checked_add(i32::try_from(k).ok()?)?, 1, 1)
        }
    }
}

/// The outcome of one step of expansion.
enum Step {
    /// A rule instance, localised.
    Instance(DateTime<Utc>),
    /// COUNT or UNTIL ended the series.
    End,
}

/// Walks the instances of a rule in floating time and localises them.
struct Cursor {
    iter: rrule::RRuleSetIter,
    tz: Tz,
    /// Instances before this wall time are expansion lead-in, not part of the series.
    not_before: NaiveDateTime,
    count: Option<u32>,
    produced: u32,
    until: Option<Until>,
    horizon: Horizon,
    deadline: Instant,
    examined: u32,
    /// Instances examined in the current call (the clock is read every 16th).
    examined_now: u32,
    /// Wall time (before localisation) of the last instance returned.
    last_wall: NaiveDateTime,
}

/// The search horizon of one call: [`MAX_SEARCH_YEARS`] past the later of `floor` and the
/// local wall time of `after`. Only computed when an instance comes near it.
struct Horizon {
    floor: NaiveDateTime,
    after: Option<DateTime<Utc>>,
}

impl Horizon {
    /// Whether `wall` lies past the horizon.
    fn exceeded_by(&self, tz: Tz, wall: NaiveDateTime) -> bool {
        // The horizon is at least 1000 years past the floor and past `after`'s local year,
        // which is at least the year before `after`'s UTC year.
        let floor_year = self
            .after
            .map_or(self.floor.year(), |a| self.floor.year().max(a.year() - 1));
        let reach = i32::try_from(MAX_SEARCH_YEARS).unwrap_or(i32::MAX);
        if wall.year() < floor_year.saturating_add(reach) {
            return false;
        }
        let from = match self.after {
            Some(after) => self.floor.max(after.with_timezone(&tz).naive_local()),
            None => self.floor,
        };
        wall > horizon_after(from)
    }
}

impl Cursor {
    fn next(&mut self) -> Result<Step, RecurrenceError> {
        loop {
            if self.count.is_some_and(|c| self.produced >= c) {
                return Ok(Step::End);
            }
            if self.examined >= MAX_EXAMINED
                || (self.examined_now % 16 == 15 && Instant::now() > self.deadline)
            {
                return Err(RecurrenceError::TooExpensive);
            }
            self.examined += 1;
            self.examined_now += 1;
            let Some(floating) = self.iter.next() else {
                // The engine gave up (no instance in 100 000 periods) or left its year range.
                return if self.until.is_some() {
                    Ok(Step::End)
                } else {
                    Err(RecurrenceError::NoOccurrences)
                };
            };
            let wall = floating.naive_utc();
            if wall < self.not_before {
                continue;
            }
            self.produced = self.produced.saturating_add(1);
            let utc = resolve_local(self.tz, wall);
            match self.until {
                Some(Until::Instant(until)) if utc > until => return Ok(Step::End),
                Some(Until::Date(until)) if wall.date() > until => return Ok(Step::End),
                _ => {}
            }
            if self.horizon.exceeded_by(self.tz, wall) {
                return Err(RecurrenceError::NoOccurrences);
            }
            self.last_wall = wall;
            return Ok(Step::Instance(utc));
        }
    }
}

/// Where the engine should start expanding a series that begins at `start`. For WEEKLY rules
/// this is the first day (per WKST) of `start`'s week at `start`'s time of day: the engine
/// (like python-dateutil) would otherwise build the first week's set only from DTSTART on,
/// which changes what BYSETPOS selects in that week. Instances before `start` are dropped by
/// the cursor.
fn expansion_start(freq: Frequency, wkst: chrono::Weekday, start: NaiveDateTime) -> NaiveDateTime {
    if freq != Frequency::Weekly {
        return start;
    }
    let back = (start.weekday().num_days_from_monday() + 7 - wkst.num_days_from_monday()) % 7;
    start
        .checked_sub_days(Days::new(u64::from(back)))
        .unwrap_or(start)
}

fn month_of(t: NaiveDateTime) -> Result<Month, RecurrenceError> {
    u8::try_from(t.month())
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(|| RecurrenceError::InvalidSchedule {
            reason: "month out of range".to_owned(),
        })
}

/// The first instance the cursor yields strictly after `after`; `None` when COUNT or UNTIL
/// ends the series first.
fn first_after(
    cursor: &mut Cursor,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, RecurrenceError> {
    loop {
        match cursor.next()? {
            Step::End => return Ok(None),
            Step::Instance(utc) if utc > after => return Ok(Some(utc)),
            Step::Instance(_) => {}
        }
    }
}

/// An [`Anchor::Due`] cursor saved by `next_after` right after it returned `last`: every
/// instance of its expansion up to and including `last` has been consumed, so continuing it
/// yields exactly the instances the full expansion has after `last`. The schedule parts it
/// was built from are kept to detect changes of the (public) fields.
struct Resume {
    rule: String,
    time_zone: Tz,
    dtstart: NaiveDateTime,
    last: DateTime<Utc>,
    cursor: Cursor,
}

/// Interior cache of a [`Schedule`]; not part of its value (clones start empty).
#[derive(Default)]
struct ResumeCache(Mutex<Option<Box<Resume>>>);

impl Clone for ResumeCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for ResumeCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ResumeCache {}

const _: () = {
    const fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Schedule>();
};

fn horizon_after(wall: NaiveDateTime) -> NaiveDateTime {
    wall.checked_add_months(Months::new(MAX_SEARCH_YEARS * 12))
        .unwrap_or(NaiveDateTime::MAX)
}

impl Schedule {
    /// Bundles the parts of a schedule.
    pub fn new(
        rule: RecurrenceRule,
        anchor: Anchor,
        time_zone: Tz,
        dtstart: NaiveDateTime,
    ) -> Self {
        Self {
            rule,
            anchor,
            time_zone,
            dtstart,
            resume: ResumeCache::default(),
        }
    }

    /// The instant of `dtstart` in the series' zone (gap/overlap resolved like every
    /// occurrence, see [`resolve_local`]).
    pub fn start_utc(&self) -> DateTime<Utc> {
        resolve_local(self.time_zone, self.dtstart)
    }

    /// English description using the time of day of `dtstart` and, for UNTIL, the date in the
    /// series' zone, e.g. "every 2 weeks on Monday and Friday at 18:30, until 2027-03-01".
    pub fn describe(&self) -> String {
        let tz = self.time_zone;
        crate::describe::describe(&self.rule.parts, self.dtstart.time(), |until| match until {
            Until::Instant(t) => t.with_timezone(&tz).date_naive(),
            Until::Date(d) => d,
        })
    }

    /// Validates that the rule yields at least one occurrence strictly after `first_due`
    /// (else [`RecurrenceError::NoOccurrences`]) and that UNTIL is not before `dtstart`
    /// ([`RecurrenceError::UntilBeforeStart`]).
    pub fn validate(&self, first_due: DateTime<Utc>) -> Result<(), RecurrenceError> {
        self.check_start()?;
        let start = self.start_utc();
        let too_early = match self.rule.parts.until {
            Some(Until::Instant(until)) => until < start,
            Some(Until::Date(until)) => until < self.dtstart.date(),
            None => false,
        };
        if too_early {
            return Err(RecurrenceError::UntilBeforeStart {
                until: self
                    .rule
                    .until_bound()
                    .map(|u| match u {
                        Until::Instant(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        Until::Date(d) => d.format("%Y-%m-%d").to_string(),
                    })
                    .unwrap_or_default(),
                start: format!(
                    "{} {}",
                    self.dtstart.format("%Y-%m-%dT%H:%M:%S"),
                    self.time_zone
                ),
            });
        }
        match self.next_after(first_due, first_due, 0)? {
            Some(_) => Ok(()),
            None => Err(RecurrenceError::NoOccurrences),
        }
    }

    /// The due instant of the next occurrence after completing/skipping the occurrence that is
    /// due at `current_due`, at moment `now`, given the 0-based index of the current occurrence
    /// in the series.
    ///
    /// * [`Anchor::Due`]: the first instance of the rule (DTSTART = `dtstart`) strictly after
    ///   `max(current_due, now)`; missed occurrences are skipped, never created in bulk; COUNT
    ///   counts instances of the rule from `dtstart` (RFC semantics) and `occurrence_index` is
    ///   not used.
    /// * [`Anchor::Completion`]: the rule restarted at DTSTART = (local date of `now`, time of
    ///   day of `dtstart`); the first instance strictly after `max(now, that DTSTART)`. COUNT
    ///   limits the number of occurrences of the series: when `occurrence_index + 1 >= COUNT`
    ///   there is no next one.
    ///
    /// UNTIL always applies. `Ok(None)` means the series is exhausted (COUNT/UNTIL).
    ///
    /// For [`Anchor::Due`] the schedule keeps the engine cursor of the last search and resumes
    /// it when that is exactly equivalent (see the crate docs, "Limits and cost"), so walking
    /// a series call by call costs about one rule period per call.
    pub fn next_after(
        &self,
        current_due: DateTime<Utc>,
        now: DateTime<Utc>,
        occurrence_index: u32,
    ) -> Result<Option<DateTime<Utc>>, RecurrenceError> {
        self.check_start()?;
        let deadline = Instant::now() + TIME_BUDGET;
        match self.anchor {
            Anchor::Due => self.next_due(current_due.max(now), true, deadline),
            Anchor::Completion => self.next_completion(now, occurrence_index, deadline),
        }
    }

    /// Up to `limit` (at most [`MAX_PREVIEW`]; larger values are clamped) upcoming due instants
    /// of the series, starting with the current occurrence (`current_due`, `occurrence_index`)
    /// itself, as [`next_after`](Self::next_after) would produce them one after another
    /// (for [`Anchor::Completion`]: assuming each is completed at its due instant).
    ///
    /// The list ends early when the series is exhausted or has no further occurrence within
    /// the search horizon.
    pub fn preview(
        &self,
        current_due: DateTime<Utc>,
        occurrence_index: u32,
        limit: usize,
    ) -> Result<Vec<Occurrence>, RecurrenceError> {
        self.check_start()?;
        let limit = limit.min(MAX_PREVIEW);
        let mut out = Vec::with_capacity(limit);
        if limit == 0 {
            return Ok(out);
        }
        let tz = self.time_zone;
        let occurrence = |utc: DateTime<Utc>, index: u32| Occurrence {
            utc,
            local: utc.with_timezone(&tz).naive_local(),
            index,
        };
        out.push(occurrence(current_due, occurrence_index));
        let deadline = Instant::now() + TIME_BUDGET;
        let mut last = current_due;
        let mut index = occurrence_index;
        match self.anchor {
            Anchor::Due => {
                let mut cursor = self.due_cursor(current_due, true, deadline)?;
                while out.len() < limit {
                    match cursor.next() {
                        Ok(Step::Instance(utc)) if utc > last => {
                            let Some(next_index) = index.checked_add(1) else {
                                break;
                            };
                            index = next_index;
                            out.push(occurrence(utc, index));
                            last = utc;
                            // Each further step searches as a chained `next_after(last)` would:
                            // the horizon counts from the last occurrence, and without COUNT the
                            // examined-instance budget is per step.
                            cursor.horizon.after = Some(utc);
                            if cursor.count.is_none() {
                                cursor.examined = 0;
                            }
                        }
                        Ok(Step::Instance(_)) => {}
                        Ok(Step::End) | Err(RecurrenceError::NoOccurrences) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Anchor::Completion => {
                while out.len() < limit {
                    match self.next_completion(last, index, deadline) {
                        Ok(Some(utc)) => {
                            let Some(next_index) = index.checked_add(1) else {
                                break;
                            };
                            index = next_index;
                            out.push(occurrence(utc, index));
                            last = utc;
                        }
                        Ok(None) | Err(RecurrenceError::NoOccurrences) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(out)
    }

    fn check_start(&self) -> Result<(), RecurrenceError> {
        if START_YEARS.contains(&self.dtstart.year()) {
            Ok(())
        } else {
            Err(RecurrenceError::InvalidSchedule {
                reason: format!(
                    "the series start year {} is outside {}..={}",
                    self.dtstart.year(),
                    START_YEARS.start(),
                    START_YEARS.end()
                ),
            })
        }
    }

    /// The rule as an `rrule` set in floating time: DTSTART is `start` expressed as UTC, so
    /// the engine never sees a DST change. BYxxx defaults that the engine would derive from
    /// DTSTART are derived from `defaults_from` instead, so that a later restart point
    /// expands exactly like the original series.
    fn engine(
        &self,
        defaults_from: NaiveDateTime,
        start: NaiveDateTime,
    ) -> Result<rrule::RRuleSet, RecurrenceError> {
        let parts = &self.rule.parts;
        let mut rule = self.rule.engine.clone();
        // RFC 5545 §3.3.10: information the rule does not give comes from DTSTART. The engine
        // (like python-dateutil) fills the day for rules without any day part; it does not
        // for a YEARLY rule with BYMONTHDAY but no BYMONTH (it would repeat every month), nor
        // for BYWEEKNO without BYDAY (every day of the week). Fill those like libical does.
        if parts.freq == Frequency::Yearly
            && parts.by_year_day.is_empty()
            && parts.by_week_no.is_empty()
            && !parts.by_month_day.is_empty()
            && parts.by_month.is_empty()
        {
            rule = rule.by_month(&[month_of(defaults_from)?]);
        }
        if parts.freq == Frequency::Yearly
            && !parts.by_week_no.is_empty()
            && parts.by_day.is_empty()
            && parts.by_month_day.is_empty()
            && parts.by_year_day.is_empty()
        {
            rule = rule.by_weekday(vec![rrule::NWeekday::Every(defaults_from.weekday())]);
        }
        if parts.takes_defaults_from_start() {
            let day = i8::try_from(defaults_from.day()).map_err(|_| {
                RecurrenceError::InvalidSchedule {
                    reason: "day of month out of range".to_owned(),
                }
            })?;
            match parts.freq {
                Frequency::Yearly => {
                    if parts.by_month.is_empty() {
                        rule = rule.by_month(&[month_of(defaults_from)?]);
                    }
                    rule = rule.by_month_day(vec![day]);
                }
                Frequency::Monthly => rule = rule.by_month_day(vec![day]),
                Frequency::Weekly => {
                    rule = rule.by_weekday(vec![rrule::NWeekday::Every(defaults_from.weekday())]);
                }
                Frequency::Daily => {}
            }
        }
        let floating_start = rrule::Tz::UTC.from_utc_datetime(&start);
        let validated =
            rule.validate(floating_start)
                .map_err(|e| RecurrenceError::InvalidSchedule {
                    reason: e.to_string(),
                })?;
        Ok(rrule::RRuleSet::new(floating_start)
            .rrule(validated)
            .limit())
    }

    /// Where Anchor::Due expansion may start when looking for instances after the local wall
    /// time `after_wall`: the series start, or — when the rule has no COUNT — the start of a
    /// later period aligned to the series' periods that lies safely (three days) before
    /// `after_wall`. Such a restart yields exactly the instances of the full expansion from
    /// that period on.
    fn restart_point(&self, after_wall: NaiveDateTime) -> NaiveDateTime {
        let parts = &self.rule.parts;
        if parts.count.is_some() {
            return self.dtstart;
        }
        after_wall
            .date()
            .checked_sub_days(Days::new(3))
            .and_then(|target| {
                aligned_period_start(
                    parts.freq,
                    parts.interval,
                    parts.wkst,
                    self.dtstart.date(),
                    target,
                )
            })
            .map(|day| day.and_time(self.dtstart.time()))
            .filter(|start| *start > self.dtstart)
            .unwrap_or(self.dtstart)
    }

    fn due_cursor(
        &self,
        after: DateTime<Utc>,
        allow_restart: bool,
        deadline: Instant,
    ) -> Result<Cursor, RecurrenceError> {
        let parts = &self.rule.parts;
        let start = if allow_restart {
            self.restart_point(after.with_timezone(&self.time_zone).naive_local())
        } else {
            self.dtstart
        };
        let set = self.engine(self.dtstart, expansion_start(parts.freq, parts.wkst, start))?;
        Ok(Cursor {
            iter: (&set).into_iter(),
            tz: self.time_zone,
            not_before: start,
            count: self.rule.parts.count,
            produced: 0,
            until: self.rule.parts.until,
            horizon: Horizon {
                floor: self.dtstart,
                after: Some(after),
            },
            deadline,
            examined: 0,
            examined_now: 0,
            last_wall: start,
        })
    }

    /// Whether the cursor saved in `resume` may continue the search for the first instance
    /// after `after` (see [`Resume`]): it was built for this schedule, has not passed
    /// `after`, and a fresh search would not start later than where it stands (so it
    /// examines no more instances than a fresh one).
    fn can_resume(&self, resume: &Resume, after: DateTime<Utc>) -> bool {
        resume.last <= after
            && resume.time_zone == self.time_zone
            && resume.dtstart == self.dtstart
            && resume.rule == self.rule.as_str()
            && (resume.last == after
                || self.restart_point(after.with_timezone(&self.time_zone).naive_local())
                    <= resume.cursor.last_wall)
    }

    fn next_due(
        &self,
        after: DateTime<Utc>,
        allow_restart: bool,
        deadline: Instant,
    ) -> Result<Option<DateTime<Utc>>, RecurrenceError> {
        if !allow_restart {
            let mut cursor = self.due_cursor(after, false, deadline)?;
            return first_after(&mut cursor, after);
        }
        let mut guard = match self.resume.0.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => {
                let mut guard = poisoned.into_inner();
                *guard = None;
                guard
            }
            // Another thread is evaluating this very schedule: do without the cache.
            Err(TryLockError::WouldBlock) => {
                let mut cursor = self.due_cursor(after, true, deadline)?;
                return first_after(&mut cursor, after);
            }
        };
        let slot = &mut *guard;
        if let Some(resume) = slot.as_deref_mut()
            && self.can_resume(resume, after)
        {
            let cursor = &mut resume.cursor;
            cursor.deadline = deadline;
            cursor.horizon = Horizon {
                floor: self.dtstart,
                after: Some(after),
            };
            cursor.examined_now = 0;
            if cursor.count.is_none() {
                // A fresh search would start at a restart point at or before this cursor's
                // position; with COUNT it starts at dtstart, so the count carries on.
                cursor.examined = 0;
            }
            let result = first_after(cursor, after);
            match result {
                Ok(Some(last)) => resume.last = last,
                _ => *slot = None,
            }
            return result;
        }
        let mut cursor = self.due_cursor(after, true, deadline)?;
        let result = first_after(&mut cursor, after);
        match (&result, slot.as_deref_mut()) {
            (Ok(Some(last)), Some(resume))
                if resume.time_zone == self.time_zone
                    && resume.dtstart == self.dtstart
                    && resume.rule == self.rule.as_str() =>
            {
                resume.last = *last;
                resume.cursor = cursor;
            }
            (Ok(Some(last)), _) => {
                *slot = Some(Box::new(Resume {
                    rule: self.rule.as_str().to_owned(),
                    time_zone: self.time_zone,
                    dtstart: self.dtstart,
                    last: *last,
                    cursor,
                }));
            }
            _ => *slot = None,
        }
        result
    }

    fn next_completion(
        &self,
        now: DateTime<Utc>,
        occurrence_index: u32,
        deadline: Instant,
    ) -> Result<Option<DateTime<Utc>>, RecurrenceError> {
        if let Some(count) = self.rule.parts.count
            && occurrence_index.saturating_add(1) >= count
        {
            return Ok(None);
        }
        let local_now = now.with_timezone(&self.time_zone).naive_local();
        let anchor = local_now.date().and_time(self.dtstart.time());
        let after = now.max(resolve_local(self.time_zone, anchor));
        let parts = &self.rule.parts;
        let set = self.engine(anchor, expansion_start(parts.freq, parts.wkst, anchor))?;
        let mut cursor = Cursor {
            iter: (&set).into_iter(),
            tz: self.time_zone,
            not_before: anchor,
            count: None,
            produced: 0,
            until: self.rule.parts.until,
            horizon: Horizon {
                floor: anchor,
                after: None,
            },
            deadline,
            examined: 0,
            examined_now: 0,
            last_wall: anchor,
        };
        first_after(&mut cursor, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn aligned_weekly_period_respects_wkst_and_interval() {
        // 1997-08-05 is a Tuesday; with WKST=SU its week starts on Sunday 1997-08-03.
        let start = NaiveDate::from_ymd_opt(1997, 8, 5).unwrap();
        let target = NaiveDate::from_ymd_opt(1997, 8, 30).unwrap();
        let p = aligned_period_start(Frequency::Weekly, 2, chrono::Weekday::Sun, start, target);
        assert_eq!(p, NaiveDate::from_ymd_opt(1997, 8, 17));
        let p = aligned_period_start(Frequency::Weekly, 2, chrono::Weekday::Mon, start, target);
        assert_eq!(p, NaiveDate::from_ymd_opt(1997, 8, 18));
        // Target inside the first period: no restart.
        let p = aligned_period_start(Frequency::Weekly, 2, chrono::Weekday::Mon, start, start);
        assert_eq!(p, None);
    }

    #[test]
    fn aligned_monthly_and_yearly_periods() {
        let start = NaiveDate::from_ymd_opt(2020, 11, 30).unwrap();
        let target = NaiveDate::from_ymd_opt(2023, 2, 10).unwrap();
        assert_eq!(
            aligned_period_start(Frequency::Monthly, 5, chrono::Weekday::Mon, start, target),
            NaiveDate::from_ymd_opt(2022, 12, 1)
        );
        assert_eq!(
            aligned_period_start(Frequency::Yearly, 2, chrono::Weekday::Mon, start, target),
            NaiveDate::from_ymd_opt(2022, 1, 1)
        );
        assert_eq!(
            aligned_period_start(Frequency::Daily, 7, chrono::Weekday::Mon, start, target),
            NaiveDate::from_ymd_opt(2023, 2, 6)
        );
    }

    #[test]
    fn gap_is_shifted_by_its_length_and_overlap_takes_earlier() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2024-03-31 02:30 does not exist in Berlin: 02:30 CET = 01:30Z, shown as 03:30 CEST.
        let t = resolve_local(berlin, naive(2024, 3, 31, 2, 30));
        assert_eq!(t, Utc.with_ymd_and_hms(2024, 3, 31, 1, 30, 0).unwrap());
        // 2024-10-27 02:30 happens twice; the first is 02:30 CEST = 00:30Z.
        let t = resolve_local(berlin, naive(2024, 10, 27, 2, 30));
        assert_eq!(t, Utc.with_ymd_and_hms(2024, 10, 27, 0, 30, 0).unwrap());
        // Lord Howe moves 30 minutes: 02:15 on 2024-10-06 is in the gap -> 02:45 (+11).
        let lh = chrono_tz::Australia::Lord_Howe;
        let t = resolve_local(lh, naive(2024, 10, 6, 2, 15));
        assert_eq!(
            t.with_timezone(&lh).naive_local(),
            naive(2024, 10, 6, 2, 45)
        );
        // Samoa skipped 2011-12-30 entirely: 09:00 that day becomes 09:00 on the 31st.
        let apia = chrono_tz::Pacific::Apia;
        let t = resolve_local(apia, naive(2011, 12, 30, 9, 0));
        assert_eq!(
            t.with_timezone(&apia).naive_local(),
            naive(2011, 12, 31, 9, 0)
        );
    }

    const ZONES: &[Tz] = &[
        chrono_tz::Europe::Berlin,
        chrono_tz::Europe::London,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Pacific::Apia,
        chrono_tz::UTC,
    ];

    fn arb_rule() -> impl Strategy<Value = String> {
        let freq = prop_oneof![
            Just("DAILY"),
            Just("WEEKLY"),
            Just("MONTHLY"),
            Just("YEARLY")
        ];
        (
            freq,
            1u16..5,
            proptest::option::of(proptest::collection::vec(0usize..7, 1..4)),
            proptest::option::of(proptest::collection::vec(
                prop_oneof![1i8..=28, -3i8..=-1],
                1..3,
            )),
            proptest::option::of(proptest::collection::vec(1u8..=12, 1..4)),
            proptest::option::of((1i8..=4, 0usize..7)),
            any::<bool>(),
            proptest::sample::select(vec!["MO", "SU", "WE"]),
        )
            .prop_map(|(freq, interval, days, mdays, months, nth, setpos, wkst)| {
                let codes = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
                let mut parts = vec![format!("FREQ={freq}"), format!("INTERVAL={interval}")];
                let monthly_or_yearly = matches!(freq, "MONTHLY" | "YEARLY");
                if let Some((n, d)) = nth.filter(|_| monthly_or_yearly) {
                    parts.push(format!("BYDAY={n}{},-1{}", codes[d], codes[(d + 3) % 7]));
                } else if let Some(days) = days {
                    let list: Vec<&str> = days.iter().map(|d| codes[*d]).collect();
                    parts.push(format!("BYDAY={}", list.join(",")));
                }
                if let Some(mdays) = mdays.filter(|_| freq != "WEEKLY") {
                    let list: Vec<String> = mdays.iter().map(ToString::to_string).collect();
                    parts.push(format!("BYMONTHDAY={}", list.join(",")));
                }
                if let Some(months) = months {
                    let list: Vec<String> = months.iter().map(ToString::to_string).collect();
                    parts.push(format!("BYMONTH={}", list.join(",")));
                }
                if setpos && parts.len() > 2 {
                    parts.push("BYSETPOS=1,-1".to_owned());
                }
                parts.push(format!("WKST={wkst}"));
                parts.join(";")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

        /// Restarting expansion at an aligned later period gives exactly the same next
        /// occurrence as expanding from the series start.
        #[test]
        fn restart_matches_full_expansion(
            rule in arb_rule(),
            zone in proptest::sample::select(ZONES),
            start_day in 0u64..3000,
            hour in 0u32..24,
            minute in proptest::sample::select(vec![0u32, 15, 30, 45]),
            offset_hours in 0i64..(4 * 365 * 24),
        ) {
            let Ok(rule) = RecurrenceRule::parse(&rule) else { return Ok(()) };
            let dtstart = NaiveDate::from_ymd_opt(2005, 1, 1).unwrap()
                .checked_add_days(Days::new(start_day)).unwrap()
                .and_hms_opt(hour, minute, 0).unwrap();
            let schedule = Schedule::new(rule, Anchor::Due, zone, dtstart);
            let after = schedule.start_utc() + TimeDelta::hours(offset_hours);
            let deadline = Instant::now() + Duration::from_secs(30);
            let fast = schedule.next_due(after, true, deadline);
            let full = schedule.next_due(after, false, deadline);
            prop_assert_eq!(fast, full);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

        /// A chain of `next_after` calls on one schedule (which resumes its saved cursor)
        /// gives exactly what fresh copies of the schedule (empty cache) give, also when the
        /// moment jumps ahead or back, and with COUNT or UNTIL.
        #[test]
        fn resumed_chain_matches_fresh_calls(
            rule in arb_rule(),
            bound in prop_oneof![Just(""), Just(";COUNT=40"), Just(";UNTIL=20150301T000000Z")],
            zone in proptest::sample::select(ZONES),
            start_day in 0u64..3000,
            hour in 0u32..24,
            minute in proptest::sample::select(vec![0u32, 15, 30, 45]),
            jumps in proptest::collection::vec(
                prop_oneof![4 => Just(0i64), 1 => -2000i64..(3 * 365 * 24)],
                1..24,
            ),
        ) {
            let Ok(rule) = RecurrenceRule::parse(&format!("{rule}{bound}")) else {
                return Ok(());
            };
            let dtstart = NaiveDate::from_ymd_opt(2005, 1, 1).unwrap()
                .checked_add_days(Days::new(start_day)).unwrap()
                .and_hms_opt(hour, minute, 0).unwrap();
            let schedule = Schedule::new(rule, Anchor::Due, zone, dtstart);
            let mut due = schedule.start_utc();
            for (index, jump) in (0u32..).zip(jumps) {
                let now = due + TimeDelta::hours(jump);
                let chained = schedule.next_after(due, now, index);
                let fresh = schedule.clone().next_after(due, now, index);
                prop_assert_eq!(&chained, &fresh);
                match chained {
                    Ok(Some(next)) => due = next,
                    _ => due = schedule.start_utc(),
                }
            }
        }
    }

    #[test]
    fn changed_fields_are_not_served_from_the_cache() {
        let mut s = Schedule::new(
            RecurrenceRule::parse("FREQ=DAILY").unwrap(),
            Anchor::Due,
            chrono_tz::Europe::Berlin,
            naive(2024, 1, 1, 9, 0),
        );
        let first = s.start_utc();
        let next = s.next_after(first, first, 0).unwrap().unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 2, 8, 0, 0).unwrap());
        s.rule = RecurrenceRule::parse("FREQ=WEEKLY").unwrap();
        let weekly = s.next_after(next, next, 1).unwrap().unwrap();
        assert_eq!(weekly, Utc.with_ymd_and_hms(2024, 1, 8, 8, 0, 0).unwrap());
        s.time_zone = chrono_tz::UTC;
        let utc = s.next_after(weekly, weekly, 2).unwrap().unwrap();
        assert_eq!(utc, Utc.with_ymd_and_hms(2024, 1, 8, 9, 0, 0).unwrap());
        s.dtstart = naive(2024, 1, 2, 9, 0);
        let moved = s.next_after(utc, utc, 3).unwrap().unwrap();
        assert_eq!(moved, Utc.with_ymd_and_hms(2024, 1, 9, 9, 0, 0).unwrap());
        assert_eq!(s.clone(), s);
    }
}
