//! Tokenizer and the hand-written recognisers of the quick-add grammar.
//!
//! Every recogniser looks at the token list from a position and returns the index just past
//! what it understood, or `None`; none of them consumes anything on failure.

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc, Weekday,
};

/// One token of the input: a run of non-whitespace characters, with commas and leading or
/// trailing punctuation split off into tokens of their own.
#[derive(Debug)]
pub(crate) struct Tok<'a> {
    /// Byte offset of the first byte.
    pub(crate) start: usize,
    /// Byte offset just past the last byte.
    pub(crate) end: usize,
    /// The original text.
    pub(crate) raw: &'a str,
    /// Lower-cased text.
    pub(crate) low: String,
    /// Whether the token has no letter or digit at all.
    pub(crate) punct: bool,
}

const LEADING: &[char] = &['(', '[', '{', '"', '\''];
const TRAILING: &[char] = &['.', ';', ':', '?', '!', ')', ']', '}', '"', '\''];

fn push_tok<'a>(out: &mut Vec<Tok<'a>>, text: &'a str, start: usize, end: usize) {
    if start >= end {
        return;
    }
    let Some(raw) = text.get(start..end) else {
        return;
    };
    out.push(Tok {
        start,
        end,
        raw,
        low: raw.to_lowercase(),
        punct: !raw.chars().any(char::is_alphanumeric),
    });
}

fn push_piece<'a>(out: &mut Vec<Tok<'a>>, text: &'a str, start: usize, end: usize) {
    let Some(piece) = text.get(start..end) else {
        return;
    };
    let lead: usize = piece
        .chars()
        .take_while(|c| LEADING.contains(c))
        .map(char::len_utf8)
        .sum();
    let trail: usize = piece
        .chars()
        .rev()
        .take_while(|c| TRAILING.contains(c))
        .map(char::len_utf8)
        .sum();
    if lead + trail >= piece.len() {
        push_tok(out, text, start, end);
        return;
    }
    push_tok(out, text, start, start + lead);
    push_tok(out, text, start + lead, end - trail);
    push_tok(out, text, end - trail, end);
}

/// Splits the input into tokens (see [`Tok`]).
pub(crate) fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut piece_start: Option<usize> = None;
    for (pos, c) in text.char_indices() {
        if c.is_whitespace() || c == ',' {
            if let Some(s) = piece_start.take() {
                push_piece(&mut out, text, s, pos);
            }
            if c == ',' {
                push_tok(&mut out, text, pos, pos + 1);
            }
        } else if piece_start.is_none() {
            piece_start = Some(pos);
        }
    }
    if let Some(s) = piece_start {
        push_piece(&mut out, text, s, text.len());
    }
    out
}

/// A recognised date (possibly with a time of day), or an exact instant ("in 3 hours").
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum DateHit {
    /// A calendar day in the user's zone, with a time of day when the words implied one.
    Day(NaiveDate, Option<NaiveTime>),
    /// An exact instant.
    Instant(DateTime<Utc>),
}

/// A time unit of "in 3 days", "every 2 weeks", "2 hours before".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// The recurrence words, before they are turned into an RRULE.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RecurSpec {
    pub(crate) freq: &'static str,
    pub(crate) interval: u32,
    pub(crate) by_day: Vec<String>,
    pub(crate) by_month_day: Vec<i32>,
    pub(crate) by_month: Option<u32>,
    pub(crate) completion: bool,
    pub(crate) time: Option<NaiveTime>,
}

impl RecurSpec {
    fn new(freq: &'static str, interval: u32) -> Self {
        Self {
            freq,
            interval,
            ..Self::default()
        }
    }

    fn has_by(&self) -> bool {
        !self.by_day.is_empty() || !self.by_month_day.is_empty() || self.by_month.is_some()
    }
}

/// A recurrence modifier that may follow the recurrence words.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Modifier {
    Completion,
    Until(NaiveDate),
    Count(u32),
    Start(DateHit),
}

/// What a "remind me …" phrase asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ReminderHit {
    Before(Unit, u32),
    At {
        date: Option<DateHit>,
        time: Option<NaiveTime>,
    },
}

/// Builds a time of day; out-of-range values give midnight (never used with such values).
pub(crate) fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

fn unit(s: &str) -> Option<Unit> {
    Some(match s {
        "minute" | "minutes" | "min" | "mins" => Unit::Minute,
        "hour" | "hours" | "hr" | "hrs" => Unit::Hour,
        "day" | "days" => Unit::Day,
        "week" | "weeks" => Unit::Week,
        "month" | "months" => Unit::Month,
        "year" | "years" => Unit::Year,
        _ => return None,
    })
}

