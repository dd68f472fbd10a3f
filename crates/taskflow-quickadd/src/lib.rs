//! Parses one line of plain English into TaskFlow task fields, Todoist-style "quick add":
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use taskflow_quickadd::{QuickAddInput, parse};
//!
//! let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap(); // Mon 10:00 in Berlin
//! let task = parse(&QuickAddInput {
//!     text: "call mom tomorrow 6pm #family !high",
//!     now,
//!     time_zone: chrono_tz::Europe::Berlin,
//! });
//! assert_eq!(task.title, "call mom");
//! assert_eq!(task.due_at, Some(Utc.with_ymd_and_hms(2026, 11, 24, 17, 0, 0).unwrap()));
//! assert!(task.due_has_time);
//! assert_eq!(task.tags, ["family"]);
//! assert_eq!(task.priority, Some("high"));
//! ```
//!
//! [`parse`] never fails and never panics: whatever it does not understand stays in the
//! title, and every non-whitespace character of the input ends up either in the title or in
//! one of the [`understood`](ParsedTask::understood) spans (the property tests check this).
//!
//! # Why a hand-written grammar
//!
//! The maintained English date crates on crates.io (`interim`, the successor of
//! `chrono-english`; `human-date-parser`; `dateparser`) parse a string that *is* a date
//! expression. Quick add has to find date, time, recurrence, reminder, tag and priority
//! phrases *inside* free text, report exactly which words it used (byte spans) and leave the
//! rest alone; none of those crates reports spans or handles recurrence, "remind me …", or
//! Todoist's "every!" and "from completion", and their relative-date semantics ("next
//! monday", ambiguous numeric dates) differ from the ones fixed below. Feeding every
//! window of words to such a crate would be slower, and its accepted language would not be
//! the documented one. So the grammar is a small hand-written recogniser over tokens; all
//! calendar arithmetic is done with `chrono`/`chrono-tz`, the first occurrence of a
//! recurrence is computed by [`taskflow_recurrence::Schedule`], and every produced RRULE is
//! validated by [`taskflow_recurrence::RecurrenceRule::parse`].
//!
//! # Grammar
//!
//! Words are matched case-insensitively; commas and leading/trailing punctuation are split
//! off words (so "tomorrow," and "(#home)" work). Below, `N` is a number written with
//! digits or as a word (`one`..`twelve`; "a"/"an" where noted).
//!
//! **Dates** (the first date phrase wins; a second one stays in the title):
//! * `today`, `tonight` (today 20:00), `tomorrow`/`tmr`/`tmrw`, `yesterday` (past dates are
//!   allowed);
//! * weekdays: `monday` is the next Monday strictly after today; `this monday` is today or
//!   the next one; `next monday` is the Monday of next week (weeks start on Monday), i.e.
//!   the one after this week's. Abbreviations (`mon`, `tue`, `tues`, `wed`, `thu`, `thurs`,
//!   `fri`, `sat`, `sun`) only count after `on`/`by`/`due`/`until`…, and a full weekday
//!   name followed by a capitalised word ("meet Monday Jones") is taken as a name;
//! * `next week` (Monday of next week), `next weekend`/`this weekend` (Saturday),
//!   `next month` (the 1st), `next year` (1 January), `end of month`, `end of the year`;
//! * `in N days|weeks|months|years` (dates), `in N hours|minutes` (exact instants), with
//!   "a"/"an" for 1 ("in an hour");
//! * day of month: `on the 1st`, `by the 15th`, `on 1st` (the next such day, today
//!   included; months without that day are skipped);
//! * month and day: `jan 5`, `5 jan`, `january 5th`, `5th of january`, optionally with a
//!   year (`jan 5, 2027`); without a year the next such date, today included (so `feb 29`
//!   is the next leap day);
//! * numeric: ISO `2026-12-01`; `12/01` and `12/01/2027`/`12/1/27` are **US month/day**;
//! * optional leading `due`, `by`, `on`, `before` ("taxes by apr 15", "due on friday").
//!
//! **Times** (the first time phrase wins): `9am`, `9 am`, `9:30pm`, `12am` (midnight),
//! `9:30` and `18:00` (24-hour), `noon`/`midday`, `midnight`, `at 6` (a bare hour only after
//! `at`/`@`/`by`: 1–7 mean 13:00–19:00, 8–12 and 0, 13–23 are taken literally),
//! `in the morning` (09:00) / `afternoon` (15:00) / `evening` (18:00), `this morning`, and a
//! part of day right after a date (`tomorrow morning`, `friday evening`, `monday night`
//! = 20:00). A time without a date means today if that moment is still ahead, else tomorrow.
//!
//! **Recurrence** (Todoist words → RRULE, normalised by `RecurrenceRule`):
//! * `every day`/`daily`, `every weekday`/`workday` (MO–FR), `every weekend` (SA,SU),
//!   `every week`/`weekly`, `every other week`/`every 2 weeks`/`biweekly`/`fortnightly`,
//!   `every month`/`monthly`, `every year`/`yearly`/`annually`, `every N days|weeks|months|
//!   years`, `every 2nd week`, `every morning|afternoon|evening|night` (daily, with that
//!   time);
//! * weekdays: `every monday`, `every mon, wed and fri`, `every other tuesday`,
//!   `every 2 weeks on monday`, `weekly on friday`;
//! * month days: `every 15th`, `every 1st and 15th`, `every month on the 1st`,
//!   `every last day of the month` (`BYMONTHDAY=-1`), `every last friday`
//!   (`BYDAY=-1FR`), `every 2nd tuesday`, `monthly on the first monday`;
//! * yearly: `every jan 5`, `every 5th of january`, `every year on jan 5`;
//! * `every! 3 days` or `… from completion`/`after completion` → [`Anchor::Completion`]
//!   (otherwise [`Anchor::Due`]);
//! * modifiers after the recurrence (anywhere later in the text): `until <date>` (`UNTIL`
//!   as a local date), `for N times`/`N times` (`COUNT`), `starting <date>`/`from <date>`
//!   (first occurrence on or after that date).
//!
//! The adverbs `daily`, `weekly`, … only count when they end the text or are followed by
//! another understood part or punctuation ("pay rent monthly #home"), so "weekly report"
//! stays a title. If the produced rule is rejected by `RecurrenceRule::parse` or has no
//! occurrence (an `until` before the start), all recurrence words stay in the title.
//!
//! **Tags**: `#word` of letters, digits, `-`, `_`, `/` (lower-cased, duplicates dropped);
//! `#` alone, `C#`, `#a#b` and URL fragments are not tags. **Priority**: `!low`, `!medium`,
//! `!high`, `!urgent`, and Todoist's `!p1` (urgent), `!p2` (high), `!p3` (medium), `!p4`
//! (low); only the first one counts. Runs of bangs (`!!`, `!!!`) are *not* priorities: they
//! are too common as plain emphasis.
//!
//! **Reminders**: `remind me N minutes|hours|days|weeks before` (also `a`/`an`, `earlier`,
//! `ahead`, `the day before`) → [`ParsedReminder::BeforeDue`] with an ISO 8601 duration
//! (`PT30M`, `PT2H`, `P1D`, `P1W`); `remind me at 8am`, `remind me tomorrow at 7pm`,
//! `remind me friday`, `remind me in 2 hours` → [`ParsedReminder::At`]. A reminder time
//! without a date is on the due date when there is one, else today if still ahead, else
//! tomorrow; a reminder date without a time is at 09:00.
//!
//! # Defaults
//!
//! * **Date-only due dates** are due at [`DATE_ONLY_DUE_TIME`] (23:59) local time with
//!   [`due_has_time`](ParsedTask::due_has_time) `false`: the task is due *on* that day and
//!   only becomes overdue when the day is over; "every day" created in the afternoon is
//!   due today, not tomorrow.
//! * All wall-clock times are in [`QuickAddInput::time_zone`] and converted to UTC with
//!   [`resolve_local`]: a time in a spring-forward gap moves forward by the gap (02:30 on the
//!   day Berlin springs forward is 03:30 CEST), an ambiguous fall-back time takes the
//!   earlier instant — the same rule `taskflow-recurrence` applies to occurrences.
//! * **First due date of a recurrence**: the first instance of the rule at or after the
//!   series start, where the start is the given date (`starting …`, or a date phrase such as
//!   `every monday from dec 7`), else today if the time of day (or 23:59) is still ahead,
//!   else tomorrow. Rules without by-parts take their day from that start (plain "every
//!   week" created at 10:00 "at 9am" repeats on tomorrow's weekday). Callers create the
//!   [`Schedule`] with `dtstart` = the local wall time of `due_at`.
//! * **Title**: the input without the understood spans, whitespace collapsed, punctuation
//!   that was glued to a removed phrase kept glued to the text before it ("call mom
//!   tomorrow, then" → "call mom, then"); a separator (`,` `;` `:` `-`) left dangling at
//!   the start or end of the title next to a span is made part of that span. If nothing
//!   remains, the title is the input without its tags and priority (so "tomorrow" gives the
//!   title "tomorrow" and a due date).
//!
//! # Limits
//!
//! Input longer than [`MAX_INPUT_CHARS`] (1000) characters is not parsed at all: the whole
//! text, whitespace collapsed, becomes the title; so is any input when `now` lies outside
//! the years 1–9999 (the range `taskflow-recurrence` schedules in). The parser is linear in the number of
//! words apart from a constant look-ahead, and a recurrence's first occurrence is bounded by
//! the budgets of `taskflow-recurrence`.

