//! Anchors, COUNT/UNTIL, month ends, leap days, BYSETPOS, previews, validation, limits.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use chrono_tz::Europe::Berlin;
use chrono_tz::UTC;
use taskflow_recurrence::{Anchor, MAX_PREVIEW, RecurrenceError, RecurrenceRule, Schedule};

use super::common::{instances, local, schedule, utc, wall, walls};

fn completion(rule: &str, tz: chrono_tz::Tz, dtstart: &str) -> Schedule {
    Schedule::new(
        RecurrenceRule::parse(rule).unwrap(),
        Anchor::Completion,
        tz,
        wall(dtstart),
    )
}

#[test]
fn leap_day_yearly_only_in_leap_years() {
    let s = schedule("FREQ=YEARLY", UTC, "20240229T090000");
    let (got, _) = instances(&s, 4);
    assert_eq!(
        local(&s, &got),
        walls("20240229T090000,20280229T090000,20320229T090000,20360229T090000")
    );
    // 2100 is not a leap year.
    let s = schedule("FREQ=YEARLY", UTC, "20960229T090000");
    let next = s
        .next_after(utc("2096-02-29T09:00:00Z"), utc("2096-02-29T09:00:00Z"), 0)
        .unwrap();
    assert_eq!(next, Some(utc("2104-02-29T09:00:00Z")));
    // Explicit form, from a non-matching start.
    let s = schedule(
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
        UTC,
        "20250101T070000",
    );
    let (got, _) = instances(&s, 2);
    assert_eq!(local(&s, &got), walls("20280229T070000,20320229T070000"));
}

#[test]
fn month_ends() {
    let s = schedule("FREQ=MONTHLY;BYMONTHDAY=-1", Berlin, "20240131T090000");
    let (got, _) = instances(&s, 5);
    assert_eq!(
        local(&s, &got),
        walls("20240131T090000,20240229T090000,20240331T090000,20240430T090000,20240531T090000")
    );
    let s = schedule("FREQ=MONTHLY;BYMONTHDAY=31", Berlin, "20240131T090000");
    let (got, _) = instances(&s, 5);
    assert_eq!(
        local(&s, &got),
        walls("20240131T090000,20240331T090000,20240531T090000,20240731T090000,20240831T090000")
    );
    let s = schedule(
        "FREQ=MONTHLY;BYMONTHDAY=-1;BYMONTH=2",
        UTC,
        "20230228T090000",
    );
    let (got, _) = instances(&s, 3);
    assert_eq!(
        local(&s, &got),
        walls("20230228T090000,20240229T090000,20250228T090000")
    );
}

#[test]
fn last_weekday_of_month_with_bysetpos() {
    let s = schedule(
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        Berlin,
        "20240101T170000",
    );
    let (got, _) = instances(&s, 7);
    assert_eq!(
        local(&s, &got),
        walls(
            "20240131T170000,20240229T170000,20240329T170000,20240430T170000,20240531T170000,20240628T170000,20240731T170000"
        )
    );
    let s = schedule(
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=1",
        UTC,
        "20240101T080000",
    );
    let (got, _) = instances(&s, 4);
    assert_eq!(
        local(&s, &got),
        walls("20240101T080000,20240201T080000,20240301T080000,20240401T080000")
    );
}

#[test]
fn wkst_changes_every_other_week_results() {
    let mo = schedule(
        "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
        UTC,
        "19970805T090000",
    );
    let su = schedule(
        "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
        UTC,
        "19970805T090000",
    );
    let (a, _) = instances(&mo, 10);
    let (b, _) = instances(&su, 10);
    assert_eq!(
        local(&mo, &a),
        walls("19970805T090000,19970810T090000,19970819T090000,19970824T090000")
    );
    assert_eq!(
        local(&su, &b),
        walls("19970805T090000,19970817T090000,19970819T090000,19970831T090000")
    );
}

