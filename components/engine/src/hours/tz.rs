//! Time zones as POSIX TZ rules, and the built-in table of IANA names to rules.
//!
//! The engine ships without a time-zone database (it runs as wasm at the edge, where every
//! kilobyte counts), so a zone is a POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`): parsed by
//! [`TimeZone::posix`], looked up by IANA name with [`TimeZone::lookup`] in [`IANA_ZONES`]
//! (the current rule of about 140 common zones) and [`ZONE_ALIASES`]. A rule describes the
//! present, not history: instants before a zone's last rule change get today's rule.

use core::fmt;

use super::calendar::{LocalDateTime, Weekday, days_from_civil, days_in_month, is_leap};
use super::{DAY, millis};
use crate::time::{Timestamp, civil_from_days};

/// A time zone as a POSIX TZ rule: a standard offset and, optionally, a daylight-saving
/// offset with the yearly rule for switching to and from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZone {
    std_name: String,
    /// Seconds east of UTC (POSIX writes them west, so `CET-1` is +3600 here).
    std_offset: i32,
    dst: Option<Dst>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Dst {
    name: String,
    /// Seconds east of UTC.
    offset: i32,
    /// When daylight-saving time starts, in local standard time.
    start: Rule,
    /// When it ends, in local daylight-saving time.
    end: Rule,
}

/// A yearly transition: a date rule and a local time of day, in seconds (which POSIX lets
/// run from -167 to +167 hours, so the instant may fall on another day).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    date: DateRule,
    time: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DateRule {
    /// `Jn`: day 1 to 365, February 29 never counted.
    Julian1(u16),
    /// `n`: day 0 to 365, February 29 counted in leap years.
    Julian0(u16),
    /// `Mm.w.d`: weekday `d` (0 = Sunday) of week `w` (5 = the last) of month `m`.
    MonthWeekDay { month: u8, week: u8, weekday: u8 },
}

/// The zone's state at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset {
    /// Seconds east of UTC.
    pub seconds: i32,
    /// Whether it is daylight-saving time.
    pub is_dst: bool,
}

/// A POSIX TZ string that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {reason}")]
pub struct TzError {
    /// The byte offset where parsing stopped.
    pub at: usize,
    /// What was expected there.
    pub reason: &'static str,
}

/// A stretch of time with one offset: `[from, to)` in seconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    from: i64,
    to: i64,
    offset: i32,
    is_dst: bool,
}

impl TimeZone {
    /// UTC.
    pub fn utc() -> TimeZone {
        TimeZone {
            std_name: "UTC".to_owned(),
            std_offset: 0,
            dst: None,
        }
    }

    /// Looks up an IANA name (ASCII case-insensitively) in [`IANA_ZONES`] and
    /// [`ZONE_ALIASES`], returning the canonical name and the zone.
    pub fn lookup(name: &str) -> Option<(&'static str, TimeZone)> {
        let canonical = ZONE_ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
            .map_or(name, |&(_, to)| to);
        let &(canonical, rule) = IANA_ZONES
            .iter()
            .find(|(zone, _)| zone.eq_ignore_ascii_case(canonical))?;
        TimeZone::posix(rule).ok().map(|zone| (canonical, zone))
    }

