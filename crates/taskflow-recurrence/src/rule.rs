//! Parsing, validation and normalisation of recurrence rules.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};

use crate::RecurrenceError;

/// Longest accepted input (characters); anything longer is rejected before parsing.
pub const MAX_RULE_LEN: usize = 1000;
/// Largest accepted INTERVAL.
pub const MAX_INTERVAL: u16 = 1000;
/// Largest accepted COUNT.
pub const MAX_COUNT: u32 = 1_000_000;

const PRESETS: &[(&str, &str)] = &[
    ("daily", "FREQ=DAILY"),
    ("weekdays", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"),
    ("weekly", "FREQ=WEEKLY"),
    ("biweekly", "FREQ=WEEKLY;INTERVAL=2"),
    ("monthly", "FREQ=MONTHLY"),
    ("yearly", "FREQ=YEARLY"),
];

/// How often a rule repeats (the supported subset of RFC 5545 FREQ values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frequency {
    /// `FREQ=DAILY`
    Daily,
    /// `FREQ=WEEKLY`
    Weekly,
    /// `FREQ=MONTHLY`
    Monthly,
    /// `FREQ=YEARLY`
    Yearly,
}

impl Frequency {
    fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "DAILY",
            Self::Weekly => "WEEKLY",
            Self::Monthly => "MONTHLY",
            Self::Yearly => "YEARLY",
        }
    }
}

/// The end bound of a rule as written in its UNTIL part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Until {
    /// `UNTIL=YYYYMMDDTHHMMSSZ`: occurrences at or before this instant are included.
    Instant(DateTime<Utc>),
    /// `UNTIL=YYYYMMDD`: occurrences whose local date (in the series' zone) is on or before
    /// this date are included.
    Date(NaiveDate),
}

/// One BYDAY entry: a weekday with an optional ordinal (`1MO`, `-1FR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DaySpec {
    pub(crate) ordinal: Option<i16>,
    pub(crate) weekday: Weekday,
}

/// The parsed parts of a rule, lists sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parts {
    pub(crate) freq: Frequency,
    pub(crate) interval: u16,
    pub(crate) count: Option<u32>,
    pub(crate) until: Option<Until>,
    pub(crate) by_month: Vec<u8>,
    pub(crate) by_week_no: Vec<i8>,
    pub(crate) by_year_day: Vec<i16>,
    pub(crate) by_month_day: Vec<i8>,
    pub(crate) by_day: Vec<DaySpec>,
    pub(crate) by_set_pos: Vec<i16>,
    pub(crate) wkst: Weekday,
}

impl Parts {
    /// Whether the rule has none of the BYxxx parts from which the `rrule` engine (like
    /// python-dateutil) derives defaults from DTSTART.
    pub(crate) fn takes_defaults_from_start(&self) -> bool {
        self.by_week_no.is_empty()
            && self.by_year_day.is_empty()
            && self.by_month_day.is_empty()
            && self.by_day.is_empty()
    }
}

/// A validated RFC 5545 RRULE (without DTSTART), normalised text like
/// `"FREQ=WEEKLY;BYDAY=MO,WE"`.
///
/// Serialises as its normalised string; deserialising parses (and validates) the string.
/// The parsed form for the `rrule` engine is kept inside, so evaluating a
/// [`Schedule`](crate::Schedule) never re-parses the text.
#[derive(Clone)]
pub struct RecurrenceRule {
    text: String,
    pub(crate) parts: Parts,
    /// The rule as the `rrule` engine sees it: COUNT and UNTIL removed (this crate applies
    /// them itself against zone-localised instants).
    pub(crate) engine: rrule::RRule<rrule::Unvalidated>,
}

impl PartialEq for RecurrenceRule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for RecurrenceRule {}

impl std::hash::Hash for RecurrenceRule {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for RecurrenceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecurrenceRule").field(&self.text).finish()
    }
}

