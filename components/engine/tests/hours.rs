//! Business hours against instants computed independently.
//!
//! Every expected epoch millisecond below was computed with Python's `zoneinfo` on the
//! system's tzdata 2025b, e.g.
//! `datetime(2026, 3, 8, 3, tzinfo=ZoneInfo("America/New_York")).timestamp()`, with
//! `fold=1` for the second pass through a repeated hour. Where a range starts or ends in a
//! spring-forward gap, the expected instant is the transition itself (the first instant the
//! local clock reads that time or later), which `zoneinfo` gives as the gap's end.

use kefu_engine::Timestamp;
use kefu_engine::hours::{
    BusinessHours, IANA_ZONES, LocalDateTime, Schedule, TimeZone, Weekday, ZONE_ALIASES,
};
use kefu_engine::offline::Lang;

const HOUR: u64 = 3_600_000;
const MINUTE: u64 = 60_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn schedule(json: &str) -> Schedule {
    let hours: BusinessHours = serde_json::from_slice(json.as_bytes()).unwrap();
    hours.compile().unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn local(zone: &str, ms: u64) -> LocalDateTime {
    TimeZone::lookup(zone).unwrap().1.local_time(at(ms))
}

/// (year, month, day, hour, minute, second, offset, is_dst)
fn fields(l: LocalDateTime) -> (i32, u8, u8, u8, u8, u8, i32, bool) {
    (
        l.year,
        l.month,
        l.day,
        l.hour,
        l.minute,
        l.second,
        l.offset_seconds,
        l.is_dst,
    )
}

/// Each zone's offset and daylight-saving state at 2026-01-15T12:00Z and 2026-07-15T12:00Z,
/// from `zoneinfo` (`is_dst` is `dst() != 0`, so Dublin's winter counts, as in tzdata).
const ZONEINFO_2026: &[(&str, i32, bool, i32, bool)] = &[
    ("UTC", 0, false, 0, false),
    ("Etc/UTC", 0, false, 0, false),
    ("GMT", 0, false, 0, false),
    ("Etc/GMT", 0, false, 0, false),
    ("America/New_York", -18000, false, -14400, true),
    ("America/Chicago", -21600, false, -18000, true),
    ("America/Denver", -25200, false, -21600, true),
    ("America/Phoenix", -25200, false, -25200, false),
    ("America/Los_Angeles", -28800, false, -25200, true),
    ("America/Anchorage", -32400, false, -28800, true),
    ("America/Adak", -36000, false, -32400, true),
    ("America/Detroit", -18000, false, -14400, true),
    ("America/Indiana/Indianapolis", -18000, false, -14400, true),
    ("America/Boise", -25200, false, -21600, true),
    ("America/Toronto", -18000, false, -14400, true),
    ("America/Vancouver", -28800, false, -25200, true),
    ("America/Edmonton", -25200, false, -21600, true),
    ("America/Winnipeg", -21600, false, -18000, true),
    ("America/Regina", -21600, false, -21600, false),
    ("America/Halifax", -14400, false, -10800, true),
    ("America/St_Johns", -12600, false, -9000, true),
    ("America/Nuuk", -7200, false, -3600, true),
    ("America/Mexico_City", -21600, false, -21600, false),
    ("America/Monterrey", -21600, false, -21600, false),
    ("America/Tijuana", -28800, false, -25200, true),
    ("America/Cancun", -18000, false, -18000, false),
    ("America/Guatemala", -21600, false, -21600, false),
    ("America/Costa_Rica", -21600, false, -21600, false),
    ("America/El_Salvador", -21600, false, -21600, false),
    ("America/Panama", -18000, false, -18000, false),
    ("America/Havana", -18000, false, -14400, true),
    ("America/Jamaica", -18000, false, -18000, false),
    ("America/Puerto_Rico", -14400, false, -14400, false),
    ("America/Santo_Domingo", -14400, false, -14400, false),
    ("America/Bogota", -18000, false, -18000, false),
    ("America/Lima", -18000, false, -18000, false),
    ("America/Guayaquil", -18000, false, -18000, false),
    ("America/Caracas", -14400, false, -14400, false),
    ("America/La_Paz", -14400, false, -14400, false),
    ("America/Manaus", -14400, false, -14400, false),
    ("America/Santiago", -10800, true, -14400, false),
    ("America/Asuncion", -10800, false, -10800, false),
    ("America/Sao_Paulo", -10800, false, -10800, false),
    (
        "America/Argentina/Buenos_Aires",
        -10800,
        false,
        -10800,
        false,
    ),
    ("America/Montevideo", -10800, false, -10800, false),
    ("Atlantic/Azores", -3600, false, 0, true),
    ("Atlantic/Reykjavik", 0, false, 0, false),
    ("Atlantic/Canary", 0, false, 3600, true),
    ("Europe/London", 0, false, 3600, true),
    ("Europe/Dublin", 0, true, 3600, false),
    ("Europe/Lisbon", 0, false, 3600, true),
    ("Europe/Madrid", 3600, false, 7200, true),
    ("Europe/Paris", 3600, false, 7200, true),
    ("Europe/Brussels", 3600, false, 7200, true),
    ("Europe/Amsterdam", 3600, false, 7200, true),
    ("Europe/Luxembourg", 3600, false, 7200, true),
    ("Europe/Berlin", 3600, false, 7200, true),
    ("Europe/Zurich", 3600, false, 7200, true),
    ("Europe/Vienna", 3600, false, 7200, true),
    ("Europe/Rome", 3600, false, 7200, true),
    ("Europe/Stockholm", 3600, false, 7200, true),
    ("Europe/Oslo", 3600, false, 7200, true),
    ("Europe/Copenhagen", 3600, false, 7200, true),
    ("Europe/Warsaw", 3600, false, 7200, true),
    ("Europe/Prague", 3600, false, 7200, true),
    ("Europe/Budapest", 3600, false, 7200, true),
    ("Europe/Belgrade", 3600, false, 7200, true),
    ("Europe/Helsinki", 7200, false, 10800, true),
    ("Europe/Riga", 7200, false, 10800, true),
    ("Europe/Tallinn", 7200, false, 10800, true),
    ("Europe/Vilnius", 7200, false, 10800, true),
    ("Europe/Kyiv", 7200, false, 10800, true),
    ("Europe/Bucharest", 7200, false, 10800, true),
    ("Europe/Sofia", 7200, false, 10800, true),
    ("Europe/Athens", 7200, false, 10800, true),
    ("Europe/Istanbul", 10800, false, 10800, false),
    ("Europe/Minsk", 10800, false, 10800, false),
    ("Europe/Moscow", 10800, false, 10800, false),
    ("Africa/Abidjan", 0, false, 0, false),
    ("Africa/Accra", 0, false, 0, false),
    ("Africa/Casablanca", 3600, false, 3600, false),
    ("Africa/Algiers", 3600, false, 3600, false),
    ("Africa/Tunis", 3600, false, 3600, false),
    ("Africa/Lagos", 3600, false, 3600, false),
    ("Africa/Kinshasa", 3600, false, 3600, false),
    ("Africa/Cairo", 7200, false, 10800, true),
    ("Africa/Johannesburg", 7200, false, 7200, false),
    ("Africa/Maputo", 7200, false, 7200, false),
    ("Africa/Khartoum", 7200, false, 7200, false),
    ("Africa/Nairobi", 10800, false, 10800, false),
    ("Africa/Addis_Ababa", 10800, false, 10800, false),
    ("Asia/Jerusalem", 7200, false, 10800, true),
    ("Asia/Beirut", 7200, false, 10800, true),
    ("Asia/Amman", 10800, false, 10800, false),
    ("Asia/Baghdad", 10800, false, 10800, false),
    ("Asia/Riyadh", 10800, false, 10800, false),
    ("Asia/Kuwait", 10800, false, 10800, false),
    ("Asia/Qatar", 10800, false, 10800, false),
    ("Asia/Tehran", 12600, false, 12600, false),
    ("Asia/Dubai", 14400, false, 14400, false),
    ("Asia/Muscat", 14400, false, 14400, false),
    ("Asia/Baku", 14400, false, 14400, false),
    ("Asia/Tbilisi", 14400, false, 14400, false),
    ("Asia/Yerevan", 14400, false, 14400, false),
    ("Asia/Kabul", 16200, false, 16200, false),
    ("Asia/Karachi", 18000, false, 18000, false),
    ("Asia/Tashkent", 18000, false, 18000, false),
    ("Asia/Almaty", 18000, false, 18000, false),
    ("Asia/Kolkata", 19800, false, 19800, false),
    ("Asia/Colombo", 19800, false, 19800, false),
    ("Asia/Kathmandu", 20700, false, 20700, false),
    ("Asia/Dhaka", 21600, false, 21600, false),
    ("Asia/Yangon", 23400, false, 23400, false),
    ("Asia/Bangkok", 25200, false, 25200, false),
    ("Asia/Ho_Chi_Minh", 25200, false, 25200, false),
    ("Asia/Jakarta", 25200, false, 25200, false),
    ("Asia/Makassar", 28800, false, 28800, false),
    ("Asia/Singapore", 28800, false, 28800, false),
    ("Asia/Kuala_Lumpur", 28800, false, 28800, false),
    ("Asia/Manila", 28800, false, 28800, false),
    ("Asia/Shanghai", 28800, false, 28800, false),
    ("Asia/Hong_Kong", 28800, false, 28800, false),
    ("Asia/Macau", 28800, false, 28800, false),
    ("Asia/Taipei", 28800, false, 28800, false),
    ("Asia/Ulaanbaatar", 28800, false, 28800, false),
    ("Asia/Seoul", 32400, false, 32400, false),
    ("Asia/Tokyo", 32400, false, 32400, false),
    ("Asia/Vladivostok", 36000, false, 36000, false),
    ("Australia/Perth", 28800, false, 28800, false),
    ("Australia/Darwin", 34200, false, 34200, false),
    ("Australia/Adelaide", 37800, true, 34200, false),
    ("Australia/Brisbane", 36000, false, 36000, false),
    ("Australia/Sydney", 39600, true, 36000, false),
    ("Australia/Melbourne", 39600, true, 36000, false),
    ("Australia/Hobart", 39600, true, 36000, false),
    ("Pacific/Honolulu", -36000, false, -36000, false),
    ("Pacific/Guam", 36000, false, 36000, false),
    ("Pacific/Port_Moresby", 36000, false, 36000, false),
    ("Pacific/Noumea", 39600, false, 39600, false),
    ("Pacific/Fiji", 43200, false, 43200, false),
    ("Pacific/Auckland", 46800, true, 43200, false),
    ("Pacific/Chatham", 49500, true, 45900, false),
    ("Pacific/Tongatapu", 46800, false, 46800, false),
    ("Pacific/Apia", 46800, false, 46800, false),
    ("Pacific/Kiritimati", 50400, false, 50400, false),
];

#[test]
fn every_table_entry_parses_and_matches_zoneinfo() {
    assert!(IANA_ZONES.len() >= 80);
    assert_eq!(IANA_ZONES.len(), ZONEINFO_2026.len());
    let (jan, jul) = (at(1_768_478_400_000), at(1_784_116_800_000));
    for (&(name, rule), &(expected, jan_off, jan_dst, jul_off, jul_dst)) in
        IANA_ZONES.iter().zip(ZONEINFO_2026)
    {
        assert_eq!(name, expected);
        let zone = TimeZone::posix(rule).unwrap_or_else(|e| panic!("{name}: {rule}: {e}"));
        assert_eq!(TimeZone::lookup(name).unwrap(), (name, zone.clone()));
        let (a, b) = (zone.offset_at(jan), zone.offset_at(jul));
        assert_eq!(
            (a.seconds, a.is_dst),
            (jan_off, jan_dst),
            "{name} in January"
        );
        assert_eq!((b.seconds, b.is_dst), (jul_off, jul_dst), "{name} in July");
    }
    for (alias, canonical) in ZONE_ALIASES {
        let (found, _) = TimeZone::lookup(alias).unwrap_or_else(|| panic!("{alias}"));
        assert_eq!(found, *canonical);
    }
    // Lookups forgive case; unknown names are not guessed.
    assert_eq!(
        TimeZone::lookup("europe/berlin").unwrap().0,
        "Europe/Berlin"
    );
    assert!(TimeZone::lookup("Europe/Atlantis").is_none());
}

#[test]
fn us_transitions() {
    let ny = "America/New_York";
    // 2026-03-08 02:00 EST skips to 03:00 EDT at 07:00Z.
    assert_eq!(
        fields(local(ny, 1_772_953_199_000)),
        (2026, 3, 8, 1, 59, 59, -5 * 3600, false)
    );
    assert_eq!(
        fields(local(ny, 1_772_953_200_000)),
        (2026, 3, 8, 3, 0, 0, -4 * 3600, true)
    );
    // 2026-11-01 02:00 EDT falls back to 01:00 EST at 06:00Z.
    assert_eq!(
        fields(local(ny, 1_793_512_799_000)),
        (2026, 11, 1, 1, 59, 59, -4 * 3600, true)
    );
    assert_eq!(
        fields(local(ny, 1_793_512_800_000)),
        (2026, 11, 1, 1, 0, 0, -5 * 3600, false)
    );
    assert_eq!(local(ny, 1_793_512_800_000).weekday, Weekday::Sun);
    // Chicago and Los Angeles switch at their own 02:00, one and three hours later.
    let chicago = TimeZone::lookup("America/Chicago").unwrap().1;
    assert!(!chicago.offset_at(at(1_772_953_200_000 + HOUR - 1)).is_dst);
    assert!(chicago.offset_at(at(1_772_953_200_000 + HOUR)).is_dst);
    let la = TimeZone::lookup("America/Los_Angeles").unwrap().1;
    assert!(!la.offset_at(at(1_772_953_200_000 + 3 * HOUR - 1)).is_dst);
    assert!(la.offset_at(at(1_772_953_200_000 + 3 * HOUR)).is_dst);
    // Phoenix keeps standard time.
    assert!(!local("America/Phoenix", 1_784_116_800_000).is_dst);
}

#[test]
fn eu_transitions_happen_at_one_utc_everywhere() {
    // 2026-03-29 01:00Z and 2026-10-25 01:00Z.
    let (spring, autumn) = (1_774_746_000_000, 1_792_890_000_000);
    assert_eq!(
        fields(local("Europe/Berlin", spring - 1000)),
        (2026, 3, 29, 1, 59, 59, 3600, false)
    );
    assert_eq!(
        fields(local("Europe/Berlin", spring)),
        (2026, 3, 29, 3, 0, 0, 7200, true)
    );
    assert_eq!(
        fields(local("Europe/Berlin", autumn - 1000)),
        (2026, 10, 25, 2, 59, 59, 7200, true)
    );
    assert_eq!(
        fields(local("Europe/Berlin", autumn)),
        (2026, 10, 25, 2, 0, 0, 3600, false)
    );
    assert_eq!(
        fields(local("Europe/London", spring)),
        (2026, 3, 29, 2, 0, 0, 3600, true)
    );
    assert_eq!(
        fields(local("Europe/London", autumn)),
        (2026, 10, 25, 1, 0, 0, 0, false)
    );
    assert_eq!(
        fields(local("Europe/Helsinki", spring)),
        (2026, 3, 29, 4, 0, 0, 3 * 3600, true)
    );
    for zone in ["Europe/Berlin", "Europe/London", "Europe/Helsinki"] {
        assert!(!local(zone, spring - 1).is_dst, "{zone}");
        assert!(local(zone, autumn - 1).is_dst, "{zone}");
        assert!(!local(zone, autumn).is_dst, "{zone}");
    }
    // Moscow has no daylight-saving time.
    assert_eq!(local("Europe/Moscow", spring).offset_seconds, 3 * 3600);
}

#[test]
fn sydney_is_southern() {
    let syd = "Australia/Sydney";
    // First Sunday of October 2026 (the 4th): 02:00 AEST becomes 03:00 AEDT.
    assert_eq!(
        fields(local(syd, 1_791_043_199_000)),
        (2026, 10, 4, 1, 59, 59, 10 * 3600, false)
    );
    assert_eq!(
        fields(local(syd, 1_791_043_200_000)),
        (2026, 10, 4, 3, 0, 0, 11 * 3600, true)
    );
    // First Sunday of April 2026 (the 5th): 03:00 AEDT becomes 02:00 AEST.
    assert_eq!(
        fields(local(syd, 1_775_318_399_000)),
        (2026, 4, 5, 2, 59, 59, 11 * 3600, true)
    );
    assert_eq!(
        fields(local(syd, 1_775_318_400_000)),
        (2026, 4, 5, 2, 0, 0, 10 * 3600, false)
    );
    // Summer is at the turn of the year.
    assert!(local(syd, 1_768_478_400_000).is_dst);
    assert!(!local(syd, 1_784_116_800_000).is_dst);
    // Auckland: last Sunday of September to first Sunday of April.
    let akl = TimeZone::lookup("Pacific/Auckland").unwrap().1;
    assert_eq!(akl.offset_at(at(1_768_478_400_000)).seconds, 13 * 3600);
    assert_eq!(akl.offset_at(at(1_784_116_800_000)).seconds, 12 * 3600);
}

#[test]
fn fixed_and_fractional_offsets() {
    // Shanghai: +08 all year.
    for ms in [1_768_478_400_000, 1_784_116_800_000] {
        let l = local("Asia/Shanghai", ms);
        assert_eq!((l.offset_seconds, l.is_dst, l.hour), (8 * 3600, false, 20));
    }
    // Kolkata: +05:30, so 18:30Z is local midnight.
    assert_eq!(
        fields(local("Asia/Kolkata", 1_780_338_599_000)),
        (2026, 6, 1, 23, 59, 59, 19_800, false)
    );
    assert_eq!(
        fields(local("Asia/Kolkata", 1_780_338_600_000)),
        (2026, 6, 2, 0, 0, 0, 19_800, false)
    );
    assert_eq!(
        local("Asia/Kolkata", 1_780_338_600_000).weekday,
        Weekday::Tue
    );
    // No daylight-saving time any more: São Paulo (since 2019), Tehran (since 2022).
    assert_eq!(
        local("America/Sao_Paulo", 1_768_478_400_000).offset_seconds,
        -3 * 3600
    );
    assert_eq!(
        local("Asia/Tehran", 1_784_116_800_000).offset_seconds,
        12_600
    );
}

const BERLIN: &str = r#"{"timezone": "Europe/Berlin",
    "weekly": {"mon": [["09:00", "17:30"]],
               "tue": [["09:00", "12:00"], ["13:00", "17:30"]],
               "sat": [["22:00", "02:00"]]},
    "holidays": ["2026-12-24", "2026-12-25"]}"#;

