//! One tenant's shared gateway state — its circuit breakers and quota counters — and the two
//! steps every model turn takes on it: **admit** before the call (reserve quota, learn which
//! targets the breakers refuse, claim a half-open probe) and **settle** after it (breaker
//! outcomes, real token usage, cost). Plus the usage totals per UTC day, route and target,
//! and the JSON `GET /api/v1/usage` answers.
//!
//! Pure, like the rest of the gateway: the host loads the [`Ledger`], calls a step with the
//! time, and stores the result where every request sees it — in one read-modify-write step
//! (a Durable Object's synchronous code on Workers, a compare-and-swap in Spin's key-value).
//! A step that refuses changes nothing, so a host may skip the write.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::breaker::Transition;
use super::{
    AttemptRecord, BreakerBoard, BreakerPolicy, BreakerState, QuotaError, QuotaPolicy, QuotaState,
    Reservation,
};
use crate::time::Timestamp;

const DAY_MS: u64 = 86_400_000;

/// The UTC day (days since the Unix epoch) `now` falls on, as usage rows count it.
pub fn day_of(now: Timestamp) -> u64 {
    now.as_millis() / DAY_MS
}

/// A tenant's breakers and quota counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Every target's breaker.
    pub breakers: BreakerBoard,
    /// The quota buckets and today's counters.
    pub quota: QuotaState,
}

/// What a turn was granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// The targets the breakers refuse now: the turn plans its route without them.
    pub blocked: BTreeSet<String>,
    /// The quota reserved, to settle after the call (`None` without limits).
    pub reservation: Option<Reservation>,
}

impl Ledger {
    /// Admits a turn that may try `keys` (its targets) and is estimated at `tokens`: reserves
    /// quota when `quotas` limits anything — a refusal changes nothing — then asks each
    /// target's breaker, which lets exactly one turn probe a target whose cool-down is over.
    pub fn admit(
        &mut self,
        now: Timestamp,
        quotas: &QuotaPolicy,
        breaker: &BreakerPolicy,
        keys: &[String],
        tokens: u64,
    ) -> Result<Admission, QuotaError> {
        let reservation = if quotas.is_limited() {
            Some(self.quota.reserve(now, quotas, tokens)?)
        } else {
            None
        };
        let blocked = keys
            .iter()
            .filter(|k| !self.breakers.admit(now, k, breaker))
            .cloned()
            .collect();
        Ok(Admission {
            blocked,
            reservation,
        })
    }

    /// Settles a finished turn: every breaker hears its outcomes, and the reservation is
    /// trued up to the real usage. Returns the breakers that changed state, for the log.
    pub fn settle(&mut self, now: Timestamp, report: &Report) -> Vec<(String, Transition)> {
        let mut changes = Vec::new();
        for (key, ok) in &report.signals {
            if let Some(change) = self.breakers.record(now, key, *ok, &report.breaker) {
                changes.push((key.clone(), change));
            }
        }
        if let Some(r) = report.reservation {
            self.quota.settle(
                now,
                &report.quotas,
                r,
                Some(report.used_tokens),
                report.cost_micros,
            );
        }
        changes
    }
}

impl BreakerBoard {
    /// The targets among `keys` this board refuses at `now`, decided without claiming
    /// anything — or `None` when some breaker is due for its half-open probe, which only the
    /// ledger's owner may hand out ([`Ledger::admit`]). Lets a host that holds a recent copy
    /// of the board skip asking the owner while every breaker is closed or still cooling.
    pub fn verdicts(&self, now: Timestamp, keys: &[String]) -> Option<BTreeSet<String>> {
        let mut blocked = BTreeSet::new();
        for k in keys {
            match (self.state(k) == BreakerState::Closed, self.allows(now, k)) {
                (true, _) => {}
                (false, false) => {
                    blocked.insert(k.clone());
                }
                (false, true) => return None,
            }
        }
        Some(blocked)
    }
}