    /// Parses a POSIX TZ string: `std offset [dst [offset] [,start[/time],end[/time]]]`.
    ///
    /// Names are three or more letters or `<…>`-quoted (`<+0530>`); offsets are
    /// `[+-]hh[:mm[:ss]]` west of UTC (hours up to 24); the daylight-saving offset
    /// defaults to one hour ahead of standard time; rules are `Mm.w.d`, `Jn` or `n`, each
    /// with an optional `/time` (default `02:00`, from -167 to 167 hours). Without rules,
    /// daylight-saving time follows the US rule `M3.2.0,M11.1.0`, as tzcode does.
    pub fn posix(s: &str) -> Result<TimeZone, TzError> {
        let mut p = Parser {
            s: s.as_bytes(),
            at: 0,
        };
        let std_name = p.name()?;
        let std_offset = p.offset()?;
        if p.done() {
            return Ok(TimeZone {
                std_name,
                std_offset,
                dst: None,
            });
        }
        let dst_name = p.name()?;
        let dst_offset = match p.peek() {
            Some(b'+' | b'-' | b'0'..=b'9') => p.offset()?,
            _ => std_offset + 3600,
        };
        let (start, end) = if p.done() {
            let us = |month, week| Rule {
                date: DateRule::MonthWeekDay {
                    month,
                    week,
                    weekday: 0,
                },
                time: 7200,
            };
            (us(3, 2), us(11, 1))
        } else {
            p.expect(b',', "expected `,` and the daylight-saving start rule")?;
            let start = p.rule()?;
            p.expect(b',', "expected `,` and the daylight-saving end rule")?;
            let end = p.rule()?;
            if !p.done() {
                return Err(p.error("unexpected text after the end rule"));
            }
            (start, end)
        };
        Ok(TimeZone {
            std_name,
            std_offset,
            dst: Some(Dst {
                name: dst_name,
                offset: dst_offset,
                start,
                end,
            }),
        })
    }

    /// The offset and daylight-saving state at `now`.
    pub fn offset_at(&self, now: Timestamp) -> Offset {
        let t = millis(now).div_euclid(1000);
        let (seconds, is_dst) = offset_in(&self.segments_near(t), t);
        Offset { seconds, is_dst }
    }

    /// The zone's abbreviation at `now` (`CET`, `CEST`, `+0530`).
    pub fn abbreviation(&self, now: Timestamp) -> &str {
        match &self.dst {
            Some(dst) if self.offset_at(now).is_dst => &dst.name,
            _ => &self.std_name,
        }
    }

    /// The local date and time at `now`.
    pub fn local_time(&self, now: Timestamp) -> LocalDateTime {
        let Offset { seconds, is_dst } = self.offset_at(now);
        let local = millis(now).div_euclid(1000) + i64::from(seconds);
        let (days, secs) = (local.div_euclid(DAY), local.rem_euclid(DAY));
        let (year, month, day) = civil_from_days(days);
        LocalDateTime {
            year: i32::try_from(year).unwrap_or(i32::MAX),
            month: month as u8,
            day: day as u8,
            weekday: Weekday::from_days(days),
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            offset_seconds: seconds,
            is_dst,
        }
    }

    /// The offsets in force from two years before `t` to two years after, as segments.
    pub(super) fn segments_near(&self, t: i64) -> Vec<Segment> {
        let Some(dst) = &self.dst else {
            return vec![Segment {
                from: i64::MIN,
                to: i64::MAX,
                offset: self.std_offset,
                is_dst: false,
            }];
        };
        let year = civil_from_days((t + i64::from(self.std_offset)).div_euclid(DAY)).0;
        let mut switches: Vec<(i64, bool)> = Vec::with_capacity(10);
        for y in year - 2..=year + 2 {
            // Each rule's time is local time as it reads just before the switch.
            switches.push((dst.start.instant(y, self.std_offset), true));
            switches.push((dst.end.instant(y, dst.offset), false));
        }
        // On a tie the end sorts first, so the start wins: that is how `0/0,J365/25`
        // spells daylight-saving time all year.
        crate::sort::sort(&mut switches);
        let mut segments = Vec::with_capacity(switches.len() + 1);
        let state = |is_dst: bool| if is_dst { dst.offset } else { self.std_offset };
        let mut from = i64::MIN;
        let mut is_dst = !switches[0].1;
        for &(at, to_dst) in &switches {
            segments.push(Segment {
                from,
                to: at,
                offset: state(is_dst),
                is_dst,
            });
            from = at;
            is_dst = to_dst;
        }
        segments.push(Segment {
            from,
            to: i64::MAX,
            offset: state(is_dst),
            is_dst,
        });
        segments
    }
}

/// The offset and daylight-saving state at `t` (seconds) among `segments`.
pub(super) fn offset_in(segments: &[Segment], t: i64) -> (i32, bool) {
    segments
        .iter()
        .find(|s| s.from <= t && t < s.to)
        .or(segments.last())
        .map_or((0, false), |s| (s.offset, s.is_dst))
}