#[test]
fn count_exhaustion_through_next_after() {
    let s = schedule("FREQ=DAILY;COUNT=3", Berlin, "20240110T090000");
    let d1 = utc("2024-01-10T08:00:00Z");
    let d2 = s.next_after(d1, d1, 0).unwrap().unwrap();
    let d3 = s.next_after(d2, d2, 1).unwrap().unwrap();
    assert_eq!(d3, utc("2024-01-12T08:00:00Z"));
    assert_eq!(s.next_after(d3, d3, 2).unwrap(), None);
    // COUNT counts rule instances from dtstart: after skipping past the end there is none.
    assert_eq!(
        s.next_after(d1, utc("2024-02-01T00:00:00Z"), 0).unwrap(),
        None
    );
    // ...and while it lasts, missed ones are skipped to the first one after now.
    let s = schedule("FREQ=DAILY;COUNT=5", Berlin, "20240101T090000");
    let next = s
        .next_after(utc("2024-01-01T08:00:00Z"), utc("2024-01-04T09:00:00Z"), 0)
        .unwrap();
    assert_eq!(next, Some(utc("2024-01-05T08:00:00Z")));
    assert_eq!(
        s.next_after(utc("2024-01-01T08:00:00Z"), utc("2024-01-05T09:00:00Z"), 0)
            .unwrap(),
        None
    );
}

#[test]
fn until_exhaustion_through_next_after() {
    let s = schedule(
        "FREQ=WEEKLY;UNTIL=20240122T080000Z",
        Berlin,
        "20240108T090000",
    );
    let d1 = utc("2024-01-08T08:00:00Z");
    let d2 = s.next_after(d1, d1, 0).unwrap().unwrap();
    assert_eq!(d2, utc("2024-01-15T08:00:00Z"));
    let d3 = s.next_after(d2, d2, 1).unwrap().unwrap();
    assert_eq!(d3, utc("2024-01-22T08:00:00Z"));
    assert_eq!(s.next_after(d3, d3, 2).unwrap(), None);
    let s = schedule(
        "FREQ=WEEKLY;UNTIL=20240122T075959Z",
        Berlin,
        "20240108T090000",
    );
    assert_eq!(s.next_after(d2, d2, 1).unwrap(), None);
}

#[test]
fn due_anchor_skips_missed_occurrences() {
    let s = schedule("FREQ=DAILY", Berlin, "20240101T090000");
    let due = utc("2024-01-01T08:00:00Z");
    // Completed ten days late, in the afternoon: the next one is tomorrow, not eleven backlogs.
    let next = s.next_after(due, utc("2024-01-10T12:00:00Z"), 0).unwrap();
    assert_eq!(next, Some(utc("2024-01-11T08:00:00Z")));
    // Completed late but before today's time: today's occurrence.
    let next = s.next_after(due, utc("2024-01-10T07:00:00Z"), 0).unwrap();
    assert_eq!(next, Some(utc("2024-01-10T08:00:00Z")));
    // Completed early: the next after the current due date.
    let next = s.next_after(due, utc("2023-12-30T00:00:00Z"), 0).unwrap();
    assert_eq!(next, Some(utc("2024-01-02T08:00:00Z")));
    // A series started years ago is still cheap and exact.
    let s = schedule(
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,FR;WKST=SU",
        Berlin,
        "20000104T090000",
    );
    let now = utc("2031-06-17T12:00:00Z");
    let next = s
        .next_after(utc("2000-01-04T08:00:00Z"), now, 0)
        .unwrap()
        .unwrap();
    let local_next = next.with_timezone(&Berlin).naive_local();
    assert!(next > now && next - now < TimeDelta::days(22));
    assert_eq!(local_next.format("%H:%M").to_string(), "09:00");
}