mod grammar;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
pub use taskflow_recurrence::Anchor;
use taskflow_recurrence::{RecurrenceRule, Schedule, resolve_local};

use grammar::{Ctx, DateHit, Modifier, RecurSpec, ReminderHit, Tok};

/// Longest input (in characters) that is parsed; longer text becomes the title unparsed.
pub const MAX_INPUT_CHARS: usize = 1000;

/// Local time of day at which a date-only due date is due (end of the day, 23:59).
pub const DATE_ONLY_DUE_TIME: NaiveTime = match NaiveTime::from_hms_opt(23, 59, 0) {
    Some(t) => t,
    None => NaiveTime::MIN,
};

/// Local time of day of a reminder given only a date ("remind me friday").
pub const REMINDER_DEFAULT_TIME: NaiveTime = match NaiveTime::from_hms_opt(9, 0, 0) {
    Some(t) => t,
    None => NaiveTime::MIN,
};

/// What to parse, and the moment and zone relative dates are computed in.
#[derive(Clone, Copy, Debug)]
pub struct QuickAddInput<'a> {
    /// The line the user typed.
    pub text: &'a str,
    /// The current moment ("tomorrow", "in 3 days" and "next monday" are relative to it).
    pub now: DateTime<Utc>,
    /// The user's time zone: every wall-clock time in the text is read in it.
    pub time_zone: Tz,
}