/// The first instant at which the local clock reads `local` or later: in a segment with
/// offset `o` the clock reads `t + o`, so that is `local - o` if it falls in the segment,
/// or the segment's start if the clock is already past `local` there (a gap).
pub(super) fn first_reaching(segments: &[Segment], local: i64) -> i64 {
    segments
        .iter()
        .filter_map(|s| {
            let t = local.saturating_sub(i64::from(s.offset)).max(s.from);
            (t < s.to).then_some(t)
        })
        .min()
        .unwrap_or(local)
}

impl Rule {
    /// The switch in year `year`, in seconds since the epoch, for a zone whose local time
    /// just before the switch is UTC + `offset`.
    fn instant(self, year: i64, offset: i32) -> i64 {
        let jan1 = days_from_civil(year, 1, 1);
        let day = match self.date {
            DateRule::Julian1(n) => {
                let n = i64::from(n);
                jan1 + n - 1 + i64::from(is_leap(year) && n >= 60)
            }
            DateRule::Julian0(n) => jan1 + i64::from(n),
            DateRule::MonthWeekDay {
                month,
                week,
                weekday,
            } => {
                let first = days_from_civil(year, u32::from(month), 1);
                // 1970-01-01 was a Thursday (4 when Sunday is 0).
                let first_weekday = (first + 4).rem_euclid(7);
                let mut day = first
                    + (i64::from(weekday) - first_weekday).rem_euclid(7)
                    + 7 * (i64::from(week) - 1);
                if day >= first + i64::from(days_in_month(year, u32::from(month))) {
                    day -= 7;
                }
                day
            }
        };
        day * DAY + i64::from(self.time) - i64::from(offset)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at >= self.s.len()
    }

    fn error(&self, reason: &'static str) -> TzError {
        TzError {
            at: self.at,
            reason,
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), TzError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(reason))
        }
    }

    /// A zone abbreviation: three or more letters, or `<…>` around three or more letters,
    /// digits, `+` and `-`.
    fn name(&mut self) -> Result<String, TzError> {
        let quoted = self.peek() == Some(b'<');
        if quoted {
            self.at += 1;
        }
        let start = self.at;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || (quoted && (b.is_ascii_digit() || b == b'+' || b == b'-'));
            if !ok {
                break;
            }
            self.at += 1;
        }
        let name = &self.s[start..self.at];
        if quoted {
            self.expect(b'>', "expected `>` closing a quoted zone name")?;
        }
        if name.len() < 3 {
            return Err(TzError {
                at: start,
                reason: "expected a zone name of at least three letters (or `<+0530>`)",
            });
        }
        Ok(String::from_utf8_lossy(name).into_owned())
    }

    /// An offset west of UTC, `[+-]hh[:mm[:ss]]`, returned in seconds east of UTC.
    fn offset(&mut self) -> Result<i32, TzError> {
        Ok(-self.signed_hms(24, "expected an offset such as `5` or `-5:30`")?)
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, with hours up to `max_hours`.
    fn signed_hms(&mut self, max_hours: i32, reason: &'static str) -> Result<i32, TzError> {
        let sign = match self.peek() {
            Some(b'-') => {
                self.at += 1;
                -1
            }
            Some(b'+') => {
                self.at += 1;
                1
            }
            _ => 1,
        };
        let h = self.number(3, reason)?;
        if h > max_hours {
            return Err(self.error("hours out of range"));
        }
        let mut secs = h * 3600;
        for unit in [60, 1] {
            if self.peek() != Some(b':') {
                break;
            }
            self.at += 1;
            let n = self.number(2, "expected minutes or seconds after `:`")?;
            if n > 59 {
                return Err(self.error("minutes and seconds run from 0 to 59"));
            }
            secs += n * unit;
        }
        Ok(sign * secs)
    }

    /// One to `max_digits` decimal digits.
    fn number(&mut self, max_digits: usize, reason: &'static str) -> Result<i32, TzError> {
        let start = self.at;
        let mut n: i32 = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            if self.at - start == max_digits {
                return Err(self.error("too many digits"));
            }
            n = n * 10 + i32::from(b - b'0');
            self.at += 1;
        }
        if self.at == start {
            return Err(self.error(reason));
        }
        Ok(n)
    }

    /// `Mm.w.d`, `Jn` or `n`, then an optional `/time`.
    fn rule(&mut self) -> Result<Rule, TzError> {
        let date = match self.peek() {
            Some(b'M') => {
                self.at += 1;
                let month = self.number(2, "expected a month after `M`")?;
                if !(1..=12).contains(&month) {
                    return Err(self.error("months run from 1 to 12"));
                }
                self.expect(b'.', "expected `.` and a week (`M3.2.0`)")?;
                let week = self.number(1, "expected a week from 1 to 5")?;
                if !(1..=5).contains(&week) {
                    return Err(self.error("weeks run from 1 to 5 (5 is the last)"));
                }
                self.expect(b'.', "expected `.` and a weekday (`M3.2.0`)")?;
                let weekday = self.number(1, "expected a weekday from 0 (Sunday) to 6")?;
                if weekday > 6 {
                    return Err(self.error("weekdays run from 0 (Sunday) to 6"));
                }
                DateRule::MonthWeekDay {
                    month: month as u8,
                    week: week as u8,
                    weekday: weekday as u8,
                }
            }
            Some(b'J') => {
                self.at += 1;
                let n = self.number(3, "expected a day from 1 to 365 after `J`")?;
                if !(1..=365).contains(&n) {
                    return Err(self.error("`J` days run from 1 to 365"));
                }
                DateRule::Julian1(n as u16)
            }
            Some(b'0'..=b'9') => {
                let n = self.number(3, "expected a day from 0 to 365")?;
                if n > 365 {
                    return Err(self.error("days run from 0 to 365"));
                }
                DateRule::Julian0(n as u16)
            }
            _ => return Err(self.error("expected a rule: `Mm.w.d`, `Jn` or `n`")),
        };
        let time = if self.peek() == Some(b'/') {
            self.at += 1;
            self.signed_hms(167, "expected a time after `/`")?
        } else {
            7200
        };
        Ok(Rule { date, time })
    }
}

