//! Property tests: the parser never panics, never drops text silently, and only produces
//! rules that `taskflow-recurrence` accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use taskflow_quickadd::{ParsedTask, QuickAddInput, parse};

/// Words the grammar knows, so random phrases often hit (and half-hit) real rules.
const WORDS: &[&str] = &[
    "every",
    "every!",
    "other",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "year",
    "weekday",
    "weekend",
    "monday",
    "mon",
    "wed",
    "fri",
    "sun",
    "and",
    ",",
    "the",
    "1st",
    "15th",
    "31st",
    "last",
    "first",
    "2nd",
    "of",
    "on",
    "by",
    "due",
    "at",
    "in",
    "until",
    "for",
    "times",
    "from",
    "completion",
    "starting",
    "3",
    "0",
    "5000",
    "a",
    "an",
    "hours",
    "minutes",
    "9am",
    "9:30",
    "18:00",
    "6pm",
    "noon",
    "midnight",
    "tomorrow",
    "today",
    "tonight",
    "yesterday",
    "next",
    "this",
    "end",
    "jan",
    "feb",
    "29",
    "30",
    "5",
    "2027",
    "2026-12-01",
    "12/01",
    "2/29",
    "morning",
    "evening",
    "remind",
    "me",
    "before",
    "daily",
    "weekly",
    "monthly",
    "biweekly",
    "#tag",
    "#Ünï",
    "#",
    "!high",
    "!p1",
    "!!!",
    "!",
    "(",
    ")",
    ".",
    "-",
    ":",
    "Jones",
    "Monday",
    "call",
    "mom",
    "ünïcödé",
    "\u{0}",
    "\t",
    "\u{202e}",
    "a@b.c",
    "http://x/#y",
];

fn phrase() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(WORDS).prop_map(str::to_owned),
            1 => any::<String>(),
            1 => "[a-z#!0-9:/,. -]{1,8}",
        ],
        0..24,
    )
    .prop_map(|words| words.join(" "))
}

fn now() -> impl Strategy<Value = DateTime<Utc>> {
    // 1990..2100, including DST transition days.
    (631_152_000i64..4_102_444_800i64).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

fn zone() -> impl Strategy<Value = chrono_tz::Tz> {
    prop::sample::select(vec![
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Pacific::Apia,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::UTC,
        chrono_tz::Asia::Kolkata,
    ])
}

fn non_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Every non-whitespace character of the input is in the title or in a span, in order.
fn assert_covers(text: &str, got: &ParsedTask) {
    let mut covered = vec![false; text.len()];
    let mut last_end = 0;
    for s in &got.understood {
        assert!(s.start < s.end && s.end <= text.len(), "bad span {s:?}");
        assert!(
            s.start >= last_end,
            "overlapping spans {:?}",
            got.understood
        );
        last_end = s.end;
        assert_eq!(text.get(s.start..s.end), Some(s.text.as_str()));
        for c in covered.iter_mut().take(s.end).skip(s.start) {
            *c = true;
        }
    }
    let rest: String = text
        .char_indices()
        .filter(|(i, c)| !covered[*i] && !c.is_whitespace())
        .map(|(_, c)| c)
        .collect();
    let title = non_ws(&got.title);
    if rest.is_empty() {
        // Everything was understood: the title is the input without tags and priority.
        let mut kept = vec![true; text.len()];
        for s in got
            .understood
            .iter()
            .filter(|s| matches!(s.kind, "tag" | "priority"))
        {
            for k in kept.iter_mut().take(s.end).skip(s.start) {
                *k = false;
            }
        }
        let want: String = text
            .char_indices()
            .filter(|(i, c)| kept[*i] && !c.is_whitespace())
            .map(|(_, c)| c)
            .collect();
        assert_eq!(title, want, "fallback title of {text:?}");
    } else {
        assert_eq!(title, rest, "title of {text:?} drops or adds text");
    }
    assert_eq!(
        got.title,
        got.title.split_whitespace().collect::<Vec<_>>().join(" ")
    );
}

fn check(text: &str, now: DateTime<Utc>, tz: chrono_tz::Tz) -> ParsedTask {
    let got = parse(&QuickAddInput {
        text,
        now,
        time_zone: tz,
    });
    if text.chars().count() <= taskflow_quickadd::MAX_INPUT_CHARS {
        assert_covers(text, &got);
    } else {
        assert!(got.understood.is_empty());
        assert_eq!(non_ws(&got.title), non_ws(text));
    }
    if let Some(r) = &got.recurrence {
        let rule = taskflow_recurrence::RecurrenceRule::parse(&r.rule)
            .unwrap_or_else(|e| panic!("{text:?} gave invalid rule {}: {e}", r.rule));
        assert_eq!(rule.as_str(), r.rule);
        assert!(
            got.due_at.is_some(),
            "recurrence without due date: {text:?}"
        );
    }
    if let Some(p) = got.priority {
        assert!(["low", "medium", "high", "urgent"].contains(&p));
    }
    for t in &got.tags {
        assert_eq!(t, &t.to_lowercase());
    }
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn grammar_words_never_panic_or_drop_text(text in phrase(), now in now(), tz in zone()) {
        check(&text, now, tz);
    }

    #[test]
    fn arbitrary_strings_never_panic_or_drop_text(text in any::<String>(), now in now(), tz in zone()) {
        check(&text, now, tz);
    }

    #[test]
    fn control_and_unicode_never_panic(text in "[\\x00-\\x1f\\u{80}-\\u{10ffff} a-z0-9#!:,]{0,64}") {
        check(&text, Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap(), chrono_tz::Europe::Berlin);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn very_long_inputs(words in prop::collection::vec(prop::sample::select(WORDS), 150..700), now in now()) {
        let text = words.join(" ");
        check(&text, now, chrono_tz::Europe::Berlin);
    }
}

#[test]
fn extreme_now_values_do_not_panic() {
    for now in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(1, 1, 1, 0, 30, 0).unwrap(),
    ] {
        for text in [
            "x tomorrow in 3 months every day until dec 31 remind me in 2 hours",
            "x in 9999 years next year every jan 5 feb 29 remind me 1 day before",
            "x in 9999 hours at 9am every! 1000 years for 3 times",
        ] {
            check(text, now, chrono_tz::Europe::Berlin);
            check(text, now, chrono_tz::Pacific::Kiritimati);
        }
    }
}