/// The task fields found in one line of text.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ParsedTask {
    /// The text without the understood parts, whitespace collapsed (see the crate docs).
    pub title: String,
    /// When the task is due, converted from the user's zone to UTC.
    pub due_at: Option<DateTime<Utc>>,
    /// Whether the text gave a time of day; `false` for date-only due dates, which are due
    /// at [`DATE_ONLY_DUE_TIME`] local time.
    pub due_has_time: bool,
    /// The recurrence, if one was understood; `due_at` is then its first occurrence.
    pub recurrence: Option<ParsedRecurrence>,
    /// Tags from `#tag` words, lower-cased, in order of appearance, without duplicates.
    pub tags: Vec<String>,
    /// `"low"`, `"medium"`, `"high"` or `"urgent"`.
    pub priority: Option<&'static str>,
    /// Reminders from "remind me …" phrases, in order of appearance.
    pub reminders: Vec<ParsedReminder>,
    /// The understood phrases, in input order.
    pub understood: Vec<Span>,
}

/// A recurrence understood in the text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ParsedRecurrence {
    /// Normalised RRULE text, as produced by `RecurrenceRule::parse(..).as_str()`.
    pub rule: String,
    /// Whether the next occurrence follows the calendar or the completion.
    pub anchor: Anchor,
}

/// A reminder understood in the text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParsedReminder {
    /// This long before the due instant, as an ISO 8601 duration (`"P1D"`, `"PT30M"`).
    BeforeDue(String),
    /// At this instant.
    At(DateTime<Utc>),
}

/// One understood phrase of the input.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    /// `"due"`, `"recurrence"`, `"tag"`, `"priority"` or `"reminder"`.
    pub kind: &'static str,
    /// The original words (`&input[start..end]`).
    pub text: String,
    /// Byte offset of the first byte in the input.
    pub start: usize,
    /// Byte offset just past the last byte in the input.
    pub end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Due,
    Recurrence,
    Tag,
    Priority,
    Reminder,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::Recurrence => "recurrence",
            Self::Tag => "tag",
            Self::Priority => "priority",
            Self::Reminder => "reminder",
        }
    }
}

/// A recognised phrase as a token range `[first, end)`.
#[derive(Clone, Copy, Debug)]
struct Hit {
    kind: Kind,
    first: usize,
    end: usize,
}

#[derive(Default)]
struct Modifiers {
    completion: bool,
    until: Option<NaiveDate>,
    count: Option<u32>,
    start: Option<DateHit>,
}