impl fmt::Display for RecurrenceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for RecurrenceRule {
    type Err = RecurrenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for RecurrenceRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for RecurrenceRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl RecurrenceRule {
    /// Accepts a preset (`daily`, `weekdays`, `weekly`, `biweekly`, `monthly`, `yearly`;
    /// case-insensitive) or an RRULE, with or without a leading `RRULE:`.
    ///
    /// Rejects SECONDLY/MINUTELY/HOURLY, BYHOUR/BYMINUTE/BYSECOND (the time of day comes from
    /// the schedule's start), DTSTART/EXDATE/RDATE inside the text, RSCALE/SKIP, unknown parts,
    /// duplicate parts, bad values, COUNT together with UNTIL, a floating (non-UTC) UNTIL,
    /// combinations RFC 5545 forbids, and anything the `rrule` crate rejects. Rules that can
    /// never produce an occurrence (e.g. `BYMONTH=2;BYMONTHDAY=30`) are rejected with
    /// [`RecurrenceError::NoOccurrences`].
    pub fn parse(input: &str) -> Result<Self, RecurrenceError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(RecurrenceError::invalid(
                "the rule is empty; expected a preset (daily, weekdays, weekly, biweekly, monthly, yearly) or an RRULE such as FREQ=WEEKLY;BYDAY=MO",
            ));
        }
        let chars = trimmed.chars().count();
        if chars > MAX_RULE_LEN {
            return Err(RecurrenceError::invalid(format!(
                "the rule is too long ({chars} characters; at most {MAX_RULE_LEN})"
            )));
        }
        if let Some((_, rule)) = PRESETS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
        {
            return Self::parse_rrule(rule);
        }
        if !trimmed.contains('=') {
            return Err(RecurrenceError::invalid(format!(
                "unknown preset \"{}\"; expected one of daily, weekdays, weekly, biweekly, monthly, yearly, or an RRULE such as FREQ=DAILY",
                shorten(trimmed)
            )));
        }
        Self::parse_rrule(trimmed)
    }

    /// The normalised RRULE text (no `RRULE:` prefix) stored in the database.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The COUNT part, if any.
    pub fn count(&self) -> Option<u32> {
        self.parts.count
    }

    /// The UNTIL part as a UTC instant, if any.
    ///
    /// A date-only UNTIL (`UNTIL=20270301`) is returned as 23:59:59 UTC of that date; the exact
    /// bound a [`Schedule`](crate::Schedule) applies is the end of that date in the series'
    /// own zone (see [`until_bound`](Self::until_bound)).
    pub fn until(&self) -> Option<DateTime<Utc>> {
        match self.parts.until? {
            Until::Instant(t) => Some(t),
            Until::Date(d) => d
                .and_hms_opt(23, 59, 59)
                .map(|naive| Utc.from_utc_datetime(&naive)),
        }
    }

    /// The UNTIL part exactly as written (UTC instant or local date).
    pub fn until_bound(&self) -> Option<Until> {
        self.parts.until
    }

    /// The FREQ part.
    pub fn frequency(&self) -> Frequency {
        self.parts.freq
    }

    /// The INTERVAL part (1 when absent).
    pub fn interval(&self) -> u16 {
        self.parts.interval
    }

    /// Human-readable English, e.g. "every weekday at 09:00", "every 2 weeks on Monday and
    /// Friday at 18:30", "monthly on the last Friday at 09:00", "every day at 09:00, 5 times",
    /// "..., until 2027-03-01". A UTC UNTIL is shown as its UTC date; use
    /// [`Schedule::describe`](crate::Schedule::describe) for the date in the series' zone.
    pub fn describe(&self, local_time: NaiveTime) -> String {
        crate::describe::describe(&self.parts, local_time, |until| match until {
            Until::Instant(t) => t.date_naive(),
            Until::Date(d) => d,
        })
    }

    fn parse_rrule(input: &str) -> Result<Self, RecurrenceError> {
        let parts = parse_parts(input)?;
        let text = canonical_text(&parts, true);
        let engine_text = canonical_text(&parts, false);
        let engine: rrule::RRule<rrule::Unvalidated> = engine_text
            .parse()
            .map_err(|e: rrule::RRuleError| RecurrenceError::invalid(e.to_string()))?;
        // Let the engine run its own RFC checks once, against a neutral start.
        let probe = rrule::Tz::UTC
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single();
        if let Some(probe) = probe {
            engine
                .clone()
                .validate(probe)
                .map_err(|e| RecurrenceError::invalid(e.to_string()))?;
        }
        Ok(Self {
            text,
            parts,
            engine,
        })
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(40).collect();
        format!("{head}…")
    }
}