impl fmt::Display for TimeZone {
    /// The zone as a POSIX TZ string (rules spelled out, times in seconds when not whole
    /// hours).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn name(f: &mut fmt::Formatter<'_>, n: &str) -> fmt::Result {
            if n.bytes().all(|b| b.is_ascii_alphabetic()) {
                f.write_str(n)
            } else {
                write!(f, "<{n}>")
            }
        }
        fn hms(f: &mut fmt::Formatter<'_>, secs: i32) -> fmt::Result {
            if secs < 0 {
                f.write_str("-")?;
            }
            let s = secs.unsigned_abs();
            write!(f, "{}", s / 3600)?;
            if !s.is_multiple_of(3600) {
                write!(f, ":{:02}", s / 60 % 60)?;
                if !s.is_multiple_of(60) {
                    write!(f, ":{:02}", s % 60)?;
                }
            }
            Ok(())
        }
        fn rule(f: &mut fmt::Formatter<'_>, r: Rule) -> fmt::Result {
            match r.date {
                DateRule::Julian1(n) => write!(f, "J{n}")?,
                DateRule::Julian0(n) => write!(f, "{n}")?,
                DateRule::MonthWeekDay {
                    month,
                    week,
                    weekday,
                } => write!(f, "M{month}.{week}.{weekday}")?,
            }
            if r.time != 7200 {
                f.write_str("/")?;
                hms(f, r.time)?;
            }
            Ok(())
        }
        name(f, &self.std_name)?;
        hms(f, -self.std_offset)?;
        if let Some(dst) = &self.dst {
            name(f, &dst.name)?;
            if dst.offset != self.std_offset + 3600 {
                hms(f, -dst.offset)?;
            }
            f.write_str(",")?;
            rule(f, dst.start)?;
            f.write_str(",")?;
            rule(f, dst.end)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The built-in zone table
// ---------------------------------------------------------------------------------------

/// Common IANA zones and their current POSIX TZ rule, as in the footer of each zone's
/// tzdata 2025b file.
///
/// The rule is today's: history is not kept. Two footers bear a note: `Europe/Dublin`
/// keeps tzdata's rule in which Irish Standard Time (summer) is standard and winter GMT
/// counts as daylight-saving time (so `is_dst` is true in winter; offsets are the usual
/// ones); and `Africa/Casablanca` is +01 all year in its rule, while Morocco moves to +00
/// during Ramadan by decree, which no rule can say (tenants there can note it as holidays
/// or give a different zone for that month).
pub const IANA_ZONES: &[(&str, &str)] = &[
    ("UTC", "UTC0"),
    ("Etc/UTC", "UTC0"),
    ("GMT", "GMT0"),
    ("Etc/GMT", "GMT0"),
    // North America
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
    ("America/Chicago", "CST6CDT,M3.2.0,M11.1.0"),
    ("America/Denver", "MST7MDT,M3.2.0,M11.1.0"),
    ("America/Phoenix", "MST7"),
    ("America/Los_Angeles", "PST8PDT,M3.2.0,M11.1.0"),
    ("America/Anchorage", "AKST9AKDT,M3.2.0,M11.1.0"),
    ("America/Adak", "HST10HDT,M3.2.0,M11.1.0"),
    ("America/Detroit", "EST5EDT,M3.2.0,M11.1.0"),
    ("America/Indiana/Indianapolis", "EST5EDT,M3.2.0,M11.1.0"),
    ("America/Boise", "MST7MDT,M3.2.0,M11.1.0"),
    ("America/Toronto", "EST5EDT,M3.2.0,M11.1.0"),
    ("America/Vancouver", "PST8PDT,M3.2.0,M11.1.0"),
    ("America/Edmonton", "MST7MDT,M3.2.0,M11.1.0"),
    ("America/Winnipeg", "CST6CDT,M3.2.0,M11.1.0"),
    ("America/Regina", "CST6"),
    ("America/Halifax", "AST4ADT,M3.2.0,M11.1.0"),
    ("America/St_Johns", "NST3:30NDT,M3.2.0,M11.1.0"),
    ("America/Nuuk", "<-02>2<-01>,M3.5.0/-1,M10.5.0/0"),
    // Mexico, Central America and the Caribbean
    ("America/Mexico_City", "CST6"),
    ("America/Monterrey", "CST6"),
    ("America/Tijuana", "PST8PDT,M3.2.0,M11.1.0"),
    ("America/Cancun", "EST5"),
    ("America/Guatemala", "CST6"),
    ("America/Costa_Rica", "CST6"),
    ("America/El_Salvador", "CST6"),
    ("America/Panama", "EST5"),
    ("America/Havana", "CST5CDT,M3.2.0/0,M11.1.0/1"),
    ("America/Jamaica", "EST5"),
    ("America/Puerto_Rico", "AST4"),
    ("America/Santo_Domingo", "AST4"),
    // South America
    ("America/Bogota", "<-05>5"),
    ("America/Lima", "<-05>5"),
    ("America/Guayaquil", "<-05>5"),
    ("America/Caracas", "<-04>4"),
    ("America/La_Paz", "<-04>4"),
    ("America/Manaus", "<-04>4"),
    ("America/Santiago", "<-04>4<-03>,M9.1.6/24,M4.1.6/24"),
    ("America/Asuncion", "<-03>3"),
    ("America/Sao_Paulo", "<-03>3"),
    ("America/Argentina/Buenos_Aires", "<-03>3"),
    ("America/Montevideo", "<-03>3"),
    // Europe and the Atlantic
    ("Atlantic/Azores", "<-01>1<+00>,M3.5.0/0,M10.5.0/1"),
    ("Atlantic/Reykjavik", "GMT0"),
    ("Atlantic/Canary", "WET0WEST,M3.5.0/1,M10.5.0"),
    ("Europe/London", "GMT0BST,M3.5.0/1,M10.5.0"),
    ("Europe/Dublin", "IST-1GMT0,M10.5.0,M3.5.0/1"),
    ("Europe/Lisbon", "WET0WEST,M3.5.0/1,M10.5.0"),
    ("Europe/Madrid", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Paris", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Brussels", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Amsterdam", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Luxembourg", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Zurich", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Vienna", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Rome", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Stockholm", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Oslo", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Copenhagen", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Warsaw", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Prague", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Budapest", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Belgrade", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("Europe/Helsinki", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Riga", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Tallinn", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Vilnius", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Kyiv", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Bucharest", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Sofia", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Athens", "EET-2EEST,M3.5.0/3,M10.5.0/4"),
    ("Europe/Istanbul", "<+03>-3"),
    ("Europe/Minsk", "<+03>-3"),
    ("Europe/Moscow", "MSK-3"),
    // Africa
    ("Africa/Abidjan", "GMT0"),
    ("Africa/Accra", "GMT0"),
    ("Africa/Casablanca", "<+01>-1"),
    ("Africa/Algiers", "CET-1"),
    ("Africa/Tunis", "CET-1"),
    ("Africa/Lagos", "WAT-1"),
    ("Africa/Kinshasa", "WAT-1"),
    ("Africa/Cairo", "EET-2EEST,M4.5.5/0,M10.5.4/24"),
    ("Africa/Johannesburg", "SAST-2"),
    ("Africa/Maputo", "CAT-2"),
    ("Africa/Khartoum", "CAT-2"),
    ("Africa/Nairobi", "EAT-3"),
    ("Africa/Addis_Ababa", "EAT-3"),
    // Middle East and the Caucasus
    ("Asia/Jerusalem", "IST-2IDT,M3.4.4/26,M10.5.0"),
    ("Asia/Beirut", "EET-2EEST,M3.5.0/0,M10.5.0/0"),
    ("Asia/Amman", "<+03>-3"),
    ("Asia/Baghdad", "<+03>-3"),
    ("Asia/Riyadh", "<+03>-3"),
    ("Asia/Kuwait", "<+03>-3"),
    ("Asia/Qatar", "<+03>-3"),
    ("Asia/Tehran", "<+0330>-3:30"),
    ("Asia/Dubai", "<+04>-4"),
    ("Asia/Muscat", "<+04>-4"),
    ("Asia/Baku", "<+04>-4"),
    ("Asia/Tbilisi", "<+04>-4"),
    ("Asia/Yerevan", "<+04>-4"),
    // South and Central Asia
    ("Asia/Kabul", "<+0430>-4:30"),
    ("Asia/Karachi", "PKT-5"),
    ("Asia/Tashkent", "<+05>-5"),
    ("Asia/Almaty", "<+05>-5"),
    ("Asia/Kolkata", "IST-5:30"),
    ("Asia/Colombo", "<+0530>-5:30"),
    ("Asia/Kathmandu", "<+0545>-5:45"),
    ("Asia/Dhaka", "<+06>-6"),
    ("Asia/Yangon", "<+0630>-6:30"),
    // Southeast Asia
    ("Asia/Bangkok", "<+07>-7"),
    ("Asia/Ho_Chi_Minh", "<+07>-7"),
    ("Asia/Jakarta", "WIB-7"),
    ("Asia/Makassar", "WITA-8"),
    ("Asia/Singapore", "<+08>-8"),
    ("Asia/Kuala_Lumpur", "<+08>-8"),
    ("Asia/Manila", "PST-8"),
    // East Asia
    ("Asia/Shanghai", "CST-8"),
    ("Asia/Hong_Kong", "HKT-8"),
    ("Asia/Macau", "CST-8"),
    ("Asia/Taipei", "CST-8"),
    ("Asia/Ulaanbaatar", "<+08>-8"),
    ("Asia/Seoul", "KST-9"),
    ("Asia/Tokyo", "JST-9"),
    ("Asia/Vladivostok", "<+10>-10"),
    // Australia
    ("Australia/Perth", "AWST-8"),
    ("Australia/Darwin", "ACST-9:30"),
    ("Australia/Adelaide", "ACST-9:30ACDT,M10.1.0,M4.1.0/3"),
    ("Australia/Brisbane", "AEST-10"),
    ("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Melbourne", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Hobart", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    // The Pacific
    ("Pacific/Honolulu", "HST10"),
    ("Pacific/Guam", "ChST-10"),
    ("Pacific/Port_Moresby", "<+10>-10"),
    ("Pacific/Noumea", "<+11>-11"),
    ("Pacific/Fiji", "<+12>-12"),
    ("Pacific/Auckland", "NZST-12NZDT,M9.5.0,M4.1.0/3"),
    (
        "Pacific/Chatham",
        "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
    ),
    ("Pacific/Tongatapu", "<+13>-13"),
    ("Pacific/Apia", "<+13>-13"),
    ("Pacific/Kiritimati", "<+14>-14"),
];

/// Older or alternative IANA names for zones in [`IANA_ZONES`].
pub const ZONE_ALIASES: &[(&str, &str)] = &[
    ("Etc/Universal", "Etc/UTC"),
    ("Etc/Zulu", "Etc/UTC"),
    ("Zulu", "Etc/UTC"),
    ("Asia/Calcutta", "Asia/Kolkata"),
    ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
    ("Asia/Katmandu", "Asia/Kathmandu"),
    ("Asia/Rangoon", "Asia/Yangon"),
    ("Asia/Ulan_Bator", "Asia/Ulaanbaatar"),
    ("Asia/Tel_Aviv", "Asia/Jerusalem"),
    ("Europe/Kiev", "Europe/Kyiv"),
    ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("America/Godthab", "America/Nuuk"),
    ("America/Indianapolis", "America/Indiana/Indianapolis"),
    ("America/Montreal", "America/Toronto"),
    ("US/Eastern", "America/New_York"),
    ("US/Central", "America/Chicago"),
    ("US/Mountain", "America/Denver"),
    ("US/Arizona", "America/Phoenix"),
    ("US/Pacific", "America/Los_Angeles"),
    ("US/Alaska", "America/Anchorage"),
    ("US/Hawaii", "Pacific/Honolulu"),
    ("Australia/ACT", "Australia/Sydney"),
    ("Australia/NSW", "Australia/Sydney"),
    ("Australia/Victoria", "Australia/Melbourne"),
    ("Australia/Queensland", "Australia/Brisbane"),
    ("Australia/West", "Australia/Perth"),
    ("NZ", "Pacific/Auckland"),
    ("PRC", "Asia/Shanghai"),
    ("ROC", "Asia/Taipei"),
    ("ROK", "Asia/Seoul"),
    ("Japan", "Asia/Tokyo"),
    ("Singapore", "Asia/Singapore"),
    ("Hongkong", "Asia/Hong_Kong"),
    ("Brazil/East", "America/Sao_Paulo"),
    ("GB", "Europe/London"),
    ("Turkey", "Europe/Istanbul"),
    ("Iran", "Asia/Tehran"),
    ("Israel", "Asia/Jerusalem"),
    ("Egypt", "Africa/Cairo"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(s: &str) -> TimeZone {
        TimeZone::posix(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn offset(zone: &TimeZone, secs: i64) -> Offset {
        zone.offset_at(Timestamp::from_millis(secs as u64 * 1000))
    }

    #[test]
    fn parses_posix_strings() {
        let z = tz("EST5EDT,M3.2.0,M11.1.0");
        assert_eq!(z.std_offset, -5 * 3600);
        let dst = z.dst.as_ref().unwrap();
        assert_eq!((dst.name.as_str(), dst.offset), ("EDT", -4 * 3600));
        assert_eq!(tz("<+0530>-5:30").std_offset, 19_800);
        assert_eq!(tz("<+0530>-5:30").std_name, "+0530");
        assert_eq!(tz("<-03>3").std_offset, -3 * 3600);
        assert_eq!(
            tz("<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45").std_offset,
            45_900
        );
        assert_eq!(tz("XXX-1:02:03").std_offset, 3723);
        assert_eq!(tz("XXX+3").std_offset, -3 * 3600);
        // An explicit DST offset, `Jn` and `n` rules, and extended times.
        let z = tz("AAA3BBB1,J60/-1,300/30:30");
        let dst = z.dst.unwrap();
        assert_eq!(dst.offset, -3600);
        assert_eq!(
            dst.start,
            Rule {
                date: DateRule::Julian1(60),
                time: -3600
            }
        );
        assert_eq!(
            dst.end,
            Rule {
                date: DateRule::Julian0(300),
                time: 30 * 3600 + 1800
            }
        );
        // No rules: tzcode's default (the US rule).
        assert_eq!(
            tz("EST5EDT").dst.unwrap().start,
            Rule {
                date: DateRule::MonthWeekDay {
                    month: 3,
                    week: 2,
                    weekday: 0
                },
                time: 7200
            }
        );
    }

    #[test]
    fn rejects_malformed_posix_strings() {
        for bad in [
            "",
            "E",
            "ES5",
            "EST",
            "EST+",
            "EST25",
            "EST5:60",
            "EST5ED",
            "EST5EDT,",
            "EST5EDT,M3.2.0",
            "EST5EDT,M13.2.0,M11.1.0",
            "EST5EDT,M3.6.0,M11.1.0",
            "EST5EDT,M3.2.7,M11.1.0",
            "EST5EDT,J0,J365",
            "EST5EDT,366,1",
            "EST5EDT,M3.2.0/168,M11.1.0",
            "EST5EDT,M3.2.0,M11.1.0,",
            "EST5EDT,M3.2.0,M11.1.0x",
            "<+05",
            "<+0>5",
            "<+05>",
            "EST5,M3.2.0,M11.1.0",
            "EST0005",
            "Europe/Berlin",
            "时区5",
            "EST5EDT\u{0}",
        ] {
            assert!(TimeZone::posix(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A small deterministic fuzz: random bytes from an alphabet rich in TZ syntax.
        let alphabet = b"<>+-:,./JM0123456789ESTDCAB \xe6\x97\xb6";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut bytes = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(zone) = TimeZone::posix(&s) {
                for t in [0, 1_700_000_000_000, u64::MAX] {
                    let _ = zone.local_time(Timestamp::from_millis(t));
                }
            }
        }
    }

    #[test]
    fn round_trips_through_display() {
        for (name, rule) in IANA_ZONES {
            let zone = tz(rule);
            assert_eq!(tz(&zone.to_string()), zone, "{name}");
        }
    }

    #[test]
    fn dst_all_year() {
        // tzcode's spelling of permanent daylight-saving time.
        let z = tz("EST5EDT,0/0,J365/25");
        for secs in [1_767_225_600, 1_782_864_000, 1_798_761_599, 1_798_761_600] {
            assert_eq!(
                offset(&z, secs),
                Offset {
                    seconds: -4 * 3600,
                    is_dst: true
                }
            );
        }
    }

    #[test]
    fn week_five_is_the_last() {
        // The last Sunday of March 2026 is the 29th; of October, the 25th.
        let z = tz("CET-1CEST,M3.5.0,M10.5.0/3");
        let dst = z.dst.unwrap();
        assert_eq!(
            dst.start.instant(2026, 3600),
            days_from_civil(2026, 3, 29) * DAY + 3600
        );
        assert_eq!(
            dst.end.instant(2026, 7200),
            days_from_civil(2026, 10, 25) * DAY + 3600
        );
        // `J60` is always March 1; `59` is March 1 only outside leap years.
        let j = Rule {
            date: DateRule::Julian1(60),
            time: 0,
        };
        assert_eq!(j.instant(2028, 0), days_from_civil(2028, 3, 1) * DAY);
        let n = Rule {
            date: DateRule::Julian0(59),
            time: 0,
        };
        assert_eq!(n.instant(2028, 0), days_from_civil(2028, 2, 29) * DAY);
        assert_eq!(n.instant(2027, 0), days_from_civil(2027, 3, 1) * DAY);
    }
}
