//! Wall-clock correctness across DST changes (the rrule crate's own zone handling is
//! bypassed; these would catch duplicate/missing occurrences like its issues #109/#115/#144).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use taskflow_recurrence::{Anchor, RecurrenceRule, Schedule};

use super::common::{schedule, utc, wall};

fn preview_local(s: &Schedule, n: usize) -> Vec<(DateTime<Utc>, NaiveDateTime)> {
    let first = s.start_utc();
    s.preview(first, 0, n)
        .unwrap()
        .into_iter()
        .map(|o| (o.utc, o.local))
        .collect()
}

/// A daily rule at `time`, starting four days before `change_day`, must give exactly one
/// occurrence on each local date, strictly increasing.
fn one_per_day(tz: Tz, change_day: &str, time: &str) -> Vec<(DateTime<Utc>, NaiveDateTime)> {
    let day = NaiveDate::parse_from_str(change_day, "%Y-%m-%d").unwrap();
    let t = NaiveTime::parse_from_str(time, "%H:%M").unwrap();
    let start = (day - TimeDelta::days(4)).and_time(t);
    let s = Schedule::new(
        RecurrenceRule::parse("FREQ=DAILY").unwrap(),
        Anchor::Due,
        tz,
        start,
    );
    let got = preview_local(&s, 9);
    assert_eq!(got.len(), 9);
    for (i, (instant, local)) in got.iter().enumerate() {
        assert_eq!(
            local.date(),
            start.date() + chrono::Days::new(i as u64),
            "{tz} {time}: {got:?}"
        );
        assert_eq!(instant.with_timezone(&tz).naive_local(), *local);
    }
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{tz}: {got:?}");
    // Chaining next_after gives the same list.
    let mut current = got[0].0;
    for (expected, _) in &got[1..] {
        let next = s.next_after(current, current, 0).unwrap().unwrap();
        assert_eq!(next, *expected);
        current = next;
    }
    got
}

fn local_on(got: &[(DateTime<Utc>, NaiveDateTime)], day: &str) -> (DateTime<Utc>, NaiveDateTime) {
    let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    *got.iter().find(|(_, l)| l.date() == day).unwrap()
}

#[test]
fn berlin_nine_oclock_stays_nine_across_both_changes() {
    let s = schedule("FREQ=DAILY", chrono_tz::Europe::Berlin, "20240325T090000");
    let first = s.start_utc();
    let list = s.preview(first, 0, 100).unwrap();
    assert_eq!(list.len(), 100);
    for o in &list {
        assert_eq!(o.local.time(), NaiveTime::from_hms_opt(9, 0, 0).unwrap());
    }
    let s = schedule("FREQ=DAILY", chrono_tz::Europe::Berlin, "20241020T090000");
    let list = s.preview(s.start_utc(), 0, 14).unwrap();
    assert!(
        list.iter()
            .all(|o| o.local.format("%H:%M").to_string() == "09:00")
    );
    // 2024-03-30 is CET (08:00Z), 2024-03-31 CEST (07:00Z); back to 08:00Z on 2024-10-27.
    let s = schedule("FREQ=DAILY", chrono_tz::Europe::Berlin, "20240330T090000");
    let list = s.preview(s.start_utc(), 0, 2).unwrap();
    assert_eq!(list[0].utc, utc("2024-03-30T08:00:00Z"));
    assert_eq!(list[1].utc, utc("2024-03-31T07:00:00Z"));
    let s = schedule("FREQ=DAILY", chrono_tz::Europe::Berlin, "20241026T090000");
    let list = s.preview(s.start_utc(), 0, 2).unwrap();
    assert_eq!(list[0].utc, utc("2024-10-26T07:00:00Z"));
    assert_eq!(list[1].utc, utc("2024-10-27T08:00:00Z"));
}

#[test]
fn berlin_gap_and_overlap_times() {
    let berlin = chrono_tz::Europe::Berlin;
    // 02:30 does not exist on 2024-03-31: shifted by the one-hour gap to 03:30 CEST.
    let got = one_per_day(berlin, "2024-03-31", "02:30");
    assert_eq!(
        local_on(&got, "2024-03-31"),
        (utc("2024-03-31T01:30:00Z"), wall("20240331T033000"))
    );
    assert_eq!(local_on(&got, "2024-04-01").1, wall("20240401T023000"));
    // 02:30 happens twice on 2024-10-27: the first (CEST) one is taken.
    let got = one_per_day(berlin, "2024-10-27", "02:30");
    assert_eq!(
        local_on(&got, "2024-10-27"),
        (utc("2024-10-27T00:30:00Z"), wall("20241027T023000"))
    );
}

#[test]
fn london_gap_and_overlap_times() {
    let london = chrono_tz::Europe::London;
    let got = one_per_day(london, "2024-03-31", "01:30");
    assert_eq!(
        local_on(&got, "2024-03-31"),
        (utc("2024-03-31T01:30:00Z"), wall("20240331T023000"))
    );
    let got = one_per_day(london, "2024-10-27", "01:30");
    assert_eq!(local_on(&got, "2024-10-27").0, utc("2024-10-27T00:30:00Z"));
    assert_eq!(local_on(&got, "2024-10-28").0, utc("2024-10-28T01:30:00Z"));
    // Ordinary times keep their wall clock in both directions.
    for (day, time) in [
        ("2024-03-31", "09:00"),
        ("2024-10-27", "09:00"),
        ("2024-03-31", "00:30"),
    ] {
        let got = one_per_day(london, day, time);
        assert!(
            got.iter()
                .all(|(_, l)| l.format("%H:%M").to_string() == time)
        );
    }
}