fn parse_parts(input: &str) -> Result<Parts, RecurrenceError> {
    let upper = input.to_ascii_uppercase();
    let body = upper
        .strip_prefix("RRULE:")
        .unwrap_or(upper.as_str())
        .trim();
    for prop in ["DTSTART", "EXDATE", "RDATE", "EXRULE"] {
        if body.contains(prop) {
            return Err(RecurrenceError::unsupported(
                prop,
                "only the RRULE itself is accepted; the series start comes from the task and exceptions are not supported",
            ));
        }
    }
    if body.contains('\n') || body.contains('\r') {
        return Err(RecurrenceError::invalid(
            "the rule must be a single line with one RRULE",
        ));
    }
    if body.contains(':') {
        return Err(RecurrenceError::invalid(
            "unexpected ':'; give the rule as FREQ=...;... optionally prefixed with RRULE: (no parameters)",
        ));
    }
    let mut seen = HashSet::new();
    let mut freq = None;
    let mut interval = 1u16;
    let mut count = None;
    let mut until = None;
    let mut by_month = Vec::new();
    let mut by_week_no = Vec::new();
    let mut by_year_day = Vec::new();
    let mut by_month_day = Vec::new();
    let mut by_day = Vec::new();
    let mut by_set_pos = Vec::new();
    let mut wkst = Weekday::Mon;

    for raw in body.split(';') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let Some((key, value)) = raw.split_once('=') else {
            return Err(RecurrenceError::invalid(format!(
                "rule part \"{}\" is not of the form NAME=VALUE",
                shorten(raw)
            )));
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() {
            return Err(RecurrenceError::invalid(format!(
                "rule part \"{}\" has no name",
                shorten(raw)
            )));
        }
        match key {
            "BYHOUR" | "BYMINUTE" | "BYSECOND" => {
                return Err(RecurrenceError::unsupported(
                    key,
                    "a task occurs at most once a day, at the time of day of its start; set the time on the task instead",
                ));
            }
            "RSCALE" | "SKIP" => {
                return Err(RecurrenceError::unsupported(
                    key,
                    "non-Gregorian recurrence (RFC 7529) is not supported",
                ));
            }
            "TZID" => {
                return Err(RecurrenceError::unsupported(
                    key,
                    "the time zone comes from the task, not from the rule",
                ));
            }
            _ => {}
        }
        if !KNOWN_PARTS.contains(&key) {
            return Err(RecurrenceError::invalid(format!(
                "unknown rule part \"{}\"",
                shorten(key)
            )));
        }
        if !seen.insert(key.to_owned()) {
            return Err(RecurrenceError::invalid(format!(
                "{key} appears more than once"
            )));
        }
        if value.is_empty() {
            return Err(RecurrenceError::invalid(format!("{key} has no value")));
        }
        match key {
            "FREQ" => freq = Some(parse_freq(value)?),
            "INTERVAL" => {
                let n = parse_int(key, value, 1, i64::from(MAX_INTERVAL))?;
                interval = u16::try_from(n)
                    .map_err(|_| RecurrenceError::invalid("INTERVAL is out of range"))?;
            }
            "COUNT" => {
                let n = parse_int(key, value, 1, i64::from(MAX_COUNT))?;
                count = Some(
                    u32::try_from(n)
                        .map_err(|_| RecurrenceError::invalid("COUNT is out of range"))?,
                );
            }
            "UNTIL" => until = Some(parse_until(value)?),
            "BYMONTH" => by_month = parse_list(key, value, |v| parse_int(key, v, 1, 12))?,
            "BYWEEKNO" => by_week_no = parse_list(key, value, |v| parse_signed(key, v, 53))?,
            "BYYEARDAY" => by_year_day = parse_list(key, value, |v| parse_signed(key, v, 366))?,
            "BYMONTHDAY" => by_month_day = parse_list(key, value, |v| parse_signed(key, v, 31))?,
            "BYDAY" => by_day = parse_list(key, value, parse_day)?,
            "BYSETPOS" => by_set_pos = parse_list(key, value, |v| parse_signed(key, v, 366))?,
            "WKST" => {
                wkst = parse_weekday(value).ok_or_else(|| {
                    RecurrenceError::invalid(format!(
                        "WKST must be one of MO, TU, WE, TH, FR, SA, SU, not \"{}\"",
                        shorten(value)
                    ))
                })?
            }
            _ => {}
        }
    }

    let freq = freq.ok_or_else(|| RecurrenceError::invalid("FREQ is required"))?;
    if count.is_some() && until.is_some() {
        return Err(RecurrenceError::invalid(
            "COUNT and UNTIL must not both be given",
        ));
    }

    let by_month = narrow(by_month, "BYMONTH")?;
    let by_week_no = narrow(by_week_no, "BYWEEKNO")?;
    let by_year_day = narrow(by_year_day, "BYYEARDAY")?;
    let by_month_day = narrow(by_month_day, "BYMONTHDAY")?;
    let by_set_pos = narrow(by_set_pos, "BYSETPOS")?;

    if !by_week_no.is_empty() && freq != Frequency::Yearly {
        return Err(RecurrenceError::invalid(
            "BYWEEKNO is only allowed with FREQ=YEARLY",
        ));
    }
    if !by_year_day.is_empty() && freq != Frequency::Yearly {
        return Err(RecurrenceError::invalid(
            "BYYEARDAY is only allowed with FREQ=YEARLY",
        ));
    }
    if !by_month_day.is_empty() && freq == Frequency::Weekly {
        return Err(RecurrenceError::invalid(
            "BYMONTHDAY is not allowed with FREQ=WEEKLY",
        ));
    }
    for day in &by_day {
        let Some(n) = day.ordinal else { continue };
        match freq {
            Frequency::Monthly if n.abs() > 5 => {
                return Err(RecurrenceError::invalid(format!(
                    "BYDAY ordinal {n} is out of range for FREQ=MONTHLY (1..=5 or -5..=-1)"
                )));
            }
            Frequency::Yearly if !by_week_no.is_empty() => {
                return Err(RecurrenceError::invalid(
                    "BYDAY must not have ordinals together with BYWEEKNO",
                ));
            }
            Frequency::Daily | Frequency::Weekly => {
                return Err(RecurrenceError::invalid(format!(
                    "BYDAY ordinals (like 1MO or -1FR) are only allowed with FREQ=MONTHLY or FREQ=YEARLY, not FREQ={}",
                    freq.as_str()
                )));
            }
            _ => {}
        }
    }
    if !by_set_pos.is_empty()
        && by_day.is_empty()
        && by_month_day.is_empty()
        && by_month.is_empty()
        && by_year_day.is_empty()
        && by_week_no.is_empty()
    {
        return Err(RecurrenceError::invalid(
            "BYSETPOS needs another BYxxx part (BYDAY, BYMONTHDAY, BYMONTH, BYYEARDAY or BYWEEKNO) to select from",
        ));
    }
    if impossible_month_days(&by_month, &by_month_day) {
        return Err(RecurrenceError::NoOccurrences);
    }

    by_day.sort_by_key(|d| {
        let ordinal = d.ordinal.unwrap_or(0);
        (d.weekday.num_days_from_monday(), ordinal < 0, ordinal)
    });
    by_day.dedup();

    Ok(Parts {
        freq,
        interval,
        count,
        until,
        by_month,
        by_week_no,
        by_year_day,
        by_month_day,
        by_day,
        by_set_pos,
        wkst,
    })
}

