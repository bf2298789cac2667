//! Quotas, budgets and prices: how much a tenant may use, and what its use costs.
//!
//! Per tenant: token buckets on requests and on tokens per minute (a turn reserves its
//! estimated tokens before the call and settles with the real usage after), and daily
//! budgets on requests, tokens and cost (UTC days). The state is plain data kept by one
//! strongly consistent owner per tenant (a Durable Object on Workers; on Spin, key-value
//! changed only by compare-and-swap), so concurrent turns can never over-admit.

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::provider::Usage;
use crate::time::Timestamp;

const DAY_MS: u64 = 86_400_000;

/// A tenant's limits. Absent limits do not apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaPolicy {
    /// Model calls per minute (token bucket; bursts up to this many).
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute, prompt and reply together (token bucket).
    pub tokens_per_minute: Option<u32>,
    /// Turns per UTC day.
    pub daily_requests: Option<u64>,
    /// Tokens per UTC day.
    pub daily_tokens: Option<u64>,
    /// Spend per UTC day, in US dollars (needs `prices`).
    pub daily_cost_usd: Option<f64>,
}

impl QuotaPolicy {
    /// Whether any limit is set (without one, no reservation is needed).
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.daily_requests.is_some()
            || self.daily_tokens.is_some()
            || self.daily_cost_usd.is_some()
    }

    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        let bad = |field: &str| {
            Err(crate::error::ConfigError {
                field: format!("quotas.{field}"),
                message: "must be positive".into(),
            })
        };
        if self.requests_per_minute == Some(0) {
            return bad("requests_per_minute");
        }
        if self.tokens_per_minute == Some(0) {
            return bad("tokens_per_minute");
        }
        if self
            .daily_cost_usd
            .is_some_and(|c| c <= 0.0 || !c.is_finite())
        {
            return bad("daily_cost_usd");
        }
        Ok(())
    }
}

/// A model's price in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million reply tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of `usage`, in millionths of a dollar.
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let c = f64::from(usage.prompt_tokens) * self.input_per_mtok
            + f64::from(usage.completion_tokens) * self.output_per_mtok;
        if c.is_finite() && c > 0.0 {
            c.round() as u64
        } else {
            0
        }
    }
}

/// A token bucket: `capacity` tokens, refilled continuously at `capacity` per minute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    level: f64,
    last: Timestamp,
    primed: bool,
}

impl Bucket {
    fn refill(&mut self, now: Timestamp, capacity: f64) {
        if !self.primed {
            *self = Bucket {
                level: capacity,
                last: now,
                primed: true,
            };
            return;
        }
        let per_ms = capacity / 60_000.0;
        self.level = (self.level + now.since(self.last).as_millis() as f64 * per_ms).min(capacity);
        self.last = self.last.max(now);
    }

    /// Takes `n`, or says how long until `n` are there. A request larger than the whole
    /// bucket waits for a full bucket (it would otherwise never pass).
    pub fn take(&mut self, now: Timestamp, n: f64, capacity: f64) -> Result<(), Duration> {
        self.refill(now, capacity);
        let n = n.min(capacity);
        if self.level >= n {
            self.level -= n;
            Ok(())
        } else {
            let per_ms = capacity / 60_000.0;
            Err(Duration::from_millis(
                ((n - self.level) / per_ms).ceil() as u64
            ))
        }
    }

    fn give_back(&mut self, n: f64, capacity: f64) {
        self.level = (self.level + n).min(capacity);
    }
}

/// Which limit refused a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// `requests_per_minute`.
    RequestsPerMinute,
    /// `tokens_per_minute`.
    TokensPerMinute,
    /// `daily_requests`.
    DailyRequests,
    /// `daily_tokens`.
    DailyTokens,
    /// `daily_cost_usd`.
    DailyCost,
}

/// A turn refused by a quota: answer 429 with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the tenant's {limit:?} quota is used up; retry after {retry_after:?}")]
pub struct QuotaError {
    /// Which limit.
    pub limit: Limit,
    /// When a retry may pass.
    pub retry_after: Duration,
}

impl QuotaError {
    /// The `Retry-After` header's value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        u64::try_from(self.retry_after.as_millis().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What a turn reserved, to settle after the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Tokens reserved.
    pub tokens: u64,
    /// The UTC day the reservation counts against.
    pub day: u64,
}

/// A tenant's quota state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaState {
    requests: Bucket,
    tokens: Bucket,
    day: u64,
    day_requests: u64,
    day_tokens: u64,
    day_cost_micros: u64,
}

impl QuotaState {
    fn roll_day(&mut self, now: Timestamp) {
        let day = now.as_millis() / DAY_MS;
        if day != self.day {
            self.day = day;
            self.day_requests = 0;
            self.day_tokens = 0;
            self.day_cost_micros = 0;
        }
    }

    fn until_tomorrow(now: Timestamp) -> Duration {
        Duration::from_millis(DAY_MS - now.as_millis() % DAY_MS)
    }