#[test]
fn the_example_schedule() {
    let s = schedule(BERLIN);
    // Monday 2026-06-01 09:00 CEST (07:00Z) to 17:30 (15:30Z).
    let (open, close) = (1_780_297_200_000, 1_780_327_800_000);
    assert!(!s.is_open(at(open - 1)));
    assert!(s.is_open(at(open)));
    assert!(s.is_open(at(close - 1)));
    assert!(!s.is_open(at(close)));
    assert_eq!(s.next_open(at(open - HOUR)), Some(at(open)));
    assert_eq!(s.next_open(at(open)), Some(at(open)));
    assert_eq!(s.next_close(at(open)), Some(at(close)));
    assert_eq!(s.next_close(at(close)), Some(at(close)));
    // Tuesday's lunch break: closed at 12:30, back at 13:00 (11:00Z).
    let lunch = 1_780_396_200_000;
    assert!(!s.is_open(at(lunch)));
    assert_eq!(s.next_open(at(lunch)), Some(at(1_780_398_000_000)));
    assert_eq!(
        s.describe_next_open(at(lunch), Lang::En),
        "We're back today at 13:00 (Berlin time)."
    );
    assert_eq!(
        s.describe_next_open(at(lunch), Lang::Zh),
        "我们将于今天 13:00（当地时间）恢复服务。"
    );
    // Saturday 22:00 runs into Sunday: open to 01:59, closed at 02:00 (00:00Z).
    let (sat, sun_0159, sun_0200) = (1_780_776_000_000, 1_780_790_340_000, 1_780_790_400_000);
    assert!(s.is_open(at(sat)));
    assert!(s.is_open(at(sun_0159)));
    assert!(!s.is_open(at(sun_0200)));
    assert_eq!(s.next_close(at(sat)), Some(at(sun_0200)));
    // Sunday 10:00 to Monday 09:00 (2026-06-08 07:00Z).
    let sunday = 1_780_819_200_000;
    assert_eq!(s.next_open(at(sunday)), Some(at(1_780_902_000_000)));
    assert_eq!(
        s.describe_next_open(at(sunday), Lang::En),
        "We're back tomorrow at 09:00 (Berlin time)."
    );
    let lt = s.local_time(at(sunday));
    assert_eq!(
        (lt.weekday, lt.hour, lt.offset_seconds, lt.is_dst),
        (Weekday::Sun, 10, 7200, true)
    );
}

