//! Signed webhook deliveries of conversation events on Spin — the same events, payloads,
//! Standard Webhooks signatures and retry schedule as the Worker's (all the engine's:
//! [`kefu_engine::webhook`], [`kefu_engine::outbox`]) — without Durable Objects, alarms or
//! `wait_until`.
//!
//! **How.** Each stored conversation change stages its events ([`stage`]); they count once
//! the change's compare-and-swap wins ([`commit_staged`]). After the request's response is
//! sent — a `wasi:http` handler keeps running once its response body is finished, and the
//! client already has its answer (Spin 3.x awaits the guest's task detached from the
//! response, as the Spin test host does; a host that stopped the guest once the response
//! is sent would lose the events of that request, which are kept in memory until then) —
//! [`after_response`] hands the events to the tenant's
//! outbox (`wh:<tenant>` in key-value, one document changed by compare-and-swap: see
//! [`crate::shared`]), reserves the due deliveries (a lease, so no other instance sends them
//! too), sends them concurrently with a 15 s timeout each, and records every answer, which
//! decides the retry (5 s, 5 min, 30 min, … about 27 h in all; `410 Gone` disables the
//! endpoint). Operators read the log at `GET /api/v1/webhooks/deliveries`, as on Workers.
//!
//! **The limits, said plainly.** Nothing wakes the component on its own: a retry goes out
//! with the first request to that tenant (any route that reads its configuration) after it
//! comes due — a tenant with no traffic gets its retries late, all at once when traffic
//! returns. Each request sends at most [`MAX_BATCH`] deliveries and waits at most 15 s for
//! them, after its own answer. An instance the platform stops before an answer is recorded
//! leaves its lease to run out (30 s), and the delivery goes again (at least once, never
//! lost; receivers deduplicate on `webhook-id`). The outbox keeps at most [`LIMITS`]
//! pending and finished deliveries (the engine's, the Worker's too). Spin must allow the endpoints' origins
//! (`webhook_outbound_host` in `spin.toml`); a refused call is a network error, retried and
//! logged like any other.

use std::cell::RefCell;

use kefu_engine::api::ApiError;
use kefu_engine::outbox::{self, Claim, LIMITS, MAX_BATCH, Outbox};
use kefu_engine::webhook::{self, AttemptOutcome, Next};
use kefu_engine::{Event, TenantConfig, TenantId, Timestamp};
use serde_json::json;
use spin_sdk::wit::wasi::http0_2_0::types::FutureIncomingResponse;

use crate::http::{Incoming, Reply};
use crate::store::Kv;
use crate::{log, now, shared};

#[derive(Default)]
struct Pending {
    /// Events of the change being tried.
    staged: Vec<Event>,
    /// Events of stored changes, by tenant.
    committed: Vec<(TenantId, Vec<Event>)>,
    /// Tenants with enabled endpoints this request read the configuration of.
    tenants: Vec<(TenantId, TenantConfig)>,
}

thread_local! {
    // One instance serves one request: this is the request's state.
    static PENDING: RefCell<Pending> = RefCell::default();
}

/// Stages a change's events; they count only if its swap wins ([`commit_staged`]).
pub fn stage(events: &[Event]) {
    PENDING.with(|p| p.borrow_mut().staged.extend_from_slice(events));
}

/// Forgets the staged events (a new attempt at a change starts).
pub fn discard_staged() {
    PENDING.with(|p| p.borrow_mut().staged.clear());
}

/// The staged events' change was stored: they will be sent after the response.
pub fn commit_staged(tenant: &TenantId) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let events = std::mem::take(&mut p.staged);
        if events.is_empty() {
            return;
        }
        match p.committed.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, e)) => e.extend(events),
            None => p.committed.push((tenant.clone(), events)),
        }
    });
}

/// The events of the changes this request stored so far, by tenant, with the tenant's
/// configuration as the request read it (plugins' on-event hooks hear them before the
/// webhooks go out: see [`crate::plugins::after_response`]). Only tenants with enabled
/// webhooks or plugins are listed.
pub fn committed() -> Vec<(TenantId, TenantConfig, Vec<Event>)> {
    PENDING.with(|p| {
        let p = p.borrow();
        p.committed
            .iter()
            .filter_map(|(tenant, events)| {
                let (_, config) = p.tenants.iter().find(|(t, _)| t == tenant)?;
                Some((tenant.clone(), config.clone(), events.clone()))
            })
            .collect()
    })
}