impl Modifiers {
    /// Records `m`; false when that modifier was already given.
    fn apply(&mut self, m: Modifier) -> bool {
        match m {
            Modifier::Completion if !self.completion => self.completion = true,
            Modifier::Until(d) if self.until.is_none() && self.count.is_none() => {
                self.until = Some(d)
            }
            Modifier::Count(n) if self.count.is_none() && self.until.is_none() => {
                self.count = Some(n)
            }
            Modifier::Start(d) if self.start.is_none() => self.start = Some(d),
            _ => return false,
        }
        true
    }
}

/// Parses one line of text into task fields. Never fails: what is not understood stays in
/// the title. See the crate docs for the grammar.
pub fn parse(input: &QuickAddInput) -> ParsedTask {
    let text = input.text;
    let empty = ParsedTask {
        title: collapse_whitespace(text),
        due_at: None,
        due_has_time: false,
        recurrence: None,
        tags: Vec::new(),
        priority: None,
        reminders: Vec::new(),
        understood: Vec::new(),
    };
    if text.chars().count() > MAX_INPUT_CHARS || !(1..=9999).contains(&input.now.year()) {
        return empty;
    }
    let tz = input.time_zone;
    let now_local = input.now.with_timezone(&tz).naive_local();
    let ctx = Ctx {
        toks: grammar::tokenize(text),
        now: input.now,
        today: now_local.date(),
        now_local,
    };
    let n = ctx.toks.len();

    let mut hits: Vec<Hit> = Vec::new();
    let mut tags: Vec<String> = Vec::new();
    let mut priority = None;
    let mut raw_reminders = Vec::new();
    let mut recur: Option<RecurSpec> = None;
    let mut mods = Modifiers::default();
    let mut date: Option<DateHit> = None;
    let mut time: Option<NaiveTime> = None;

    let mut i = 0;
    while i < n {
        let mut hit = |kind, end| {
            hits.push(Hit {
                kind,
                first: i,
                end,
            });
            end
        };
        if let Some(tag) = ctx.tag_at(i) {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
            i = hit(Kind::Tag, i + 1);
            continue;
        }
        if priority.is_none()
            && let Some(p) = ctx.priority_at(i)
        {
            priority = Some(p);
            i = hit(Kind::Priority, i + 1);
            continue;
        }
        if let Some((end, r)) = ctx.reminder_at(i) {
            raw_reminders.push(r);
            i = hit(Kind::Reminder, end);
            continue;
        }
        if recur.is_none()
            && let Some((end, spec)) = ctx.recur_at(i)
            && (ctx.low(i) == "every" || ctx.element_starts(end))
        {
            recur = Some(spec);
            i = hit(Kind::Recurrence, end);
            continue;
        }
        if recur.is_some()
            && let Some((end, m)) = ctx.modifier_at(i)
            && mods.apply(m)
        {
            i = hit(Kind::Recurrence, end);
            continue;
        }
        if date.is_none()
            && let Some((mut end, mut d)) = ctx.due_phrase(i)
            && !(matches!(d, DateHit::Instant(_)) && time.is_some())
        {
            if let DateHit::Day(day, None) = d
                && time.is_none()
                && ctx.low(end) != "tonight"
                && let Some(t) = grammar::part_of_day(ctx.low(end))
            {
                d = DateHit::Day(day, Some(t));
                end += 1;
            }
            date = Some(d);
            i = hit(Kind::Due, end);
            continue;
        }
        if time.is_none()
            && !matches!(date, Some(DateHit::Instant(_)))
            && let Some((end, t)) = ctx.time_phrase(i)
        {
            time = Some(t);
            i = hit(Kind::Due, end);
            continue;
        }
        i += 1;
    }

    // The time of day given with the date or on its own, and whether there was one.
    let explicit_time = time.or(match date {
        Some(DateHit::Day(_, t)) => t,
        _ => None,
    });

    let mut recurrence = None;
    let mut due_at = None;
    let mut due_has_time = false;
    if let Some(spec) = recur {
        let start = mods.start.or(date);
        match build_recurrence(&ctx, tz, &spec, &mods, start, explicit_time) {
            Some((parsed, first, has_time)) => {
                recurrence = Some(parsed);
                due_at = Some(first);
                due_has_time = has_time;
            }
            None => hits.retain(|h| h.kind != Kind::Recurrence),
        }
    }
    if recurrence.is_none() {
        (due_at, due_has_time) = match (date, explicit_time) {
            (Some(DateHit::Instant(t)), _) => (Some(t), true),
            (Some(DateHit::Day(d, _)), t) => (
                Some(resolve_local(
                    tz,
                    d.and_time(t.unwrap_or(DATE_ONLY_DUE_TIME)),
                )),
                t.is_some(),
            ),
            (None, Some(t)) => (at_next(&ctx, tz, t), true),
            (None, None) => (None, false),
        };
    }

    let due_date = due_at.map(|t| t.with_timezone(&tz).date_naive());
    let reminders = raw_reminders
        .into_iter()
        .filter_map(|r| resolve_reminder(&ctx, tz, r, due_date))
        .collect();

    let (title, understood) = title_and_spans(text, &ctx.toks, hits);
    ParsedTask {
        title,
        due_at,
        due_has_time,
        recurrence,
        tags,
        priority,
        reminders,
        understood,
    }
}

