//! Business hours and holidays: when a tenant's team is there, in the tenant's own time zone.
//!
//! Operators write a weekly timetable in local wall-clock times, a list of local holiday
//! dates and a time zone ([`BusinessHours`], part of the tenant configuration).
//! [`BusinessHours::compile`] validates it once into a [`Schedule`], which answers
//! [`Schedule::is_open`], [`Schedule::next_open`], [`Schedule::next_close`] and
//! [`Schedule::local_time`] for any instant, and words the next opening for visitors
//! ([`Schedule::describe_next_open`]). Like the rest of the engine it reads no clock: every
//! question takes `now`.
//!
//! The engine ships without a time-zone database (it runs as wasm at the edge, where every
//! kilobyte counts), so a zone is a POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`), given
//! directly or looked up by IANA name in [`IANA_ZONES`], a built-in table of the current
//! rule of about 140 common zones. A rule describes the present, not history: instants before
//! a zone's last rule change get today's rule.
//!
//! How wall-clock ranges meet daylight-saving time: a range opens at the first instant the
//! local clock reads its start (or later) and closes at the first instant it reads its end
//! (or later). So a range starting inside a spring-forward gap opens when the gap ends, and
//! a range ending inside a fall-back repeated hour closes at the first pass; an overnight
//! range is one continuous stretch even across a switch. A holiday cancels the ranges that
//! *start* on it: an overnight range from the evening before a holiday still runs until its
//! end, and one starting on the evening of a holiday does not run at all.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::offline::Lang;
use crate::time::Timestamp;

mod calendar;
mod tz;

pub use calendar::{LocalDateTime, Weekday};
use calendar::{days_from_civil, days_in_month};
pub use tz::{IANA_ZONES, Offset, TimeZone, TzError, ZONE_ALIASES};
use tz::{first_reaching, offset_in};

/// How far ahead [`Schedule::next_open`] and [`Schedule::next_close`] look.
pub const SEARCH_DAYS: i64 = 14;

/// The most ranges one weekday may hold.
pub const MAX_RANGES_PER_DAY: usize = 48;

/// The most holidays a configuration may list.
pub const MAX_HOLIDAYS: usize = 1000;

/// The longest `closed_message`, in characters.
pub const MAX_CLOSED_MESSAGE_CHARS: usize = 2000;

/// Where [`Schedule::closed_notice`] puts the next-opening sentence in a `closed_message`.
pub const NEXT_OPEN_PLACEHOLDER: &str = "{next_open}";

/// Seconds in a day.
const DAY: i64 = 86_400;
const FIELD: &str = "business_hours";

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// A tenant's business hours, as operators write them in the tenant configuration.
///
/// ```json
/// {"timezone": "Europe/Berlin",
///  "weekly": {"mon": [["09:00", "17:30"]], "sat": [["22:00", "02:00"]]},
///  "holidays": ["2026-12-24", "2026-12-25"],
///  "closed_message": "We're offline. {next_open}"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// An IANA zone name from [`IANA_ZONES`] (or [`ZONE_ALIASES`]), or a POSIX TZ string.
    pub timezone: String,
    /// Opening ranges per weekday; a day without ranges is closed.
    #[serde(default)]
    pub weekly: WeeklyHours,
    /// Local dates (`YYYY-MM-DD`) on which no range starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    /// What visitors are told while closed; `{next_open}` in it is replaced by the sentence
    /// [`Schedule::describe_next_open`] words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_message: Option<String>,
}

/// Opening ranges for each day of the week, in local time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeeklyHours {
    /// Monday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mon: Vec<TimeRange>,
    /// Tuesday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tue: Vec<TimeRange>,
    /// Wednesday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wed: Vec<TimeRange>,
    /// Thursday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thu: Vec<TimeRange>,
    /// Friday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fri: Vec<TimeRange>,
    /// Saturday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sat: Vec<TimeRange>,
    /// Sunday.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sun: Vec<TimeRange>,
}

impl WeeklyHours {
    /// The ranges configured for `day`.
    pub fn day(&self, day: Weekday) -> &[TimeRange] {
        match day {
            Weekday::Mon => &self.mon,
            Weekday::Tue => &self.tue,
            Weekday::Wed => &self.wed,
            Weekday::Thu => &self.thu,
            Weekday::Fri => &self.fri,
            Weekday::Sat => &self.sat,
            Weekday::Sun => &self.sun,
        }
    }
}

