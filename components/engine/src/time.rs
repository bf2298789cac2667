//! Time as the engine sees it: a number the host hands in.
//!
//! The engine never reads a clock. Every entry point takes `now: Timestamp`, and deadlines
//! go out as timestamps the host must wake it at (`poll_timeout`). That keeps every run
//! replayable: the simulator feeds a fake clock, the hosts feed `Date.now()`.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T08:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }

    /// Parses RFC 3339 (`2026-11-25T08:00:00.123Z`, or with an offset); `None` when
    /// malformed or before the epoch.
    pub fn from_rfc3339(s: &str) -> Option<Self> {
        crate::provider::parse_rfc3339(s)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Self)
    }
}

/// `t + d`, saturating at the far future.
impl core::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`: exact for every day a `u64` of milliseconds reaches.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        // 2026-11-25T08:00:00.123Z
        assert_eq!(
            Timestamp::from_millis(1_795_593_600_123).to_rfc3339(),
            "2026-11-25T08:00:00.123Z"
        );
        // A leap day.
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        let t = Timestamp::from_millis(1_795_593_600_123);
        assert_eq!(Timestamp::from_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::from_rfc3339("1969-12-31T23:59:59.000Z"), None);
        assert_eq!(Timestamp::from_rfc3339("yesterday"), None);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1000);
        assert_eq!((t + Duration::from_millis(500)).as_millis(), 1500);
        assert_eq!(t.since(Timestamp::from_millis(2000)), Duration::ZERO);
        assert_eq!(
            (Timestamp::from_millis(u64::MAX) + Duration::from_secs(1)).as_millis(),
            u64::MAX
        );
    }
}
