//! The RFC 5545 §3.8.5.3 examples that fit the supported parts, evaluated in
//! America/New_York as the RFC does (DTSTART;TZID=America/New_York).

use chrono::NaiveDate;
use chrono_tz::America::New_York;

use super::common::{instances, local, schedule, utc, wall, walls};

struct Example {
    name: &'static str,
    rule: &'static str,
    dtstart: &'static str,
    instances: &'static str,
    /// COUNT/UNTIL: the listed instances are the whole series.
    complete: bool,
}

const EXAMPLES: &[Example] = &[
    Example {
        name: "daily for 10 occurrences",
        rule: "RRULE:FREQ=DAILY;COUNT=10",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970903T090000,19970904T090000,19970905T090000,19970906T090000,19970907T090000,19970908T090000,19970909T090000,19970910T090000,19970911T090000",
        complete: true,
    },
    Example {
        name: "every 10 days, 5 occurrences",
        rule: "RRULE:FREQ=DAILY;INTERVAL=10;COUNT=5",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970912T090000,19970922T090000,19971002T090000,19971012T090000",
        complete: true,
    },
    Example {
        name: "weekly for 10 occurrences",
        rule: "RRULE:FREQ=WEEKLY;COUNT=10",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970909T090000,19970916T090000,19970923T090000,19970930T090000,19971007T090000,19971014T090000,19971021T090000,19971028T090000,19971104T090000",
        complete: true,
    },
    Example {
        name: "weekly until December 24, 1997",
        rule: "RRULE:FREQ=WEEKLY;UNTIL=19971224T000000Z",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970909T090000,19970916T090000,19970923T090000,19970930T090000,19971007T090000,19971014T090000,19971021T090000,19971028T090000,19971104T090000,19971111T090000,19971118T090000,19971125T090000,19971202T090000,19971209T090000,19971216T090000,19971223T090000",
        complete: true,
    },
    Example {
        name: "every other week, forever (WKST=SU)",
        rule: "RRULE:FREQ=WEEKLY;INTERVAL=2;WKST=SU",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970916T090000,19970930T090000,19971014T090000,19971028T090000,19971111T090000,19971125T090000,19971209T090000,19971223T090000,19980106T090000,19980120T090000,19980203T090000,19980217T090000",
        complete: false,
    },
    Example {
        name: "weekly on Tuesday and Thursday for five weeks (UNTIL)",
        rule: "RRULE:FREQ=WEEKLY;UNTIL=19971007T000000Z;WKST=SU;BYDAY=TU,TH",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970904T090000,19970909T090000,19970911T090000,19970916T090000,19970918T090000,19970923T090000,19970925T090000,19970930T090000,19971002T090000",
        complete: true,
    },
    Example {
        name: "weekly on Tuesday and Thursday for five weeks (COUNT)",
        rule: "RRULE:FREQ=WEEKLY;COUNT=10;WKST=SU;BYDAY=TU,TH",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970904T090000,19970909T090000,19970911T090000,19970916T090000,19970918T090000,19970923T090000,19970925T090000,19970930T090000,19971002T090000",
        complete: true,
    },
    Example {
        name: "every other week on Monday, Wednesday and Friday until December 24, 1997",
        rule: "RRULE:FREQ=WEEKLY;INTERVAL=2;UNTIL=19971224T000000Z;WKST=SU;BYDAY=MO,WE,FR",
        dtstart: "19970901T090000",
        instances: "19970901T090000,19970903T090000,19970905T090000,19970915T090000,19970917T090000,19970919T090000,19970929T090000,19971001T090000,19971003T090000,19971013T090000,19971015T090000,19971017T090000,19971027T090000,19971029T090000,19971031T090000,19971110T090000,19971112T090000,19971114T090000,19971124T090000,19971126T090000,19971128T090000,19971208T090000,19971210T090000,19971212T090000,19971222T090000",
        complete: true,
    },
    Example {
        name: "every other week on Tuesday and Thursday, for 8 occurrences",
        rule: "RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=8;WKST=SU;BYDAY=TU,TH",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970904T090000,19970916T090000,19970918T090000,19970930T090000,19971002T090000,19971014T090000,19971016T090000",
        complete: true,
    },
    Example {
        name: "monthly on the first Friday for 10 occurrences",
        rule: "RRULE:FREQ=MONTHLY;COUNT=10;BYDAY=1FR",
        dtstart: "19970905T090000",
        instances: "19970905T090000,19971003T090000,19971107T090000,19971205T090000,19980102T090000,19980206T090000,19980306T090000,19980403T090000,19980501T090000,19980605T090000",
        complete: true,
    },
    Example {
        name: "monthly on the first Friday until December 24, 1997",
        rule: "RRULE:FREQ=MONTHLY;UNTIL=19971224T000000Z;BYDAY=1FR",
        dtstart: "19970905T090000",
        instances: "19970905T090000,19971003T090000,19971107T090000,19971205T090000",
        complete: true,
    },
    Example {
        name: "every other month on the first and last Sunday, 10 occurrences",
        rule: "RRULE:FREQ=MONTHLY;INTERVAL=2;COUNT=10;BYDAY=1SU,-1SU",
        dtstart: "19970907T090000",
        instances: "19970907T090000,19970928T090000,19971102T090000,19971130T090000,19980104T090000,19980125T090000,19980301T090000,19980329T090000,19980503T090000,19980531T090000",
        complete: true,
    },
    Example {
        name: "monthly on the second-to-last Monday for 6 months",
        rule: "RRULE:FREQ=MONTHLY;COUNT=6;BYDAY=-2MO",
        dtstart: "19970922T090000",
        instances: "19970922T090000,19971020T090000,19971117T090000,19971222T090000,19980119T090000,19980216T090000",
        complete: true,
    },
    Example {
        name: "monthly on the third-to-last day, forever",
        rule: "RRULE:FREQ=MONTHLY;BYMONTHDAY=-3",
        dtstart: "19970928T090000",
        instances: "19970928T090000,19971029T090000,19971128T090000,19971229T090000,19980129T090000,19980226T090000",
        complete: false,
    },
    Example {
        name: "monthly on the 2nd and 15th for 10 occurrences",
        rule: "RRULE:FREQ=MONTHLY;COUNT=10;BYMONTHDAY=2,15",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970915T090000,19971002T090000,19971015T090000,19971102T090000,19971115T090000,19971202T090000,19971215T090000,19980102T090000,19980115T090000",
        complete: true,
    },
    Example {
        name: "monthly on the first and last day for 10 occurrences",
        rule: "RRULE:FREQ=MONTHLY;COUNT=10;BYMONTHDAY=1,-1",
        dtstart: "19970930T090000",
        instances: "19970930T090000,19971001T090000,19971031T090000,19971101T090000,19971130T090000,19971201T090000,19971231T090000,19980101T090000,19980131T090000,19980201T090000",
        complete: true,
    },
    Example {
        name: "every 18 months on the 10th to 15th, 10 occurrences",
        rule: "RRULE:FREQ=MONTHLY;INTERVAL=18;COUNT=10;BYMONTHDAY=10,11,12,13,14,15",
        dtstart: "19970910T090000",
        instances: "19970910T090000,19970911T090000,19970912T090000,19970913T090000,19970914T090000,19970915T090000,19990310T090000,19990311T090000,19990312T090000,19990313T090000",
        complete: true,
    },
    Example {
        name: "every Tuesday, every other month",
        rule: "RRULE:FREQ=MONTHLY;INTERVAL=2;BYDAY=TU",
        dtstart: "19970902T090000",
        instances: "19970902T090000,19970909T090000,19970916T090000,19970923T090000,19970930T090000,19971104T090000,19971111T090000,19971118T090000,19971125T090000,19980106T090000,19980113T090000,19980120T090000,19980127T090000,19980303T090000,19980310T090000,19980317T090000,19980324T090000,19980331T090000",
        complete: false,
    },
    Example {
        name: "yearly in June and July for 10 occurrences",
        rule: "RRULE:FREQ=YEARLY;COUNT=10;BYMONTH=6,7",
        dtstart: "19970610T090000",
        instances: "19970610T090000,19970710T090000,19980610T090000,19980710T090000,19990610T090000,19990710T090000,20000610T090000,20000710T090000,20010610T090000,20010710T090000",
        complete: true,
    },
    Example {
        name: "every other year in January, February and March for 10 occurrences",
        rule: "RRULE:FREQ=YEARLY;INTERVAL=2;COUNT=10;BYMONTH=1,2,3",
        dtstart: "19970310T090000",
        instances: "19970310T090000,19990110T090000,19990210T090000,19990310T090000,20010110T090000,20010210T090000,20010310T090000,20030110T090000,20030210T090000,20030310T090000",
        complete: true,
    },
    Example {
        name: "every third year on the 1st, 100th and 200th day for 10 occurrences",
        rule: "RRULE:FREQ=YEARLY;INTERVAL=3;COUNT=10;BYYEARDAY=1,100,200",
        dtstart: "19970101T090000",
        instances: "19970101T090000,19970410T090000,19970719T090000,20000101T090000,20000409T090000,20000718T090000,20030101T090000,20030410T090000,20030719T090000,20060101T090000",
        complete: true,
    },
    Example {
        name: "every 20th Monday of the year, forever",
        rule: "RRULE:FREQ=YEARLY;BYDAY=20MO",
        dtstart: "19970519T090000",
        instances: "19970519T090000,19980518T090000,19990517T090000",
        complete: false,
    },
    Example {
        name: "Monday of week number 20, forever",
        rule: "RRULE:FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
        dtstart: "19970512T090000",
        instances: "19970512T090000,19980511T090000,19990517T090000",
        complete: false,
    },
    Example {
        name: "every Thursday in March, forever",
        rule: "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=TH",
        dtstart: "19970313T090000",
        instances: "19970313T090000,19970320T090000,19970327T090000,19980305T090000,19980312T090000,19980319T090000,19980326T090000,19990304T090000,19990311T090000,19990318T090000,19990325T090000",
        complete: false,
    },
    Example {
        name: "every Thursday, but only during June, July and August, forever",
        rule: "RRULE:FREQ=YEARLY;BYDAY=TH;BYMONTH=6,7,8",
        dtstart: "19970605T090000",
        instances: "19970605T090000,19970612T090000,19970619T090000,19970626T090000,19970703T090000,19970710T090000,19970717T090000,19970724T090000,19970731T090000,19970807T090000,19970814T090000,19970821T090000,19970828T090000,19980604T090000,19980611T090000,19980618T090000,19980625T090000,19980702T090000,19980709T090000,19980716T090000,19980723T090000,19980730T090000,19980806T090000,19980813T090000,19980820T090000,19980827T090000,19990603T090000,19990610T090000,19990617T090000,19990624T090000,19990701T090000,19990708T090000,19990715T090000,19990722T090000,19990729T090000,19990805T090000,19990812T090000,19990819T090000,19990826T090000",
        complete: false,
    },
    Example {
        // The RFC excludes the non-matching DTSTART with an EXDATE; here it is simply not an
        // instance of the rule.
        name: "every Friday the 13th, forever",
        rule: "RRULE:FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13",
        dtstart: "19970902T090000",
        instances: "19980213T090000,19980313T090000,19981113T090000,19990813T090000,20001013T090000",
        complete: false,
    },
    Example {
        name: "the first Saturday that follows the first Sunday of the month, forever",
        rule: "RRULE:FREQ=MONTHLY;BYDAY=SA;BYMONTHDAY=7,8,9,10,11,12,13",
        dtstart: "19970913T090000",
        instances: "19970913T090000,19971011T090000,19971108T090000,19971213T090000,19980110T090000,19980207T090000,19980307T090000,19980411T090000,19980509T090000,19980613T090000",
        complete: false,
    },
    Example {
        name: "US presidential election day, every 4 years",
        rule: "RRULE:FREQ=YEARLY;INTERVAL=4;BYMONTH=11;BYDAY=TU;BYMONTHDAY=2,3,4,5,6,7,8",
        dtstart: "19961105T090000",
        instances: "19961105T090000,20001107T090000,20041102T090000",
        complete: false,
    },
    Example {
        name: "the third instance of Tuesday, Wednesday or Thursday, for the next 3 months",
        rule: "RRULE:FREQ=MONTHLY;COUNT=3;BYDAY=TU,WE,TH;BYSETPOS=3",
        dtstart: "19970904T090000",
        instances: "19970904T090000,19971007T090000,19971106T090000",
        complete: true,
    },
    Example {
        name: "the second-to-last weekday of the month",
        rule: "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-2",
        dtstart: "19970929T090000",
        instances: "19970929T090000,19971030T090000,19971127T090000,19971230T090000,19980129T090000,19980226T090000,19980330T090000",
        complete: false,
    },
    Example {
        name: "Tuesday and Sunday every other week, WKST=MO",
        rule: "RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
        dtstart: "19970805T090000",
        instances: "19970805T090000,19970810T090000,19970819T090000,19970824T090000",
        complete: true,
    },
    Example {
        name: "Tuesday and Sunday every other week, WKST=SU",
        rule: "RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
        dtstart: "19970805T090000",
        instances: "19970805T090000,19970817T090000,19970819T090000,19970831T090000",
        complete: true,
    },
    Example {
        name: "invalid dates (February 30) are ignored",
        rule: "RRULE:FREQ=MONTHLY;BYMONTHDAY=15,30;COUNT=5",
        dtstart: "20070115T090000",
        instances: "20070115T090000,20070130T090000,20070215T090000,20070315T090000,20070330T090000",
        complete: true,
    },
];

