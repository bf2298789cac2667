//! Circuit breakers: stop sending turns to a target that keeps failing, then probe it.
//!
//! Each target (`provider/model`) has a breaker. **Closed**, it lets every attempt through
//! and remembers recent outcomes; it **opens** after `consecutive_failures` failures in a
//! row, or when at least `min_requests` of the last `window` outcomes are known and the
//! failure share reaches `failure_rate`. **Open**, it refuses attempts until `cooldown_ms`
//! passed, then lets exactly one probe through (**half-open**): the probe's success closes
//! it, a failure opens it again. The board is plain data, shared by storing it where every
//! request sees it (the tenant's gateway Durable Object on Workers, a compare-and-swapped
//! key-value document on Spin).

use std::collections::BTreeMap;

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// When breakers open and how long they stay open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Failure share over the window that opens the breaker.
    pub failure_rate: f64,
    /// How many recent outcomes the rate looks at (at most 64).
    pub window: u32,
    /// Outcomes needed before the rate counts.
    pub min_requests: u32,
    /// How long an open breaker refuses attempts.
    pub cooldown_ms: u32,
    /// How long a half-open probe may take before another may go.
    pub probe_timeout_ms: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_requests: 10,
            cooldown_ms: 30_000,
            probe_timeout_ms: 60_000,
        }
    }
}

impl BreakerPolicy {
    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        let bad = |field: &str, message: &str| {
            Err(crate::error::ConfigError {
                field: format!("breaker.{field}"),
                message: message.into(),
            })
        };
        if self.consecutive_failures == 0 {
            return bad("consecutive_failures", "must be at least 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return bad("failure_rate", "must be in (0, 1]");
        }
        if !(1..=64).contains(&self.window) {
            return bad("window", "must be between 1 and 64");
        }
        if self.min_requests == 0 || self.min_requests > self.window {
            return bad("min_requests", "must be between 1 and window");
        }
        Ok(())
    }
}

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Attempts go through.
    Closed,
    /// Attempts are refused until the time given.
    Open {
        /// When a probe may go.
        until: Timestamp,
    },
    /// One probe is out; others are refused until it reports or its time runs out.
    HalfOpen {
        /// When another probe may go if this one never reports.
        probe_until: Timestamp,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Breaker {
    state: BreakerState,
    /// Recent outcomes, newest in bit 0 (1 = failure).
    recent: u64,
    /// How many bits of `recent` are known.
    known: u32,
    consecutive: u32,
    /// Times it opened, for the trace and operators.
    opened: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            recent: 0,
            known: 0,
            consecutive: 0,
            opened: 0,
        }
    }
}

/// Every target's breaker, by target key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerBoard {
    breakers: BTreeMap<String, Breaker>,
}

/// A change worth logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The breaker opened.
    Opened,
    /// A probe succeeded and the breaker closed.
    Closed,
}

impl BreakerBoard {
    /// The breaker's state as of `now`.
    pub fn state(&self, key: &str) -> BreakerState {
        self.breakers
            .get(key)
            .map_or(BreakerState::Closed, |b| b.state)
    }

    /// Whether an attempt on `key` may go at `now`, without claiming anything.
    pub fn allows(&self, now: Timestamp, key: &str) -> bool {
        match self.state(key) {
            BreakerState::Closed => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen { probe_until } => now >= probe_until,
        }
    }

    /// Admits an attempt on `key` at `now`: always when closed; when the cool-down is over,
    /// as the one probe (the breaker goes half-open, so concurrent turns are refused).
    pub fn admit(&mut self, now: Timestamp, key: &str, policy: &BreakerPolicy) -> bool {
        if !self.allows(now, key) {
            return false;
        }
        let b = self.breakers.entry(key.to_owned()).or_default();
        if b.state != BreakerState::Closed {
            b.state = BreakerState::HalfOpen {
                probe_until: now + Duration::from_millis(policy.probe_timeout_ms.into()),
            };
        }
        true
    }

