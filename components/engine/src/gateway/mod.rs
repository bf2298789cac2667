//! The LLM gateway's rules: which targets a turn may try and in what order (routes), how
//! often and how long to wait between tries (retries), which targets to avoid for now
//! (circuit breakers), how much a tenant may spend (quotas, budgets, prices), and the record
//! of what happened (the trace).
//!
//! All of it is pure: time, randomness and shared state come in as arguments, and the
//! results go out as values the host stores where every request can see them (a Durable
//! Object on Workers, compare-and-swap in key-value on Spin: see [`ledger`]).

pub mod breaker;
pub mod ledger;
pub mod quota;
pub mod retry;
pub mod route;
pub mod trace;

pub use breaker::{BreakerBoard, BreakerPolicy, BreakerState};
pub use ledger::{Admission, Ledger, Report, UsageBook, UsageRow};
pub use quota::{Price, QuotaError, QuotaPolicy, QuotaState, Reservation};
pub use retry::RetryPolicy;
pub use route::{Condition, RouteContext, RouteSpec, Rule, Strategy, Target, TargetSpec};
pub use trace::{AttemptOutcome, AttemptRecord};

/// A small, fast, deterministic random source (SplitMix64). The host seeds it per turn, so
/// a turn replays exactly under the same seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_spread() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let mut r = Rng::new(1);
        let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