/// Weekday and whether it was written in full ("monday", "mondays") rather than abbreviated.
fn weekday(s: &str) -> Option<(Weekday, bool)> {
    Some(match s {
        "monday" | "mondays" => (Weekday::Mon, true),
        "mon" => (Weekday::Mon, false),
        "tuesday" | "tuesdays" => (Weekday::Tue, true),
        "tue" | "tues" => (Weekday::Tue, false),
        "wednesday" | "wednesdays" => (Weekday::Wed, true),
        "wed" => (Weekday::Wed, false),
        "thursday" | "thursdays" => (Weekday::Thu, true),
        "thu" | "thur" | "thurs" => (Weekday::Thu, false),
        "friday" | "fridays" => (Weekday::Fri, true),
        "fri" => (Weekday::Fri, false),
        "saturday" | "saturdays" => (Weekday::Sat, true),
        "sat" => (Weekday::Sat, false),
        "sunday" | "sundays" => (Weekday::Sun, true),
        "sun" => (Weekday::Sun, false),
        _ => return None,
    })
}

fn byday_code(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn month(s: &str) -> Option<u32> {
    Some(match s {
        "jan" | "january" => 1,
        "feb" | "february" => 2,
        "mar" | "march" => 3,
        "apr" | "april" => 4,
        "may" => 5,
        "jun" | "june" => 6,
        "jul" | "july" => 7,
        "aug" | "august" => 8,
        "sep" | "sept" | "september" => 9,
        "oct" | "october" => 10,
        "nov" | "november" => 11,
        "dec" | "december" => 12,
        _ => return None,
    })
}

fn digits(s: &str, max_len: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// "3", "three"; with `article`, also "a"/"an" (= 1).
fn number(s: &str, article: bool) -> Option<u32> {
    if let Some(n) = digits(s, 4) {
        return Some(n);
    }
    Some(match s {
        "a" | "an" if article => 1,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        _ => return None,
    })
}

/// "1st", "22nd", "3rd", "15th" (1..=31).
fn ordinal_day(s: &str) -> Option<u32> {
    let n = s
        .strip_suffix("st")
        .or_else(|| s.strip_suffix("nd"))
        .or_else(|| s.strip_suffix("rd"))
        .or_else(|| s.strip_suffix("th"))?;
    digits(n, 2).filter(|d| (1..=31).contains(d))
}

/// Ordinals of a weekday in a month: first..fifth, 1st..5th, last.
fn nth(s: &str) -> Option<i32> {
    Some(match s {
        "first" | "1st" => 1,
        "second" | "2nd" => 2,
        "third" | "3rd" => 3,
        "fourth" | "4th" => 4,
        "fifth" | "5th" => 5,
        "last" => -1,
        _ => return None,
    })
}

/// Time of day for "morning", "afternoon", "evening", "night".
pub(crate) fn part_of_day(s: &str) -> Option<NaiveTime> {
    Some(match s {
        "morning" => hm(9, 0),
        "afternoon" => hm(15, 0),
        "evening" => hm(18, 0),
        "night" | "tonight" => hm(20, 0),
        _ => return None,
    })
}

/// Splits "9", "9am", "9:30", "9:30pm", "18:00" into (hour, minute, am/pm, had colon).
fn clock(s: &str) -> Option<(u32, u32, Option<bool>, bool)> {
    let (body, meridiem) = if let Some(b) = s.strip_suffix("am") {
        (b, Some(false))
    } else if let Some(b) = s.strip_suffix("pm") {
        (b, Some(true))
    } else {
        (s, None)
    };
    let (h, m, colon) = match body.split_once(':') {
        Some((h, m)) => {
            if m.len() != 2 {
                return None;
            }
            (digits(h, 2)?, digits(m, 2)?, true)
        }
        None => (digits(body, 2)?, 0, false),
    };
    if m > 59 {
        return None;
    }
    Some((h, m, meridiem, colon))
}

fn with_meridiem(h: u32, m: u32, pm: bool) -> Option<NaiveTime> {
    if !(1..=12).contains(&h) {
        return None;
    }
    let h = match (h, pm) {
        (12, false) => 0,
        (12, true) => 12,
        (h, true) => h + 12,
        (h, false) => h,
    };
    NaiveTime::from_hms_opt(h, m, 0)
}

/// Words that are never a person's name after a weekday ("Monday Jones").
const KEYWORDS: &[&str] = &[
    "at",
    "by",
    "on",
    "due",
    "in",
    "every",
    "remind",
    "until",
    "and",
    "or",
    "the",
    "noon",
    "midnight",
    "morning",
    "afternoon",
    "evening",
    "night",
    "next",
    "this",
    "from",
    "for",
];

/// The token list plus the moment of parsing.
pub(crate) struct Ctx<'a> {
    pub(crate) toks: Vec<Tok<'a>>,
    pub(crate) now: DateTime<Utc>,
    pub(crate) today: NaiveDate,
    pub(crate) now_local: NaiveDateTime,
}

impl Ctx<'_> {
    pub(crate) fn low(&self, i: usize) -> &str {
        self.toks.get(i).map(|t| t.low.as_str()).unwrap_or("")
    }

    /// Whether token `i` directly follows token `i - 1` (no whitespace between).
    fn glued(&self, i: usize) -> bool {
        match (
            i.checked_sub(1).and_then(|p| self.toks.get(p)),
            self.toks.get(i),
        ) {
            (Some(a), Some(b)) => a.end == b.start,
            _ => false,
        }
    }

    fn add_days(&self, days: i64) -> Option<NaiveDate> {
        self.today.checked_add_signed(TimeDelta::try_days(days)?)
    }

    /// `wd` strictly after today (a bare weekday never means today).
    fn next_weekday(&self, wd: Weekday) -> Option<NaiveDate> {
        let diff = (i64::from(wd.num_days_from_monday())
            - i64::from(self.today.weekday().num_days_from_monday()))
        .rem_euclid(7);
        self.add_days(if diff == 0 { 7 } else { diff })
    }

    /// `wd` today or later ("this friday").
    fn this_weekday(&self, wd: Weekday) -> Option<NaiveDate> {
        let diff = (i64::from(wd.num_days_from_monday())
            - i64::from(self.today.weekday().num_days_from_monday()))
        .rem_euclid(7);
        self.add_days(diff)
    }

    /// `wd` in next (Monday-based) week ("next friday").
    fn next_week_weekday(&self, wd: Weekday) -> Option<NaiveDate> {
        self.add_days(
            7 - i64::from(self.today.weekday().num_days_from_monday())
                + i64::from(wd.num_days_from_monday()),
        )
    }

    /// The first `month`/`day` on or after today.
    fn next_month_day(&self, month: u32, day: u32) -> Option<NaiveDate> {
        let y = self.today.year();
        (y..=y.saturating_add(8))
            .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day))
            .find(|d| *d >= self.today)
    }

    /// The first day-of-month `day` on or after today.
    fn next_day_of_month(&self, day: u32) -> Option<NaiveDate> {
        let first = self.today.with_day(1)?;
        (0..=12u32)
            .filter_map(|k| first.checked_add_months(Months::new(k)))
            .filter_map(|m| m.with_day(day))
            .find(|d| *d >= self.today)
    }

    // ----- times -------------------------------------------------------------------------

    /// A clock time at `i`. A bare number ("6") only counts after "at"; then 1–7 mean
    /// 13:00–19:00 and the rest 24-hour time.
    pub(crate) fn time_at(&self, i: usize, after_at: bool) -> Option<(usize, NaiveTime)> {
        let l = self.low(i);
        match l {
            "noon" | "midday" => return Some((i + 1, hm(12, 0))),
            "midnight" => return Some((i + 1, hm(0, 0))),
            _ => {}
        }
        let (h, m, meridiem, colon) = clock(l)?;
        if let Some(pm) = meridiem {
            return Some((i + 1, with_meridiem(h, m, pm)?));
        }
        match self.low(i + 1) {
            "am" | "a.m" => return Some((i + 2, with_meridiem(h, m, false)?)),
            "pm" | "p.m" => return Some((i + 2, with_meridiem(h, m, true)?)),
            _ => {}
        }
        if colon {
            return Some((i + 1, NaiveTime::from_hms_opt(h, m, 0)?));
        }
        if after_at {
            let h = if (1..=7).contains(&h) { h + 12 } else { h };
            return Some((i + 1, NaiveTime::from_hms_opt(h, 0, 0)?));
        }
        None
    }

    /// A time phrase: optional "due", optional "at"/"@"/"by", then a time, or "in the
    /// morning/afternoon/evening".
    pub(crate) fn time_phrase(&self, i: usize) -> Option<(usize, NaiveTime)> {
        let mut j = i;
        if self.low(j) == "due" {
            j += 1;
        }
        let mut after_at = false;
        if matches!(self.low(j), "at" | "@" | "by") {
            j += 1;
            after_at = true;
        }
        if self.low(j) == "in"
            && self.low(j + 1) == "the"
            && let Some(t) = part_of_day(self.low(j + 2))
            && self.low(j + 2) != "tonight"
        {
            return Some((j + 3, t));
        }
        self.time_at(j, after_at)
    }

    // ----- dates -------------------------------------------------------------------------

    /// A month-day date at `i`: "jan 5", "january 5th", "5 jan", "5th of january",
    /// each optionally followed by a year ("jan 5, 2027"). Returns (end, month, day, year).
    fn month_day(&self, i: usize) -> Option<(usize, u32, u32, Option<i32>)> {
        let day_of = |s: &str| ordinal_day(s).or_else(|| digits(s, 2).filter(|d| *d >= 1));
        let (mut end, m, d) = if let Some(m) = month(self.low(i)) {
            let d = day_of(self.low(i + 1))?;
            (i + 2, m, d)
        } else {
            let d = day_of(self.low(i))?;
            let mut j = i + 1;
            if self.low(j) == "of" && ordinal_day(self.low(i)).is_some() {
                j += 1;
            }
            (j + 1, month(self.low(j))?, d)
        };
        if d > 31 {
            return None;
        }
        let mut year = None;
        let k = if self.low(end) == "," { end + 1 } else { end };
        if let Some(y) = digits(self.low(k), 4).filter(|y| (1000..=9999).contains(y)) {
            year = i32::try_from(y).ok();
            end = k + 1;
        }
        Some((end, m, d, year))
    }

    fn numeric_date(&self, s: &str) -> Option<NaiveDate> {
        if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
            let mut parts = s.split('-');
            let y = digits(parts.next()?, 4)?;
            let m = digits(parts.next()?, 2)?;
            let d = digits(parts.next()?, 2)?;
            return NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d);
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 2 && parts.len() != 3 {
            return None;
        }
        let m = digits(parts.first()?, 2)?;
        let d = digits(parts.get(1)?, 2)?;
        match parts.get(2) {
            None => {
                // Valid in some year (a leap year admits 2/29).
                NaiveDate::from_ymd_opt(2000, m, d)?;
                self.next_month_day(m, d)
            }
            Some(y) => {
                let y = match y.len() {
                    2 => 2000 + digits(y, 2)?,
                    4 => digits(y, 4)?,
                    _ => return None,
                };
                NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
            }
        }
    }

    fn in_duration(&self, i: usize) -> Option<(usize, DateHit)> {
        if self.low(i) != "in" {
            return None;
        }
        let n = number(self.low(i + 1), true)?;
        let u = unit(self.low(i + 2))?;
        let end = i + 3;
        let n64 = i64::from(n);
        let hit = match u {
            Unit::Minute => {
                DateHit::Instant(self.now.checked_add_signed(TimeDelta::try_minutes(n64)?)?)
            }
            Unit::Hour => {
                DateHit::Instant(self.now.checked_add_signed(TimeDelta::try_hours(n64)?)?)
            }
            Unit::Day => DateHit::Day(self.add_days(n64)?, None),
            Unit::Week => DateHit::Day(self.add_days(n64.checked_mul(7)?)?, None),
            Unit::Month => DateHit::Day(self.today.checked_add_months(Months::new(n))?, None),
            Unit::Year => DateHit::Day(
                self.today
                    .checked_add_months(Months::new(n.checked_mul(12)?))?,
                None,
            ),
        };
        Some((end, hit))
    }

    /// A date at `i`. `after_prep` is true after "on", "by", "due", "until", …: it allows the
    /// forms that are too ambiguous alone (abbreviated weekdays, "the 1st", "1st").
    pub(crate) fn date_at(&self, i: usize, after_prep: bool) -> Option<(usize, DateHit)> {
        let l = self.low(i);
        let day = |d: Option<NaiveDate>, end: usize| d.map(|d| (end, DateHit::Day(d, None)));
        match l {
            "today" => return day(Some(self.today), i + 1),
            "tonight" => return Some((i + 1, DateHit::Day(self.today, Some(hm(20, 0))))),
            "tomorrow" | "tmr" | "tmrw" => return day(self.add_days(1), i + 1),
            "yesterday" => return day(self.add_days(-1), i + 1),
            "next" => {
                let n = self.low(i + 1);
                if let Some((wd, _)) = weekday(n) {
                    return day(self.next_week_weekday(wd), i + 2);
                }
                return match n {
                    "week" => day(self.next_week_weekday(Weekday::Mon), i + 2),
                    "weekend" => day(self.next_week_weekday(Weekday::Sat), i + 2),
                    "month" => day(
                        self.today
                            .with_day(1)
                            .and_then(|d| d.checked_add_months(Months::new(1))),
                        i + 2,
                    ),
                    "year" => day(NaiveDate::from_ymd_opt(self.today.year() + 1, 1, 1), i + 2),
                    _ => None,
                };
            }
            "this" => {
                let n = self.low(i + 1);
                if let Some((wd, _)) = weekday(n) {
                    return day(self.this_weekday(wd), i + 2);
                }
                if n == "weekend" {
                    let d = if self.today.weekday() == Weekday::Sun {
                        Some(self.today)
                    } else {
                        self.this_weekday(Weekday::Sat)
                    };
                    return day(d, i + 2);
                }
                if let Some(t) = part_of_day(n) {
                    return Some((i + 2, DateHit::Day(self.today, Some(t))));
                }
                return None;
            }
            "in" => return self.in_duration(i),
            "end" => {
                if self.low(i + 1) != "of" {
                    return None;
                }
                let j = if self.low(i + 2) == "the" {
                    i + 3
                } else {
                    i + 2
                };
                return match self.low(j) {
                    "month" => day(
                        self.today
                            .with_day(1)
                            .and_then(|d| d.checked_add_months(Months::new(1)))
                            .and_then(|d| d.pred_opt()),
                        j + 1,
                    ),
                    "year" => day(NaiveDate::from_ymd_opt(self.today.year(), 12, 31), j + 1),
                    _ => None,
                };
            }
            "the" if after_prep => {
                let d = ordinal_day(self.low(i + 1))?;
                if let Some((end, m, d, y)) = self.month_day(i + 1) {
                    return self.month_day_hit(end, m, d, y);
                }
                return day(self.next_day_of_month(d), i + 2);
            }
            _ => {}
        }
        if let Some((wd, full)) = weekday(l) {
            if !after_prep {
                if !full {
                    return None;
                }
                if let Some(next) = self.toks.get(i + 1)
                    && next.raw.chars().next().is_some_and(char::is_uppercase)
                    && !KEYWORDS.contains(&next.low.as_str())
                    && weekday(&next.low).is_none()
                    && month(&next.low).is_none()
                    && self.time_at(i + 1, false).is_none()
                {
                    // "meet Monday Jones": a capitalised name follows; leave it alone.
                    return None;
                }
            }
            return day(self.next_weekday(wd), i + 1);
        }
        if let Some((end, m, d, y)) = self.month_day(i) {
            return self.month_day_hit(end, m, d, y);
        }
        if let Some(d) = self.numeric_date(l) {
            return day(Some(d), i + 1);
        }
        if after_prep && let Some(d) = ordinal_day(l) {
            return day(self.next_day_of_month(d), i + 1);
        }
        None
    }

    fn month_day_hit(
        &self,
        end: usize,
        m: u32,
        d: u32,
        year: Option<i32>,
    ) -> Option<(usize, DateHit)> {
        let date = match year {
            Some(y) => NaiveDate::from_ymd_opt(y, m, d)?,
            None => self.next_month_day(m, d)?,
        };
        Some((end, DateHit::Day(date, None)))
    }

    /// A due-date phrase: optional "due", optional "by"/"on"/"before", then a date.
    pub(crate) fn due_phrase(&self, i: usize) -> Option<(usize, DateHit)> {
        let mut j = i;
        let mut prep = false;
        if self.low(j) == "due" {
            j += 1;
            prep = true;
        }
        if matches!(self.low(j), "by" | "on" | "before") {
            j += 1;
            prep = true;
        }
        self.date_at(j, prep)
    }

    // ----- tags and priority -------------------------------------------------------------

    /// `#tag` (letters, digits, `-`, `_`, `/`), lower-cased.
    pub(crate) fn tag_at(&self, i: usize) -> Option<String> {
        let body = self.toks.get(i)?.low.strip_prefix('#')?;
        let ok = !body.is_empty()
            && body.chars().any(char::is_alphanumeric)
            && body
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '/'));
        ok.then(|| body.to_owned())
    }

    /// `!low`, `!medium`, `!high`, `!urgent`, `!p1`..`!p4`.
    pub(crate) fn priority_at(&self, i: usize) -> Option<&'static str> {
        Some(match self.low(i) {
            "!urgent" | "!p1" => "urgent",
            "!high" | "!p2" => "high",
            "!medium" | "!p3" => "medium",
            "!low" | "!p4" => "low",
            _ => return None,
        })
    }

    // ----- reminders ---------------------------------------------------------------------

    /// "remind me 1 day before", "remind me the day before", "remind me at 8am",
    /// "remind me tomorrow at 7pm", "remind me in 30 minutes".
    pub(crate) fn reminder_at(&self, i: usize) -> Option<(usize, ReminderHit)> {
        if self.low(i) != "remind" || self.low(i + 1) != "me" {
            return None;
        }
        let j = i + 2;
        if self.low(j) == "the" && self.low(j + 1) == "day" && self.low(j + 2) == "before" {
            return Some((j + 3, ReminderHit::Before(Unit::Day, 1)));
        }
        if let Some(n) = number(self.low(j), true)
            && let Some(u) = unit(self.low(j + 1))
            && !matches!(u, Unit::Month | Unit::Year)
            && matches!(self.low(j + 2), "before" | "earlier" | "ahead" | "prior")
            && n >= 1
        {
            return Some((j + 3, ReminderHit::Before(u, n)));
        }
        let mut k = j;
        let mut date = None;
        let mut time = None;
        for _ in 0..2 {
            if time.is_none()
                && let Some((e, t)) = self.time_phrase(k)
            {
                time = Some(t);
                k = e;
                continue;
            }
            if date.is_none()
                && let Some((e, d)) = self.due_phrase(k)
            {
                date = Some(d);
                k = e;
                continue;
            }
            break;
        }
        if date.is_none() && time.is_none() {
            return None;
        }
        Some((k, ReminderHit::At { date, time }))
    }

    // ----- recurrence --------------------------------------------------------------------

    /// A list of weekdays: "mon", "mon, wed and fri", "monday & thursday".
    fn weekday_list(&self, i: usize) -> Option<(usize, Vec<Weekday>)> {
        let (first, _) = weekday(self.low(i))?;
        let mut days = vec![first];
        let mut end = i + 1;
        loop {
            let mut k = end;
            if self.low(k) == "," {
                k += 1;
            }
            if matches!(self.low(k), "and" | "&") {
                k += 1;
            }
            if k == end {
                break;
            }
            match weekday(self.low(k)) {
                Some((wd, _)) => {
                    if !days.contains(&wd) {
                        days.push(wd);
                    }
                    end = k + 1;
                }
                None => break,
            }
        }
        Some((end, days))
    }

    /// A list of month days: "1st", "1st and 15th".
    fn month_day_list(&self, i: usize) -> Option<(usize, Vec<i32>)> {
        let first = ordinal_day(self.low(i))?;
        let mut days = vec![i32::try_from(first).ok()?];
        let mut end = i + 1;
        loop {
            let mut k = end;
            if self.low(k) == "," {
                k += 1;
            }
            if matches!(self.low(k), "and" | "&") {
                k += 1;
            }
            if k == end {
                break;
            }
            match ordinal_day(self.low(k)).and_then(|d| i32::try_from(d).ok()) {
                Some(d) => {
                    if !days.contains(&d) {
                        days.push(d);
                    }
                    end = k + 1;
                }
                None => break,
            }
        }
        Some((end, days))
    }

    /// Optional "of the month", "of each month", "of every month", "of month".
    fn of_the_month(&self, i: usize) -> usize {
        if self.low(i) != "of" {
            return i;
        }
        let j = if matches!(self.low(i + 1), "the" | "each" | "every") {
            i + 2
        } else {
            i + 1
        };
        if self.low(j) == "month" { j + 1 } else { i }
    }

    /// Monthly by-parts: "1st and 15th", "last day", "last friday", "2nd tuesday".
    fn monthly_by(&self, i: usize, spec: &mut RecurSpec) -> Option<usize> {
        if let Some(n) = nth(self.low(i)) {
            if self.low(i + 1) == "day" && n == -1 {
                spec.by_month_day = vec![-1];
                return Some(self.of_the_month(i + 2));
            }
            if let Some((wd, _)) = weekday(self.low(i + 1)) {
                spec.by_day = vec![format!("{n}{}", byday_code(wd))];
                return Some(self.of_the_month(i + 2));
            }
        }
        let (end, days) = self.month_day_list(i)?;
        spec.by_month_day = days;
        Some(self.of_the_month(end))
    }

    /// The tail of a recurrence without by-parts: "on monday", "on the 1st", "on jan 5".
    fn recur_tail(&self, i: usize, spec: &mut RecurSpec) -> usize {
        if spec.has_by() || self.low(i) != "on" {
            return i;
        }
        let j = i + 1;
        match spec.freq {
            "WEEKLY" => {
                if let Some((end, days)) = self.weekday_list(j) {
                    spec.by_day = days.into_iter().map(|d| byday_code(d).to_owned()).collect();
                    return end;
                }
            }
            "MONTHLY" => {
                let k = if self.low(j) == "the" { j + 1 } else { j };
                if let Some(end) = self.monthly_by(k, spec) {
                    return end;
                }
            }
            "YEARLY" => {
                if let Some((end, m, d, None)) = self.month_day(j) {
                    spec.by_month = Some(m);
                    spec.by_month_day = vec![i32::try_from(d).unwrap_or(1)];
                    return end;
                }
            }
            _ => {}
        }
        i
    }

    fn freq_of(u: Unit) -> Option<&'static str> {
        Some(match u {
            Unit::Day => "DAILY",
            Unit::Week => "WEEKLY",
            Unit::Month => "MONTHLY",
            Unit::Year => "YEARLY",
            Unit::Minute | Unit::Hour => return None,
        })
    }

    /// The words after "every" (and "every!"/"every other").
    fn every_body(&self, j: usize) -> Option<(usize, RecurSpec)> {
        let l = self.low(j);
        // every other week / every other monday
        if l == "other" {
            if let Some(freq) = unit(self.low(j + 1)).and_then(Self::freq_of) {
                let mut spec = RecurSpec::new(freq, 2);
                let end = self.recur_tail(j + 2, &mut spec);
                return Some((end, spec));
            }
            let (end, days) = self.weekday_list(j + 1)?;
            let mut spec = RecurSpec::new("WEEKLY", 2);
            spec.by_day = days.into_iter().map(|d| byday_code(d).to_owned()).collect();
            return Some((end, spec));
        }
        // every 3 days / every three weeks / every 2nd week
        let n = number(l, false).or_else(|| match nth(l) {
            Some(n) if n > 1 => u32::try_from(n).ok(),
            _ => None,
        });
        if let Some(n) = n
            && let Some(freq) = unit(self.low(j + 1)).and_then(Self::freq_of)
        {
            if !(1..=1000).contains(&n) {
                return None;
            }
            let mut spec = RecurSpec::new(freq, n);
            let end = self.recur_tail(j + 2, &mut spec);
            return Some((end, spec));
        }
        let simple = match l {
            "day" => Some(RecurSpec::new("DAILY", 1)),
            "week" => Some(RecurSpec::new("WEEKLY", 1)),
            "month" => Some(RecurSpec::new("MONTHLY", 1)),
            "year" => Some(RecurSpec::new("YEARLY", 1)),
            "weekday" | "weekdays" | "workday" | "workdays" => {
                let mut s = RecurSpec::new("WEEKLY", 1);
                s.by_day = ["MO", "TU", "WE", "TH", "FR"].map(str::to_owned).to_vec();
                Some(s)
            }
            "weekend" | "weekends" => {
                let mut s = RecurSpec::new("WEEKLY", 1);
                s.by_day = vec!["SA".to_owned(), "SU".to_owned()];
                Some(s)
            }
            "morning" | "afternoon" | "evening" | "night" => {
                let mut s = RecurSpec::new("DAILY", 1);
                s.time = part_of_day(l);
                Some(s)
            }
            _ => None,
        };
        if let Some(mut spec) = simple {
            let end = self.recur_tail(j + 1, &mut spec);
            return Some((end, spec));
        }
        if let Some((end, days)) = self.weekday_list(j) {
            let mut spec = RecurSpec::new("WEEKLY", 1);
            spec.by_day = days.into_iter().map(|d| byday_code(d).to_owned()).collect();
            return Some((end, spec));
        }
        if let Some((end, m, d, None)) = self.month_day(j) {
            let mut spec = RecurSpec::new("YEARLY", 1);
            spec.by_month = Some(m);
            spec.by_month_day = vec![i32::try_from(d).ok()?];
            return Some((end, spec));
        }
        let mut spec = RecurSpec::new("MONTHLY", 1);
        let end = self.monthly_by(j, &mut spec)?;
        Some((end, spec))
    }

    /// A recurrence at `i`: "every …", "every! …", or one of the adverbs daily, weekly,
    /// biweekly, fortnightly, monthly, yearly, annually (with an optional "on …" tail).
    pub(crate) fn recur_at(&self, i: usize) -> Option<(usize, RecurSpec)> {
        let l = self.low(i);
        let adverb = match l {
            "daily" => Some(RecurSpec::new("DAILY", 1)),
            "weekly" => Some(RecurSpec::new("WEEKLY", 1)),
            "biweekly" | "fortnightly" => Some(RecurSpec::new("WEEKLY", 2)),
            "monthly" => Some(RecurSpec::new("MONTHLY", 1)),
            "yearly" | "annually" => Some(RecurSpec::new("YEARLY", 1)),
            _ => None,
        };
        if let Some(mut spec) = adverb {
            let end = self.recur_tail(i + 1, &mut spec);
            return Some((end, spec));
        }
        if l != "every" {
            return None;
        }
        let mut j = i + 1;
        let mut completion = false;
        if self.low(j) == "!" && self.glued(j) {
            completion = true;
            j += 1;
        }
        let (end, mut spec) = self.every_body(j)?;
        spec.completion = completion;
        Some((end, spec))
    }

    /// A recurrence modifier at `i`: "from completion", "until <date>", "for 5 times",
    /// "5 times", "starting <date>".
    pub(crate) fn modifier_at(&self, i: usize) -> Option<(usize, Modifier)> {
        let l = self.low(i);
        match l {
            "from" | "after" => {
                let mut j = i + 1;
                if matches!(self.low(j), "last" | "the") {
                    j += 1;
                }
                if matches!(
                    self.low(j),
                    "completion" | "completed" | "done" | "completing"
                ) {
                    return Some((j + 1, Modifier::Completion));
                }
                if l == "from" {
                    let (end, d) = self
                        .due_phrase(i + 1)
                        .or_else(|| self.date_at(i + 1, true))?;
                    return Some((end, Modifier::Start(d)));
                }
                None
            }
            "until" | "till" | "through" => match self.date_at(i + 1, true)? {
                (end, DateHit::Day(d, _)) => Some((end, Modifier::Until(d))),
                (end, DateHit::Instant(t)) => Some((
                    end,
                    Modifier::Until(
                        self.now_local
                            .checked_add_signed(t.signed_duration_since(self.now))?
                            .date(),
                    ),
                )),
            },
            "for" => {
                let n = number(self.low(i + 1), false)?;
                if !matches!(self.low(i + 2), "times" | "occurrences") || n == 0 {
                    return None;
                }
                Some((i + 3, Modifier::Count(n)))
            }
            "starting" | "beginning" => {
                let mut j = i + 1;
                if matches!(self.low(j), "on" | "from") {
                    j += 1;
                }
                let (end, d) = self.date_at(j, true)?;
                Some((end, Modifier::Start(d)))
            }
            _ => {
                let n = number(l, false)?;
                if self.low(i + 1) != "times" || n == 0 {
                    return None;
                }
                Some((i + 2, Modifier::Count(n)))
            }
        }
    }

    /// Whether something the grammar knows starts at `i` (or the input ends there): used to
    /// tell "pay rent monthly #finance" (a recurrence) from "weekly report" (a noun phrase).
    pub(crate) fn element_starts(&self, i: usize) -> bool {
        let Some(t) = self.toks.get(i) else {
            return true;
        };
        t.punct
            || self.tag_at(i).is_some()
            || self.priority_at(i).is_some()
            || self.reminder_at(i).is_some()
            || self.modifier_at(i).is_some()
            || self.due_phrase(i).is_some()
            || self.time_phrase(i).is_some()
    }
}

/// Adds whole days to a date (used when a time of day is already past).
pub(crate) fn next_day(d: NaiveDate) -> Option<NaiveDate> {
    d.checked_add_days(Days::new(1))
}

/// ISO 8601 duration of a reminder offset: "PT30M", "PT2H", "P1D", "P1W".
pub(crate) fn iso_duration(u: Unit, n: u32) -> String {
    match u {
        Unit::Minute => format!("PT{n}M"),
        Unit::Hour => format!("PT{n}H"),
        Unit::Day => format!("P{n}D"),
        Unit::Week => format!("P{n}W"),
        Unit::Month => format!("P{n}M"),
        Unit::Year => format!("P{n}Y"),
    }
}