/// Notes a tenant this request reads the configuration of: one with enabled endpoints gets
/// its events sent and its due retries tried after the response; one with enabled plugins
/// has its events heard by them ([`crate::plugins::after_response`], from [`committed`]).
pub fn touched(tenant: &TenantId, config: &TenantConfig) {
    if !config.webhooks.iter().any(|w| w.enabled) && !config.plugins.iter().any(|p| p.enabled) {
        return;
    }
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.tenants.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, c)) => *c = config.clone(),
            None => p.tenants.push((tenant.clone(), config.clone())),
        }
    });
}

fn key(tenant: &TenantId) -> String {
    format!("wh:{}", tenant.as_str())
}

/// After the response: enqueues the request's events and sends what is due, per tenant.
/// Never fails: problems are logged.
pub fn after_response(kv: &Kv) {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (tenant, config) in &pending.tenants {
        if !config.webhooks.iter().any(|w| w.enabled) {
            // Noted for its plugins only.
            continue;
        }
        let events: &[Event] = pending
            .committed
            .iter()
            .find(|(t, _)| t == tenant)
            .map_or(&[], |(_, e)| e.as_slice());
        if let Err(e) = deliver(kv, tenant, config, events) {
            log(
                "error",
                json!({"msg": "webhook deliveries failed", "tenant": tenant.as_str(), "error": e.message}),
            );
        }
    }
}

fn deliver(
    kv: &Kv,
    tenant: &TenantId,
    config: &TenantConfig,
    events: &[Event],
) -> Result<(), ApiError> {
    let at = now();
    let planned = outbox::plan(&config.webhooks, events, at, crate::random_u64);
    // Most requests bring nothing new and find nothing due: a plain read settles that.
    if planned.is_empty() && !shared::read::<Outbox>(kv.bucket(), &key(tenant))?.has_due(at) {
        return Ok(());
    }
    let claims = shared::update(kv.bucket(), &key(tenant), |o: &mut Outbox| {
        let mut changed = false;
        if !planned.is_empty() {
            let q = o.enqueue(at, &config.webhooks, planned.clone(), LIMITS);
            changed = true;
            if q.dropped > 0 {
                log(
                    "error",
                    json!({"msg": "webhook events dropped: too many pending deliveries", "tenant": tenant.as_str(), "dropped": q.dropped, "max_pending": LIMITS.max_pending}),
                );
            }
            for url in &q.reenabled {
                log(
                    "info",
                    json!({"msg": "webhook endpoint re-enabled: its secret changed", "tenant": tenant.as_str(), "endpoint": url}),
                );
            }
            for (url, n) in &q.cancelled {
                log(
                    "info",
                    json!({"msg": "webhook retries ended: the endpoint is no longer configured", "tenant": tenant.as_str(), "endpoint": url, "cancelled_deliveries": n}),
                );
            }
        }
        if !o.has_due(at) {
            return Ok((Vec::new(), changed));
        }
        Ok((o.claim(at, MAX_BATCH), true))
    })?;
    if claims.is_empty() {
        return Ok(());
    }
    send_all(kv, tenant, claims);
    Ok(())
}

/// One attempt on its way.
struct Attempt {
    claim: Claim,
    started: Timestamp,
    future: Option<FutureIncomingResponse>,
}

/// Sends every claim at once and records each answer as it comes (one slow endpoint holds
/// up no other), each within [`webhook::REQUEST_TIMEOUT`].
fn send_all(kv: &Kv, tenant: &TenantId, claims: Vec<Claim>) {
    let mut attempts: Vec<Attempt> = Vec::new();
    for claim in claims {
        let started = now();
        let mut request = claim
            .delivery
            .request(core::slice::from_ref(&claim.secret), started);
        // Sized, not chunked: many receivers (Python's `http.server` among them) read a
        // request body by its `Content-Length` only.
        request.headers.push(kefu_engine::Header {
            name: "content-length",
            value: request.body.len().to_string(),
            sensitive: false,
        });
        match crate::outbound::start(&request) {
            Ok(future) => attempts.push(Attempt {
                claim,
                started,
                future: Some(future),
            }),
            Err(e) => {
                let outcome = AttemptOutcome::network(&e, now().since(started));
                record(kv, tenant, claim, outcome);
            }
        }
    }
    let deadline = now() + webhook::REQUEST_TIMEOUT;
    while !attempts.is_empty() {
        let wait_ns = deadline.since(now()).as_nanos();
        let ready: Vec<usize> = {
            let pollables: Vec<_> = attempts
                .iter()
                .filter_map(|a| a.future.as_ref().map(|f| f.subscribe()))
                .collect();
            let timer = wasi::clocks::monotonic_clock::subscribe_duration(
                u64::try_from(wait_ns).unwrap_or(u64::MAX),
            );
            let mut all: Vec<&wasi::io::poll::Pollable> = pollables.iter().collect();
            all.push(&timer);
            let fired = wasi::io::poll::poll(&all);
            // The pollables (children of the futures) go before any future does.
            fired
                .into_iter()
                .map(|i| i as usize)
                .filter(|&i| i < attempts.len())
                .collect()
        };
        let timed_out = now() >= deadline;
        let mut done = Vec::new();
        for (i, a) in attempts.iter_mut().enumerate() {
            let outcome = if ready.contains(&i) {
                answer(a)
            } else if timed_out {
                // Dropping the future abandons the call.
                drop(a.future.take());
                Some(AttemptOutcome::timeout(now().since(a.started)))
            } else {
                None
            };
            if let Some(outcome) = outcome {
                done.push((i, outcome));
            }
        }
        for (i, outcome) in done.into_iter().rev() {
            let a = attempts.remove(i);
            record(kv, tenant, a.claim, outcome);
        }
    }
}

