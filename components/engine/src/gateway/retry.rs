//! Retries and fallback: what to do after a failed attempt, and how long to wait.
//!
//! Before the first token, a failure is recoverable: the turn retries the same target
//! (with exponential backoff and jitter, or after the provider's `Retry-After` when that is
//! short enough) or falls back to the next target. After the first token of a streamed reply
//! the visitor has already seen text, so the turn ends with an explicit error instead.

use core::time::Duration;

use serde::{Deserialize, Serialize};

use super::Rng;
use crate::provider::ProviderError;

/// How a tenant's turns retry and fall back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Tries per target, the first included.
    pub attempts_per_target: u32,
    /// Tries per turn across all targets.
    pub max_attempts: u32,
    /// The first backoff delay.
    pub base_delay_ms: u32,
    /// The longest backoff delay.
    pub max_delay_ms: u32,
    /// The longest `Retry-After` the turn waits for; a longer one sends it to the next
    /// target instead.
    pub max_retry_after_ms: u32,
    /// Other HTTP statuses (besides 408, 409, 429 and 5xx, which always do) that send the
    /// turn to the next target.
    pub fallback_statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_per_target: 2,
            max_attempts: 6,
            base_delay_ms: 250,
            max_delay_ms: 4_000,
            max_retry_after_ms: 5_000,
            fallback_statuses: Vec::new(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Try the same target again after this long.
    Retry(Duration),
    /// Move to the next target.
    Fallback,
    /// Move to a target with a larger context window, or trim the history.
    ShrinkContext,
    /// Give up: no other target would do better.
    Stop,
}

impl RetryPolicy {
    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        let bad = |field: &str, message: &str| {
            Err(crate::error::ConfigError {
                field: format!("retry.{field}"),
                message: message.into(),
            })
        };
        if self.attempts_per_target == 0 {
            return bad("attempts_per_target", "must be at least 1");
        }
        if self.max_attempts == 0 || self.max_attempts > 20 {
            return bad("max_attempts", "must be between 1 and 20");
        }
        if self.base_delay_ms > self.max_delay_ms {
            return bad("base_delay_ms", "must not exceed max_delay_ms");
        }
        Ok(())
    }

    /// The backoff before retry number `retry` (1 for the first retry): exponential, capped,
    /// with "equal jitter" (half fixed, half random) so retries from many turns spread out.
    pub fn backoff(&self, retry: u32, rng: &mut Rng) -> Duration {
        let exp =
            u64::from(self.base_delay_ms).saturating_mul(1u64 << retry.saturating_sub(1).min(20));
        let capped = exp.min(u64::from(self.max_delay_ms));
        let half = capped / 2;
        let jitter = if half == 0 {
            0
        } else {
            rng.next_u64() % (half + 1)
        };
        Duration::from_millis(half + jitter)
    }

    /// Decides what follows `error` on a target that has had `tries` attempts.
    pub fn dispose(&self, error: &ProviderError, tries: u32, rng: &mut Rng) -> Disposition {
        let may_retry = tries < self.attempts_per_target;
        match error {
            ProviderError::RateLimited { retry_after, .. } => match retry_after {
                Some(d)
                    if may_retry && *d <= Duration::from_millis(self.max_retry_after_ms.into()) =>
                {
                    Disposition::Retry(*d)
                }
                None if may_retry => Disposition::Retry(self.backoff(tries, rng)),
                _ => Disposition::Fallback,
            },
            ProviderError::Overloaded { .. }
            | ProviderError::Upstream { .. }
            | ProviderError::Unreachable { .. }
            | ProviderError::StreamInterrupted { .. }
            | ProviderError::Malformed { .. } => {
                if may_retry {
                    Disposition::Retry(self.backoff(tries, rng))
                } else {
                    Disposition::Fallback
                }
            }
            // A slow target is likely to stay slow: spend the time on the next one.
            ProviderError::Timeout { .. } => Disposition::Fallback,
            // Another target has another key.
            ProviderError::Auth { .. } => Disposition::Fallback,
            ProviderError::BadRequest { status, .. } => {
                if matches!(status, 408 | 409) || self.fallback_statuses.contains(status) {
                    Disposition::Fallback
                } else {
                    Disposition::Stop
                }
            }
            ProviderError::ContextTooLong { .. } => Disposition::ShrinkContext,
            // Shopping for a less careful model is not a fallback.
            ProviderError::ContentFiltered { .. } => Disposition::Stop,
            #[allow(unreachable_patterns)]
            _ => Disposition::Fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::TimeoutPhase;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            base_delay_ms: 100,
            max_delay_ms: 1000,
            ..RetryPolicy::default()
        };
        let mut rng = Rng::new(3);
        for retry in 1..8 {
            let full = (100u64 << (retry - 1)).min(1000);
            for _ in 0..50 {
                let d = p.backoff(retry, &mut rng).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&d),
                    "retry {retry}: {d} not in {}..={full}",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn dispositions() {
        let p = RetryPolicy::default();
        let mut rng = Rng::new(1);
        let rl = |secs| ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
            message: String::new(),
        };
        assert_eq!(
            p.dispose(&rl(1), 1, &mut rng),
            Disposition::Retry(Duration::from_secs(1))
        );
        assert_eq!(p.dispose(&rl(60), 1, &mut rng), Disposition::Fallback);
        assert_eq!(p.dispose(&rl(1), 2, &mut rng), Disposition::Fallback);
        let e500 = ProviderError::Upstream {
            status: 500,
            message: String::new(),
        };
        assert!(matches!(
            p.dispose(&e500, 1, &mut rng),
            Disposition::Retry(_)
        ));
        assert_eq!(p.dispose(&e500, 2, &mut rng), Disposition::Fallback);
        assert_eq!(
            p.dispose(
                &ProviderError::Timeout {
                    phase: TimeoutPhase::FirstToken
                },
                1,
                &mut rng
            ),
            Disposition::Fallback
        );
        assert_eq!(
            p.dispose(
                &ProviderError::BadRequest {
                    status: 400,
                    message: String::new()
                },
                1,
                &mut rng
            ),
            Disposition::Stop
        );
        assert_eq!(
            p.dispose(
                &ProviderError::ContextTooLong {
                    message: String::new()
                },
                1,
                &mut rng
            ),
            Disposition::ShrinkContext
        );
        assert_eq!(
            p.dispose(
                &ProviderError::ContentFiltered {
                    message: String::new()
                },
                1,
                &mut rng
            ),
            Disposition::Stop
        );
    }
}