    /// Reserves one call of up to `tokens` tokens, or refuses with the limit and a wait.
    /// A refusal changes nothing.
    pub fn reserve(
        &mut self,
        now: Timestamp,
        policy: &QuotaPolicy,
        tokens: u64,
    ) -> Result<Reservation, QuotaError> {
        self.roll_day(now);
        let refuse = |limit, retry_after| Err(QuotaError { limit, retry_after });
        if policy
            .daily_requests
            .is_some_and(|max| self.day_requests >= max)
        {
            return refuse(Limit::DailyRequests, Self::until_tomorrow(now));
        }
        if policy
            .daily_tokens
            .is_some_and(|max| self.day_tokens >= max)
        {
            return refuse(Limit::DailyTokens, Self::until_tomorrow(now));
        }
        if policy
            .daily_cost_usd
            .is_some_and(|max| self.day_cost_micros as f64 >= max * 1e6)
        {
            return refuse(Limit::DailyCost, Self::until_tomorrow(now));
        }
        let before = self.clone();
        if let Some(rpm) = policy.requests_per_minute
            && let Err(wait) = self.requests.take(now, 1.0, f64::from(rpm))
        {
            *self = before;
            return refuse(Limit::RequestsPerMinute, wait);
        }
        if let Some(tpm) = policy.tokens_per_minute
            && let Err(wait) = self.tokens.take(now, tokens as f64, f64::from(tpm))
        {
            *self = before;
            return refuse(Limit::TokensPerMinute, wait);
        }
        self.day_requests += 1;
        self.day_tokens += tokens;
        Ok(Reservation {
            tokens,
            day: self.day,
        })
    }

    /// Settles a reservation with what the call really used (`None`: it used nothing, e.g.
    /// every attempt failed before the provider counted tokens).
    pub fn settle(
        &mut self,
        now: Timestamp,
        policy: &QuotaPolicy,
        reservation: Reservation,
        used_tokens: Option<u64>,
        cost_micros: u64,
    ) {
        self.roll_day(now);
        let used = used_tokens.unwrap_or(0);
        if reservation.day == self.day {
            self.day_tokens = self.day_tokens.saturating_sub(reservation.tokens) + used;
            self.day_cost_micros += cost_micros;
        }
        if let Some(tpm) = policy.tokens_per_minute {
            let cap = f64::from(tpm);
            self.tokens.refill(now, cap);
            // Refund the unused reservation, or run into debt for an overrun: the next
            // turns wait for it.
            let diff = reservation.tokens.min(tpm.into()) as f64 - used as f64;
            if diff >= 0.0 {
                self.tokens.give_back(diff, cap);
            } else {
                self.tokens.level += diff;
            }
        }
    }

    /// Today's totals: (requests, tokens, cost in micro-dollars).
    pub fn today(&self) -> (u64, u64, u64) {
        (self.day_requests, self.day_tokens, self.day_cost_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_795_593_600_000 + ms)
    }

    #[test]
    fn request_bucket_admits_a_burst_then_refills() {
        let p = QuotaPolicy {
            requests_per_minute: Some(60),
            ..QuotaPolicy::default()
        };
        let mut q = QuotaState::default();
        for _ in 0..60 {
            q.reserve(t(0), &p, 10).unwrap();
        }
        let e = q.reserve(t(0), &p, 10).unwrap_err();
        assert_eq!(e.limit, Limit::RequestsPerMinute);
        assert_eq!(e.retry_after, Duration::from_secs(1));
        assert_eq!(e.retry_after_secs(), 1);
        // One per second comes back.
        q.reserve(t(1000), &p, 10).unwrap();
        assert!(q.reserve(t(1000), &p, 10).is_err());
    }

    #[test]
    fn token_reservations_settle_to_real_usage() {
        let p = QuotaPolicy {
            tokens_per_minute: Some(1000),
            ..QuotaPolicy::default()
        };
        let mut q = QuotaState::default();
        let r = q.reserve(t(0), &p, 800).unwrap();
        assert_eq!(
            q.reserve(t(0), &p, 800).unwrap_err().limit,
            Limit::TokensPerMinute
        );
        // The call used only 100: 700 come back.
        q.settle(t(0), &p, r, Some(100), 0);
        q.reserve(t(0), &p, 800).unwrap();
        // An overrun is debt.
        let mut q = QuotaState::default();
        let r = q.reserve(t(0), &p, 100).unwrap();
        q.settle(t(0), &p, r, Some(1000), 0);
        let e = q.reserve(t(0), &p, 100).unwrap_err();
        // 900 tokens of debt at 1000 a minute: 100 more need 6 s.
        assert_eq!(e.retry_after, Duration::from_millis(6_000));
    }

    #[test]
    fn daily_budgets_reset_at_utc_midnight() {
        let p = QuotaPolicy {
            daily_requests: Some(2),
            daily_cost_usd: Some(0.01),
            ..QuotaPolicy::default()
        };
        let mut q = QuotaState::default();
        q.reserve(t(0), &p, 1).unwrap();
        q.reserve(t(0), &p, 1).unwrap();
        let e = q.reserve(t(5), &p, 1).unwrap_err();
        assert_eq!(e.limit, Limit::DailyRequests);
        // t(0) is 08:00 UTC: the budget comes back at midnight.
        assert_eq!(
            e.retry_after,
            Duration::from_millis(DAY_MS - t(5).as_millis() % DAY_MS)
        );
        assert_eq!(e.retry_after, Duration::from_millis(16 * 3_600_000 - 5));
        let tomorrow = t(DAY_MS);
        let r = q.reserve(tomorrow, &p, 1).unwrap();
        q.settle(tomorrow, &p, r, Some(10), 10_000);
        assert_eq!(
            q.reserve(tomorrow, &p, 1).unwrap_err().limit,
            Limit::DailyCost
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let p = QuotaPolicy {
            requests_per_minute: Some(5),
            tokens_per_minute: Some(100),
            ..QuotaPolicy::default()
        };
        let mut q = QuotaState::default();
        q.reserve(t(0), &p, 90).unwrap();
        let before = q.clone();
        assert!(q.reserve(t(0), &p, 50).is_err());
        assert_eq!(q, before);
    }

    #[test]
    fn prices() {
        let p = Price {
            input_per_mtok: 0.15,
            output_per_mtok: 0.6,
        };
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000,
            total_tokens: 1_001_000,
        };
        assert_eq!(p.cost_micros(&u), 150_000 + 600);
    }
}