#[test]
fn next_open_across_a_weekend() {
    let s = schedule(
        r#"{"timezone": "America/New_York", "weekly": {
            "mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "17:00"]],
            "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]]}}"#,
    );
    // Friday 2026-06-05 18:00 EDT to Monday 2026-06-08 09:00 EDT (13:00Z).
    let friday = at(1_780_696_800_000);
    assert!(!s.is_open(friday));
    assert_eq!(s.next_open(friday), Some(at(1_780_923_600_000)));
    assert_eq!(
        s.describe_next_open(friday, Lang::En),
        "We're back Monday at 09:00 (New York time)."
    );
    assert_eq!(
        s.describe_next_open(friday, Lang::Zh),
        "我们将于周一 09:00（当地时间）恢复服务。"
    );
    assert_eq!(s.next_close(friday), Some(friday));
}

const WEEKDAYS_BERLIN: &str = r#""timezone": "Europe/Berlin", "weekly": {
    "mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "17:00"]],
    "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]]}"#;

#[test]
fn next_open_across_holidays() {
    // Thursday 24 and Friday 25 December 2026 are holidays: from Wednesday 18:00 the next
    // opening is Monday 28 December 09:00 CET (08:00Z).
    let s = schedule(&format!(
        r#"{{{WEEKDAYS_BERLIN}, "holidays": ["2026-12-24", "2026-12-25"]}}"#
    ));
    let wednesday = at(1_798_045_200_000);
    assert_eq!(s.next_open(wednesday), Some(at(1_798_444_800_000)));
    assert!(!s.is_open(at(1_798_444_800_000 - 4 * 24 * HOUR + HOUR)));
    assert_eq!(
        s.describe_next_open(wednesday, Lang::En),
        "We're back Monday at 09:00 (Berlin time)."
    );
    // Closed until the new year: a date is given once the opening is a week or more away.
    let s = schedule(&format!(
        r#"{{{WEEKDAYS_BERLIN}, "holidays": ["2026-12-24", "2026-12-25", "2026-12-28",
            "2026-12-29", "2026-12-30", "2026-12-31", "2027-01-01"]}}"#
    ));
    assert_eq!(s.next_open(wednesday), Some(at(1_799_049_600_000)));
    assert_eq!(
        s.describe_next_open(wednesday, Lang::En),
        "We're back Monday 4 January at 09:00 (Berlin time)."
    );
    assert_eq!(
        s.describe_next_open(wednesday, Lang::Zh),
        "我们将于1月4日（周一）09:00（当地时间）恢复服务。"
    );
}