/// One line of usage: what a turn's attempts on one target of one route used (or, once
/// merged, several turns').
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The route that chose the target.
    pub route: String,
    /// `provider/model`.
    pub target: String,
    /// Attempts this row sums.
    pub requests: u64,
    /// Prompt tokens the providers reported.
    pub prompt_tokens: u64,
    /// Reply tokens the providers reported.
    pub completion_tokens: u64,
    /// Cost in millionths of a dollar (0 without a price).
    pub cost_micros: u64,
}

impl UsageRow {
    fn add(&mut self, other: &UsageRow) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_micros += other.cost_micros;
    }
}

/// Adds `row` to the row of the same route and target in `rows`, or appends it.
pub fn add_usage(rows: &mut Vec<UsageRow>, row: &UsageRow) {
    match rows
        .iter_mut()
        .find(|r| r.route == row.route && r.target == row.target)
    {
        Some(r) => r.add(row),
        None => rows.push(row.clone()),
    }
}

/// What a host reports after a turn: the policies in force, the reservation to settle, each
/// attempt's breaker signal, the tokens and cost used, and a usage row per attempt that
/// reached a provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The tenant's breaker policy.
    pub breaker: BreakerPolicy,
    /// The tenant's quotas.
    pub quotas: QuotaPolicy,
    /// What [`Ledger::admit`] reserved.
    pub reservation: Option<Reservation>,
    /// `(target, success)` per attempt that says something about its target.
    pub signals: Vec<(String, bool)>,
    /// Tokens used, all attempts together.
    pub used_tokens: u64,
    /// Cost in millionths of a dollar, all attempts together.
    pub cost_micros: u64,
    /// Usage per attempt that reached a provider.
    pub usage: Vec<UsageRow>,
}

impl Report {
    /// The report of a turn with this trace.
    pub fn new(
        breaker: &BreakerPolicy,
        quotas: &QuotaPolicy,
        reservation: Option<Reservation>,
        trace: &[AttemptRecord],
    ) -> Self {
        Self {
            breaker: breaker.clone(),
            quotas: quotas.clone(),
            reservation,
            signals: trace
                .iter()
                .filter_map(|a| a.breaker_signal().map(|ok| (a.target.clone(), ok)))
                .collect(),
            used_tokens: trace
                .iter()
                .filter_map(|a| a.usage)
                .map(|u| u64::from(u.total_tokens))
                .sum(),
            cost_micros: trace.iter().filter_map(|a| a.cost_micros).sum(),
            usage: trace
                .iter()
                .filter(|a| a.status.is_some())
                .map(|a| UsageRow {
                    route: a.route.clone(),
                    target: a.target.clone(),
                    requests: 1,
                    prompt_tokens: a.usage.map_or(0, |u| u64::from(u.prompt_tokens)),
                    completion_tokens: a.usage.map_or(0, |u| u64::from(u.completion_tokens)),
                    cost_micros: a.cost_micros.unwrap_or(0),
                })
                .collect(),
        }
    }

    /// Whether there is nothing to report (no call reached a provider, nothing reserved).
    pub fn is_empty(&self) -> bool {
        self.signals.is_empty() && self.usage.is_empty() && self.reservation.is_none()
    }

    /// Takes `more`'s signals and usage (rows of one route and target summed) and its
    /// policies, the newer ones; the reservation, tokens and cost stay this report's.
    pub fn merge(&mut self, more: Report) {
        self.breaker = more.breaker;
        self.quotas = more.quotas;
        self.signals.extend(more.signals);
        for row in &more.usage {
            add_usage(&mut self.usage, row);
        }
    }
}

/// Usage totals per UTC day, route and target: what a host without SQL keeps (Spin's
/// key-value), bounded to the newest [`UsageBook::KEEP_DAYS`] days.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageBook {
    /// `(day, rows)`, oldest day first.
    days: Vec<(u64, Vec<UsageRow>)>,
}

impl UsageBook {
    /// How many days of usage are kept (older ones are dropped as new days come).
    pub const KEEP_DAYS: usize = 400;