#[test]
fn new_york_gap_and_overlap_times() {
    let ny = chrono_tz::America::New_York;
    let got = one_per_day(ny, "2024-03-10", "02:30");
    assert_eq!(
        local_on(&got, "2024-03-10"),
        (utc("2024-03-10T07:30:00Z"), wall("20240310T033000"))
    );
    assert_eq!(local_on(&got, "2024-03-09").0, utc("2024-03-09T07:30:00Z"));
    assert_eq!(local_on(&got, "2024-03-11").0, utc("2024-03-11T06:30:00Z"));
    let got = one_per_day(ny, "2024-11-03", "01:30");
    assert_eq!(local_on(&got, "2024-11-03").0, utc("2024-11-03T05:30:00Z"));
    assert_eq!(local_on(&got, "2024-11-04").0, utc("2024-11-04T06:30:00Z"));
}

#[test]
fn lord_howe_half_hour_changes() {
    let lh = chrono_tz::Australia::Lord_Howe;
    // 2024-10-06: 02:00 +10:30 jumps to 02:30 +11; 02:15 moves 30 minutes forward.
    let got = one_per_day(lh, "2024-10-06", "02:15");
    assert_eq!(local_on(&got, "2024-10-06").1, wall("20241006T024500"));
    assert_eq!(local_on(&got, "2024-10-06").0, utc("2024-10-05T15:45:00Z"));
    // 2024-04-07: 02:00 +11 falls back to 01:30 +10:30; 01:45 is ambiguous, take +11.
    let got = one_per_day(lh, "2024-04-07", "01:45");
    assert_eq!(local_on(&got, "2024-04-07").0, utc("2024-04-06T14:45:00Z"));
    assert_eq!(local_on(&got, "2024-04-08").0, utc("2024-04-07T15:15:00Z"));
    for day in ["2024-10-06", "2024-04-07"] {
        let got = one_per_day(lh, day, "09:00");
        assert!(
            got.iter()
                .all(|(_, l)| l.format("%H:%M").to_string() == "09:00")
        );
    }
}

#[test]
fn southern_and_northern_weekly_and_monthly_rules_keep_wall_time() {
    for (tz, start) in [
        (chrono_tz::Australia::Sydney, "20240301T180000"),
        (chrono_tz::America::Santiago, "20240301T180000"),
        (chrono_tz::Europe::London, "20240301T180000"),
    ] {
        for rule in ["FREQ=WEEKLY;BYDAY=MO,TH", "FREQ=MONTHLY;BYDAY=-1SU"] {
            let s = schedule(rule, tz, start);
            let list = s.preview(s.start_utc(), 0, 60).unwrap();
            assert_eq!(list.len(), 60);
            assert!(
                list[1..]
                    .iter()
                    .all(|o| o.local.format("%H:%M").to_string() == "18:00")
            );
            assert!(list.windows(2).all(|w| w[0].utc < w[1].utc));
        }
    }
}

/// The last Sunday of March and October is the EU change day: a monthly 02:30 task hits
/// the gap in March and the overlap in October.
#[test]
fn monthly_last_sunday_at_change_time_in_berlin() {
    let s = schedule(
        "FREQ=MONTHLY;BYDAY=-1SU",
        chrono_tz::Europe::Berlin,
        "20240128T023000",
    );
    let list = s.preview(s.start_utc(), 0, 12).unwrap();
    let march = list
        .iter()
        .find(|o| o.local.format("%m").to_string() == "03")
        .unwrap();
    assert_eq!(march.local, wall("20240331T033000"));
    let october = list
        .iter()
        .find(|o| o.local.format("%m").to_string() == "10")
        .unwrap();
    assert_eq!(october.utc, utc("2024-10-27T00:30:00Z"));
    assert_eq!(list.len(), 12);
}

/// UNTIL is a UTC instant and is compared with the localised (first) instant of the
/// ambiguous 01:30 on 2024-11-03 in New York (05:30Z).
#[test]
fn until_is_compared_with_localised_instants() {
    let ny = chrono_tz::America::New_York;
    let s = schedule("FREQ=DAILY;UNTIL=20241103T053000Z", ny, "20241101T013000");
    let list = s.preview(s.start_utc(), 0, 10).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].utc, utc("2024-11-03T05:30:00Z"));
    let s = schedule("FREQ=DAILY;UNTIL=20241103T052959Z", ny, "20241101T013000");
    assert_eq!(s.preview(s.start_utc(), 0, 10).unwrap().len(), 2);
    // A date-only UNTIL includes the whole local day.
    let s = schedule("FREQ=DAILY;UNTIL=20241103", ny, "20241101T233000");
    let list = s.preview(s.start_utc(), 0, 10).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].local, wall("20241103T233000"));
}

/// A dtstart in a gap resolves like every occurrence; a completion-anchored task keeps its
/// time of day across a change.
#[test]
fn completion_anchor_across_a_change() {
    let berlin = chrono_tz::Europe::Berlin;
    let s = Schedule::new(
        RecurrenceRule::parse("FREQ=DAILY;INTERVAL=2").unwrap(),
        Anchor::Completion,
        berlin,
        wall("20240329T090000"),
    );
    // Completed on Saturday 30 March at 20:00 CET; next is Monday 1 April 09:00 CEST.
    let next = s
        .next_after(utc("2024-03-29T08:00:00Z"), utc("2024-03-30T19:00:00Z"), 0)
        .unwrap();
    assert_eq!(next, Some(utc("2024-04-01T07:00:00Z")));
    let s = schedule("FREQ=DAILY", berlin, "20240331T023000");
    assert_eq!(s.start_utc(), utc("2024-03-31T01:30:00Z"));
}
