//! Bad input is rejected with a useful error and never panics.

use proptest::prelude::*;
use taskflow_recurrence::{Anchor, RecurrenceRule, Schedule};

use super::common::wall;

#[test]
fn rejected_with_codes() {
    let cases: &[(&str, &str)] = &[
        ("", "invalid_rrule"),
        ("   ", "invalid_rrule"),
        ("fortnightly", "invalid_rrule"),
        ("every day", "invalid_rrule"),
        ("FREQ=HOURLY", "unsupported_frequency"),
        ("FREQ=MINUTELY;INTERVAL=15", "unsupported_frequency"),
        ("RRULE:FREQ=SECONDLY", "unsupported_frequency"),
        ("FREQ=FORTNIGHTLY", "invalid_rrule"),
        ("FREQ=DAILY;BYHOUR=9", "unsupported_rule_part"),
        ("FREQ=DAILY;BYMINUTE=0,30", "unsupported_rule_part"),
        ("FREQ=DAILY;BYSECOND=0", "unsupported_rule_part"),
        ("RSCALE=HEBREW;FREQ=YEARLY", "unsupported_rule_part"),
        ("FREQ=MONTHLY;SKIP=FORWARD", "unsupported_rule_part"),
        (
            "DTSTART:20240101T090000Z\nRRULE:FREQ=DAILY",
            "unsupported_rule_part",
        ),
        (
            "FREQ=DAILY;DTSTART=20240101T090000Z",
            "unsupported_rule_part",
        ),
        (
            "FREQ=DAILY\nEXDATE:20240102T090000Z",
            "unsupported_rule_part",
        ),
        ("RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY", "invalid_rrule"),
        ("RRULE;X-FOO=1:FREQ=DAILY", "invalid_rrule"),
        ("FREQ=DAILY;TZID=Europe/Berlin", "unsupported_rule_part"),
        ("FREQ=DAILY;FOO=BAR", "invalid_rrule"),
        ("FREQ=DAILY;BYEASTER=0", "invalid_rrule"),
        ("INTERVAL=2", "invalid_rrule"),
        ("FREQ=DAILY;FREQ=WEEKLY", "invalid_rrule"),
        ("FREQ=DAILY;INTERVAL=0", "invalid_rrule"),
        ("FREQ=DAILY;INTERVAL=-1", "invalid_rrule"),
        ("FREQ=DAILY;INTERVAL=1001", "invalid_rrule"),
        (
            "FREQ=DAILY;INTERVAL=99999999999999999999999",
            "invalid_rrule",
        ),
        ("FREQ=DAILY;INTERVAL=2.5", "invalid_rrule"),
        ("FREQ=DAILY;INTERVAL=", "invalid_rrule"),
        ("FREQ=DAILY;COUNT=0", "invalid_rrule"),
        ("FREQ=DAILY;COUNT=abc", "invalid_rrule"),
        ("FREQ=DAILY;COUNT=5;UNTIL=20300101T000000Z", "invalid_rrule"),
        ("FREQ=DAILY;UNTIL=20300101T000000", "invalid_rrule"),
        ("FREQ=DAILY;UNTIL=20301301T000000Z", "invalid_rrule"),
        ("FREQ=DAILY;UNTIL=20300230", "invalid_rrule"),
        ("FREQ=DAILY;UNTIL=2030-01-01", "invalid_rrule"),
        ("FREQ=DAILY;UNTIL=20300101T250000Z", "invalid_rrule"),
        ("FREQ=WEEKLY;BYDAY=XX", "invalid_rrule"),
        ("FREQ=WEEKLY;BYDAY=MO,,TU", "invalid_rrule"),
        ("FREQ=WEEKLY;BYDAY=1MO", "invalid_rrule"),
        ("FREQ=DAILY;BYDAY=-1FR", "invalid_rrule"),
        ("FREQ=MONTHLY;BYDAY=6MO", "invalid_rrule"),
        ("FREQ=MONTHLY;BYDAY=0MO", "invalid_rrule"),
        ("FREQ=YEARLY;BYDAY=54MO", "invalid_rrule"),
        ("FREQ=YEARLY;BYWEEKNO=10;BYDAY=1MO", "invalid_rrule"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "invalid_rrule"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "invalid_rrule"),
        ("FREQ=MONTHLY;BYMONTHDAY=-32", "invalid_rrule"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "invalid_rrule"),
        ("FREQ=YEARLY;BYMONTH=13", "invalid_rrule"),
        ("FREQ=YEARLY;BYMONTH=0", "invalid_rrule"),
        ("FREQ=YEARLY;BYYEARDAY=367", "invalid_rrule"),
        ("FREQ=MONTHLY;BYYEARDAY=1", "invalid_rrule"),
        ("FREQ=MONTHLY;BYWEEKNO=1", "invalid_rrule"),
        ("FREQ=YEARLY;BYWEEKNO=54", "invalid_rrule"),
        ("FREQ=MONTHLY;BYSETPOS=1", "invalid_rrule"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=0", "invalid_rrule"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=32", "invalid_rrule"),
        ("FREQ=WEEKLY;WKST=XX", "invalid_rrule"),
        ("FREQ=DAILY;=1", "invalid_rrule"),
        ("FREQ=DAILY;COUNT", "invalid_rrule"),
        ("FREQ", "invalid_rrule"),
        ("FREQ=DAILY;BYDAY=MÖ", "invalid_rrule"),
        ("FREQ=DAILY;BYDAY=€", "invalid_rrule"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "no_occurrences"),
    ];
    for (input, code) in cases {
        match RecurrenceRule::parse(input) {
            Ok(rule) => panic!("{input:?} was accepted as {rule}"),
            Err(err) => {
                assert_eq!(err.code(), *code, "{input:?}: {err}");
                assert!(err.to_string().len() > 10, "{input:?}: {err}");
            }
        }
    }
}