#[test]
fn completion_anchor_examples() {
    // "every 3 days" completed on the 10th at 15:00 for a 09:00 task -> the 13th at 09:00.
    let s = completion("FREQ=DAILY;INTERVAL=3", Berlin, "20240101T090000");
    let due = utc("2024-01-07T08:00:00Z");
    let next = s.next_after(due, utc("2024-01-10T14:00:00Z"), 2).unwrap();
    assert_eq!(next, Some(utc("2024-01-13T08:00:00Z")));
    // Completed before the time of day: still three days on.
    let next = s.next_after(due, utc("2024-01-10T06:00:00Z"), 2).unwrap();
    assert_eq!(next, Some(utc("2024-01-13T08:00:00Z")));
    // The local date counts: 23:30Z on the 9th is already the 10th in Berlin.
    let next = s.next_after(due, utc("2024-01-09T23:30:00Z"), 2).unwrap();
    assert_eq!(next, Some(utc("2024-01-13T08:00:00Z")));
    // Plain weekly: one week after the completion day.
    let s = completion("weekly", UTC, "20240101T090000");
    let next = s
        .next_after(utc("2024-01-01T09:00:00Z"), utc("2024-01-03T10:00:00Z"), 0)
        .unwrap();
    assert_eq!(next, Some(utc("2024-01-10T09:00:00Z")));
    // Explicit weekdays: the next listed weekday after the completion.
    let s = completion("FREQ=WEEKLY;BYDAY=MO,WE", UTC, "20240101T090000");
    let next = s
        .next_after(utc("2024-01-01T09:00:00Z"), utc("2024-01-02T10:00:00Z"), 0)
        .unwrap();
    assert_eq!(next, Some(utc("2024-01-03T09:00:00Z")));
    // Monthly: same day next month.
    let s = completion("monthly", UTC, "20240105T090000");
    let next = s
        .next_after(utc("2024-01-05T09:00:00Z"), utc("2024-01-20T10:00:00Z"), 0)
        .unwrap();
    assert_eq!(next, Some(utc("2024-02-20T09:00:00Z")));
}

#[test]
fn completion_anchor_count_and_until() {
    let s = completion("FREQ=DAILY;COUNT=3", UTC, "20240101T090000");
    let now = utc("2024-01-05T10:00:00Z");
    assert!(s.next_after(now, now, 0).unwrap().is_some());
    assert!(s.next_after(now, now, 1).unwrap().is_some());
    assert_eq!(s.next_after(now, now, 2).unwrap(), None);
    let s = completion(
        "FREQ=DAILY;INTERVAL=2;UNTIL=20240110T090000Z",
        UTC,
        "20240101T090000",
    );
    let next = s.next_after(now, utc("2024-01-08T10:00:00Z"), 5).unwrap();
    assert_eq!(next, Some(utc("2024-01-10T09:00:00Z")));
    assert_eq!(
        s.next_after(now, utc("2024-01-09T10:00:00Z"), 5).unwrap(),
        None
    );
}

#[test]
fn preview_due_and_completion() {
    let s = schedule("FREQ=WEEKLY;BYDAY=MO,FR;COUNT=5", Berlin, "20240101T183000");
    let list = s.preview(s.start_utc(), 0, 10).unwrap();
    let got: Vec<_> = list.iter().map(|o| (o.local, o.index)).collect();
    assert_eq!(
        got,
        vec![
            (wall("20240101T183000"), 0),
            (wall("20240105T183000"), 1),
            (wall("20240108T183000"), 2),
            (wall("20240112T183000"), 3),
            (wall("20240115T183000"), 4),
        ]
    );
    // From a later occurrence, keeping the caller's index.
    let current = list[2].utc;
    let later = s.preview(current, 2, 10).unwrap();
    assert_eq!(later, list[2..].to_vec());
    // A moved current due date comes first as given.
    let moved = utc("2024-01-02T12:00:00Z");
    let list = s.preview(moved, 0, 2).unwrap();
    assert_eq!(list[0].utc, moved);
    assert_eq!(list[1].local, wall("20240105T183000"));
    // Limits.
    let s = schedule("daily", Berlin, "20240101T090000");
    assert!(s.preview(s.start_utc(), 0, 0).unwrap().is_empty());
    assert_eq!(
        s.preview(s.start_utc(), 0, 1000).unwrap().len(),
        MAX_PREVIEW
    );
    // Completion preview = completing each on its due instant.
    let s = completion("FREQ=DAILY;INTERVAL=3;COUNT=4", Berlin, "20240101T090000");
    let list = s.preview(s.start_utc(), 0, 10).unwrap();
    assert_eq!(
        list.iter().map(|o| o.local).collect::<Vec<_>>(),
        walls("20240101T090000,20240104T090000,20240107T090000,20240110T090000")
    );
}