#[test]
fn a_holiday_cancels_the_ranges_that_start_on_it() {
    // Saturday 22:00 to 02:00, with Sunday 2026-12-20 and Saturday 2026-12-26 holidays.
    let s = schedule(
        r#"{"timezone": "Europe/Berlin", "weekly": {"sat": [["22:00", "02:00"]]},
            "holidays": ["2026-12-20", "2026-12-26"]}"#,
    );
    // Saturday the 19th's range still runs into the holiday Sunday, to 02:00 (01:00Z).
    assert!(s.is_open(at(1_797_714_000_000)));
    assert!(s.is_open(at(1_797_724_800_000)));
    assert_eq!(
        s.next_close(at(1_797_724_800_000)),
        Some(at(1_797_728_400_000))
    );
    // Saturday the 26th is a holiday: closed that night, including Sunday's early hours.
    assert!(!s.is_open(at(1_798_322_400_000)));
    assert!(!s.is_open(at(1_798_329_600_000)));
    // Next: Saturday 2027-01-02 22:00 CET.
    assert_eq!(
        s.next_open(at(1_798_322_400_000)),
        Some(at(1_798_322_400_000 + 7 * 24 * HOUR - HOUR))
    );
}

#[test]
fn twenty_four_hundred_and_round_the_clock() {
    // Friday 18:00 to 24:00 then Saturday 00:00 to 03:00 is one stretch.
    let s = schedule(
        r#"{"timezone": "Europe/Berlin", "weekly": {"fri": [["18:00", "24:00"]],
            "sat": [["00:00", "03:00"]]}}"#,
    );
    // Friday 2026-06-05 20:00 CEST (18:00Z) to Saturday 03:00 CEST (01:00Z).
    let friday = at(1_780_682_400_000);
    assert!(s.is_open(friday));
    assert_eq!(s.next_close(friday), Some(at(1_780_707_600_000)));
    // Open every hour of every day: never closes within the search horizon.
    let day = r#"[["00:00", "24:00"]]"#;
    let s = schedule(&format!(
        r#"{{"timezone": "UTC", "weekly": {{"mon": {day}, "tue": {day}, "wed": {day},
            "thu": {day}, "fri": {day}, "sat": {day}, "sun": {day}}}}}"#
    ));
    assert!(s.is_open(friday));
    assert_eq!(s.next_open(friday), Some(friday));
    assert_eq!(s.next_close(friday), None);
    assert_eq!(s.describe_next_open(friday, Lang::En), "We're open now.");
    assert_eq!(s.closed_notice(friday, Lang::En), None);
    // An equal start and end is a 24-hour range.
    let s = schedule(r#"{"timezone": "UTC", "weekly": {"fri": [["12:00", "12:00"]]}}"#);
    // Friday 2026-06-05 12:00Z.
    let noon = 1_780_660_800_000;
    assert_eq!(s.next_close(at(noon)), Some(at(noon + 24 * HOUR)));
}

