//! Vectors from libical's machine-readable recurrence test data (`icalrecur_test.txt`),
//! restricted to the parts TaskFlow supports and re-encoded here. The floating DTSTARTs are
//! evaluated in UTC so that libical's UTC UNTIL values compare the same way; date-only
//! DTSTARTs become midnight; floating UNTILs got a `Z`.

use super::common::{instances, local, schedule, walls};

struct Vector {
    name: &'static str,
    rule: &'static str,
    dtstart: &'static str,
    /// Expected instances; `None` means "generated in the test" (long lists).
    instances: &'static str,
    /// Whether the list is the complete series (COUNT/UNTIL), so the series must end there.
    complete: bool,
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "yearly in June and July, 10 occurrences",
        rule: "FREQ=YEARLY;COUNT=10;BYMONTH=6,7",
        dtstart: "19970610T090000",
        instances: "19970610T090000,19970710T090000,19980610T090000,19980710T090000,19990610T090000,19990710T090000,20000610T090000,20000710T090000,20010610T090000,20010710T090000",
        complete: true,
    },
    Vector {
        name: "every other year in January to March",
        rule: "FREQ=YEARLY;INTERVAL=2;COUNT=10;BYMONTH=1,2,3",
        dtstart: "19970310T090000",
        instances: "19970310T090000,19990110T090000,19990210T090000,19990310T090000,20010110T090000,20010210T090000,20010310T090000,20030110T090000,20030210T090000,20030310T090000",
        complete: true,
    },
    Vector {
        name: "every third year on day 1, 100 and 200",
        rule: "FREQ=YEARLY;INTERVAL=3;COUNT=10;BYYEARDAY=1,100,200",
        dtstart: "19970101T090000",
        instances: "19970101T090000,19970410T090000,19970719T090000,20000101T090000,20000409T090000,20000718T090000,20030101T090000,20030410T090000,20030719T090000,20060101T090000",
        complete: true,
    },
    Vector {
        name: "every 20th Monday of the year",
        rule: "FREQ=YEARLY;BYDAY=20MO;COUNT=3",
        dtstart: "19970519T090000",
        instances: "19970519T090000,19980518T090000,19990517T090000",
        complete: true,
    },
    Vector {
        name: "Monday of week 20",
        rule: "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO;COUNT=3",
        dtstart: "19970512T090000",
        instances: "19970512T090000,19980511T090000,19990517T090000",
        complete: true,
    },
    Vector {
        name: "Monday of week 20, week starting Sunday",
        rule: "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO;WKST=SU;COUNT=3",
        dtstart: "19970512T090000",
        instances: "19970512T090000,19980518T090000,19990517T090000",
        complete: true,
    },
    Vector {
        name: "Monday of week 20, week starting Friday",
        rule: "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO;WKST=FR;COUNT=3",
        dtstart: "19970512T090000",
        instances: "19970519T090000,19980518T090000,19990517T090000",
        complete: true,
    },
    Vector {
        name: "every Thursday in March",
        rule: "FREQ=YEARLY;BYMONTH=3;BYDAY=TH;COUNT=11",
        dtstart: "19970313T090000",
        instances: "19970313T090000,19970320T090000,19970327T090000,19980305T090000,19980312T090000,19980319T090000,19980326T090000,19990304T090000,19990311T090000,19990318T090000,19990325T090000",
        complete: true,
    },
    Vector {
        name: "US presidential election day",
        rule: "FREQ=YEARLY;INTERVAL=4;BYMONTH=11;BYDAY=TU;BYMONTHDAY=2,3,4,5,6,7,8;COUNT=3",
        dtstart: "19961105T090000",
        instances: "19961105T090000,20001107T090000,20041102T090000",
        complete: true,
    },
    Vector {
        name: "Friday in March on or after the 26th",
        rule: "FREQ=YEARLY;UNTIL=20100326T000000Z;BYDAY=FR;BYYEARDAY=-275,-276,-277,-278,-279,-280,-281",
        dtstart: "20060331T020000",
        instances: "20060331T020000,20070330T020000,20080328T020000,20090327T020000",
        complete: true,
    },
    Vector {
        name: "leap day is skipped in common years",
        rule: "FREQ=YEARLY;UNTIL=20140301T115959Z",
        dtstart: "20120229T120000",
        instances: "20120229T120000",
        complete: true,
    },
    Vector {
        name: "monthly on the first Friday until December 24",
        rule: "FREQ=MONTHLY;UNTIL=19971224T000000Z;BYDAY=1FR",
        dtstart: "19970905T090000",
        instances: "19970905T090000,19971003T090000,19971107T090000,19971205T090000",
        complete: true,
    },
    Vector {
        name: "monthly on the 15th and 30th skips February 30",
        rule: "FREQ=MONTHLY;BYMONTHDAY=15,30;COUNT=5",
        dtstart: "20070115T090000",
        instances: "20070115T090000,20070130T090000,20070215T090000,20070315T090000,20070330T090000",
        complete: true,
    },
    Vector {
        name: "plain monthly from the 31st skips short months",
        rule: "FREQ=MONTHLY;COUNT=12",
        dtstart: "20070131T090000",
        instances: "20070131T090000,20070331T090000,20070531T090000,20070731T090000,20070831T090000,20071031T090000,20071231T090000,20080131T090000,20080331T090000,20080531T090000,20080731T090000,20080831T090000",
        complete: true,
    },
    Vector {
        name: "every four weeks on Sunday",
        rule: "FREQ=WEEKLY;INTERVAL=4;BYDAY=SU;COUNT=4",
        dtstart: "20150322T000000",
        instances: "20150322T000000,20150419T000000,20150517T000000,20150614T000000",
        complete: true,
    },
    Vector {
        name: "every other week Monday, Wednesday, Friday with the week starting Wednesday",
        rule: "FREQ=WEEKLY;INTERVAL=2;WKST=WE;BYDAY=MO,WE,FR;COUNT=10",
        dtstart: "19970901T090000",
        instances: "19970901T090000,19970910T090000,19970912T090000,19970915T090000,19970924T090000,19970926T090000,19970929T090000,19971008T090000,19971010T090000,19971013T090000",
        complete: true,
    },
    Vector {
        name: "trailing semicolon as seen from Google Calendar",
        rule: "FREQ=WEEKLY;INTERVAL=1;COUNT=2;BYDAY=MO;",
        dtstart: "20141006T090000",
        instances: "20141006T090000,20141013T090000",
        complete: true,
    },
    Vector {
        name: "daily on the 1st and 24th",
        rule: "FREQ=DAILY;BYMONTHDAY=1,24;COUNT=5",
        dtstart: "20241024",
        instances: "20241024,20241101,20241124,20241201,20241224",
        complete: true,
    },
    Vector {
        name: "daily on the last two days of the month",
        rule: "FREQ=DAILY;BYMONTHDAY=-1,-2;COUNT=5",
        dtstart: "20241030",
        instances: "20241030,20241031,20241129,20241130,20241230",
        complete: true,
    },
    Vector {
        name: "weekly on Thursday and Sunday, 35 times",
        rule: "FREQ=WEEKLY;COUNT=35;BYDAY=SU,TH",
        dtstart: "20111120T100000",
        instances: "20111120T100000,20111124T100000,20111127T100000,20111201T100000,20111204T100000,20111208T100000,20111211T100000,20111215T100000,20111218T100000,20111222T100000,20111225T100000,20111229T100000,20120101T100000,20120105T100000,20120108T100000,20120112T100000,20120115T100000,20120119T100000,20120122T100000,20120126T100000,20120129T100000,20120202T100000,20120205T100000,20120209T100000,20120212T100000,20120216T100000,20120219T100000,20120223T100000,20120226T100000,20120301T100000,20120304T100000,20120308T100000,20120311T100000,20120315T100000,20120318T100000",
        complete: true,
    },
    Vector {
        name: "last day of the year in leap years",
        rule: "FREQ=YEARLY;BYYEARDAY=366;UNTIL=20200101T000000Z",
        dtstart: "20121231T120000",
        instances: "20121231T120000,20161231T120000",
        complete: true,
    },
    Vector {
        name: "last Friday in October",
        rule: "FREQ=YEARLY;BYDAY=-1FR;BYMONTH=10;UNTIL=20150101T000000Z",
        dtstart: "20101029T120000",
        instances: "20101029T120000,20111028T120000,20121026T120000,20131025T120000,20141031T120000",
        complete: true,
    },
    Vector {
        name: "first Friday in April",
        rule: "FREQ=YEARLY;BYDAY=1FR;BYMONTH=4;UNTIL=20150101T000000Z",
        dtstart: "20100402T120000",
        instances: "20100402T120000,20110401T120000,20120406T120000,20130405T120000,20140404T120000",
        complete: true,
    },
    Vector {
        name: "monthly on the 31st",
        rule: "FREQ=MONTHLY;BYMONTHDAY=31;COUNT=12",
        dtstart: "20150131T000000",
        instances: "20150131T000000,20150331T000000,20150531T000000,20150731T000000,20150831T000000,20151031T000000,20151231T000000,20160131T000000,20160331T000000,20160531T000000,20160731T000000,20160831T000000",
        complete: true,
    },
    Vector {
        name: "monthly on the 31st-to-last day",
        rule: "FREQ=MONTHLY;BYMONTHDAY=-31;COUNT=12",
        dtstart: "20150101T000000",
        instances: "20150101T000000,20150301T000000,20150501T000000,20150701T000000,20150801T000000,20151001T000000,20151201T000000,20160101T000000,20160301T000000,20160501T000000,20160701T000000,20160801T000000",
        complete: true,
    },
    Vector {
        name: "yearly on day 366",
        rule: "FREQ=YEARLY;BYYEARDAY=366;COUNT=3",
        dtstart: "20121231T120000",
        instances: "20121231T120000,20161231T120000,20201231T120000",
        complete: true,
    },
    Vector {
        name: "yearly on day -366",
        rule: "FREQ=YEARLY;BYYEARDAY=-366;COUNT=3",
        dtstart: "20120101T120000",
        instances: "20120101T120000,20160101T120000,20200101T120000",
        complete: true,
    },
    Vector {
        name: "Wednesdays in February every other year",
        rule: "FREQ=YEARLY;INTERVAL=2;UNTIL=20211231T140000Z;BYMONTH=2;BYDAY=WE",
        dtstart: "20170201T090000",
        instances: "20170201T090000,20170208T090000,20170215T090000,20170222T090000,20190206T090000,20190213T090000,20190220T090000,20190227T090000,20210203T090000,20210210T090000,20210217T090000,20210224T090000",
        complete: true,
    },
    Vector {
        name: "bi-weekly Sunday, Tuesday, Thursday across the new year",
        rule: "FREQ=WEEKLY;UNTIL=20170127T000000Z;WKST=MO;BYDAY=SU,TU,TH;INTERVAL=2",
        dtstart: "20161229T090000",
        instances: "20161229T090000,20170101T090000,20170110T090000,20170112T090000,20170115T090000,20170124T090000,20170126T090000",
        complete: true,
    },
    Vector {
        name: "every third day in January",
        rule: "FREQ=DAILY;UNTIL=20170131T140000Z;BYMONTH=1;INTERVAL=3",
        dtstart: "20170101T090000",
        instances: "20170101T090000,20170104T090000,20170107T090000,20170110T090000,20170113T090000,20170116T090000,20170119T090000,20170122T090000,20170125T090000,20170128T090000,20170131T090000",
        complete: true,
    },
    Vector {
        name: "every 13 months in May",
        rule: "FREQ=MONTHLY;INTERVAL=13;BYMONTH=5;COUNT=3",
        dtstart: "20100212T000000",
        instances: "20130512T000000,20260512T000000,20390512T000000",
        complete: true,
    },
    Vector {
        name: "every other week Wednesday and Friday from a Tuesday",
        rule: "FREQ=WEEKLY;BYDAY=WE,FR;INTERVAL=2;COUNT=4",
        dtstart: "20190101T100000",
        instances: "20190102T100000,20190104T100000,20190116T100000,20190118T100000",
        complete: true,
    },
    Vector {
        name: "Tuesdays of the first two and last two ISO weeks",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2,-1,-2;BYDAY=TU;UNTIL=20170101T000000Z",
        dtstart: "20130101T000000",
        instances: "20130101T000000,20130108T000000,20131217T000000,20131224T000000,20131231T000000,20140107T000000,20141216T000000,20141223T000000,20141230T000000,20150106T000000,20151222T000000,20151229T000000,20160105T000000,20160112T000000,20161220T000000,20161227T000000",
        complete: true,
    },
    Vector {
        name: "Tuesday and Saturday of ISO week 53",
        rule: "FREQ=YEARLY;BYWEEKNO=53;BYDAY=TU,SA;UNTIL=20170101T000000Z",
        dtstart: "20130101T000000",
        instances: "20151229T000000,20160102T000000",
        complete: true,
    },
    Vector {
        name: "Tuesday of week 6 with the week starting Thursday",
        rule: "FREQ=YEARLY;BYWEEKNO=6;BYDAY=TU;WKST=TH;UNTIL=20210612T000000Z",
        dtstart: "20180213T080001",
        instances: "20180213T080001,20190212T080001,20200211T080001,20210209T080001",
        complete: true,
    },
    Vector {
        name: "daily on the 20th and second-to-last day until a date",
        rule: "FREQ=DAILY;BYMONTHDAY=20,-2;UNTIL=20250401",
        dtstart: "20250220",
        instances: "20250220,20250227,20250320,20250330",
        complete: true,
    },
    Vector {
        name: "monthly in May and April (out of order), from April",
        rule: "FREQ=MONTHLY;BYMONTH=5,4;COUNT=4",
        dtstart: "20240401",
        instances: "20240401,20240501,20250401,20250501",
        complete: true,
    },
    Vector {
        name: "monthly in May and April (out of order), from May",
        rule: "FREQ=MONTHLY;BYMONTH=5,4;COUNT=4",
        dtstart: "20240501",
        instances: "20240501,20250401,20250501,20260401",
        complete: true,
    },
    Vector {
        name: "yearly in May and April (out of order)",
        rule: "FREQ=YEARLY;BYMONTH=5,4;COUNT=4",
        dtstart: "20240501",
        instances: "20240501,20250401,20250501,20260401",
        complete: true,
    },
    Vector {
        name: "daily on the 1st of May and April",
        rule: "FREQ=DAILY;BYMONTH=5,4;BYMONTHDAY=1;COUNT=4",
        dtstart: "20240401",
        instances: "20240401,20240501,20250401,20250501",
        complete: true,
    },
    Vector {
        name: "yearly on days 3 and 2 (out of order)",
        rule: "FREQ=YEARLY;BYYEARDAY=3,2;COUNT=4",
        dtstart: "20240103",
        instances: "20240103,20250102,20250103,20260102",
        complete: true,
    },
    Vector {
        name: "yearly on January 3rd and 2nd",
        rule: "FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=3,2;COUNT=4",
        dtstart: "20240102",
        instances: "20240102,20240103,20250102,20250103",
        complete: true,
    },
    Vector {
        name: "daily on January 3rd and 2nd",
        rule: "FREQ=DAILY;BYMONTH=1;BYMONTHDAY=3,2;COUNT=4",
        dtstart: "20240103",
        instances: "20240103,20250102,20250103,20260102",
        complete: true,
    },
    Vector {
        name: "second and third of the first seven days of the year",
        rule: "FREQ=YEARLY;BYYEARDAY=1,2,3,4,5,6,7;BYSETPOS=3,2;COUNT=4",
        dtstart: "20240102",
        instances: "20240102,20240103,20250102,20250103",
        complete: true,
    },
    Vector {
        name: "second and third 29th of the year",
        rule: "FREQ=YEARLY;BYMONTH=1,2,3,4,5,6,7,8,9,10,11,12;BYMONTHDAY=29;BYSETPOS=3,2;COUNT=4",
        dtstart: "20240229T120000",
        instances: "20240229T120000,20240329T120000,20250329T120000,20250429T120000",
        complete: true,
    },
    Vector {
        name: "second and third 29th of January to March",
        rule: "FREQ=YEARLY;BYMONTH=1,2,3;BYMONTHDAY=29;BYSETPOS=3,2;COUNT=4",
        dtstart: "20240229T120000",
        instances: "20240229T120000,20240329T120000,20250329T120000,20260329T120000",
        complete: true,
    },
    Vector {
        name: "first two and last two of the first ten days of each month",
        rule: "FREQ=MONTHLY;BYMONTHDAY=1,2,3,4,5,6,7,8,9,10;BYSETPOS=1,2,-1,-2;COUNT=6",
        dtstart: "20250810",
        instances: "20250810,20250901,20250902,20250909,20250910,20251001",
        complete: true,
    },
    Vector {
        name: "duplicate BYDAY entries count once",
        rule: "FREQ=WEEKLY;COUNT=3;BYDAY=SU,TH,TH",
        dtstart: "20111120T100000",
        instances: "20111120T100000,20111124T100000,20111127T100000",
        complete: true,
    },
    Vector {
        name: "Thursday of ISO week 53",
        rule: "FREQ=YEARLY;BYWEEKNO=53;BYDAY=TH;COUNT=1",
        dtstart: "20270103T000000",
        instances: "20321230T000000",
        complete: true,
    },
    Vector {
        name: "Thursday of ISO week 53 every five years",
        rule: "FREQ=YEARLY;BYWEEKNO=53;INTERVAL=5;BYDAY=TH;COUNT=1",
        dtstart: "20270103T000000",
        instances: "20321230T000000",
        complete: true,
    },
    Vector {
        name: "Thursday of ISO week 53 every six years",
        rule: "FREQ=YEARLY;BYWEEKNO=53;INTERVAL=6;BYDAY=TH;COUNT=1",
        dtstart: "20270103T000000",
        instances: "20931231T000000",
        complete: true,
    },
    Vector {
        name: "Saturday of week 53 that lies in the next calendar year",
        rule: "FREQ=YEARLY;BYWEEKNO=53;BYDAY=TU,SA;UNTIL=20170101T000000Z",
        dtstart: "20160102T000000",
        instances: "20160102T000000",
        complete: true,
    },
    Vector {
        name: "every seventh day on the 1st and 20th",
        rule: "FREQ=DAILY;BYMONTHDAY=1,20;INTERVAL=7;COUNT=2",
        dtstart: "20250101T030500",
        instances: "20250101T030500,20250820T030500",
        complete: true,
    },
    Vector {
        name: "weekly, second and third of the listed days (full first week)",
        rule: "FREQ=WEEKLY;BYDAY=MO,TU,SU,SA,TH;BYSETPOS=3,2;COUNT=4",
        dtstart: "20240102T120000",
        instances: "20240102T120000,20240104T120000,20240109T120000,20240111T120000",
        complete: true,
    },
    Vector {
        name: "Monday and Wednesday each week via BYSETPOS",
        rule: "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=1,3;COUNT=3",
        dtstart: "20241023",
        instances: "20241023,20241028,20241030",
        complete: true,
    },
    Vector {
        name: "yearly on the 29th takes February from DTSTART",
        rule: "FREQ=YEARLY;BYMONTHDAY=29;COUNT=3",
        dtstart: "20240229",
        instances: "20240229,20280229,20320229",
        complete: true,
    },
    Vector {
        name: "yearly on the last and 29th-to-last day of February",
        rule: "FREQ=YEARLY;BYMONTHDAY=-29,-1;COUNT=4",
        dtstart: "20240201",
        instances: "20240201,20240229,20250228,20260228",
        complete: true,
    },
    Vector {
        name: "week 53 takes the weekday from DTSTART",
        rule: "FREQ=YEARLY;BYWEEKNO=53;COUNT=1",
        dtstart: "20230101T000000",
        instances: "20270103T000000",
        complete: true,
    },
    Vector {
        name: "week 53 starting in week 53",
        rule: "FREQ=YEARLY;BYWEEKNO=53;COUNT=1",
        dtstart: "20270103T000000",
        instances: "20270103T000000",
        complete: true,
    },
    Vector {
        name: "first two weeks of the year, weekday from DTSTART",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;UNTIL=20170101T000000Z",
        dtstart: "20130101T000000",
        instances: "20130101T000000,20130108T000000,20131231T000000,20140107T000000,20141230T000000,20150106T000000,20160105T000000,20160112T000000",
        complete: true,
    },
    Vector {
        name: "Tuesday in the first two weeks, from the second week",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;UNTIL=20170101T000000Z",
        dtstart: "20130108T000000",
        instances: "20130108T000000,20131231T000000,20140107T000000,20141230T000000,20150106T000000,20160105T000000,20160112T000000",
        complete: true,
    },
    Vector {
        name: "Tuesday in the first two weeks, week starting Friday",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;WKST=FR;UNTIL=20170101T000000Z",
        dtstart: "20130108T000000",
        instances: "20130108T000000,20130115T000000,20140107T000000,20140114T000000,20150106T000000,20150113T000000,20160105T000000,20160112T000000",
        complete: true,
    },
    Vector {
        name: "Monday in the first two weeks",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;UNTIL=20170101T000000Z",
        dtstart: "20130107T000000",
        instances: "20130107T000000,20131230T000000,20140106T000000,20141229T000000,20150105T000000,20160104T000000,20160111T000000",
        complete: true,
    },
    Vector {
        name: "Monday in the first two weeks, week starting Tuesday",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;WKST=TU;UNTIL=20170101T000000Z",
        dtstart: "20130107T000000",
        instances: "20130107T000000,20130114T000000,20140106T000000,20140113T000000,20150105T000000,20150112T000000,20160104T000000,20160111T000000",
        complete: true,
    },
    Vector {
        name: "Monday in the first two weeks, week starting Wednesday",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;WKST=WE;UNTIL=20170101T000000Z",
        dtstart: "20130107T000000",
        instances: "20130107T000000,20130114T000000,20140106T000000,20140113T000000,20150105T000000,20150112T000000,20160104T000000,20160111T000000",
        complete: true,
    },
    Vector {
        name: "Monday in the first two weeks, week starting Thursday",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;WKST=TH;UNTIL=20170101T000000Z",
        dtstart: "20130107T000000",
        instances: "20130107T000000,20130114T000000,20140106T000000,20140113T000000,20150105T000000,20150112T000000,20160104T000000,20160111T000000",
        complete: true,
    },
    Vector {
        name: "Saturday in the first two weeks",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;UNTIL=20170101T000000Z",
        dtstart: "20140111T000000",
        instances: "20140111T000000,20150103T000000,20150110T000000,20160109T000000,20160116T000000",
        complete: true,
    },
    Vector {
        name: "Saturday in the first two weeks, week starting Tuesday",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;WKST=TU;UNTIL=20180101T000000Z",
        dtstart: "20140111T000000",
        instances: "20140111T000000,20150103T000000,20150110T000000,20160102T000000,20160109T000000,20170107T000000,20170114T000000",
        complete: true,
    },
    Vector {
        name: "Saturday in the first two weeks, week starting Sunday",
        rule: "FREQ=YEARLY;BYWEEKNO=1,2;WKST=SU;UNTIL=20180101T000000Z",
        dtstart: "20140111T000000",
        instances: "20140111T000000,20150110T000000,20150117T000000,20160109T000000,20160116T000000,20170107T000000,20170114T000000",
        complete: true,
    },
    Vector {
        name: "Tuesday in the last two weeks",
        rule: "FREQ=YEARLY;BYWEEKNO=-1,-2;COUNT=2",
        dtstart: "20131224T000000",
        instances: "20131224T000000,20141216T000000",
        complete: true,
    },
];

