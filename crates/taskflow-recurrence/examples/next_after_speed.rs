//! Measures `Schedule::next_after` throughput the way `taskflow bench` does: chains of 1000
//! occurrences (Anchor::Due, Europe/Berlin, dtstart 2027-01-04T09:00 local), median of 5
//! rounds of about 0.5 s per rule.
//!
//! `cargo run --release -p taskflow-recurrence --example next_after_speed [-- ROUNDS MILLIS]`

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use taskflow_recurrence::{Anchor, RecurrenceRule, Schedule};

const RULES: [&str; 4] = [
    "FREQ=DAILY",
    "FREQ=WEEKLY;BYDAY=MO,WE,FR",
    "FREQ=MONTHLY;BYMONTHDAY=1",
    "FREQ=MONTHLY;BYDAY=-1FR",
];

fn occurrences_per_second(schedule: &Schedule, window: Duration) -> f64 {
    let mut computed = 0u64;
    let started = Instant::now();
    while started.elapsed() < window {
        let mut due = schedule.start_utc();
        let mut index = 0u32;
        for _ in 0..1000 {
            match schedule.next_after(due, due, index).expect("next_after") {
                Some(next) => {
                    due = next;
                    index += 1;
                }
                None => {
                    due = schedule.start_utc();
                    index = 0;
                }
            }
            computed += 1;
        }
    }
    computed as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let millis: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let start = NaiveDate::from_ymd_opt(2027, 1, 4)
        .and_then(|d| d.and_hms_opt(9, 0, 0))
        .expect("start");
    for rule in RULES {
        let schedule = Schedule::new(
            RecurrenceRule::parse(rule).expect("rule"),
            Anchor::Due,
            chrono_tz::Europe::Berlin,
            start,
        );
        let mut results: Vec<f64> = (0..rounds)
            .map(|_| occurrences_per_second(&schedule, Duration::from_millis(millis)))
            .collect();
        results.sort_by(f64::total_cmp);
        let median = results[results.len() / 2];
        println!("{rule:<32} {median:>12.0}/s  ({:.2} µs/call)", 1e6 / median);
    }
}