/// The attempt's answer, if it is there: its status (and `Retry-After`), or the network
/// error. The response is dropped unread.
fn answer(a: &mut Attempt) -> Option<AttemptOutcome> {
    let future = a.future.as_ref()?;
    let got = future.get()?;
    let took = now().since(a.started);
    let outcome = match got {
        Ok(Ok(response)) => {
            let code = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .first()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .and_then(|v| outbox::retry_after(&v, now()));
            drop(response);
            let outcome = AttemptOutcome::status(code, took);
            match retry_after {
                Some(after) => outcome.with_retry_after(after),
                None => outcome,
            }
        }
        Ok(Err(e)) => AttemptOutcome::network(&format!("{e:?}"), took),
        Err(()) => AttemptOutcome::network("the response was already taken", took),
    };
    drop(a.future.take());
    Some(outcome)
}

/// Records an attempt in the outbox and logs what it decided.
fn record(kv: &Kv, tenant: &TenantId, claim: Claim, outcome: AttemptOutcome) {
    let Claim {
        seq, mut delivery, ..
    } = claim;
    let t = now();
    let next = delivery.record(t, outcome);
    let mut line = json!({
        "tenant": tenant.as_str(), "endpoint": delivery.endpoint, "webhook_id": delivery.id,
        "event_type": delivery.event_type, "attempt": delivery.attempts,
        "last": delivery.log.last().map(|l| outbox::attempt_json(l.at, &l.result, l.duration_ms)),
    });
    let stored = shared::update(kv.bucket(), &key(tenant), |o: &mut Outbox| {
        Ok((o.finish(t, seq, delivery.clone(), next), true))
    });
    let (level, msg) = match (&stored, next) {
        (Err(_), _) => (
            "error",
            "webhook attempt could not be recorded (its lease runs out and it goes again)",
        ),
        (Ok(_), Next::Delivered) if delivery.attempts > 1 => {
            ("info", "webhook delivered after retries")
        }
        (Ok(_), Next::Delivered) => return,
        (Ok(_), Next::RetryAt(at)) => {
            line["next_attempt_at"] = at.to_rfc3339().into();
            ("warn", "webhook attempt failed")
        }
        (Ok(_), Next::GaveUp) => ("error", "webhook delivery failed: attempts exhausted"),
        (Ok(Some(cancelled)), Next::DisableEndpoint) => {
            line["cancelled_deliveries"] = (*cancelled).into();
            ("warn", "webhook endpoint disabled: it answered 410 Gone")
        }
        (Ok(None), Next::DisableEndpoint) => (
            "info",
            "webhook delivery ended: the endpoint answered 410 Gone",
        ),
    };
    if let Err(e) = &stored {
        line["error"] = e.message.clone().into();
    }
    line["msg"] = msg.into();
    log(level, line);
}

/// `GET /api/v1/webhooks/deliveries[?limit=N]`: the tenant's recent deliveries, newest
/// first, with their attempts, and its endpoints' state — the Worker's JSON. For an agent
/// token or the tenant key.
pub fn deliveries(kv: &Kv, req: &Incoming) -> Result<Reply, ApiError> {
    if req.method != "GET" {
        return Err(outbox::list_method_not_allowed());
    }
    // The delivery log shows the operator's receivers and their answers: the operator's
    // (tenant key or admin token), not an agent's.
    let (tenant, _) = crate::admin::operator(kv, req)?;
    let limit = outbox::list_limit(req.param("limit").as_deref())?;
    let o: Outbox = shared::read(kv.bucket(), &key(&tenant))?;
    Ok(Reply::json(200, &o.to_json(now(), limit)))
}