#[test]
fn libical_vectors() {
    let mut failures = Vec::new();
    for v in VECTORS {
        let s = schedule(v.rule, chrono_tz::UTC, v.dtstart);
        let expected = walls(v.instances);
        let (got, ended) = instances(&s, expected.len() + 5);
        let got = local(&s, &got);
        if got != expected || ended != v.complete {
            failures.push(format!(
                "{} ({}):\n  expected {expected:?}\n  got      {got:?} ended={ended}",
                v.name, v.rule
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every day in January for three years, written both as YEARLY and as DAILY.
#[test]
fn libical_every_day_in_january_for_three_years() {
    let mut expected = Vec::new();
    for year in 1998..=2000 {
        for day in 1..=31 {
            expected.push(super::common::wall(&format!("{year}01{day:02}T090000")));
        }
    }
    for rule in [
        "FREQ=YEARLY;UNTIL=20000131T140000Z;BYMONTH=1;BYDAY=SU,MO,TU,WE,TH,FR,SA",
        "FREQ=DAILY;UNTIL=20000131T140000Z;BYMONTH=1",
    ] {
        let s = schedule(rule, chrono_tz::UTC, "19980101T090000");
        let (got, ended) = instances(&s, 200);
        assert!(ended, "{rule}");
        assert_eq!(local(&s, &got), expected, "{rule}");
    }
}

/// Daily from 30 October until 6 December 2014 with a BYMONTH list that wraps the year.
#[test]
fn libical_daily_with_unordered_month_list() {
    let s = schedule(
        "FREQ=DAILY;UNTIL=20141206T000000Z;BYMONTH=11,12,1,2,3,4,10",
        chrono_tz::UTC,
        "20141030T000000",
    );
    let (got, ended) = instances(&s, 100);
    assert!(ended);
    let got = local(&s, &got);
    assert_eq!(got.len(), 2 + 30 + 6);
    assert_eq!(got[0], super::common::wall("20141030T000000"));
    assert_eq!(got[37], super::common::wall("20141206T000000"));
    assert!(got.windows(2).all(|w| (w[1] - w[0]).num_days() == 1));
}