const KNOWN_PARTS: &[&str] = &[
    "FREQ",
    "INTERVAL",
    "COUNT",
    "UNTIL",
    "BYMONTH",
    "BYWEEKNO",
    "BYYEARDAY",
    "BYMONTHDAY",
    "BYDAY",
    "BYSETPOS",
    "WKST",
];

fn parse_freq(value: &str) -> Result<Frequency, RecurrenceError> {
    match value {
        "DAILY" => Ok(Frequency::Daily),
        "WEEKLY" => Ok(Frequency::Weekly),
        "MONTHLY" => Ok(Frequency::Monthly),
        "YEARLY" => Ok(Frequency::Yearly),
        "HOURLY" | "MINUTELY" | "SECONDLY" => Err(RecurrenceError::UnsupportedFrequency {
            freq: value.to_owned(),
        }),
        other => Err(RecurrenceError::invalid(format!(
            "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY, not \"{}\"",
            shorten(other)
        ))),
    }
}

fn parse_int(key: &str, value: &str, min: i64, max: i64) -> Result<i64, RecurrenceError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    let out_of_range = || {
        RecurrenceError::invalid(format!(
            "{key} value \"{}\" must be a whole number from {min} to {max}",
            shorten(value)
        ))
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(out_of_range());
    }
    let n: i64 = digits.parse().map_err(|_| out_of_range())?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

