//! Table-driven tests: each phrase with its exact expected fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use taskflow_quickadd::{Anchor, ParsedReminder, ParsedTask, QuickAddInput, parse};

const TZ: Tz = chrono_tz::Europe::Berlin;

/// (input, title, due, rule, tags, priority, reminders)
///
/// * due: "" none, "YYYY-MM-DD" date-only (23:59 local, `due_has_time` false), or
///   "YYYY-MM-DD HH:MM" local with a time;
/// * rule: "" none, the normalised RRULE, prefixed with "!" for `Anchor::Completion`;
/// * tags: comma-separated; priority: "" none;
/// * reminders: ";"-separated, "P1D"-style before-due durations or "@YYYY-MM-DD HH:MM" local.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

fn local(s: &str) -> DateTime<Utc> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect(s);
    taskflow_recurrence::resolve_local(TZ, naive)
}

fn run(now_local: &str, cases: &[Case]) -> usize {
    let now = local(now_local);
    let mut failures = Vec::new();
    for &(text, title, due, rule, tags, prio, rem) in cases {
        let got = parse(&QuickAddInput {
            text,
            now,
            time_zone: TZ,
        });
        if let Err(e) = check(text, &got, title, due, rule, tags, prio, rem) {
            failures.push(format!("{text:?}: {e}\n   got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed (now {now_local}):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[allow(clippy::too_many_arguments)]
fn check(
    text: &str,
    got: &ParsedTask,
    title: &str,
    due: &str,
    rule: &str,
    tags: &str,
    prio: &str,
    rem: &str,
) -> Result<(), String> {
    if got.title != title {
        return Err(format!("title {:?} != {title:?}", got.title));
    }
    let (want_due, want_time) = match due.len() {
        0 => (None, false),
        10 => (Some(local(&format!("{due} 23:59"))), false),
        _ => (Some(local(due)), true),
    };
    if got.due_at != want_due || (want_due.is_some() && got.due_has_time != want_time) {
        return Err(format!(
            "due {:?} (time {}) != {due:?}",
            got.due_at.map(|d| d.with_timezone(&TZ).to_string()),
            got.due_has_time
        ));
    }
    let want_rule = (!rule.is_empty()).then(|| match rule.strip_prefix('!') {
        Some(r) => (r.to_owned(), Anchor::Completion),
        None => (rule.to_owned(), Anchor::Due),
    });
    let got_rule = got.recurrence.as_ref().map(|r| (r.rule.clone(), r.anchor));
    if got_rule != want_rule {
        return Err(format!("rule {got_rule:?} != {want_rule:?}"));
    }
    if let Some(r) = &got.recurrence {
        taskflow_recurrence::RecurrenceRule::parse(&r.rule).map_err(|e| e.to_string())?;
    }
    let want_tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
    if got.tags != want_tags {
        return Err(format!("tags {:?} != {want_tags:?}", got.tags));
    }
    let want_prio = (!prio.is_empty()).then_some(prio);
    if got.priority != want_prio {
        return Err(format!("priority {:?} != {want_prio:?}", got.priority));
    }
    let want_rem: Vec<ParsedReminder> = rem
        .split(';')
        .filter(|r| !r.is_empty())
        .map(|r| match r.strip_prefix('@') {
            Some(at) => ParsedReminder::At(local(at)),
            None => ParsedReminder::BeforeDue(r.to_owned()),
        })
        .collect();
    if got.reminders != want_rem {
        return Err(format!("reminders {:?} != {want_rem:?}", got.reminders));
    }
    for s in &got.understood {
        if text.get(s.start..s.end) != Some(s.text.as_str()) {
            return Err(format!("span {s:?} does not match the input"));
        }
    }
    Ok(())
}

/// Now: Monday 2026-11-23 10:00 Europe/Berlin.
const NOW: &str = "2026-11-23 10:00";

const REQUIRED: &[Case] = &[
    (
        "Pay rent every month on the 1st at 9am #finance !high remind me 1 day before",
        "Pay rent",
        "2026-12-01 09:00",
        "FREQ=MONTHLY;BYMONTHDAY=1",
        "finance",
        "high",
        "P1D",
    ),
    (
        "standup every weekday at 9:30 #work",
        "standup",
        "2026-11-24 09:30",
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
        "work",
        "",
        "",
    ),
    (
        "call mom tomorrow 6pm",
        "call mom",
        "2026-11-24 18:00",
        "",
        "",
        "",
        "",
    ),
    (
        "taxes by apr 15 !urgent",
        "taxes",
        "2027-04-15",
        "",
        "",
        "urgent",
        "",
    ),
    (
        "water plants every 3 days from completion",
        "water plants",
        "2026-11-23",
        "!FREQ=DAILY;INTERVAL=3",
        "",
        "",
        "",
    ),
];

const DATES: &[Case] = &[
    ("buy milk today", "buy milk", "2026-11-23", "", "", "", ""),
    ("party tonight", "party", "2026-11-23 20:00", "", "", "", ""),
    (
        "buy milk tomorrow",
        "buy milk",
        "2026-11-24",
        "",
        "",
        "",
        "",
    ),
    ("buy milk tmr", "buy milk", "2026-11-24", "", "", "", ""),
    ("buy milk tmrw", "buy milk", "2026-11-24", "", "", "", ""),
    (
        "log hours yesterday",
        "log hours",
        "2026-11-22",
        "",
        "",
        "",
        "",
    ),
    ("report friday", "report", "2026-11-27", "", "", "", ""),
    ("report Friday", "report", "2026-11-27", "", "", "", ""),
    ("report monday", "report", "2026-11-30", "", "", "", ""),
    ("report next monday", "report", "2026-11-30", "", "", "", ""),
    ("report next friday", "report", "2026-12-04", "", "", "", ""),
    ("report this friday", "report", "2026-11-27", "", "", "", ""),
    ("report this monday", "report", "2026-11-23", "", "", "", ""),
    ("report on wed", "report", "2026-11-25", "", "", "", ""),
    ("report by sun", "report", "2026-11-29", "", "", "", ""),
    ("plan next week", "plan", "2026-11-30", "", "", "", ""),
    ("plan next month", "plan", "2026-12-01", "", "", "", ""),
    ("plan next year", "plan", "2027-01-01", "", "", "", ""),
    ("hike next weekend", "hike", "2026-12-05", "", "", "", ""),
    ("hike this weekend", "hike", "2026-11-28", "", "", "", ""),
    (
        "invoice end of month",
        "invoice",
        "2026-11-30",
        "",
        "",
        "",
        "",
    ),
    (
        "invoice by end of the month",
        "invoice",
        "2026-11-30",
        "",
        "",
        "",
        "",
    ),
    ("review end of year", "review", "2026-12-31", "", "", "", ""),
    (
        "follow up in 3 days",
        "follow up",
        "2026-11-26",
        "",
        "",
        "",
        "",
    ),
    (
        "follow up in two weeks",
        "follow up",
        "2026-12-07",
        "",
        "",
        "",
        "",
    ),
    (
        "follow up in a week",
        "follow up",
        "2026-11-30",
        "",
        "",
        "",
        "",
    ),
    ("renew in 3 months", "renew", "2027-02-23", "", "", "", ""),
    ("renew in 1 year", "renew", "2027-11-23", "", "", "", ""),
    (
        "check oven in 3 hours",
        "check oven",
        "2026-11-23 13:00",
        "",
        "",
        "",
        "",
    ),
    (
        "check oven in 30 minutes",
        "check oven",
        "2026-11-23 10:30",
        "",
        "",
        "",
        "",
    ),
    (
        "check oven in an hour",
        "check oven",
        "2026-11-23 11:00",
        "",
        "",
        "",
        "",
    ),
    ("pay on the 1st", "pay", "2026-12-01", "", "", "", ""),
    ("pay on the 23rd", "pay", "2026-11-23", "", "", "", ""),
    ("pay on the 31st", "pay", "2026-12-31", "", "", "", ""),
    ("pay by the 15th", "pay", "2026-12-15", "", "", "", ""),
    ("pay on 2nd", "pay", "2026-12-02", "", "", "", ""),
    ("visit jan 5", "visit", "2027-01-05", "", "", "", ""),
    ("visit 5 jan", "visit", "2027-01-05", "", "", "", ""),
    ("visit january 5th", "visit", "2027-01-05", "", "", "", ""),
    (
        "visit 5th of january",
        "visit",
        "2027-01-05",
        "",
        "",
        "",
        "",
    ),
    (
        "visit on the 5th of january",
        "visit",
        "2027-01-05",
        "",
        "",
        "",
        "",
    ),
    ("visit jan 5, 2028", "visit", "2028-01-05", "", "", "", ""),
    ("visit Dec 25", "visit", "2026-12-25", "", "", "", ""),
    ("visit nov 23", "visit", "2026-11-23", "", "", "", ""),
    ("visit nov 22", "visit", "2027-11-22", "", "", "", ""),
    ("leap feb 29", "leap", "2028-02-29", "", "", "", ""),
    ("ship 2026-12-01", "ship", "2026-12-01", "", "", "", ""),
    ("ship on 2027-03-15", "ship", "2027-03-15", "", "", "", ""),
    ("ship 12/01", "ship", "2026-12-01", "", "", "", ""),
    ("ship 11/20", "ship", "2027-11-20", "", "", "", ""),
    ("ship 12/01/2027", "ship", "2027-12-01", "", "", "", ""),
    ("ship 1/2/27", "ship", "2027-01-02", "", "", "", ""),
    ("essay due friday", "essay", "2026-11-27", "", "", "", ""),
    ("essay due on friday", "essay", "2026-11-27", "", "", "", ""),
    ("essay due by dec 1", "essay", "2026-12-01", "", "", "", ""),
    ("tomorrow", "tomorrow", "2026-11-24", "", "", "", ""),
];

const TIMES: &[Case] = &[
    ("gym 9am", "gym", "2026-11-24 09:00", "", "", "", ""),
    ("gym 9 am", "gym", "2026-11-24 09:00", "", "", "", ""),
    ("gym 6pm", "gym", "2026-11-23 18:00", "", "", "", ""),
    ("gym 9:30", "gym", "2026-11-24 09:30", "", "", "", ""),
    ("gym 9:30pm", "gym", "2026-11-23 21:30", "", "", "", ""),
    ("gym 18:00", "gym", "2026-11-23 18:00", "", "", "", ""),
    ("lunch at noon", "lunch", "2026-11-23 12:00", "", "", "", ""),
    (
        "backup at midnight",
        "backup",
        "2026-11-24 00:00",
        "",
        "",
        "",
        "",
    ),
    ("call at 6", "call", "2026-11-23 18:00", "", "", "", ""),
    ("call at 11", "call", "2026-11-23 11:00", "", "", "", ""),
    ("call @ 3pm", "call", "2026-11-23 15:00", "", "", "", ""),
    ("call 12am", "call", "2026-11-24 00:00", "", "", "", ""),
    (
        "run tomorrow morning",
        "run",
        "2026-11-24 09:00",
        "",
        "",
        "",
        "",
    ),
    (
        "run friday evening",
        "run",
        "2026-11-27 18:00",
        "",
        "",
        "",
        "",
    ),
    (
        "read this evening",
        "read",
        "2026-11-23 18:00",
        "",
        "",
        "",
        "",
    ),
    (
        "read in the morning",
        "read",
        "2026-11-24 09:00",
        "",
        "",
        "",
        "",
    ),
    (
        "dentist 2:30pm tomorrow",
        "dentist",
        "2026-11-24 14:30",
        "",
        "",
        "",
        "",
    ),
    (
        "dentist at 2:30pm on friday",
        "dentist",
        "2026-11-27 14:30",
        "",
        "",
        "",
        "",
    ),
    (
        "dentist jan 5 at 10am",
        "dentist",
        "2027-01-05 10:00",
        "",
        "",
        "",
        "",
    ),
    (
        "dentist next friday at 2:30pm",
        "dentist",
        "2026-12-04 14:30",
        "",
        "",
        "",
        "",
    ),
    (
        "submit by 5pm",
        "submit",
        "2026-11-23 17:00",
        "",
        "",
        "",
        "",
    ),
];

const RECURRENCE: &[Case] = &[
    (
        "stretch every day",
        "stretch",
        "2026-11-23",
        "FREQ=DAILY",
        "",
        "",
        "",
    ),
    (
        "stretch daily",
        "stretch",
        "2026-11-23",
        "FREQ=DAILY",
        "",
        "",
        "",
    ),
    (
        "stretch daily at 9am",
        "stretch",
        "2026-11-24 09:00",
        "FREQ=DAILY",
        "",
        "",
        "",
    ),
    (
        "stretch every morning",
        "stretch",
        "2026-11-24 09:00",
        "FREQ=DAILY",
        "",
        "",
        "",
    ),
    (
        "journal every evening",
        "journal",
        "2026-11-23 18:00",
        "FREQ=DAILY",
        "",
        "",
        "",
    ),
    (
        "mow every weekend",
        "mow",
        "2026-11-28",
        "FREQ=WEEKLY;BYDAY=SA,SU",
        "",
        "",
        "",
    ),
    (
        "gym every monday",
        "gym",
        "2026-11-23",
        "FREQ=WEEKLY;BYDAY=MO",
        "",
        "",
        "",
    ),
    (
        "gym every monday at 9am",
        "gym",
        "2026-11-30 09:00",
        "FREQ=WEEKLY;BYDAY=MO",
        "",
        "",
        "",
    ),
    (
        "gym every mon, wed and fri",
        "gym",
        "2026-11-23",
        "FREQ=WEEKLY;BYDAY=MO,WE,FR",
        "",
        "",
        "",
    ),
    (
        "gym every tue and thu at 6pm",
        "gym",
        "2026-11-24 18:00",
        "FREQ=WEEKLY;BYDAY=TU,TH",
        "",
        "",
        "",
    ),
    (
        "sync every week",
        "sync",
        "2026-11-23",
        "FREQ=WEEKLY",
        "",
        "",
        "",
    ),
    (
        "sync weekly on friday",
        "sync",
        "2026-11-27",
        "FREQ=WEEKLY;BYDAY=FR",
        "",
        "",
        "",
    ),
    (
        "sync every other week",
        "sync",
        "2026-11-23",
        "FREQ=WEEKLY;INTERVAL=2",
        "",
        "",
        "",
    ),
    (
        "sync every 2 weeks",
        "sync",
        "2026-11-23",
        "FREQ=WEEKLY;INTERVAL=2",
        "",
        "",
        "",
    ),
    (
        "sync biweekly",
        "sync",
        "2026-11-23",
        "FREQ=WEEKLY;INTERVAL=2",
        "",
        "",
        "",
    ),
    (
        "sync every 2 weeks on friday",
        "sync",
        "2026-11-27",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=FR",
        "",
        "",
        "",
    ),
    (
        "sync every other tuesday",
        "sync",
        "2026-11-24",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
        "",
        "",
        "",
    ),
    (
        "rent every month",
        "rent",
        "2026-11-23",
        "FREQ=MONTHLY",
        "",
        "",
        "",
    ),
    (
        "rent monthly",
        "rent",
        "2026-11-23",
        "FREQ=MONTHLY",
        "",
        "",
        "",
    ),
    (
        "rent every 15th",
        "rent",
        "2026-12-15",
        "FREQ=MONTHLY;BYMONTHDAY=15",
        "",
        "",
        "",
    ),
    (
        "rent every 1st",
        "rent",
        "2026-12-01",
        "FREQ=MONTHLY;BYMONTHDAY=1",
        "",
        "",
        "",
    ),
    (
        "rent every 1st and 15th",
        "rent",
        "2026-12-01",
        "FREQ=MONTHLY;BYMONTHDAY=1,15",
        "",
        "",
        "",
    ),
    (
        "close books every last day of the month",
        "close books",
        "2026-11-30",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
        "",
        "",
        "",
    ),
    (
        "close books every month on the last day",
        "close books",
        "2026-11-30",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
        "",
        "",
        "",
    ),
    (
        "demo every last friday",
        "demo",
        "2026-11-27",
        "FREQ=MONTHLY;BYDAY=-1FR",
        "",
        "",
        "",
    ),
    (
        "board every first monday",
        "board",
        "2026-12-07",
        "FREQ=MONTHLY;BYDAY=1MO",
        "",
        "",
        "",
    ),
    (
        "board every 2nd tuesday",
        "board",
        "2026-12-08",
        "FREQ=MONTHLY;BYDAY=2TU",
        "",
        "",
        "",
    ),
    (
        "review every year",
        "review",
        "2026-11-23",
        "FREQ=YEARLY",
        "",
        "",
        "",
    ),
    (
        "review annually",
        "review",
        "2026-11-23",
        "FREQ=YEARLY",
        "",
        "",
        "",
    ),
    (
        "birthday every jan 5",
        "birthday",
        "2027-01-05",
        "FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=5",
        "",
        "",
        "",
    ),
    (
        "birthday every year on march 3rd",
        "birthday",
        "2027-03-03",
        "FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=3",
        "",
        "",
        "",
    ),
    (
        "leap party every feb 29",
        "leap party",
        "2028-02-29",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
        "",
        "",
        "",
    ),
    (
        "filter every 3 days",
        "filter",
        "2026-11-23",
        "FREQ=DAILY;INTERVAL=3",
        "",
        "",
        "",
    ),
    (
        "filter every 3 days at 9am",
        "filter",
        "2026-11-24 09:00",
        "FREQ=DAILY;INTERVAL=3",
        "",
        "",
        "",
    ),
    (
        "oil every 6 months",
        "oil",
        "2026-11-23",
        "FREQ=MONTHLY;INTERVAL=6",
        "",
        "",
        "",
    ),
    (
        "audit every 2 years",
        "audit",
        "2026-11-23",
        "FREQ=YEARLY;INTERVAL=2",
        "",
        "",
        "",
    ),
    (
        "haircut every! 4 weeks",
        "haircut",
        "2026-11-23",
        "!FREQ=WEEKLY;INTERVAL=4",
        "",
        "",
        "",
    ),
    (
        "haircut every 4 weeks after completion",
        "haircut",
        "2026-11-23",
        "!FREQ=WEEKLY;INTERVAL=4",
        "",
        "",
        "",
    ),
    (
        "pills every day for 5 times",
        "pills",
        "2026-11-23",
        "FREQ=DAILY;COUNT=5",
        "",
        "",
        "",
    ),
    (
        "pills every day 10 times",
        "pills",
        "2026-11-23",
        "FREQ=DAILY;COUNT=10",
        "",
        "",
        "",
    ),
    (
        "pills every day until dec 31",
        "pills",
        "2026-11-23",
        "FREQ=DAILY;UNTIL=20261231",
        "",
        "",
        "",
    ),
    (
        "gym every mon, wed and fri at 7am until dec 31",
        "gym",
        "2026-11-25 07:00",
        "FREQ=WEEKLY;UNTIL=20261231;BYDAY=MO,WE,FR",
        "",
        "",
        "",
    ),
    (
        "class every monday starting dec 7",
        "class",
        "2026-12-07",
        "FREQ=WEEKLY;BYDAY=MO",
        "",
        "",
        "",
    ),
    (
        "class every tuesday from jan 5",
        "class",
        "2027-01-05",
        "FREQ=WEEKLY;BYDAY=TU",
        "",
        "",
        "",
    ),
    (
        "every day",
        "every day",
        "2026-11-23",
        "FREQ=DAILY",
        "",
        "",
        "",
    ),
];

const TAGS_PRIORITY_REMINDERS: &[Case] = &[
    ("report #work", "report", "", "", "work", "", ""),
    (
        "report #Work #urgent-stuff",
        "report",
        "",
        "",
        "work,urgent-stuff",
        "",
        "",
    ),
    ("report #a/b #x_y #a/b", "report", "", "", "a/b,x_y", "", ""),
    ("café #élan", "café", "", "", "élan", "", ""),
    ("#home clean", "clean", "", "", "home", "", ""),
    ("(#home) clean", "() clean", "", "", "home", "", ""),
    ("clean #home.", "clean.", "", "", "home", "", ""),
    ("fix bug !low", "fix bug", "", "", "", "low", ""),
    ("fix bug !medium", "fix bug", "", "", "", "medium", ""),
    ("fix bug !HIGH", "fix bug", "", "", "", "high", ""),
    ("fix bug !urgent", "fix bug", "", "", "", "urgent", ""),
    ("fix bug !p1", "fix bug", "", "", "", "urgent", ""),
    ("fix bug !p2", "fix bug", "", "", "", "high", ""),
    ("fix bug !p3", "fix bug", "", "", "", "medium", ""),
    ("fix bug !p4", "fix bug", "", "", "", "low", ""),
    ("fix bug !low !high", "fix bug !high", "", "", "", "low", ""),
    ("#a !p1", "", "", "", "a", "urgent", ""),
    (
        "flight friday remind me 2 hours before",
        "flight",
        "2026-11-27",
        "",
        "",
        "",
        "PT2H",
    ),
    (
        "flight friday 8pm remind me 30 minutes before",
        "flight",
        "2026-11-27 20:00",
        "",
        "",
        "",
        "PT30M",
    ),
    (
        "flight friday remind me an hour before",
        "flight",
        "2026-11-27",
        "",
        "",
        "",
        "PT1H",
    ),
    (
        "exam dec 10 remind me 1 week before",
        "exam",
        "2026-12-10",
        "",
        "",
        "",
        "P1W",
    ),
    (
        "exam dec 10 remind me the day before",
        "exam",
        "2026-12-10",
        "",
        "",
        "",
        "P1D",
    ),
    (
        "pills remind me at 8am",
        "pills",
        "",
        "",
        "",
        "",
        "@2026-11-24 08:00",
    ),
    (
        "pills remind me at 8pm",
        "pills",
        "",
        "",
        "",
        "",
        "@2026-11-23 20:00",
    ),
    (
        "pills friday remind me at 8am",
        "pills",
        "2026-11-27",
        "",
        "",
        "",
        "@2026-11-27 08:00",
    ),
    (
        "pills remind me tomorrow at 7pm",
        "pills",
        "",
        "",
        "",
        "",
        "@2026-11-24 19:00",
    ),
    (
        "pills remind me friday",
        "pills",
        "",
        "",
        "",
        "",
        "@2026-11-27 09:00",
    ),
    (
        "pills remind me in 2 hours",
        "pills",
        "",
        "",
        "",
        "",
        "@2026-11-23 12:00",
    ),
    (
        "pills tomorrow remind me 1 day before remind me at 7am",
        "pills",
        "2026-11-24",
        "",
        "",
        "",
        "P1D;@2026-11-24 07:00",
    ),
];

const JUNK: &[Case] = &[
    ("", "", "", "", "", "", ""),
    ("   ", "", "", "", "", "", ""),
    ("meet Monday Jones", "meet Monday Jones", "", "", "", "", ""),
    ("#", "#", "", "", "", "", ""),
    ("C# guide", "C# guide", "", "", "", "", ""),
    ("#a#b", "#a#b", "", "", "", "", ""),
    (
        "every now and then",
        "every now and then",
        "",
        "",
        "",
        "",
        "",
    ),
    ("wow !!!", "wow !!!", "", "", "", "", ""),
    ("wow !! and !", "wow !! and !", "", "", "", "", ""),
    ("!foo bar", "!foo bar", "", "", "", "", ""),
    (
        "mail bob@example.com",
        "mail bob@example.com",
        "",
        "",
        "",
        "",
        "",
    ),
    (
        "read https://example.com/docs#intro",
        "read https://example.com/docs#intro",
        "",
        "",
        "",
        "",
        "",
    ),
    ("meet at the cafe", "meet at the cafe", "", "", "", "", ""),
    ("by the way", "by the way", "", "", "", "", ""),
    ("on the way home", "on the way home", "", "", "", "", ""),
    ("done in a while", "done in a while", "", "", "", "", ""),
    ("remind me", "remind me", "", "", "", "", ""),
    ("remind me later", "remind me later", "", "", "", "", ""),
    ("3 times a day", "3 times a day", "", "", "", "", ""),
    ("may I go", "may I go", "", "", "", "", ""),
    ("the sun is out", "the sun is out", "", "", "", "", ""),
    ("march on", "march on", "", "", "", "", ""),
    ("weekly report", "weekly report", "", "", "", "", ""),
    ("meet at 25:00", "meet at 25:00", "", "", "", "", ""),
    ("meet 13pm", "meet 13pm", "", "", "", "", ""),
    ("party feb 30", "party feb 30", "", "", "", "", ""),
    ("party 2026-02-30", "party 2026-02-30", "", "", "", "", ""),
    ("ratio 13/45", "ratio 13/45", "", "", "", "", ""),
    ("every 0 days", "every 0 days", "", "", "", "", ""),
    ("every 5000 days", "every 5000 days", "", "", "", "", ""),
    (
        "stop every day until yesterday",
        "stop every day until yesterday",
        "",
        "",
        "",
        "",
        "",
    ),
    (
        "a tomorrow or friday",
        "a or friday",
        "2026-11-24",
        "",
        "",
        "",
        "",
    ),
    (
        "call mom tomorrow, then buy milk",
        "call mom, then buy milk",
        "2026-11-24",
        "",
        "",
        "",
        "",
    ),
    (
        "Tomorrow: call mom",
        "call mom",
        "2026-11-24",
        "",
        "",
        "",
        "",
    ),
    (
        "call mom - tomorrow",
        "call mom",
        "2026-11-24",
        "",
        "",
        "",
        "",
    ),
    (
        "buy milk tomorrow.",
        "buy milk.",
        "2026-11-24",
        "",
        "",
        "",
        "",
    ),
    ("über straße #größe", "über straße", "", "", "größe", "", ""),
    ("日本語 tomorrow", "日本語", "2026-11-24", "", "", "", ""),
];

#[test]
fn required_examples() {
    run(NOW, REQUIRED);
}

#[test]
fn dates() {
    run(NOW, DATES);
}

#[test]
fn times() {
    run(NOW, TIMES);
}

#[test]
fn recurrence() {
    run(NOW, RECURRENCE);
}

#[test]
fn tags_priority_reminders() {
    run(NOW, TAGS_PRIORITY_REMINDERS);
}

#[test]
fn junk() {
    run(NOW, JUNK);
}

/// Spring forward in Berlin: 2027-03-28 02:00 CET → 03:00 CEST.
#[test]
fn dst_spring_forward() {
    run(
        "2027-03-27 12:00",
        &[
            (
                "early tomorrow at 2:30",
                "early",
                "2027-03-28 03:30",
                "",
                "",
                "",
                "",
            ),
            (
                "early tomorrow at 2:30am",
                "early",
                "2027-03-28 03:30",
                "",
                "",
                "",
                "",
            ),
            (
                "early every day at 2:30",
                "early",
                "2027-03-28 03:30",
                "FREQ=DAILY",
                "",
                "",
                "",
            ),
            (
                "late tomorrow at 9pm",
                "late",
                "2027-03-28 21:00",
                "",
                "",
                "",
                "",
            ),
        ],
    );
    // Fall back (2027-10-31 03:00 CEST → 02:00 CET): 02:30 is ambiguous, the earlier counts.
    let now = local("2027-10-30 12:00");
    let got = parse(&QuickAddInput {
        text: "x tomorrow at 2:30",
        now,
        time_zone: TZ,
    });
    assert_eq!(
        got.due_at,
        Some(Utc.with_ymd_and_hms(2027, 10, 31, 0, 30, 0).unwrap())
    );
}

#[test]
fn month_ends() {
    run(
        "2027-01-31 10:00",
        &[
            ("x in 1 month", "x", "2027-02-28", "", "", "", ""),
            ("x end of month", "x", "2027-01-31", "", "", "", ""),
            ("x on the 31st", "x", "2027-01-31", "", "", "", ""),
            ("x on the 30th", "x", "2027-03-30", "", "", "", ""),
            ("x tomorrow", "x", "2027-02-01", "", "", "", ""),
            (
                "x every month on the 31st",
                "x",
                "2027-01-31",
                "FREQ=MONTHLY;BYMONTHDAY=31",
                "",
                "",
                "",
            ),
            (
                "x every last day of the month at 9am",
                "x",
                "2027-02-28 09:00",
                "FREQ=MONTHLY;BYMONTHDAY=-1",
                "",
                "",
                "",
            ),
        ],
    );
}

#[test]
fn leap_years() {
    run(
        "2028-02-28 10:00",
        &[
            ("x tomorrow", "x", "2028-02-29", "", "", "", ""),
            ("x end of month", "x", "2028-02-29", "", "", "", ""),
            ("x feb 29", "x", "2028-02-29", "", "", "", ""),
            ("x in 1 year", "x", "2029-02-28", "", "", "", ""),
        ],
    );
    run(
        "2027-02-28 10:00",
        &[
            ("x tomorrow", "x", "2027-03-01", "", "", "", ""),
            ("x end of month", "x", "2027-02-28", "", "", "", ""),
            ("x 2/29", "x", "2028-02-29", "", "", "", ""),
        ],
    );
}

#[test]
fn table_has_at_least_100_phrases() {
    let n = REQUIRED.len()
        + DATES.len()
        + TIMES.len()
        + RECURRENCE.len()
        + TAGS_PRIORITY_REMINDERS.len()
        + JUNK.len();
    assert!(n >= 100, "only {n} phrases");
}

#[test]
fn over_long_input_is_not_parsed() {
    let text = format!("{} tomorrow #tag", "word ".repeat(300));
    let got = parse(&QuickAddInput {
        text: &text,
        now: local(NOW),
        time_zone: TZ,
    });
    assert_eq!(got.due_at, None);
    assert!(got.tags.is_empty());
    assert!(got.understood.is_empty());
    assert_eq!(
        got.title,
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    );
}

#[test]
fn spans_and_serialisation() {
    let got = parse(&QuickAddInput {
        text: "Pay rent every month on the 1st at 9am #finance !high remind me 1 day before",
        now: local(NOW),
        time_zone: TZ,
    });
    let spans: Vec<(&str, &str, usize, usize)> = got
        .understood
        .iter()
        .map(|s| (s.kind, s.text.as_str(), s.start, s.end))
        .collect();
    assert_eq!(
        spans,
        [
            ("recurrence", "every month on the 1st", 9, 31),
            ("due", "at 9am", 32, 38),
            ("tag", "#finance", 39, 47),
            ("priority", "!high", 48, 53),
            ("reminder", "remind me 1 day before", 54, 76),
        ]
    );
    let got = parse(&QuickAddInput {
        text: "call mom tomorrow 6pm",
        now: local(NOW),
        time_zone: TZ,
    });
    assert_eq!(got.understood.len(), 1);
    assert_eq!(got.understood[0].text, "tomorrow 6pm");
}
