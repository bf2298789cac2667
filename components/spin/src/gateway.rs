//! The LLM gateway's shared state on Spin — circuit breakers, quota buckets and budgets,
//! usage totals — kept per tenant in key-value without Durable Objects, with the engine's
//! rules ([`kefu_engine::gateway::ledger`]) exactly as the Worker's gateway object applies
//! them.
//!
//! Keys: `gw:<tenant>` holds the [`Ledger`] (breakers and quota counters, small and hot);
//! `gw:<tenant>:usage` the [`UsageBook`] (totals per UTC day, route and target). Both are
//! changed with compare-and-swap ([`crate::shared::update`]).
//!
//! **The guarantee, beside Workers'.** On Workers one Durable Object per tenant admits and
//! settles turns one at a time. Here each turn's admission is a compare-and-swap of the
//! ledger it read: of two turns admitted at once one swap wins and the other re-reads and
//! decides again, so quotas and budgets never over-admit — 100 concurrent turns against a
//! budget of 40 get exactly 40 through — and a half-open breaker hands its probe to exactly
//! one turn. A turn is settled (breaker outcomes, real tokens, cost, usage) right after its
//! last provider call, before its answer is sent: Spin has no `wait_until`. What is weaker:
//! - A tenant without quotas decides its breakers from a plain read of the ledger (no swap
//!   unless a probe is due), as a Worker isolate decides from its cached board: a turn that
//!   read the board just before another instance opened a breaker still calls that target
//!   once. The bound is the turns already admitted at that moment.
//! - A reservation whose instance dies before settling stays reserved (the buckets refill
//!   it; a daily budget counts the estimate): an error towards refusing, never over-admitting.
//! - A change that loses [`crate::shared::MAX_SWAPS`] races in a row fails: at admission the
//!   turn is refused with `503 tenant_state_busy` (nothing stored beyond the visitor's
//!   message); at settlement the report is dropped and logged (that turn's usage is lost).

use kefu_engine::api::ApiError;
use kefu_engine::chat::{Grant, Refusal};
use kefu_engine::gateway::ledger::{self, Ledger, Report, UsageBook};
use kefu_engine::{TenantConfig, TenantId};
use serde_json::json;

use crate::http::{Incoming, Reply};
use crate::shared;
use crate::store::Kv;
use crate::{log, now};

fn ledger_key(tenant: &TenantId) -> String {
    format!("gw:{}", tenant.as_str())
}

fn usage_key(tenant: &TenantId) -> String {
    format!("gw:{}:usage", tenant.as_str())
}

/// Admits a turn of the tenant that may try the configuration's targets and is estimated at
/// `tokens`: reserves quota, learns which targets the breakers refuse, claims a due probe.
pub fn begin(
    kv: &Kv,
    tenant: &TenantId,
    config: &TenantConfig,
    tokens: u64,
) -> Result<Grant, Refusal> {
    let keys: Vec<String> = config.all_targets().into_iter().map(|t| t.key).collect();
    let key = ledger_key(tenant);
    let t = now();
    if !config.quotas.is_limited() {
        let ledger: Ledger = shared::read(kv.bucket(), &key).map_err(Refusal::Host)?;
        if let Some(blocked) = ledger.breakers.verdicts(t, &keys) {
            return Ok(Grant {
                blocked,
                reservation: None,
            });
        }
    }
    let admitted = shared::update(kv.bucket(), &key, |ledger: &mut Ledger| {
        let before = ledger.clone();
        let admitted = ledger.admit(t, &config.quotas, &config.breaker, &keys, tokens);
        // A refusal changed nothing; an admission that claimed nothing needs no write.
        let write = *ledger != before;
        Ok((admitted, write))
    })
    .map_err(Refusal::Host)?;
    let admission = admitted.map_err(Refusal::Quota)?;
    Ok(Grant {
        blocked: admission.blocked,
        reservation: admission.reservation,
    })
}

/// Settles a finished turn: breaker outcomes and the quota reservation in the ledger, the
/// attempts' usage in the usage totals. Never fails: a failure is logged.
pub fn settle(kv: &Kv, tenant: &TenantId, report: &Report) {
    if report.is_empty() {
        return;
    }
    let t = now();
    let needs_ledger = report.reservation.is_some() || !report.signals.is_empty();
    let settled = needs_ledger
        .then(|| {
            shared::update(kv.bucket(), &ledger_key(tenant), |ledger: &mut Ledger| {
                // A healthy target's success on a full window changes nothing: no write.
                let before = ledger.clone();
                let changes = ledger.settle(t, report);
                let write = *ledger != before;
                Ok((changes, write))
            })
        })
        .transpose();
    match settled {
        Ok(changes) => {
            for (target, change) in changes.unwrap_or_default() {
                log(
                    "warn",
                    json!({"msg": "circuit breaker", "tenant": tenant.as_str(), "target": target, "change": format!("{change:?}")}),
                );
            }
        }
        Err(e) => log(
            "error",
            json!({"msg": "gateway settle failed", "tenant": tenant.as_str(), "error": e.message}),
        ),
    }
    if report.usage.is_empty() {
        return;
    }
    let day = ledger::day_of(t);
    let counted = shared::update(kv.bucket(), &usage_key(tenant), |book: &mut UsageBook| {
        book.add(day, &report.usage);
        Ok(((), true))
    });
    if let Err(e) = counted {
        log(
            "error",
            json!({"msg": "usage not counted", "tenant": tenant.as_str(), "error": e.message}),
        );
    }
}

/// `GET /api/v1/usage`: the tenant's usage per day, route and target, and today's quota
/// counters — the Worker's JSON. For an agent token or the tenant key.
pub fn usage(kv: &Kv, req: &Incoming) -> Result<Reply, ApiError> {
    let (tenant, _, _) = crate::admin::agent(kv, req)?;
    let book: UsageBook = shared::read(kv.bucket(), &usage_key(&tenant))?;
    let ledger: Ledger = shared::read(kv.bucket(), &ledger_key(&tenant))?;
    Ok(Reply::json(
        200,
        &ledger::usage_json(&book.rows(), &ledger.quota),
    ))
}
