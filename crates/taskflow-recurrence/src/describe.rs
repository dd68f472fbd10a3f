//! English descriptions of rules.

use chrono::{NaiveDate, NaiveTime, Timelike, Weekday};

use crate::rule::{DaySpec, Frequency, Parts, Until};

const WEEKDAYS: [Weekday; 5] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

fn month_name(month: u8) -> &'static str {
    match month {
        1 => "January",
        2 => "February",
        3 => "March",
        4 => "April",
        5 => "May",
        6 => "June",
        7 => "July",
        8 => "August",
        9 => "September",
        10 => "October",
        11 => "November",
        _ => "December",
    }
}

/// "1st", "2nd", "23rd", "111th".
fn ordinal_number(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "first".."fifth" for small positives, "last", "2nd-to-last" for negatives.
fn position(n: i64) -> String {
    match n {
        1 => "first".to_owned(),
        2 => "second".to_owned(),
        3 => "third".to_owned(),
        4 => "fourth".to_owned(),
        5 => "fifth".to_owned(),
        -1 => "last".to_owned(),
        n if n < 0 => format!("{}-to-last", ordinal_number(n.unsigned_abs() as u32)),
        n => ordinal_number(n.unsigned_abs() as u32),
    }
}

/// "A", "A and B", "A, B and C".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn plain_days(days: &[DaySpec]) -> bool {
    days.iter().all(|d| d.ordinal.is_none())
}

fn is_weekdays(days: &[DaySpec]) -> bool {
    plain_days(days)
        && days.len() == WEEKDAYS.len()
        && WEEKDAYS
            .iter()
            .all(|w| days.iter().any(|d| d.weekday == *w))
}

fn day_items(days: &[DaySpec]) -> Vec<String> {
    days.iter()
        .map(|d| match d.ordinal {
            None => weekday_name(d.weekday).to_owned(),
            Some(n) => format!("the {} {}", position(i64::from(n)), weekday_name(d.weekday)),
        })
        .collect()
}

fn month_day_phrase(days: &[i8]) -> String {
    if days.iter().all(|d| *d > 0) {
        let items: Vec<String> = days
            .iter()
            .map(|d| ordinal_number(u32::from(d.unsigned_abs())))
            .collect();
        return format!("the {}", and_list(&items));
    }
    let items: Vec<String> = days
        .iter()
        .map(|&d| {
            if d > 0 {
                format!("the {}", ordinal_number(u32::from(d.unsigned_abs())))
            } else {
                format!("the {} day", position(i64::from(d)))
            }
        })
        .collect();
    and_list(&items)
}

fn year_day_phrase(days: &[i16]) -> String {
    let items: Vec<String> = days
        .iter()
        .map(|&d| {
            if d > 0 {
                ordinal_number(u32::from(d.unsigned_abs()))
            } else {
                position(i64::from(d))
            }
        })
        .collect();
    format!("the {} day of the year", and_list(&items))
}

fn week_phrase(weeks: &[i8]) -> String {
    let items: Vec<String> = weeks
        .iter()
        .map(|&w| {
            if w > 0 {
                w.to_string()
            } else {
                format!("{} from the end", position(i64::from(w)))
            }
        })
        .collect();
    if weeks.len() == 1 {
        format!("week {}", items.join(""))
    } else {
        format!("weeks {}", and_list(&items))
    }
}

fn setpos_phrase(positions: &[i16]) -> String {
    let items: Vec<String> = positions.iter().map(|&p| position(i64::from(p))).collect();
    and_list(&items)
}

fn period_name(freq: Frequency) -> &'static str {
    match freq {
        Frequency::Daily => "day",
        Frequency::Weekly => "week",
        Frequency::Monthly => "month",
        Frequency::Yearly => "year",
    }
}

/// Builds the description; `until_date` turns the UNTIL bound into the date to show.
pub(crate) fn describe(
    p: &Parts,
    time: NaiveTime,
    until_date: impl Fn(Until) -> NaiveDate,
) -> String {
    let weekdays = is_weekdays(&p.by_day);
    let plain = !p.by_day.is_empty() && plain_days(&p.by_day);
    let set_pos_weekday = !p.by_set_pos.is_empty()
        && weekdays
        && p.by_month_day.is_empty()
        && p.by_year_day.is_empty()
        && p.by_week_no.is_empty();
    let mut days_done = false;

    let mut text = match (p.freq, p.interval) {
        (Frequency::Daily | Frequency::Weekly, 1)
            if plain && p.by_set_pos.is_empty() && p.by_month_day.is_empty() =>
        {
            days_done = true;
            if weekdays {
                "every weekday".to_owned()
            } else {
                format!("every {}", and_list(&day_items(&p.by_day)))
            }
        }
        (Frequency::Daily, 1) => "every day".to_owned(),
        (Frequency::Weekly, 1) => "every week".to_owned(),
        (Frequency::Monthly, 1) => "monthly".to_owned(),
        (Frequency::Yearly, 1) => "yearly".to_owned(),
        (freq, n) => format!("every {n} {}s", period_name(freq)),
    };

    if set_pos_weekday {
        days_done = true;
        text.push_str(&format!(" on the {} weekday", setpos_phrase(&p.by_set_pos)));
    }
    let mut ons = Vec::new();
    if !days_done && !p.by_day.is_empty() {
        let days = and_list(&day_items(&p.by_day));
        if !p.by_month_day.is_empty() && plain {
            ons.push(format!(
                "{days} falling on {}",
                month_day_phrase(&p.by_month_day)
            ));
        } else {
            ons.push(days);
            if !p.by_month_day.is_empty() {
                ons.push(month_day_phrase(&p.by_month_day));
            }
        }
    } else if !p.by_month_day.is_empty() {
        ons.push(month_day_phrase(&p.by_month_day));
    }
    if !p.by_year_day.is_empty() {
        ons.push(year_day_phrase(&p.by_year_day));
    }
    if !ons.is_empty() {
        text.push_str(" on ");
        text.push_str(&and_list(&ons));
    }
    if !p.by_week_no.is_empty() {
        text.push_str(" in ");
        text.push_str(&week_phrase(&p.by_week_no));
    }
    if !p.by_month.is_empty() {
        let months: Vec<String> = p
            .by_month
            .iter()
            .map(|m| month_name(*m).to_owned())
            .collect();
        text.push_str(" in ");
        text.push_str(&and_list(&months));
    }
    if !p.by_set_pos.is_empty() && !set_pos_weekday {
        text.push_str(&format!(
            " (only the {} of those each {})",
            setpos_phrase(&p.by_set_pos),
            period_name(p.freq)
        ));
    }
    if time.second() == 0 {
        text.push_str(&format!(" at {}", time.format("%H:%M")));
    } else {
        text.push_str(&format!(" at {}", time.format("%H:%M:%S")));
    }
    match p.count {
        Some(1) => text.push_str(", once"),
        Some(n) => text.push_str(&format!(", {n} times")),
        None => {}
    }
    if let Some(until) = p.until {
        text.push_str(&format!(", until {}", until_date(until).format("%Y-%m-%d")));
    }
    text
}