    /// Records an attempt's outcome.
    pub fn record(
        &mut self,
        now: Timestamp,
        key: &str,
        success: bool,
        policy: &BreakerPolicy,
    ) -> Option<Transition> {
        let b = self.breakers.entry(key.to_owned()).or_default();
        let window_mask = if policy.window >= 64 {
            u64::MAX
        } else {
            (1u64 << policy.window) - 1
        };
        b.recent = ((b.recent << 1) | u64::from(!success)) & window_mask;
        b.known = (b.known + 1).min(policy.window);
        b.consecutive = if success { 0 } else { b.consecutive + 1 };
        let open = |b: &mut Breaker| {
            b.state = BreakerState::Open {
                until: now + Duration::from_millis(policy.cooldown_ms.into()),
            };
            b.opened += 1;
            Some(Transition::Opened)
        };
        match (b.state, success) {
            (BreakerState::HalfOpen { .. } | BreakerState::Open { .. }, true) => {
                // The probe (or a straggler from before the breaker opened) succeeded.
                *b = Breaker {
                    opened: b.opened,
                    ..Breaker::default()
                };
                Some(Transition::Closed)
            }
            (BreakerState::HalfOpen { .. }, false) => open(b),
            (BreakerState::Open { .. }, false) => None,
            (BreakerState::Closed, true) => None,
            (BreakerState::Closed, false) => {
                let failures = b.recent.count_ones();
                let rate_trips = b.known >= policy.min_requests
                    && f64::from(failures) / f64::from(b.known) >= policy.failure_rate;
                if b.consecutive >= policy.consecutive_failures || rate_trips {
                    open(b)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let p = BreakerPolicy {
            consecutive_failures: 3,
            cooldown_ms: 1000,
            ..BreakerPolicy::default()
        };
        let mut board = BreakerBoard::default();
        assert_eq!(board.record(t(0), "a/m", false, &p), None);
        assert_eq!(board.record(t(1), "a/m", false, &p), None);
        assert_eq!(
            board.record(t(2), "a/m", false, &p),
            Some(Transition::Opened)
        );
        assert!(!board.allows(t(500), "a/m"));
        assert!(!board.admit(t(999), "a/m", &p));
        // Cool-down over: exactly one probe goes.
        assert!(board.admit(t(1002), "a/m", &p));
        assert!(matches!(board.state("a/m"), BreakerState::HalfOpen { .. }));
        assert!(!board.admit(t(1003), "a/m", &p));
        assert_eq!(
            board.record(t(1100), "a/m", true, &p),
            Some(Transition::Closed)
        );
        assert!(board.admit(t(1101), "a/m", &p));
        assert_eq!(board.state("a/m"), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens() {
        let p = BreakerPolicy {
            consecutive_failures: 1,
            cooldown_ms: 100,
            ..BreakerPolicy::default()
        };
        let mut board = BreakerBoard::default();
        board.record(t(0), "k", false, &p);
        assert!(board.admit(t(100), "k", &p));
        assert_eq!(
            board.record(t(150), "k", false, &p),
            Some(Transition::Opened)
        );
        assert_eq!(board.state("k"), BreakerState::Open { until: t(250) });
    }

    #[test]
    fn a_lost_probe_times_out() {
        let p = BreakerPolicy {
            consecutive_failures: 1,
            cooldown_ms: 100,
            probe_timeout_ms: 500,
            ..BreakerPolicy::default()
        };
        let mut board = BreakerBoard::default();
        board.record(t(0), "k", false, &p);
        assert!(board.admit(t(100), "k", &p));
        assert!(!board.admit(t(599), "k", &p));
        assert!(board.admit(t(600), "k", &p));
    }

    #[test]
    fn opens_on_failure_rate_with_enough_samples() {
        let p = BreakerPolicy {
            consecutive_failures: 100,
            failure_rate: 0.5,
            window: 10,
            min_requests: 10,
            ..BreakerPolicy::default()
        };
        let mut board = BreakerBoard::default();
        let mut opened = None;
        // Alternate: 50 % failures, never more than one in a row.
        for i in 0..10 {
            if let Some(tr) = board.record(t(i), "k", i % 2 == 0, &p) {
                opened = Some((i, tr));
            }
        }
        assert_eq!(opened, Some((9, Transition::Opened)));
        // A healthy target with a few failures stays closed.
        let mut board = BreakerBoard::default();
        for i in 0..100 {
            assert_eq!(board.record(t(i), "k", i % 5 != 0, &p), None);
        }
    }
}