/// One opening range, `["09:00", "17:30"]`: local `HH:MM` start and end.
///
/// The end may be `"24:00"`. An end at or before the start runs past midnight into the
/// next day (`["22:00", "02:00"]`), so an equal start and end is open 24 hours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange(pub String, pub String);

impl BusinessHours {
    /// Checks the configuration; the error names the field at fault
    /// (`business_hours.weekly.tue[1]`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.compile().map(|_| ())
    }

    /// Validates the configuration and compiles it into a [`Schedule`] (do it once, then
    /// ask the schedule).
    pub fn compile(&self) -> Result<Schedule, ConfigError> {
        let (zone, label) = resolve_zone(&self.timezone)?;
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for day in Weekday::ALL {
            let ranges = self.weekly.day(day);
            let field = format!("{FIELD}.weekly.{}", day.as_str());
            if ranges.len() > MAX_RANGES_PER_DAY {
                return Err(invalid(
                    &field,
                    format!("at most {MAX_RANGES_PER_DAY} ranges per day"),
                ));
            }
            for (i, TimeRange(start, end)) in ranges.iter().enumerate() {
                let field = format!("{field}[{i}]");
                let s = parse_clock(start).filter(|&m| m < 1440).ok_or_else(|| {
                    invalid(
                        &field,
                        format!("start `{start}` is not a time: use HH:MM from 00:00 to 23:59"),
                    )
                })?;
                let e = parse_clock(end).ok_or_else(|| {
                    invalid(
                        &field,
                        format!("end `{end}` is not a time: use HH:MM from 00:00 to 24:00"),
                    )
                })?;
                // An end at or before the start is on the next day.
                let e = if e <= s { e + 1440 } else { e };
                days[day.index()].push((s, e));
            }
        }
        if self.holidays.len() > MAX_HOLIDAYS {
            return Err(invalid(
                &format!("{FIELD}.holidays"),
                format!("at most {MAX_HOLIDAYS} holidays"),
            ));
        }
        let mut holidays = Vec::with_capacity(self.holidays.len());
        for (i, date) in self.holidays.iter().enumerate() {
            let day = parse_date(date).ok_or_else(|| {
                invalid(
                    &format!("{FIELD}.holidays[{i}]"),
                    format!("`{date}` is not a date: use YYYY-MM-DD"),
                )
            })?;
            holidays.push(day);
        }
        crate::sort::sort(&mut holidays);
        holidays.dedup();
        if let Some(m) = &self.closed_message
            && m.chars().count() > MAX_CLOSED_MESSAGE_CHARS
        {
            return Err(invalid(
                &format!("{FIELD}.closed_message"),
                format!("must be at most {MAX_CLOSED_MESSAGE_CHARS} characters"),
            ));
        }
        Ok(Schedule {
            zone,
            label,
            days,
            holidays,
            closed_message: self.closed_message.clone().filter(|m| !m.trim().is_empty()),
        })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// `HH:MM` (or `H:MM`) to minutes after midnight; `24:00` gives 1440.
fn parse_clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !(1..=2).contains(&h.len()) || m.len() != 2 || !digits(h) || !digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (0..=23, 0..=59) => Some(h * 60 + m),
        (24, 0) => Some(1440),
        _ => None,
    }
}