    /// Adds a turn's rows to `day`'s totals.
    pub fn add(&mut self, day: u64, rows: &[UsageRow]) {
        if rows.is_empty() {
            return;
        }
        let i = match self.days.binary_search_by_key(&day, |(d, _)| *d) {
            Ok(i) => i,
            Err(i) => {
                self.days.insert(i, (day, Vec::new()));
                i
            }
        };
        for row in rows {
            add_usage(&mut self.days[i].1, row);
        }
        if self.days.len() > Self::KEEP_DAYS {
            let extra = self.days.len() - Self::KEEP_DAYS;
            self.days.drain(..extra);
        }
    }

    /// Every row with its day, by day, route and target.
    pub fn rows(&self) -> Vec<(u64, UsageRow)> {
        let mut out: Vec<(u64, UsageRow)> = self
            .days
            .iter()
            .flat_map(|(d, rows)| rows.iter().map(move |r| (*d, r.clone())))
            .collect();
        crate::sort::sort_by(&mut out, |a, b| {
            (a.0, &a.1.route, &a.1.target).cmp(&(b.0, &b.1.route, &b.1.target))
        });
        out
    }
}

/// `GET /api/v1/usage`'s answer: `{"usage": [{day, route, target, requests, prompt_tokens,
/// completion_tokens, cost_micros}], "today": {requests, tokens, cost_micros}}`, rows by
/// day, route and target; `today` is [`QuotaState::today`].
pub fn usage_json(rows: &[(u64, UsageRow)], quota: &QuotaState) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(day, r)| {
            let date = Timestamp::from_millis(day * DAY_MS).to_rfc3339();
            json!({
                "day": date.get(..10).unwrap_or_default(),
                "route": r.route, "target": r.target, "requests": r.requests,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "cost_micros": r.cost_micros,
            })
        })
        .collect();
    let (requests, tokens, cost) = quota.today();
    json!({"usage": rows, "today": {"requests": requests, "tokens": tokens, "cost_micros": cost}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::AttemptOutcome;
    use crate::gateway::quota::Limit;
    use crate::provider::Usage;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_795_593_600_000 + ms)
    }

    fn attempt(target: &str, ok: bool, tokens: Option<(u32, u32)>) -> AttemptRecord {
        AttemptRecord {
            target: target.into(),
            route: "default".into(),
            started_ms: 0,
            status: Some(if ok { 200 } else { 500 }),
            latency_ms: 1,
            ttft_ms: None,
            usage: tokens.map(|(p, c)| Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: p + c,
            }),
            cost_micros: tokens.map(|_| 7),
            outcome: if ok {
                AttemptOutcome::Success
            } else {
                AttemptOutcome::Failure {
                    code: "provider_error".into(),
                    message: "500".into(),
                    next: "fallback".into(),
                }
            },
        }
    }

    #[test]
    fn admit_reserves_and_a_refusal_changes_nothing() {
        let quotas = QuotaPolicy {
            daily_requests: Some(2),
            ..QuotaPolicy::default()
        };
        let breaker = BreakerPolicy::default();
        let keys = vec!["p/m".to_owned()];
        let mut ledger = Ledger::default();
        for _ in 0..2 {
            let a = ledger.admit(t(0), &quotas, &breaker, &keys, 10).unwrap();
            assert!(a.reservation.is_some() && a.blocked.is_empty());
        }
        let before = ledger.clone();
        let e = ledger
            .admit(t(1), &quotas, &breaker, &keys, 10)
            .unwrap_err();
        assert_eq!(e.limit, Limit::DailyRequests);
        assert_eq!(ledger, before);
        // Without limits nothing is reserved.
        let a = Ledger::default()
            .admit(t(0), &QuotaPolicy::default(), &breaker, &keys, 10)
            .unwrap();
        assert_eq!(a.reservation, None);
    }

    #[test]
    fn settle_feeds_breakers_and_trues_up_the_reservation() {
        let quotas = QuotaPolicy {
            daily_tokens: Some(1000),
            ..QuotaPolicy::default()
        };
        let breaker = BreakerPolicy {
            consecutive_failures: 1,
            cooldown_ms: 1000,
            ..BreakerPolicy::default()
        };
        let keys = vec!["a/m".to_owned(), "b/m".to_owned()];
        let mut ledger = Ledger::default();
        let grant = ledger.admit(t(0), &quotas, &breaker, &keys, 500).unwrap();
        let trace = [
            attempt("a/m", false, None),
            attempt("b/m", true, Some((30, 20))),
        ];
        let report = Report::new(&breaker, &quotas, grant.reservation, &trace);
        assert_eq!(report.used_tokens, 50);
        assert_eq!(report.usage.len(), 2);
        let changes = ledger.settle(t(10), &report);
        assert_eq!(changes, vec![("a/m".to_owned(), Transition::Opened)]);
        // The 500 reserved became the 50 used.
        assert_eq!(ledger.quota.today(), (1, 50, 7));
        // The open breaker refuses a/m; after the cool-down exactly one turn probes it.
        let a = ledger.admit(t(20), &quotas, &breaker, &keys, 1).unwrap();
        assert_eq!(a.blocked, BTreeSet::from(["a/m".to_owned()]));
        let probe = ledger.admit(t(1020), &quotas, &breaker, &keys, 1).unwrap();
        assert!(probe.blocked.is_empty());
        let other = ledger.admit(t(1021), &quotas, &breaker, &keys, 1).unwrap();
        assert_eq!(other.blocked, BTreeSet::from(["a/m".to_owned()]));
    }

    #[test]
    fn verdicts_decide_locally_until_a_probe_is_due() {
        let breaker = BreakerPolicy {
            consecutive_failures: 1,
            cooldown_ms: 1000,
            ..BreakerPolicy::default()
        };
        let keys = vec!["a/m".to_owned(), "b/m".to_owned()];
        let mut board = BreakerBoard::default();
        assert_eq!(board.verdicts(t(0), &keys), Some(BTreeSet::new()));
        board.record(t(0), "a/m", false, &breaker);
        assert_eq!(
            board.verdicts(t(500), &keys),
            Some(BTreeSet::from(["a/m".to_owned()]))
        );
        assert_eq!(board.verdicts(t(1000), &keys), None);
    }

    #[test]
    fn reports_merge_rows_of_one_target() {
        let p = (BreakerPolicy::default(), QuotaPolicy::default());
        let mut a = Report::new(&p.0, &p.1, None, &[attempt("x/m", true, Some((1, 2)))]);
        let b = Report::new(&p.0, &p.1, None, &[attempt("x/m", true, Some((3, 4)))]);
        a.merge(b);
        assert_eq!(a.signals.len(), 2);
        assert_eq!(a.usage.len(), 1);
        assert_eq!(
            (a.usage[0].requests, a.usage[0].prompt_tokens),
            (2, 4),
            "{a:?}"
        );
        assert!(!a.is_empty());
        assert!(Report::default().is_empty());
    }

    #[test]
    fn usage_book_sums_per_day_and_answers_as_the_api_does() {
        let row = |target: &str, n: u64| UsageRow {
            route: "default".into(),
            target: target.into(),
            requests: n,
            prompt_tokens: 10 * n,
            completion_tokens: n,
            cost_micros: 5 * n,
        };
        let mut book = UsageBook::default();
        let today = day_of(t(0));
        book.add(today, &[row("b/m", 1)]);
        book.add(today, &[row("a/m", 1), row("b/m", 2)]);
        book.add(today - 1, &[row("a/m", 4)]);
        book.add(today, &[]);
        let rows = book.rows();
        assert_eq!(
            rows.iter()
                .map(|(d, r)| (*d, r.target.as_str(), r.requests))
                .collect::<Vec<_>>(),
            vec![(today - 1, "a/m", 4), (today, "a/m", 1), (today, "b/m", 3)]
        );
        let json = usage_json(&rows, &QuotaState::default());
        assert_eq!(json["usage"][2]["day"], "2026-11-25");
        assert_eq!(json["usage"][2]["prompt_tokens"], 30);
        assert_eq!(json["today"]["requests"], 0);
        // Old days go once the book is full.
        for d in 0..(UsageBook::KEEP_DAYS as u64 + 5) {
            book.add(today + 1 + d, &[row("a/m", 1)]);
        }
        assert_eq!(book.days.len(), UsageBook::KEEP_DAYS);
        assert!(book.rows().iter().all(|(d, _)| *d > today));
    }
}