#[test]
fn validate_series() {
    let s = schedule("FREQ=WEEKLY;BYDAY=MO", Berlin, "20240101T090000");
    assert_eq!(s.validate(s.start_utc()), Ok(()));
    let s = schedule(
        "FREQ=DAILY;UNTIL=20231231T000000Z",
        Berlin,
        "20240101T090000",
    );
    let err = s.validate(s.start_utc()).unwrap_err();
    assert_eq!(err.code(), "until_before_start");
    let s = schedule("FREQ=DAILY;UNTIL=20231231", Berlin, "20240101T090000");
    assert_eq!(
        s.validate(s.start_utc()).unwrap_err().code(),
        "until_before_start"
    );
    let s = schedule("FREQ=DAILY;COUNT=1", Berlin, "20240101T090000");
    assert_eq!(
        s.validate(s.start_utc()),
        Err(RecurrenceError::NoOccurrences)
    );
    let s = schedule(
        "FREQ=DAILY;UNTIL=20240101T080000Z",
        Berlin,
        "20240101T090000",
    );
    assert_eq!(
        s.validate(s.start_utc()),
        Err(RecurrenceError::NoOccurrences)
    );
    let s = schedule("FREQ=DAILY;COUNT=2", Berlin, "20240101T090000");
    assert_eq!(s.validate(s.start_utc()), Ok(()));
    let s = Schedule::new(
        RecurrenceRule::parse("daily").unwrap(),
        Anchor::Due,
        UTC,
        chrono::NaiveDate::from_ymd_opt(-5, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    );
    assert_eq!(
        s.validate(utc("2024-01-01T00:00:00Z")).unwrap_err().code(),
        "invalid_schedule"
    );
}

/// Hostile rules return quickly with NoOccurrences or TooExpensive (never hang).
#[test]
fn hostile_rules_are_bounded() {
    for rule in [
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31",
        "FREQ=MONTHLY;BYMONTH=4,6,9,11;BYMONTHDAY=31,-31",
    ] {
        assert_eq!(
            RecurrenceRule::parse(rule),
            Err(RecurrenceError::NoOccurrences),
            "{rule}"
        );
    }
    for rule in [
        "FREQ=YEARLY;BYMONTH=1;BYYEARDAY=100",
        "FREQ=YEARLY;BYWEEKNO=1;BYMONTH=6",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYYEARDAY=1",
        "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=-30",
        "FREQ=MONTHLY;BYMONTH=2;BYDAY=5MO;BYMONTHDAY=1",
        "FREQ=WEEKLY;BYMONTH=2;BYDAY=MO;BYSETPOS=-53",
        "FREQ=YEARLY;INTERVAL=1000;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=YEARLY;INTERVAL=400;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=MONTHLY;INTERVAL=1000;BYMONTH=5;BYDAY=-1SU",
        "FREQ=DAILY;INTERVAL=1000;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",
    ] {
        let Ok(parsed) = RecurrenceRule::parse(rule) else {
            continue;
        };
        let s = Schedule::new(parsed, Anchor::Due, Berlin, wall("20010228T090000"));
        let started = Instant::now();
        let result = s.validate(s.start_utc());
        let took = started.elapsed();
        assert!(
            matches!(
                result,
                Err(RecurrenceError::NoOccurrences | RecurrenceError::TooExpensive)
            ),
            "{rule}: {result:?}"
        );
        assert!(took < Duration::from_secs(3), "{rule} took {took:?}");
        let started = Instant::now();
        let result = s.preview(s.start_utc(), 0, 100);
        assert!(started.elapsed() < Duration::from_secs(3), "{rule}");
        if let Ok(list) = result {
            assert_eq!(list.len(), 1, "{rule}");
        }
    }
}

#[test]
fn rare_but_valid_rules_are_found() {
    // Monday, 29 February: every 28 years or so (but 2100 is not a leap year).
    let s = schedule(
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",
        UTC,
        "20240101T090000",
    );
    let (got, _) = instances(&s, 3);
    assert_eq!(
        local(&s, &got),
        walls("20440229T090000,20720229T090000,21120229T090000")
    );
    assert_eq!(s.validate(s.start_utc()), Ok(()));
}

#[test]
fn serde_and_codes() {
    let rule = RecurrenceRule::parse("rrule:freq=weekly;byday=we,mo").unwrap();
    assert_eq!(
        serde_json::to_string(&rule).unwrap(),
        "\"FREQ=WEEKLY;BYDAY=MO,WE\""
    );
    let back: RecurrenceRule = serde_json::from_str("\"FREQ=WEEKLY;BYDAY=MO,WE\"").unwrap();
    assert_eq!(back, rule);
    assert!(serde_json::from_str::<RecurrenceRule>("\"FREQ=HOURLY\"").is_err());
    assert_eq!(
        serde_json::to_string(&Anchor::Completion).unwrap(),
        "\"completion\""
    );
    assert_eq!(
        serde_json::from_str::<Anchor>("\"due\"").unwrap(),
        Anchor::Due
    );
    let codes = [
        (RecurrenceError::NoOccurrences, "no_occurrences"),
        (RecurrenceError::TooExpensive, "rule_too_expensive"),
        (
            RecurrenceError::UnsupportedFrequency {
                freq: "HOURLY".into(),
            },
            "unsupported_frequency",
        ),
    ];
    for (err, code) in codes {
        assert_eq!(err.code(), code);
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn normalisation_and_accessors() {
    let cases = [
        ("daily", "FREQ=DAILY"),
        ("Weekdays", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"),
        ("WEEKLY", "FREQ=WEEKLY"),
        ("biweekly", "FREQ=WEEKLY;INTERVAL=2"),
        ("monthly", "FREQ=MONTHLY"),
        ("yearly", "FREQ=YEARLY"),
        ("RRULE:FREQ=DAILY;INTERVAL=1", "FREQ=DAILY"),
        (
            " freq=monthly ; byday=-1fr,+1mo ; count=5 ; wkst=su ",
            "FREQ=MONTHLY;COUNT=5;BYDAY=1MO,-1FR;WKST=SU",
        ),
        (
            "FREQ=YEARLY;BYMONTHDAY=15,1,15;BYMONTH=12,1;UNTIL=20300101T000000Z;WKST=MO",
            "FREQ=YEARLY;UNTIL=20300101T000000Z;BYMONTH=1,12;BYMONTHDAY=1,15",
        ),
    ];
    for (input, text) in cases {
        let rule = RecurrenceRule::parse(input).unwrap();
        assert_eq!(rule.as_str(), text, "{input}");
        assert_eq!(RecurrenceRule::parse(rule.as_str()).unwrap(), rule);
    }
    let rule = RecurrenceRule::parse("FREQ=DAILY;COUNT=7").unwrap();
    assert_eq!(rule.count(), Some(7));
    assert_eq!(rule.until(), None);
    let rule = RecurrenceRule::parse("FREQ=DAILY;UNTIL=20270301T120000Z").unwrap();
    assert_eq!(rule.until(), Some(utc("2027-03-01T12:00:00Z")));
    let rule = RecurrenceRule::parse("FREQ=DAILY;UNTIL=20270301").unwrap();
    assert_eq!(rule.until(), Some(utc("2027-03-01T23:59:59Z")));
}