#[test]
fn overnight_ranges_across_us_switches() {
    // Saturday 2026-03-07 22:00 EST (03:00Z) to Sunday 04:00 EDT (08:00Z): five wall-clock
    // hours, four real ones.
    let s = schedule(
        r#"{"timezone": "America/New_York", "weekly": {"sat": [["22:00", "04:00"]],
            "sun": [["02:30", "05:00"]]}}"#,
    );
    let (open, switch, close) = (1_772_938_800_000, 1_772_953_200_000, 1_772_956_800_000);
    assert!(!s.is_open(at(open - 1)));
    assert!(s.is_open(at(open)));
    assert!(s.is_open(at(switch - 1)));
    assert!(s.is_open(at(switch)));
    // Sunday's 02:30 falls in the gap: its range opens at the switch, so the two ranges
    // run on as one to Sunday 05:00 EDT (09:00Z).
    assert_eq!(s.next_close(at(open)), Some(at(1_772_960_400_000)));
    assert!(s.is_open(at(close)));

    // Saturday 2026-10-31 22:00 EDT (02:00Z) to 01:30: closes at the first 01:30 (05:30Z)
    // and does not reopen when 01:00 comes round again in EST.
    let s =
        schedule(r#"{"timezone": "America/New_York", "weekly": {"sat": [["22:00", "01:30"]]}}"#);
    let open = 1_793_498_400_000;
    assert!(s.is_open(at(open)));
    assert_eq!(s.next_close(at(open)), Some(at(1_793_511_000_000)));
    assert!(!s.is_open(at(1_793_513_700_000)));
    // A range across the repeated hour lasts three real hours: 01:00 EDT (05:00Z) to
    // 03:00 EST (08:00Z).
    let s =
        schedule(r#"{"timezone": "America/New_York", "weekly": {"sun": [["01:00", "03:00"]]}}"#);
    assert_eq!(
        s.next_open(at(1_793_498_400_000)),
        Some(at(1_793_509_200_000))
    );
    assert_eq!(
        s.next_close(at(1_793_509_200_000)),
        Some(at(1_793_520_000_000))
    );
    assert!(s.is_open(at(1_793_513_700_000)));
}

#[test]
fn a_range_inside_the_gap_does_not_open() {
    // Sunday 02:10 to 02:50 does not exist on 2026-03-08 in New York; the next opening is
    // a week later, 2026-03-15 02:10 EDT (06:10Z).
    let s =
        schedule(r#"{"timezone": "America/New_York", "weekly": {"sun": [["02:10", "02:50"]]}}"#);
    let before = at(1_772_953_200_000 - 2 * HOUR);
    assert_eq!(s.next_open(before), Some(at(1_773_555_000_000)));
}

#[test]
fn overnight_range_across_the_eu_switch() {
    // Saturday 2026-03-28 22:00 CET (21:00Z) to Sunday 06:00 CEST (04:00Z).
    let s = schedule(r#"{"timezone": "Europe/Berlin", "weekly": {"sat": [["22:00", "06:00"]]}}"#);
    let open = at(1_774_731_600_000);
    assert!(s.is_open(open));
    assert_eq!(s.next_close(open), Some(at(1_774_756_800_000)));
    assert!(s.is_open(at(1_774_746_000_000)));
}

#[test]
fn sydney_hours_follow_the_october_switch() {
    let s = schedule(
        r#"{"timezone": "Australia/Sydney", "weekly": {"mon": [["09:00", "17:30"]],
            "fri": [["09:00", "17:30"]], "sun": [["10:00", "16:00"]]}}"#,
    );
    // Monday 2026-09-28 09:00 AEST is 23:00Z the day before.
    assert_eq!(
        s.next_open(at(1_790_550_000_000 - HOUR)),
        Some(at(1_790_550_000_000))
    );
    // Friday 2026-10-02 17:30 closes; Sunday 2026-10-04 10:00 AEDT (the switch day) is
    // 2026-10-03T23:00Z, and Monday 2026-10-05 09:00 AEDT is 2026-10-04T22:00Z.
    let friday = at(1_790_926_200_000);
    assert!(!s.is_open(friday));
    assert_eq!(s.next_open(friday), Some(at(1_791_068_400_000)));
    assert_eq!(
        s.next_open(at(1_791_068_400_000 + 6 * HOUR)),
        Some(at(1_791_151_200_000))
    );
    assert_eq!(
        s.describe_next_open(friday, Lang::En),
        "We're back Sunday at 10:00 (Sydney time)."
    );
}

#[test]
fn kolkata_and_shanghai() {
    let s = schedule(r#"{"timezone": "Asia/Kolkata", "weekly": {"mon": [["09:30", "18:00"]]}}"#);
    // Monday 2026-06-01 09:30 IST is 04:00Z.
    assert!(!s.is_open(at(1_780_286_400_000 - 1)));
    assert!(s.is_open(at(1_780_286_400_000)));
    assert_eq!(
        s.next_close(at(1_780_286_400_000)),
        Some(at(1_780_286_400_000 + 8 * HOUR + 30 * MINUTE))
    );
    let s = schedule(
        r#"{"timezone": "Asia/Shanghai", "weekly": {"mon": [["09:00", "18:00"]],
            "fri": [["09:00", "18:00"]]}}"#,
    );
    // Friday 2026-06-05 18:30 CST to Monday 2026-06-08 09:00 CST (01:00Z).
    let friday = at(1_780_655_400_000);
    assert_eq!(s.next_open(friday), Some(at(1_780_880_400_000)));
    assert_eq!(
        s.describe_next_open(friday, Lang::Zh),
        "我们将于周一 09:00（当地时间）恢复服务。"
    );
    assert_eq!(
        s.describe_next_open(friday, Lang::En),
        "We're back Monday at 09:00 (Shanghai time)."
    );
}