/// Today at `t` if that is still ahead, else tomorrow at `t`.
fn at_next(ctx: &Ctx<'_>, tz: Tz, t: NaiveTime) -> Option<DateTime<Utc>> {
    let today = resolve_local(tz, ctx.today.and_time(t));
    if today > ctx.now {
        return Some(today);
    }
    grammar::next_day(ctx.today).map(|d| resolve_local(tz, d.and_time(t)))
}

fn rule_text(spec: &RecurSpec, mods: &Modifiers) -> String {
    let mut s = format!("FREQ={}", spec.freq);
    if spec.interval > 1 {
        s.push_str(&format!(";INTERVAL={}", spec.interval));
    }
    if let Some(m) = spec.by_month {
        s.push_str(&format!(";BYMONTH={m}"));
    }
    if !spec.by_month_day.is_empty() {
        let days: Vec<String> = spec.by_month_day.iter().map(i32::to_string).collect();
        s.push_str(&format!(";BYMONTHDAY={}", days.join(",")));
    }
    if !spec.by_day.is_empty() {
        s.push_str(&format!(";BYDAY={}", spec.by_day.join(",")));
    }
    if let Some(c) = mods.count {
        s.push_str(&format!(";COUNT={c}"));
    }
    if let Some(u) = mods.until {
        s.push_str(&format!(";UNTIL={}", u.format("%Y%m%d")));
    }
    s
}

/// The validated rule, its first occurrence, and whether a time of day was given.
fn build_recurrence(
    ctx: &Ctx<'_>,
    tz: Tz,
    spec: &RecurSpec,
    mods: &Modifiers,
    start: Option<DateHit>,
    explicit_time: Option<NaiveTime>,
) -> Option<(ParsedRecurrence, DateTime<Utc>, bool)> {
    let rule = RecurrenceRule::parse(&rule_text(spec, mods)).ok()?;
    let anchor = if spec.completion || mods.completion {
        Anchor::Completion
    } else {
        Anchor::Due
    };
    let (start_date, start_time) = match start {
        Some(DateHit::Day(d, t)) => (Some(d), t),
        Some(DateHit::Instant(t)) => {
            let local = t.with_timezone(&tz).naive_local();
            (Some(local.date()), Some(local.time()))
        }
        None => (None, None),
    };
    let time = explicit_time.or(start_time).or(spec.time);
    let tod = time.unwrap_or(DATE_ONLY_DUE_TIME);
    let start_date = match start_date {
        Some(d) => d,
        None => at_next(ctx, tz, tod)?.with_timezone(&tz).date_naive(),
    };
    let dtstart = start_date.and_time(tod);
    let schedule = Schedule::new(rule.clone(), Anchor::Due, tz, dtstart);
    let from = resolve_local(tz, dtstart).checked_sub_signed(TimeDelta::seconds(1))?;
    let first = schedule.next_after(from, from, 0).ok()??;
    Some((
        ParsedRecurrence {
            rule: rule.as_str().to_owned(),
            anchor,
        },
        first,
        time.is_some(),
    ))
}