/// `YYYY-MM-DD` to days since 1970-01-01.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: core::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) {
        return None;
    }
    if !digits(5..7) || !digits(8..10) {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Finds the zone a `timezone` field names, and the label visitors see for it.
fn resolve_zone(name: &str) -> Result<(TimeZone, Label), ConfigError> {
    let field = format!("{FIELD}.timezone");
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid(
            &field,
            "must name a time zone, e.g. `Europe/Berlin` or a POSIX TZ string",
        ));
    }
    if let Some((canonical, zone)) = TimeZone::lookup(name) {
        // Only UTC and GMT themselves lack a city (aliases such as `Japan` resolve to one).
        let label = match canonical.rsplit_once('/') {
            Some(("Etc", _)) | None => Label::Utc,
            Some((_, city)) => Label::City(city.replace('_', " ")),
        };
        return Ok((zone, label));
    }
    match TimeZone::posix(name) {
        Ok(zone) => Ok((zone, Label::Abbreviation)),
        Err(e) if name.contains('/') && !name.contains(',') => Err(invalid(
            &field,
            format!(
                "unknown time zone `{name}`: it is not in Kefu's built-in table; give its \
                 POSIX TZ string instead (the last line of the zone's tzdata file), e.g. \
                 `CET-1CEST,M3.5.0,M10.5.0/3` for Europe/Berlin ({e})"
            ),
        )),
        Err(e) => Err(invalid(
            &field,
            format!(
                "`{name}` is neither a built-in IANA zone nor a valid POSIX TZ string ({e}); \
                 use e.g. `Europe/Berlin` or `CET-1CEST,M3.5.0,M10.5.0/3`"
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The compiled schedule
// ---------------------------------------------------------------------------------------

/// Validated business hours, ready to answer questions about instants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    zone: TimeZone,
    label: Label,
    /// Per weekday (Monday first): (start, end) in minutes after the day's local midnight;
    /// `start < end <= start + 1440`, an end past 1440 falling on the next day.
    days: [Vec<(u32, u32)>; 7],
    /// Holidays as local days since 1970-01-01, sorted.
    holidays: Vec<i64>,
    closed_message: Option<String>,
}

/// How the English text names the zone: `(Berlin time)`, `(UTC)` or `(CET)`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Label {
    City(String),
    Utc,
    Abbreviation,
}

impl Schedule {
    /// The schedule's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The operator's `closed_message`, if one is set (and not blank).
    pub fn closed_message(&self) -> Option<&str> {
        self.closed_message.as_deref()
    }

    /// The local date and time at `now`.
    pub fn local_time(&self, now: Timestamp) -> LocalDateTime {
        self.zone.local_time(now)
    }

    /// Whether the team is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let ms = millis(now);
        self.openings(ms, 1).iter().any(|&(a, b)| a <= ms && ms < b)
    }

    /// The first instant at or after `now` when the team is open: `now` itself while open,
    /// `None` if there is none in the next [`SEARCH_DAYS`] days.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let ms = millis(now);
        let (a, _) = self
            .openings(ms, SEARCH_DAYS + 1)
            .into_iter()
            .find(|&(_, b)| b > ms)?;
        let at = a.max(ms);
        (at - ms <= SEARCH_DAYS * DAY * 1000).then(|| timestamp(at))
    }

    /// The first instant at or after `now` when the team is closed: `now` itself while
    /// closed, `None` if it stays open for the next [`SEARCH_DAYS`] days.
    pub fn next_close(&self, now: Timestamp) -> Option<Timestamp> {
        let ms = millis(now);
        match self
            .openings(ms, SEARCH_DAYS + 1)
            .into_iter()
            .find(|&(a, b)| a <= ms && ms < b)
        {
            None => Some(now),
            Some((_, b)) => (b - ms <= SEARCH_DAYS * DAY * 1000).then(|| timestamp(b)),
        }
    }

    /// One sentence for visitors saying when the team is back, e.g. "We're back Monday at
    /// 09:00 (Berlin time)." or "我们将于周一 09:00（当地时间）恢复服务。".
    ///
    /// The day is "today", "tomorrow", a weekday within the week, or a weekday and date
    /// further out, all in the zone's local time.
    pub fn describe_next_open(&self, now: Timestamp, lang: Lang) -> String {
        if self.is_open(now) {
            return match lang {
                Lang::En => "We're open now.".to_owned(),
                Lang::Zh => "我们现在正在服务。".to_owned(),
            };
        }
        let Some(at) = self.next_open(now) else {
            return match lang {
                Lang::En => "We're closed at the moment.".to_owned(),
                Lang::Zh => "我们目前暂停服务。".to_owned(),
            };
        };
        let here = self.local_time(now);
        let then = self.local_time(at);
        let days_ahead = then.days_since_epoch() - here.days_since_epoch();
        let clock = format!("{:02}:{:02}", then.hour, then.minute);
        match lang {
            Lang::En => {
                let when = match days_ahead {
                    0 => "today".to_owned(),
                    1 => "tomorrow".to_owned(),
                    2..=6 => then.weekday.english().to_owned(),
                    _ => format!(
                        "{} {} {}",
                        then.weekday.english(),
                        then.day,
                        MONTHS[usize::from(then.month - 1)]
                    ),
                };
                let zone = match &self.label {
                    Label::City(city) => format!("{city} time"),
                    Label::Utc => "UTC".to_owned(),
                    Label::Abbreviation => display_abbreviation(self.zone.abbreviation(at)),
                };
                format!("We're back {when} at {clock} ({zone}).")
            }
            Lang::Zh => {
                let when = match days_ahead {
                    0 => "今天".to_owned(),
                    1 => "明天".to_owned(),
                    2..=6 => then.weekday.chinese().to_owned(),
                    _ => format!(
                        "{}月{}日（{}）",
                        then.month,
                        then.day,
                        then.weekday.chinese()
                    ),
                };
                // No space after the closing bracket of a date: `1月4日（周一）09:00`.
                let space = if when.ends_with('）') { "" } else { " " };
                format!("我们将于{when}{space}{clock}（当地时间）恢复服务。")
            }
        }
    }

    /// What to tell a visitor at `now`: `None` while open; otherwise the `closed_message`
    /// (with `{next_open}` replaced by [`Schedule::describe_next_open`]'s sentence), or that
    /// sentence alone when no message is set.
    pub fn closed_notice(&self, now: Timestamp, lang: Lang) -> Option<String> {
        if self.is_open(now) {
            return None;
        }
        let sentence = self.describe_next_open(now, lang);
        Some(match &self.closed_message {
            Some(m) if m.contains(NEXT_OPEN_PLACEHOLDER) => {
                m.replace(NEXT_OPEN_PLACEHOLDER, &sentence)
            }
            Some(m) => m.clone(),
            None => sentence,
        })
    }

    /// The open stretches (epoch milliseconds, half-open, merged and sorted) of the local
    /// days around `ms`: from three days before to `ahead` days after.
    ///
    /// A range lasts at most 24 hours and starts on its own day, so days further back end
    /// before `ms`; days further ahead start after the search horizon.
    fn openings(&self, ms: i64, ahead: i64) -> Vec<(i64, i64)> {
        let t = ms.div_euclid(1000);
        let segments = self.zone.segments_near(t);
        let today = (t + i64::from(offset_in(&segments, t).0)).div_euclid(DAY);
        let mut out: Vec<(i64, i64)> = Vec::new();
        for day in today - 3..=today + ahead {
            if self.holidays.binary_search(&day).is_ok() {
                continue;
            }
            let weekday = Weekday::from_days(day);
            for &(start, end) in &self.days[weekday.index()] {
                let a = first_reaching(&segments, day * DAY + i64::from(start) * 60);
                let b = first_reaching(&segments, day * DAY + i64::from(end) * 60);
                // Empty when the whole range falls in a spring-forward gap.
                if a < b {
                    out.push((a.saturating_mul(1000), b.saturating_mul(1000)));
                }
            }
        }
        crate::sort::sort(&mut out);
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(out.len());
        for (a, b) in out {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `CET` stays `CET`; a numeric abbreviation such as `+0530` or `-03` becomes `UTC+05:30`
/// or `UTC-03`.
fn display_abbreviation(abbr: &str) -> String {
    let b = abbr.as_bytes();
    match b.first() {
        Some(b'+' | b'-') if b.len() == 5 => format!("UTC{}:{}", &abbr[..3], &abbr[3..]),
        Some(b'+' | b'-') => format!("UTC{abbr}"),
        _ => abbr.to_owned(),
    }
}

pub(super) fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::civil_from_days;

    #[test]
    fn calendar_round_trips() {
        for z in [-800_000, -1, 0, 1, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(Weekday::from_days(0), Weekday::Thu);
        assert_eq!(Weekday::from_days(-1), Weekday::Wed);
        assert_eq!(parse_date("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "２０２６-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_clock("9:05"), Some(545));
        assert_eq!(parse_clock("24:00"), Some(1440));
        for bad in ["24:01", "12:60", "12", "12:5", ":30", "+1:00", "123:00"] {
            assert_eq!(parse_clock(bad), None, "{bad}");
        }
    }

    #[test]
    fn abbreviations_read_well() {
        assert_eq!(display_abbreviation("+0530"), "UTC+05:30");
        assert_eq!(display_abbreviation("-03"), "UTC-03");
        assert_eq!(display_abbreviation("CET"), "CET");
    }
}
