//! Property: previews are strictly increasing, and chaining `next_after` from the first
//! reproduces the preview exactly (Anchor::Due).

use chrono::{Days, NaiveDate, TimeDelta};
use chrono_tz::Tz;
use proptest::prelude::*;
use taskflow_recurrence::{Anchor, RecurrenceError, RecurrenceRule, Schedule};

const ZONES: &[Tz] = &[
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::Europe::London,
    chrono_tz::America::New_York,
    chrono_tz::America::Santiago,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Australia::Sydney,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Pacific::Chatham,
    chrono_tz::Pacific::Apia,
];

const DAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];

fn rules() -> impl Strategy<Value = String> {
    (
        0usize..4,
        1u16..=5,
        proptest::option::of(proptest::collection::btree_set(0usize..7, 1..4)),
        proptest::option::of((prop_oneof![1i16..=4, Just(-1i16), Just(-2i16)], 0usize..7)),
        proptest::option::of(proptest::collection::btree_set(
            prop_oneof![1i8..=31, -31i8..=-1],
            1..3,
        )),
        proptest::option::of(proptest::collection::btree_set(1u8..=12, 1..4)),
        proptest::option::of(1u32..40),
    )
        .prop_map(|(freq, interval, days, nth, month_days, months, count)| {
            let freq = ["DAILY", "WEEKLY", "MONTHLY", "YEARLY"][freq];
            let mut parts = vec![format!("FREQ={freq}")];
            if interval > 1 {
                parts.push(format!("INTERVAL={interval}"));
            }
            let ordinals_allowed = matches!(freq, "MONTHLY" | "YEARLY");
            match (nth, days) {
                (Some((n, d)), _) if ordinals_allowed => {
                    parts.push(format!("BYDAY={n}{}", DAYS[d]));
                }
                (_, Some(days)) => {
                    let list: Vec<&str> = days.iter().map(|d| DAYS[*d]).collect();
                    parts.push(format!("BYDAY={}", list.join(",")));
                }
                _ => {}
            }
            if let Some(md) = month_days.filter(|_| freq != "WEEKLY") {
                let list: Vec<String> = md.iter().map(ToString::to_string).collect();
                parts.push(format!("BYMONTHDAY={}", list.join(",")));
            }
            if let Some(m) = months {
                let list: Vec<String> = m.iter().map(ToString::to_string).collect();
                parts.push(format!("BYMONTH={}", list.join(",")));
            }
            if let Some(c) = count {
                parts.push(format!("COUNT={c}"));
            }
            parts.join(";")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn preview_is_increasing_and_matches_next_after_chain(
        rule in rules(),
        zone in proptest::sample::select(ZONES),
        day in 0u64..(60 * 366),
        hour in 0u32..24,
        minute in proptest::sample::select(vec![0u32, 15, 30, 45]),
        limit in 1usize..40,
        skip_hours in 0i64..(24 * 400),
    ) {
        let parsed = match RecurrenceRule::parse(&rule) {
            Ok(r) => r,
            Err(RecurrenceError::NoOccurrences) => return Ok(()),
            Err(e) => panic!("generator made an invalid rule {rule}: {e}"),
        };
        let dtstart = NaiveDate::from_ymd_opt(1980, 1, 1).unwrap()
            .checked_add_days(Days::new(day)).unwrap()
            .and_hms_opt(hour, minute, 0).unwrap();
        let schedule = Schedule::new(parsed, Anchor::Due, zone, dtstart);
        let first_due = schedule.start_utc() + TimeDelta::hours(skip_hours);
        let preview = match schedule.preview(first_due, 0, limit) {
            Ok(p) => p,
            Err(RecurrenceError::TooExpensive) => return Ok(()),
            Err(e) => panic!("{rule}: {e}"),
        };
        prop_assert!(!preview.is_empty());
        prop_assert_eq!(preview[0].utc, first_due);
        for pair in preview.windows(2) {
            prop_assert!(pair[0].utc < pair[1].utc, "{} not increasing: {:?}", rule, preview);
            prop_assert_eq!(pair[1].index, pair[0].index + 1);
        }
        for o in &preview {
            prop_assert_eq!(o.utc.with_timezone(&zone).naive_local(), o.local);
        }
        // Chain next_after from the first and compare.
        let mut chained = vec![first_due];
        let mut current = first_due;
        while chained.len() < preview.len() {
            let idx = u32::try_from(chained.len() - 1).unwrap();
            match schedule.next_after(current, current, idx) {
                Ok(Some(next)) => { chained.push(next); current = next; }
                other => prop_assert!(false, "{}: chain stopped early with {:?}", rule, other),
            }
        }
        let from_preview: Vec<_> = preview.iter().map(|o| o.utc).collect();
        prop_assert_eq!(&chained, &from_preview, "{}", rule);
        // Where the preview stopped short, so does the chain.
        if preview.len() < limit {
            let idx = u32::try_from(preview.len() - 1).unwrap();
            let next = schedule.next_after(current, current, idx);
            prop_assert!(
                matches!(next, Ok(None) | Err(RecurrenceError::NoOccurrences)),
                "{}: preview ended but chain continues with {:?}", rule, next
            );
        }
    }
}