#[test]
fn rfc5545_examples_in_new_york() {
    let mut failures = Vec::new();
    for e in EXAMPLES {
        let s = schedule(e.rule, New_York, e.dtstart);
        let expected = walls(e.instances);
        let limit = if e.complete {
            expected.len() + 3
        } else {
            expected.len()
        };
        let (got, ended) = instances(&s, limit);
        let got = local(&s, &got);
        if got != expected || ended != e.complete {
            failures.push(format!(
                "{} ({}):\n  expected {expected:?}\n  got      {got:?} ended={ended}",
                e.name, e.rule
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Daily until December 24, 1997: 9:00 local on every day, EDT until October 25 and EST
/// from October 26 on; UNTIL (a UTC instant) ends it on the 23rd.
#[test]
fn rfc5545_daily_until_crosses_the_autumn_change() {
    let s = schedule(
        "RRULE:FREQ=DAILY;UNTIL=19971224T000000Z",
        New_York,
        "19970902T090000",
    );
    let (got, ended) = instances(&s, 500);
    assert!(ended);
    let first = NaiveDate::from_ymd_opt(1997, 9, 2).unwrap();
    let last = NaiveDate::from_ymd_opt(1997, 12, 23).unwrap();
    assert_eq!(got.len() as i64, (last - first).num_days() + 1);
    for (i, (t, w)) in got.iter().zip(local(&s, &got)).enumerate() {
        let day = first + chrono::Days::new(i as u64);
        assert_eq!(w, day.and_hms_opt(9, 0, 0).unwrap());
        let expected_utc_hour = if day < NaiveDate::from_ymd_opt(1997, 10, 26).unwrap() {
            13
        } else {
            14
        };
        assert_eq!(
            t.time().format("%H").to_string(),
            expected_utc_hour.to_string()
        );
    }
    assert_eq!(got[0], utc("1997-09-02T13:00:00Z"));
    assert_eq!(*got.last().unwrap(), utc("1997-12-23T14:00:00Z"));
}

/// Every other day, forever: the stride stays two local days across the change.
#[test]
fn rfc5545_every_other_day() {
    let s = schedule("RRULE:FREQ=DAILY;INTERVAL=2", New_York, "19970902T090000");
    let (got, ended) = instances(&s, 40);
    assert!(!ended);
    let got = local(&s, &got);
    for (i, w) in got.iter().enumerate() {
        let day = NaiveDate::from_ymd_opt(1997, 9, 2).unwrap() + chrono::Days::new(2 * i as u64);
        assert_eq!(*w, day.and_hms_opt(9, 0, 0).unwrap());
    }
    assert_eq!(got[28], wall("19971028T090000"));
}

/// Every day in January for 3 years, as YEARLY+BYDAY and as DAILY+BYMONTH; the last one
/// (2000-01-31 09:00 EST) is exactly the UTC UNTIL and is included.
#[test]
fn rfc5545_every_day_in_january() {
    for rule in [
        "RRULE:FREQ=YEARLY;UNTIL=20000131T140000Z;BYMONTH=1;BYDAY=SU,MO,TU,WE,TH,FR,SA",
        "RRULE:FREQ=DAILY;UNTIL=20000131T140000Z;BYMONTH=1",
    ] {
        let s = schedule(rule, New_York, "19980101T090000");
        let (got, ended) = instances(&s, 200);
        assert!(ended, "{rule}");
        assert_eq!(got.len(), 93, "{rule}");
        assert_eq!(*got.last().unwrap(), utc("2000-01-31T14:00:00Z"), "{rule}");
        let got = local(&s, &got);
        assert!(
            got.iter()
                .all(|w| w.format("%m %H:%M").to_string() == "01 09:00")
        );
    }
}