#[test]
fn posix_strings_in_the_configuration() {
    let weekdays = r#""weekly": {"mon": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]]}"#;
    let s = schedule(&format!(
        r#"{{"timezone": "EST5EDT,M3.2.0,M11.1.0", {weekdays}}}"#
    ));
    let friday = at(1_780_696_800_000);
    assert_eq!(s.next_open(friday), Some(at(1_780_923_600_000)));
    assert_eq!(
        s.describe_next_open(friday, Lang::En),
        "We're back Monday at 09:00 (EDT)."
    );
    let s = schedule(&format!(r#"{{"timezone": "<+0530>-5:30", {weekdays}}}"#));
    assert_eq!(s.local_time(at(1_780_338_600_000)).hour, 0);
    assert!(
        s.describe_next_open(friday, Lang::En)
            .ends_with("(UTC+05:30).")
    );
    let s = schedule(&format!(
        r#"{{"timezone": "AEST-10AEDT,M10.1.0,M4.1.0/3", {weekdays}}}"#
    ));
    assert!(s.local_time(at(1_791_043_200_000)).is_dst);
    assert!(!s.local_time(at(1_791_043_199_000)).is_dst);
    let s = schedule(&format!(r#"{{"timezone": "UTC", {weekdays}}}"#));
    assert!(s.describe_next_open(friday, Lang::En).ends_with("(UTC)."));
}

#[test]
fn never_open() {
    let s = schedule(r#"{"timezone": "Europe/Berlin"}"#);
    let now = at(1_780_297_200_000);
    assert!(!s.is_open(now));
    assert_eq!(s.next_open(now), None);
    assert_eq!(s.next_close(now), Some(now));
    assert_eq!(
        s.describe_next_open(now, Lang::En),
        "We're closed at the moment."
    );
    // Open only on a day that is a holiday for the next two weeks and more.
    let s = schedule(
        r#"{"timezone": "Europe/Berlin", "weekly": {"mon": [["09:00", "17:00"]]},
            "holidays": ["2026-06-01", "2026-06-08", "2026-06-15"]}"#,
    );
    assert_eq!(s.next_open(now), None);
    // The horizon is 14 days, inclusive: Monday 2026-06-22 09:00 is exactly 14 days after
    // Monday 2026-06-08 09:00.
    let (week, june_22) = (7 * 24 * HOUR, at(1_780_297_200_000 + 21 * 24 * HOUR));
    assert_eq!(s.next_open(at(1_780_297_200_000 + week)), Some(june_22));
    assert_eq!(s.next_open(at(1_780_297_200_000 + week - 1)), None);
}

#[test]
fn closed_notices() {
    let s = schedule(&format!(
        r#"{{{WEEKDAYS_BERLIN}, "closed_message": "Our team is offline. {{next_open}}"}}"#
    ));
    let sunday = at(1_780_819_200_000);
    assert_eq!(
        s.closed_notice(sunday, Lang::En).as_deref(),
        Some("Our team is offline. We're back tomorrow at 09:00 (Berlin time).")
    );
    assert_eq!(s.closed_notice(at(1_780_902_000_000), Lang::En), None);
    let s = schedule(&format!(
        r#"{{{WEEKDAYS_BERLIN}, "closed_message": "Back soon."}}"#
    ));
    assert_eq!(
        s.closed_notice(sunday, Lang::Zh).as_deref(),
        Some("Back soon.")
    );
    assert_eq!(s.closed_message(), Some("Back soon."));
    let s = schedule(&format!(r#"{{{WEEKDAYS_BERLIN}}}"#));
    assert_eq!(
        s.closed_notice(sunday, Lang::Zh).as_deref(),
        Some("我们将于明天 09:00（当地时间）恢复服务。")
    );
}

#[test]
fn rejections_name_the_field() {
    let cases = [
        (r#"{"timezone": "Mars/Olympus"}"#, "business_hours.timezone"),
        (r#"{"timezone": "Berlin time"}"#, "business_hours.timezone"),
        (r#"{"timezone": " "}"#, "business_hours.timezone"),
        (
            r#"{"timezone": "UTC", "weekly": {"tue": [["09:00", "12:00"], ["13:00", "25:00"]]}}"#,
            "business_hours.weekly.tue[1]",
        ),
        (
            r#"{"timezone": "UTC", "weekly": {"mon": [["24:00", "02:00"]]}}"#,
            "business_hours.weekly.mon[0]",
        ),
        (
            r#"{"timezone": "UTC", "weekly": {"sun": [["9am", "5pm"]]}}"#,
            "business_hours.weekly.sun[0]",
        ),
        (
            r#"{"timezone": "UTC", "holidays": ["2026-12-24", "2026-02-30"]}"#,
            "business_hours.holidays[1]",
        ),
    ];
    for (doc, field) in cases {
        let hours: BusinessHours = serde_json::from_slice(doc.as_bytes()).unwrap();
        let err = hours.validate().unwrap_err();
        assert_eq!(err.field, field, "{doc}: {err}");
    }
    let hours: BusinessHours = serde_json::from_slice(br#"{"timezone": "Mars/Olympus"}"#).unwrap();
    let err = hours.validate().unwrap_err();
    assert!(err.message.contains("POSIX TZ string"), "{err}");
    let long = "x".repeat(2001);
    let hours: BusinessHours = serde_json::from_slice(
        format!(r#"{{"timezone": "UTC", "closed_message": "{long}"}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        hours.validate().unwrap_err().field,
        "business_hours.closed_message"
    );
    // Unknown fields and malformed ranges are serde errors.
    for doc in [
        r#"{"timezone": "UTC", "weekley": {}}"#,
        r#"{"timezone": "UTC", "weekly": {"monday": []}}"#,
        r#"{"timezone": "UTC", "weekly": {"mon": [["09:00"]]}}"#,
        r#"{"timezone": "UTC", "weekly": {"mon": [["09:00", "10:00", "11:00"]]}}"#,
        r#"{"weekly": {}}"#,
    ] {
        assert!(
            serde_json::from_slice::<BusinessHours>(doc.as_bytes()).is_err(),
            "{doc}"
        );
    }
}

#[test]
fn serializes_as_written() {
    let hours: BusinessHours = serde_json::from_slice(BERLIN.as_bytes()).unwrap();
    let json = serde_json::to_value(&hours).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"timezone": "Europe/Berlin",
            "weekly": {"mon": [["09:00", "17:30"]],
                       "tue": [["09:00", "12:00"], ["13:00", "17:30"]],
                       "sat": [["22:00", "02:00"]]},
            "holidays": ["2026-12-24", "2026-12-25"]})
    );
    let back: BusinessHours = serde_json::from_value(json).unwrap();
    assert_eq!(back, hours);
}

#[test]
fn extreme_instants_do_not_panic() {
    let s = schedule(BERLIN);
    for ms in [
        0,
        1,
        86_400_000,
        253_402_300_799_999,
        i64::MAX as u64,
        u64::MAX,
    ] {
        let now = at(ms);
        let _ = (s.is_open(now), s.next_open(now), s.next_close(now));
        let _ = s.describe_next_open(now, Lang::Zh);
        let _ = s.local_time(now);
    }
    assert_eq!(
        fields(s.local_time(at(0))),
        (1970, 1, 1, 1, 0, 0, 3600, false)
    );
}