fn resolve_reminder(
    ctx: &Ctx<'_>,
    tz: Tz,
    r: ReminderHit,
    due_date: Option<NaiveDate>,
) -> Option<ParsedReminder> {
    match r {
        ReminderHit::Before(u, n) => Some(ParsedReminder::BeforeDue(grammar::iso_duration(u, n))),
        ReminderHit::At {
            date: Some(DateHit::Instant(t)),
            ..
        } => Some(ParsedReminder::At(t)),
        ReminderHit::At { date, time } => {
            let (day, day_time) = match date {
                Some(DateHit::Day(d, t)) => (Some(d), t),
                _ => (None, None),
            };
            let t = time.or(day_time).unwrap_or(REMINDER_DEFAULT_TIME);
            let at = match day.or(due_date) {
                Some(d) => resolve_local(tz, d.and_time(t)),
                None => at_next(ctx, tz, t)?,
            };
            Some(ParsedReminder::At(at))
        }
    }
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_separator(t: &Tok<'_>) -> bool {
    t.punct
        && t.raw
            .chars()
            .all(|c| matches!(c, ',' | ';' | ':' | '-' | '–' | '—'))
}

fn is_closing(t: &Tok<'_>) -> bool {
    t.punct
        && t.raw
            .starts_with([',', '.', ';', ':', '?', '!', ')', ']', '}'])
}

/// Joins the kept tokens (see the crate docs, "Title").
fn join_kept(text: &str, toks: &[Tok<'_>], keep: &[bool]) -> String {
    let mut out = String::new();
    let mut prev: Option<usize> = None;
    for (k, t) in toks.iter().enumerate() {
        if !keep.get(k).copied().unwrap_or(false) {
            continue;
        }
        if let Some(p) = prev {
            let gap = toks
                .get(p)
                .and_then(|pt| text.get(pt.end..t.start))
                .unwrap_or(" ");
            let glued_to_removed = k > 0
                && !keep.get(k - 1).copied().unwrap_or(true)
                && toks.get(k - 1).is_some_and(|pt| pt.end == t.start);
            if gap.chars().any(char::is_whitespace) && !(is_closing(t) && glued_to_removed) {
                out.push(' ');
            }
        }
        out.push_str(t.raw);
        prev = Some(k);
    }
    out
}

fn title_and_spans(text: &str, toks: &[Tok<'_>], mut hits: Vec<Hit>) -> (String, Vec<Span>) {
    hits.sort_by_key(|h| h.first);
    let n = toks.len();
    let mut owner: Vec<Option<usize>> = vec![None; n];
    for (h, hit) in hits.iter().enumerate() {
        for slot in owner.iter_mut().take(hit.end).skip(hit.first) {
            *slot = Some(h);
        }
    }
    // Absorb separators left dangling at either end of the title.
    loop {
        let mut changed = false;
        if let Some(f) = owner.iter().position(Option::is_none)
            && f > 0
            && let Some(h) = owner.get(f - 1).copied().flatten()
            && toks.get(f).is_some_and(is_separator)
            && let Some(hit) = hits.get_mut(h)
        {
            hit.end = f + 1;
            if let Some(slot) = owner.get_mut(f) {
                *slot = Some(h);
            }
            changed = true;
        }
        if let Some(l) = owner.iter().rposition(Option::is_none)
            && let Some(h) = owner.get(l + 1).copied().flatten()
            && toks.get(l).is_some_and(is_separator)
            && let Some(hit) = hits.get_mut(h)
        {
            hit.first = l;
            if let Some(slot) = owner.get_mut(l) {
                *slot = Some(h);
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }
    let tok_kind: Vec<Option<Kind>> = owner
        .iter()
        .map(|o| o.and_then(|h| hits.get(h)).map(|h| h.kind))
        .collect();
    // Merge adjacent due and recurrence phrases ("tomorrow" + "at 6pm").
    let mut merged: Vec<Hit> = Vec::new();
    for hit in hits {
        if let Some(last) = merged.last_mut()
            && last.kind == hit.kind
            && matches!(hit.kind, Kind::Due | Kind::Recurrence)
            && last.end == hit.first
        {
            last.end = hit.end;
            continue;
        }
        merged.push(hit);
    }
    let spans = merged
        .iter()
        .filter_map(|h| {
            let start = toks.get(h.first)?.start;
            let end = toks.get(h.end.checked_sub(1)?)?.end;
            Some(Span {
                kind: h.kind.as_str(),
                text: text.get(start..end)?.to_owned(),
                start,
                end,
            })
        })
        .collect();

    let keep: Vec<bool> = owner.iter().map(Option::is_none).collect();
    let title = join_kept(text, toks, &keep);
    if !title.is_empty() {
        return (title, spans);
    }
    let keep: Vec<bool> = tok_kind
        .iter()
        .map(|k| !matches!(k, Some(Kind::Tag | Kind::Priority)))
        .collect();
    (join_kept(text, toks, &keep), spans)
}
