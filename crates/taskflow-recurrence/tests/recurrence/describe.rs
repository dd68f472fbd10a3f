//! English descriptions.

use chrono::NaiveTime;
use taskflow_recurrence::{Anchor, RecurrenceRule, Schedule};

use super::common::wall;

fn describe(rule: &str, time: &str) -> String {
    let t = NaiveTime::parse_from_str(time, "%H:%M").unwrap();
    RecurrenceRule::parse(rule).unwrap().describe(t)
}

#[test]
fn descriptions() {
    let cases = [
        ("weekdays", "09:00", "every weekday at 09:00"),
        (
            "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR",
            "09:00",
            "every weekday at 09:00",
        ),
        (
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR",
            "18:30",
            "every 2 weeks on Monday and Friday at 18:30",
        ),
        (
            "FREQ=MONTHLY;BYDAY=-1FR",
            "09:00",
            "monthly on the last Friday at 09:00",
        ),
        ("FREQ=DAILY;COUNT=5", "09:00", "every day at 09:00, 5 times"),
        ("FREQ=DAILY;COUNT=1", "09:00", "every day at 09:00, once"),
        (
            "FREQ=WEEKLY;UNTIL=20270301T120000Z",
            "07:15",
            "every week at 07:15, until 2027-03-01",
        ),
        (
            "FREQ=WEEKLY;BYDAY=MO,WE,FR",
            "08:00",
            "every Monday, Wednesday and Friday at 08:00",
        ),
        ("biweekly", "08:00", "every 2 weeks at 08:00"),
        ("monthly", "08:00", "monthly at 08:00"),
        ("yearly", "08:00", "yearly at 08:00"),
        ("FREQ=DAILY;INTERVAL=3", "08:00", "every 3 days at 08:00"),
        (
            "FREQ=MONTHLY;BYMONTHDAY=2,15",
            "09:00",
            "monthly on the 2nd and 15th at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYMONTHDAY=-1",
            "09:00",
            "monthly on the last day at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYMONTHDAY=1,-1",
            "09:00",
            "monthly on the 1st and the last day at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYMONTHDAY=-3",
            "09:00",
            "monthly on the 3rd-to-last day at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            "09:00",
            "monthly on the last weekday at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-2",
            "09:00",
            "monthly on the 2nd-to-last weekday at 09:00",
        ),
        (
            "FREQ=MONTHLY;INTERVAL=2;BYDAY=1SU,-1SU",
            "10:00",
            "every 2 months on the first Sunday and the last Sunday at 10:00",
        ),
        (
            "FREQ=YEARLY;BYMONTH=6,7",
            "09:00",
            "yearly in June and July at 09:00",
        ),
        (
            "FREQ=YEARLY;BYDAY=TH;BYMONTH=6,7,8",
            "09:00",
            "yearly on Thursday in June, July and August at 09:00",
        ),
        (
            "FREQ=YEARLY;BYDAY=20MO",
            "09:00",
            "yearly on the 20th Monday at 09:00",
        ),
        (
            "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
            "09:00",
            "yearly on Monday in week 20 at 09:00",
        ),
        (
            "FREQ=YEARLY;INTERVAL=3;BYYEARDAY=1,100,200",
            "09:00",
            "every 3 years on the 1st, 100th and 200th day of the year at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13",
            "09:00",
            "monthly on Friday falling on the 13th at 09:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=TU,WE,TH;BYSETPOS=3",
            "09:00",
            "monthly on Tuesday, Wednesday and Thursday (only the third of those each month) at 09:00",
        ),
    ];
    for (rule, time, text) in cases {
        assert_eq!(describe(rule, time), text, "{rule}");
    }
}

#[test]
fn schedule_description_uses_start_time_and_local_until() {
    // 2027-03-02T04:59:59Z is still 1 March in New York.
    let s = Schedule::new(
        RecurrenceRule::parse("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;UNTIL=20270302T045959Z").unwrap(),
        Anchor::Due,
        chrono_tz::America::New_York,
        wall("20260105T183000"),
    );
    assert_eq!(
        s.describe(),
        "every 2 weeks on Monday and Friday at 18:30, until 2027-03-01"
    );
}