/// A non-zero integer within `-max..=-1` or `1..=max`, with an optional sign.
fn parse_signed(key: &str, value: &str, max: i64) -> Result<i64, RecurrenceError> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    let bad = || {
        RecurrenceError::invalid(format!(
            "{key} value \"{}\" must be from 1 to {max} or from -{max} to -1",
            shorten(value)
        ))
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n == 0 || n > max {
        return Err(bad());
    }
    Ok(if negative { -n } else { n })
}

fn parse_list<T>(
    key: &str,
    value: &str,
    item: impl Fn(&str) -> Result<T, RecurrenceError>,
) -> Result<Vec<T>, RecurrenceError> {
    let mut out = Vec::new();
    for v in value.split(',') {
        let v = v.trim();
        if v.is_empty() {
            return Err(RecurrenceError::invalid(format!(
                "{key} has an empty list entry"
            )));
        }
        out.push(item(v)?);
    }
    Ok(out)
}

/// Sorts (positives ascending, then negatives ascending: `1,15,-2,-1`), deduplicates and
/// converts to the stored integer type.
fn narrow<T: TryFrom<i64>>(mut values: Vec<i64>, key: &str) -> Result<Vec<T>, RecurrenceError> {
    values.sort_by_key(|v| (*v < 0, *v));
    values.dedup();
    values
        .into_iter()
        .map(|v| {
            T::try_from(v).map_err(|_| RecurrenceError::invalid(format!("{key} is out of range")))
        })
        .collect()
}

