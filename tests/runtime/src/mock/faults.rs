//! Which calls fail: `status`, `fail_first` and `fail_percent`, decided per profile and call.

use super::directives::Directives;

/// Default status of a `fail_percent` failure.
pub const FAIL_PERCENT_STATUS: u16 = 500;
/// Default status of a `fail_first` failure.
pub const FAIL_FIRST_STATUS: u16 = 503;

/// The status this call fails with, if it fails. `call` counts the profile's calls from 1.
pub(crate) fn failure(d: &Directives, profile: &str, call: u64) -> Option<u16> {
    if let Some(status) = d.status {
        return Some(status);
    }
    if let Some(n) = d.fail_first
        && call <= n
    {
        return Some(d.fail_status.unwrap_or(FAIL_FIRST_STATUS));
    }
    if let Some(percent) = d.fail_percent
        && roll(profile, d.seed.unwrap_or(0), call) < u64::from(percent)
    {
        return Some(d.fail_status.unwrap_or(FAIL_PERCENT_STATUS));
    }
    None
}

/// A number in `0..100`, a pure function of (profile, seed, call).
pub fn roll(profile: &str, seed: u64, call: u64) -> u64 {
    // FNV-1a over the profile, mixed with seed and call number through SplitMix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in profile.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let x = splitmix64(h ^ splitmix64(seed ^ splitmix64(call)));
    // Multiply-shift instead of `%` keeps the 100 buckets even.
    ((u128::from(x) * 100) >> 64) as u64
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Directives {
        super::super::directives::parse_profile(text).unwrap()
    }

    #[test]
    fn fail_percent_is_deterministic_and_near_its_rate() {
        let profile = "fail_percent=33,seed=7";
        let dir = d(profile);
        let run = || -> Vec<bool> {
            (1..=300)
                .map(|call| failure(&dir, profile, call).is_some())
                .collect()
        };
        let first = run();
        assert_eq!(first, run());
        let failed = first.iter().filter(|f| **f).count();
        // 33 % of 300 is 99; a binomial standard deviation is about 8.
        assert!((70..=130).contains(&failed), "{failed} of 300 failed");
        // Another seed gives another sequence.
        let other = d("fail_percent=33,seed=8");
        let second: Vec<bool> = (1..=300)
            .map(|call| failure(&other, profile, call).is_some())
            .collect();
        assert_ne!(first, second);
        assert_eq!(failure(&dir, profile, 1).unwrap_or(500), 500);
        assert!((1..=300).all(|c| failure(&d("fail_percent=0"), "p", c).is_none()));
        assert!((1..=300).all(|c| failure(&d("fail_percent=100"), "p", c) == Some(500)));
    }

    #[test]
    fn fail_first_then_succeed() {
        let dir = d("fail_first=2");
        assert_eq!(failure(&dir, "p", 1), Some(503));
        assert_eq!(failure(&dir, "p", 2), Some(503));
        assert_eq!(failure(&dir, "p", 3), None);
        assert_eq!(
            failure(&d("fail_first=1,fail_status=429"), "p", 1),
            Some(429)
        );
        assert_eq!(failure(&d("status=418,fail_first=0"), "p", 9), Some(418));
    }

    #[test]
    fn rolls_are_spread() {
        let mut buckets = [0u32; 10];
        for call in 0..10_000 {
            buckets[(roll("x", 0, call) / 10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (800..1200).contains(b)),
            "{buckets:?}"
        );
    }
}