#[test]
fn messages_say_what_is_wrong() {
    let msg = |s: &str| RecurrenceRule::parse(s).unwrap_err().to_string();
    assert!(msg("FREQ=HOURLY").contains("HOURLY"));
    assert!(msg("FREQ=DAILY;BYHOUR=9").contains("BYHOUR"));
    assert!(msg("FREQ=DAILY;FOO=1").contains("FOO"));
    assert!(msg("FREQ=MONTHLY;BYMONTHDAY=32").contains("BYMONTHDAY"));
    assert!(msg("fortnightly").contains("preset"));
    assert!(msg("FREQ=DAILY;UNTIL=20300101T000000").contains("UTC"));
}

#[test]
fn huge_inputs() {
    let long = "FREQ=DAILY;".repeat(1000);
    assert_eq!(long.len(), 11_000);
    assert_eq!(
        RecurrenceRule::parse(&long).unwrap_err().code(),
        "invalid_rrule"
    );
    let junk = "x".repeat(10_000);
    assert!(RecurrenceRule::parse(&junk).is_err());
    let days = format!("FREQ=WEEKLY;BYDAY={}", ["MO"; 3000].join(","));
    assert!(RecurrenceRule::parse(&days).is_err());
    let digits = format!("FREQ=DAILY;INTERVAL={}", "9".repeat(9000));
    assert!(RecurrenceRule::parse(&digits).is_err());
    // Many (valid) duplicate entries within the length limit are fine and deduplicated.
    let dup = format!("FREQ=WEEKLY;BYDAY={}", ["MO"; 300].join(","));
    assert_eq!(
        RecurrenceRule::parse(&dup).unwrap().as_str(),
        "FREQ=WEEKLY;BYDAY=MO"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Arbitrary text never panics.
    #[test]
    fn arbitrary_text_never_panics(input in "\\PC{0,200}") {
        let _ = RecurrenceRule::parse(&input);
    }

    /// Rule-shaped text (random parts and values) never panics, and whatever parses can be
    /// evaluated without panicking.
    #[test]
    fn rule_shaped_text_never_panics(
        parts in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH",
                    "BYYEARDAY", "BYWEEKNO", "BYSETPOS", "WKST", "BYHOUR", "X",
                ]),
                proptest::sample::select(vec![
                    "DAILY", "WEEKLY", "MONTHLY", "YEARLY", "HOURLY", "1", "2", "-1", "0", "31",
                    "-366", "53", "5", "MO", "-1FR", "2TU,TH", "SU,SA", "20300101T000000Z",
                    "19990101", "1,-1", "12", "", "MO,", "+3WE",
                ]),
            ),
            1..6,
        ),
        day in 0u64..20000,
    ) {
        let text: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Ok(rule) = RecurrenceRule::parse(&text.join(";")) {
            let start = wall("19900101T093000") + chrono::Days::new(day);
            for anchor in [Anchor::Due, Anchor::Completion] {
                let s = Schedule::new(rule.clone(), anchor, chrono_tz::Europe::Berlin, start);
                let first = s.start_utc();
                let _ = s.validate(first);
                let _ = s.preview(first, 0, 5);
                let _ = s.next_after(first, first + chrono::TimeDelta::days(400), 3);
                let _ = rule.describe(start.time());
            }
        }
    }
}