fn parse_weekday(value: &str) -> Option<Weekday> {
    Some(match value {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

pub(crate) fn weekday_code(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn parse_day(value: &str) -> Result<DaySpec, RecurrenceError> {
    let bad = || {
        RecurrenceError::invalid(format!(
            "BYDAY entry \"{}\" must be a weekday (MO, TU, WE, TH, FR, SA, SU) with an optional ordinal such as 1MO or -1FR",
            shorten(value)
        ))
    };
    if value.len() < 2 || !value.is_char_boundary(value.len() - 2) {
        return Err(bad());
    }
    let (prefix, code) = value.split_at(value.len() - 2);
    let weekday = parse_weekday(code).ok_or_else(bad)?;
    if prefix.is_empty() {
        return Ok(DaySpec {
            ordinal: None,
            weekday,
        });
    }
    let n = parse_signed("BYDAY", prefix, 53).map_err(|_| bad())?;
    let ordinal = i16::try_from(n).map_err(|_| bad())?;
    Ok(DaySpec {
        ordinal: Some(ordinal),
        weekday,
    })
}

fn parse_until(value: &str) -> Result<Until, RecurrenceError> {
    let bad = || {
        RecurrenceError::invalid(format!(
            "UNTIL \"{}\" must be a UTC date-time like 20270301T235959Z or a date like 20270301",
            shorten(value)
        ))
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let date = |s: &str| -> Result<NaiveDate, RecurrenceError> {
        if s.len() != 8 || !all_digits(s) {
            return Err(bad());
        }
        let year = i32::try_from(number(&s[0..4])?).map_err(|_| bad())?;
        NaiveDate::from_ymd_opt(year, number(&s[4..6])?, number(&s[6..8])?).ok_or_else(bad)
    };
    match value.len() {
        8 => Ok(Until::Date(date(value)?)),
        15 if value.as_bytes().get(8) == Some(&b'T') => Err(RecurrenceError::invalid(format!(
            "UNTIL \"{value}\" is a floating local time; it must be in UTC (end with Z), e.g. {value}Z, or a plain date"
        ))),
        16 if value.as_bytes().get(8) == Some(&b'T') && value.ends_with('Z') => {
            let d = date(&value[0..8])?;
            let time = &value[9..15];
            if !all_digits(time) {
                return Err(bad());
            }
            let t = NaiveTime::from_hms_opt(
                number(&time[0..2])?,
                number(&time[2..4])?,
                number(&time[4..6])?,
            )
            .ok_or_else(bad)?;
            Ok(Until::Instant(Utc.from_utc_datetime(&d.and_time(t))))
        }
        _ => Err(bad()),
    }
}

/// True when BYMONTH and BYMONTHDAY are both given and no listed day exists in any listed
/// month (e.g. February 30): such a rule can never produce an occurrence.
fn impossible_month_days(by_month: &[u8], by_month_day: &[i8]) -> bool {
    if by_month.is_empty() || by_month_day.is_empty() {
        return false;
    }
    let longest = |m: u8| match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    !by_month.iter().any(|&m| {
        by_month_day
            .iter()
            .any(|&d| i32::from(d).abs() <= longest(m))
    })
}

fn join<T: ToString>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The normalised text; without COUNT/UNTIL when `with_bounds` is false (the engine's view).
fn canonical_text(p: &Parts, with_bounds: bool) -> String {
    let mut out = vec![format!("FREQ={}", p.freq.as_str())];
    if p.interval != 1 {
        out.push(format!("INTERVAL={}", p.interval));
    }
    if with_bounds {
        if let Some(count) = p.count {
            out.push(format!("COUNT={count}"));
        }
        match p.until {
            Some(Until::Instant(t)) => out.push(format!("UNTIL={}", t.format("%Y%m%dT%H%M%SZ"))),
            Some(Until::Date(d)) => out.push(format!("UNTIL={}", d.format("%Y%m%d"))),
            None => {}
        }
    }
    if !p.by_month.is_empty() {
        out.push(format!("BYMONTH={}", join(&p.by_month)));
    }
    if !p.by_week_no.is_empty() {
        out.push(format!("BYWEEKNO={}", join(&p.by_week_no)));
    }
    if !p.by_year_day.is_empty() {
        out.push(format!("BYYEARDAY={}", join(&p.by_year_day)));
    }
    if !p.by_month_day.is_empty() {
        out.push(format!("BYMONTHDAY={}", join(&p.by_month_day)));
    }
    if !p.by_day.is_empty() {
        let days: Vec<String> = p
            .by_day
            .iter()
            .map(|d| match d.ordinal {
                Some(n) => format!("{n}{}", weekday_code(d.weekday)),
                None => weekday_code(d.weekday).to_owned(),
            })
            .collect();
        out.push(format!("BYDAY={}", days.join(",")));
    }
    if !p.by_set_pos.is_empty() {
        out.push(format!("BYSETPOS={}", join(&p.by_set_pos)));
    }
    if p.wkst != Weekday::Mon {
        out.push(format!("WKST={}", weekday_code(p.wkst)));
    }
    out.join(";")
}
