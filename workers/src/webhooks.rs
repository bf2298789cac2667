//! Signed webhook delivery of conversation events: one Durable Object per tenant
//! ([`WebhookObject`]), which stores each event's deliveries in SQLite, sends them with
//! `fetch`, signs every attempt afresh (Standard Webhooks, through
//! [`kefu_engine::webhook::Delivery`]) and retries on the engine's schedule with alarms.
//!
//! The path of an event, never on a visitor's path:
//!
//! 1. The conversation object calls [`emit`] (in `wait_until`). A tenant without an enabled
//!    endpoint wanting one of the events costs nothing: no object is called. Otherwise the
//!    payloads are built once and every (event, endpoint) pair becomes a `Delivery`, all
//!    handed to the tenant's object in one internal request (`/enqueue`).
//! 2. The object stores them (one synchronous step, so atomically), answers at once, and
//!    sends the due ones in `wait_until`, concurrently: a slow or failing endpoint delays no
//!    other endpoint and no caller.
//! 3. Each attempt is recorded by `Delivery::record`, which says what comes next: done, a
//!    retry at a time (the object's alarm is set to the earliest one), given up, or (`410
//!    Gone`) disable the endpoint: the object then stops every delivery to it and takes no
//!    new ones until the tenant changes its secret (a re-configured endpoint).
//!
//! A delivery being sent holds a lease (the request timeout plus a margin); the alarm is set
//! to the end of the lease too, so a delivery whose sender was evicted mid-flight is tried
//! again (at least once, never lost; receivers deduplicate on `webhook-id`).
//!
//! Operators read the log with `GET /api/v1/webhooks/deliveries` (the tenant API key): the
//! newest deliveries with every attempt (status, error, duration), the next retry, and the
//! endpoints' state. Failures are logged as structured JSON.

// `#[durable_object]` generates undocumented public JavaScript glue methods.
#![allow(missing_docs)]

use core::time::Duration;
use std::pin::pin;
use std::rc::Rc;

use futures::StreamExt;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use kefu_engine::api::ApiError;
use kefu_engine::outbox::{self, attempt_json, delivery_json, status_name};
use kefu_engine::webhook::{self, AttemptOutcome, Delivery, DeliveryStatus, Next, WebhookSecret};
use kefu_engine::{Event, HttpRequest, TenantConfig, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worker::{
    AbortController, Delay, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit,
    RequestRedirect, Response, ScheduledTime, SqlStorage, SqlStorageValue, State, durable_object,
};

use crate::config::random_u64;
use crate::http::{error_response, forward, internal, json_response};
use crate::provider::now;
use crate::{WEBHOOKS, log};

/// The operators' route (served by the front in `lib.rs`, before the engine's router).
pub(crate) const DELIVERIES_ROUTE: &str = outbox::DELIVERIES_ROUTE;
/// The object's internal route taking new deliveries.
const ENQUEUE_PATH: &str = "/enqueue";
/// The object's internal route listing deliveries.
const LIST_PATH: &str = "/deliveries";

/// How long `emit` waits for the object to take the deliveries before giving up (and
/// logging it): it runs off the visitor's path, but must not hang a `wait_until` forever.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt waits for the endpoint's answer (the engine's 15 s).
const REQUEST_TIMEOUT: Duration = webhook::REQUEST_TIMEOUT;
/// How long a delivery being sent is reserved for its sender; after that (the sender was
/// evicted mid-flight) the alarm sends it again.
const LEASE: Duration = outbox::LEASE;
/// How long an alarm keeps taking deliveries that come due while it sends others.
const ALARM_WINDOW: Duration = Duration::from_secs(60);
/// The most deliveries one pass sends at once; more due ones go in the next pass.
const MAX_BATCH: usize = 32;
/// The most pending deliveries a tenant may have: past it new events are dropped (and
/// logged), so an endpoint that is down for a day cannot grow storage without bound.
const MAX_PENDING: i64 = 5_000;
/// How many finished deliveries (succeeded or failed) are kept for the log.
const KEEP_FINISHED: i64 = 500;
/// The listing's default and largest page.
const DEFAULT_LIST: usize = outbox::DEFAULT_LIST;
const MAX_LIST: usize = outbox::MAX_LIST;
/// How much of an endpoint's answer body is read (then the rest is dropped).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An endpoint's URL and signing secret, as the tenant's configuration has them now.
#[derive(Serialize, Deserialize)]
struct EndpointSecret {
    url: String,
    secret: String,
}

/// What `emit` hands the object.
#[derive(Serialize, Deserialize)]
struct EnqueueRequest {
    tenant: String,
    /// The endpoints these deliveries go to, with their current secrets.
    endpoints: Vec<EndpointSecret>,
    /// The URLs of every enabled endpoint the tenant has now: pending retries to any other
    /// (removed or switched off by the tenant) end.
    configured: Vec<String>,
    deliveries: Vec<Delivery>,
}

/// The deliveries `events` make for the tenant's endpoints ([`outbox::plan`]), and the
/// endpoints they go to. Empty when no enabled endpoint wants any of the events.
fn plan(
    config: &TenantConfig,
    events: &[Event],
    at: Timestamp,
) -> (Vec<Delivery>, Vec<EndpointSecret>) {
    let deliveries = outbox::plan(&config.webhooks, events, at, random_u64);
    let mut endpoints: Vec<EndpointSecret> = Vec::new();
    for d in &deliveries {
        if endpoints.iter().any(|e| e.url == d.endpoint) {
            continue;
        }
        if let Some(e) = config.webhooks.iter().find(|e| e.url == d.endpoint) {
            endpoints.push(EndpointSecret {
                url: e.url.clone(),
                secret: e.secret.clone(),
            });
        }
    }
    (deliveries, endpoints)
}

/// Sends `events` to the tenant's webhook endpoints: builds the payloads, picks the enabled
/// endpoints that want each event type, and hands the deliveries to the tenant's
/// [`WebhookObject`] in one internal request, which stores them and sends them without
/// making this call wait for any receiver.
///
/// Never fails and never panics: a failure is logged. Costs nothing (no object call) when
/// no enabled endpoint wants any of the events. Call it off the visitor's path
/// (`state.wait_until`), after the events' changes are stored.
// The conversation object calls this once it is wired (then this `allow` goes).
pub(crate) async fn emit(env: &Env, tenant: &TenantId, config: &TenantConfig, events: &[Event]) {
    if events.is_empty() || !config.webhooks.iter().any(|e| e.enabled) {
        return;
    }
    let (deliveries, endpoints) = plan(config, events, now());
    if deliveries.is_empty() {
        return;
    }
    let count = deliveries.len();
    let request = EnqueueRequest {
        tenant: tenant.as_str().to_owned(),
        endpoints,
        configured: config
            .webhooks
            .iter()
            .filter(|e| e.enabled)
            .map(|e| e.url.clone())
            .collect(),
        deliveries,
    };
    let send = async {
        let body = serde_json::to_vec(&request).map_err(internal)?;
        let mut resp = forward(&stub(env, tenant)?, Method::Post, ENQUEUE_PATH, Some(body)).await?;
        if resp.status_code() != 200 {
            let text = resp.text().await.unwrap_or_default();
            return Err(ApiError::internal(format!(
                "the webhook object answered {}: {text}",
                resp.status_code()
            )));
        }
        Ok::<(), ApiError>(())
    };
    let timer = Delay::from(ENQUEUE_TIMEOUT);
    let error = match select(pin!(send), pin!(timer)).await {
        Either::Left((Ok(()), _)) => return,
        Either::Left((Err(e), _)) => e.message,
        Either::Right(((), _)) => format!(
            "the webhook object did not answer within {} s",
            ENQUEUE_TIMEOUT.as_secs()
        ),
    };
    log(
        "error",
        json!({"msg": "webhook enqueue failed", "tenant": tenant.as_str(), "deliveries": count, "error": error}),
    );
}

fn stub(env: &Env, tenant: &TenantId) -> Result<worker::Stub, ApiError> {
    env.durable_object(WEBHOOKS)
        .and_then(|ns| ns.get_by_name(&format!("tenant:{}", tenant.as_str())))
        .map_err(internal)
}

/// `GET /api/v1/webhooks/deliveries[?limit=N]`: the tenant's recent deliveries, newest
/// first, with their attempts, and its endpoints' state. Authenticated with the tenant API
/// key, like `/api/v1/usage`.
pub(crate) async fn deliveries(mut req: Request, env: &Env) -> worker::Result<Response> {
    let result = async {
        if req.method() != Method::Get {
            return Err(outbox::list_method_not_allowed());
        }
        // The delivery log shows the operator's receivers and their answers: the
        // operator's (tenant key or admin token), not an agent's.
        let (tenant, _) = crate::admin_tenant(&req, env).await?;
        let limit = outbox::list_limit(
            req.url()
                .ok()
                .and_then(|u| crate::http::param(&u, "limit"))
                .as_deref(),
        )?;
        let mut resp = forward(
            &stub(env, &tenant)?,
            Method::Get,
            &format!("{LIST_PATH}?limit={limit}"),
            None,
        )
        .await?;
        let body: Value = resp.json().await.map_err(internal)?;
        if resp.status_code() != 200 {
            return Err(ApiError::internal(format!(
                "the webhook object answered {}: {body}",
                resp.status_code()
            )));
        }
        json_response(200, &body)
    }
    .await;
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => {
            crate::http::drain(&mut req).await;
            error_response(&e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending one attempt

/// Sends one signed attempt and says what came of it: the status (with `Retry-After`), a
/// timeout, or a network error, and how long it took (to the answer's head).
async fn send(request: &HttpRequest) -> AttemptOutcome {
    let started = now();
    let elapsed = || now().since(started);
    let controller = AbortController::default();
    let built = (|| -> worker::Result<Request> {
        let headers = Headers::new();
        for h in &request.headers {
            headers.set(h.name, &h.value)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(request.method.to_owned()))
            .with_headers(headers)
            // The engine counts a 3xx as a failure to retry: redirects are not followed.
            .with_redirect(RequestRedirect::Manual)
            .with_body(Some(
                worker::js_sys::Uint8Array::from(request.body.as_slice()).into(),
            ));
        Request::new_with_init(&request.url, &init)
    })();
    let req = match built {
        Ok(req) => req,
        Err(e) => return AttemptOutcome::network(&e.to_string(), elapsed()),
    };
    let fetch = Fetch::Request(req);
    let signal = controller.signal();
    let answer = fetch.send_with_signal(&signal);
    let deadline = started + REQUEST_TIMEOUT;
    let timer = Delay::from(REQUEST_TIMEOUT);
    match select(pin!(answer), pin!(timer)).await {
        Either::Left((Ok(mut resp), _)) => {
            let took = elapsed();
            let code = resp.status_code();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .ok()
                .flatten()
                .and_then(|v| outbox::retry_after(&v, now()));
            drain_answer(&mut resp, deadline).await;
            controller.abort();
            let outcome = AttemptOutcome::status(code, took);
            match retry_after {
                Some(after) => outcome.with_retry_after(after),
                None => outcome,
            }
        }
        Either::Left((Err(e), _)) => AttemptOutcome::network(&e.to_string(), elapsed()),
        Either::Right(((), _)) => {
            controller.abort();
            AttemptOutcome::timeout(elapsed())
        }
    }
}

/// Reads (and drops) up to [`MAX_ANSWER_BYTES`] of an answer's body before `deadline`, so a
/// receiver's connection ends cleanly; the rest is cut off by the abort that follows.
async fn drain_answer(resp: &mut Response, deadline: Timestamp) {
    let Ok(mut body) = resp.stream() else { return };
    let mut seen = 0usize;
    while seen < MAX_ANSWER_BYTES {
        let left = deadline.since(now());
        if left.is_zero() {
            return;
        }
        let timer = Delay::from(left);
        match select(body.next(), pin!(timer)).await {
            Either::Left((Some(Ok(chunk)), _)) => seen += chunk.len(),
            _ => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The object

/// A due delivery, reserved for one sender.
struct Claim {
    seq: i64,
    delivery: Delivery,
    secret: WebhookSecret,
}

fn ms(t: Timestamp) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

fn integer(v: Option<&SqlStorageValue>) -> Option<i64> {
    match v {
        Some(SqlStorageValue::Integer(i)) => Some(*i),
        Some(SqlStorageValue::Float(f)) => Some(*f as i64),
        _ => None,
    }
}

fn text(v: Option<&SqlStorageValue>) -> Option<String> {
    match v {
        Some(SqlStorageValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(|m| u64::try_from(m).ok())
        .map_or(Value::Null, |m| {
            Timestamp::from_millis(m).to_rfc3339().into()
        })
}

struct Inner {
    sql: SqlStorage,
    state: State,
}

impl Inner {
    fn exec(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<Vec<SqlStorageValue>>, ApiError> {
        let cursor = self.sql.exec(query, bindings).map_err(internal)?;
        cursor
            .raw()
            .map(|row| row.map_err(internal))
            .collect::<Result<Vec<_>, _>>()
    }

    /// The tenant this object serves (for logs), as the last `/enqueue` named it.
    fn tenant(&self) -> String {
        self.exec("SELECT value FROM meta WHERE key = 'tenant'", vec![])
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| text(row.first()))
            .unwrap_or_default()
    }

    /// Stores new deliveries (one synchronous step: all or none).
    fn enqueue(&self, req: EnqueueRequest) -> Result<Value, ApiError> {
        let t = now();
        let tenant = req.tenant;
        self.exec(
            "INSERT INTO meta (key, value) VALUES ('tenant', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![tenant.as_str().into()],
        )?;
        for endpoint in &req.endpoints {
            if WebhookSecret::parse(&endpoint.secret).is_err() {
                // The engine validates configurations, so this is a bug, not a tenant's slip.
                log(
                    "error",
                    json!({"msg": "webhook endpoint has an invalid secret", "tenant": tenant, "endpoint": endpoint.url}),
                );
                continue;
            }
            let known = self.exec(
                "SELECT secret, disabled_at FROM endpoints WHERE url = ?",
                vec![endpoint.url.as_str().into()],
            )?;
            let row = known.into_iter().next();
            let old_secret = row.as_ref().and_then(|r| text(r.first()));
            let disabled = row.as_ref().and_then(|r| integer(r.get(1))).is_some();
            let changed = old_secret.as_deref() != Some(endpoint.secret.as_str());
            if changed && disabled {
                log(
                    "info",
                    json!({"msg": "webhook endpoint re-enabled: its secret changed", "tenant": tenant, "endpoint": endpoint.url}),
                );
            }
            // A new secret re-enables a disabled endpoint: the tenant configured it anew.
            self.exec(
                "INSERT INTO endpoints (url, secret, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (url) DO UPDATE SET secret = excluded.secret, updated_at = excluded.updated_at, \
                 disabled_at = CASE WHEN endpoints.secret = excluded.secret THEN endpoints.disabled_at END, \
                 reason = CASE WHEN endpoints.secret = excluded.secret THEN endpoints.reason END",
                vec![endpoint.url.as_str().into(), endpoint.secret.as_str().into(), ms(t)],
            )?;
        }
        // Retries to endpoints the tenant removed or switched off end here.
        let stale: Vec<String> = self
            .exec(
                "SELECT DISTINCT endpoint FROM deliveries WHERE status = 'pending'",
                vec![],
            )?
            .iter()
            .filter_map(|r| text(r.first()))
            .filter(|url| !req.configured.contains(url))
            .collect();
        for url in &stale {
            let cancelled = self.cancel_pending(url, "endpoint_not_configured")?;
            log(
                "info",
                json!({"msg": "webhook retries ended: the endpoint is no longer configured", "tenant": tenant, "endpoint": url, "cancelled_deliveries": cancelled}),
            );
        }
        let disabled: Vec<String> = self
            .exec(
                "SELECT url FROM endpoints WHERE disabled_at IS NOT NULL",
                vec![],
            )?
            .iter()
            .filter_map(|r| text(r.first()))
            .collect();
        let mut pending = self
            .exec(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                vec![],
            )?
            .first()
            .and_then(|r| integer(r.first()))
            .unwrap_or(0);
        let (mut accepted, mut skipped, mut dropped) = (0u32, Vec::new(), 0u32);
        for d in req.deliveries {
            if disabled.contains(&d.endpoint) {
                if !skipped.contains(&d.endpoint) {
                    skipped.push(d.endpoint);
                }
                continue;
            }
            if pending >= MAX_PENDING {
                dropped += 1;
                continue;
            }
            let json = serde_json::to_string(&d).map_err(internal)?;
            self.exec(
                "INSERT INTO deliveries (endpoint, status, due_at, lease_until, created_at, delivery) \
                 VALUES (?, 'pending', ?, 0, ?, ?)",
                vec![
                    d.endpoint.as_str().into(),
                    ms(d.next_at.unwrap_or(t)),
                    ms(t),
                    json.into(),
                ],
            )?;
            pending += 1;
            accepted += 1;
        }
        // The log keeps the newest finished deliveries only.
        self.exec(
            "DELETE FROM deliveries WHERE status != 'pending' AND seq NOT IN \
             (SELECT seq FROM deliveries WHERE status != 'pending' ORDER BY seq DESC LIMIT ?)",
            vec![KEEP_FINISHED.into()],
        )?;
        if !skipped.is_empty() {
            log(
                "info",
                json!({"msg": "webhook events not sent to disabled endpoints", "tenant": tenant, "endpoints": skipped}),
            );
        }
        if dropped > 0 {
            log(
                "error",
                json!({"msg": "webhook events dropped: too many pending deliveries", "tenant": tenant, "dropped": dropped, "max_pending": MAX_PENDING}),
            );
        }
        Ok(json!({"accepted": accepted, "skipped": skipped, "dropped": dropped}))
    }

    /// Reserves the due deliveries (up to [`MAX_BATCH`]) for this sender, in one synchronous
    /// step, so no other sender takes them. Deliveries to an endpoint disabled meanwhile are
    /// ended instead.
    fn claim_due(&self) -> Result<Vec<Claim>, ApiError> {
        let t = now();
        let rows = self.exec(
            "SELECT d.seq, d.delivery, e.secret, e.disabled_at FROM deliveries d \
             LEFT JOIN endpoints e ON e.url = d.endpoint \
             WHERE d.status = 'pending' AND d.due_at <= ? AND d.lease_until <= ? \
             ORDER BY d.due_at, d.seq LIMIT ?",
            vec![ms(t), ms(t), i64::try_from(MAX_BATCH).unwrap_or(32).into()],
        )?;
        let mut claims = Vec::new();
        for row in rows {
            let Some(seq) = integer(row.first()) else {
                continue;
            };
            let delivery: Option<Delivery> =
                text(row.get(1)).and_then(|j| serde_json::from_str(&j).ok());
            let Some(mut delivery) = delivery else {
                self.end(seq, None, "damaged: the stored delivery cannot be read")?;
                continue;
            };
            if integer(row.get(3)).is_some() {
                delivery.status = DeliveryStatus::Failed;
                delivery.next_at = None;
                self.end(seq, Some(&delivery), "endpoint_disabled")?;
                continue;
            }
            let Some(secret) = text(row.get(2)).and_then(|s| WebhookSecret::parse(&s).ok()) else {
                delivery.status = DeliveryStatus::Failed;
                delivery.next_at = None;
                self.end(seq, Some(&delivery), "no signing secret for the endpoint")?;
                continue;
            };
            self.exec(
                "UPDATE deliveries SET lease_until = ? WHERE seq = ?",
                vec![ms(t + LEASE), seq.into()],
            )?;
            claims.push(Claim {
                seq,
                delivery,
                secret,
            });
        }
        Ok(claims)
    }

    /// Ends a delivery without another attempt, noting why.
    fn end(&self, seq: i64, delivery: Option<&Delivery>, note: &str) -> Result<(), ApiError> {
        let json = delivery
            .map(serde_json::to_string)
            .transpose()
            .map_err(internal)?;
        self.exec(
            "UPDATE deliveries SET status = 'failed', due_at = NULL, lease_until = 0, note = ?, \
             delivery = COALESCE(?, delivery) WHERE seq = ?",
            vec![note.into(), json.into(), seq.into()],
        )?;
        Ok(())
    }

    /// Stores an attempt's result and acts on what the delivery decided.
    fn finish(&self, seq: i64, delivery: &Delivery, next: Next) -> Result<(), ApiError> {
        let json = serde_json::to_string(delivery).map_err(internal)?;
        let due = match next {
            Next::RetryAt(at) => ms(at),
            _ => SqlStorageValue::Null,
        };
        self.exec(
            "UPDATE deliveries SET status = ?, due_at = ?, lease_until = 0, delivery = ? WHERE seq = ?",
            vec![
                status_name(delivery.status).into(),
                due,
                json.into(),
                seq.into(),
            ],
        )?;
        let last = delivery.log.last();
        let mut line = json!({
            "tenant": self.tenant(), "endpoint": delivery.endpoint, "webhook_id": delivery.id,
            "event_type": delivery.event_type, "attempt": delivery.attempts,
            "last": last.map(|l| attempt_json(l.at, &l.result, l.duration_ms)),
        });
        match next {
            Next::Delivered if delivery.attempts > 1 => {
                line["msg"] = "webhook delivered after retries".into();
                log("info", line);
            }
            Next::Delivered => {}
            Next::RetryAt(at) => {
                line["msg"] = "webhook attempt failed".into();
                line["next_attempt_at"] = at.to_rfc3339().into();
                log("warn", line);
            }
            Next::GaveUp => {
                line["msg"] = "webhook delivery failed: attempts exhausted".into();
                log("error", line);
            }
            Next::DisableEndpoint => match self.disable(&delivery.endpoint)? {
                Some(cancelled) => {
                    line["msg"] = "webhook endpoint disabled: it answered 410 Gone".into();
                    line["cancelled_deliveries"] = cancelled.into();
                    log("warn", line);
                }
                // Another attempt in flight at the same time disabled it already.
                None => {
                    line["msg"] = "webhook delivery ended: the endpoint answered 410 Gone".into();
                    log("info", line);
                }
            },
        }
        Ok(())
    }

    /// Disables an endpoint and ends its pending deliveries (those being sent end when their
    /// attempt does: the next pass finds the endpoint disabled). Returns how many it ended,
    /// or `None` when the endpoint was disabled already.
    fn disable(&self, url: &str) -> Result<Option<u32>, ApiError> {
        let already = self
            .exec(
                "SELECT disabled_at FROM endpoints WHERE url = ?",
                vec![url.into()],
            )?
            .first()
            .and_then(|r| integer(r.first()))
            .is_some();
        if already {
            return Ok(None);
        }
        self.exec(
            "UPDATE endpoints SET disabled_at = ?, reason = ? WHERE url = ?",
            vec![
                ms(now()),
                "the endpoint answered 410 Gone".into(),
                url.into(),
            ],
        )?;
        self.cancel_pending(url, "endpoint_disabled").map(Some)
    }

    /// Ends the pending deliveries to `url` that are not being sent, noting why; returns how
    /// many.
    fn cancel_pending(&self, url: &str, note: &str) -> Result<u32, ApiError> {
        let rows = self.exec(
            "SELECT seq, delivery FROM deliveries WHERE endpoint = ? AND status = 'pending' AND lease_until <= ?",
            vec![url.into(), ms(now())],
        )?;
        let mut cancelled = 0;
        for row in rows {
            let Some(seq) = integer(row.first()) else {
                continue;
            };
            let delivery = text(row.get(1))
                .and_then(|j| serde_json::from_str::<Delivery>(&j).ok())
                .map(|mut d| {
                    d.status = DeliveryStatus::Failed;
                    d.next_at = None;
                    d
                });
            self.end(seq, delivery.as_ref(), note)?;
            cancelled += 1;
        }
        Ok(cancelled)
    }

    /// When the next delivery nobody is sending comes due.
    fn next_due(&self) -> Option<Timestamp> {
        self.exec(
            "SELECT MIN(due_at) FROM deliveries WHERE status = 'pending' AND lease_until <= ?",
            vec![ms(now())],
        )
        .ok()?
        .first()
        .and_then(|r| integer(r.first()))
        .and_then(|m| u64::try_from(m).ok())
        .map(Timestamp::from_millis)
    }

    /// Sets the alarm to the earliest moment a pending delivery needs attention (its next
    /// attempt, or the end of its sender's lease), or clears it when nothing is pending.
    async fn reschedule(&self) -> Result<(), ApiError> {
        let next = self
            .exec(
                "SELECT MIN(MAX(COALESCE(due_at, 0), lease_until)) FROM deliveries WHERE status = 'pending'",
                vec![],
            )?
            .first()
            .and_then(|r| integer(r.first()));
        let storage = self.state.storage();
        match next {
            Some(at) => {
                let date = worker::js_sys::Date::new(&(at as f64).into());
                storage.set_alarm(ScheduledTime::new(date)).await
            }
            None => storage.delete_alarm().await,
        }
        .map_err(internal)
    }

    fn list(&self, limit: usize) -> Result<Value, ApiError> {
        let t = now();
        let rows = self.exec(
            "SELECT seq, status, created_at, note, lease_until, delivery FROM deliveries \
             ORDER BY created_at DESC, seq DESC LIMIT ?",
            vec![i64::try_from(limit).unwrap_or(50).into()],
        )?;
        let mut deliveries = Vec::new();
        for row in rows {
            let Some(delivery) =
                text(row.get(5)).and_then(|j| serde_json::from_str::<Delivery>(&j).ok())
            else {
                continue;
            };
            let in_flight = integer(row.get(4)).is_some_and(|l| l > ms_i64(t));
            let created_at = integer(row.get(2))
                .and_then(|m| u64::try_from(m).ok())
                .map(Timestamp::from_millis)
                .unwrap_or_default();
            let status =
                text(row.get(1)).unwrap_or_else(|| status_name(delivery.status).to_owned());
            deliveries.push(delivery_json(
                &delivery,
                &status,
                text(row.get(3)).as_deref(),
                created_at,
                in_flight,
            ));
        }
        let endpoints: Vec<Value> = self
            .exec(
                "SELECT e.url, e.disabled_at, e.reason, \
                 (SELECT COUNT(*) FROM deliveries d WHERE d.endpoint = e.url AND d.status = 'pending') \
                 FROM endpoints e ORDER BY e.url",
                vec![],
            )?
            .into_iter()
            .map(|r| {
                let disabled_at = integer(r.get(1));
                json!({
                    "url": text(r.first()),
                    "state": if disabled_at.is_some() { "disabled" } else { "active" },
                    "disabled_at": rfc3339(disabled_at),
                    "reason": text(r.get(2)),
                    "pending": integer(r.get(3)).unwrap_or(0),
                })
            })
            .collect();
        Ok(json!({"deliveries": deliveries, "endpoints": endpoints}))
    }
}

fn ms_i64(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// Reserves the due deliveries and sets the alarm for the rest (and for the end of the
/// reservations, should this sender be evicted). Never fails: problems are logged.
async fn claim(inner: &Inner) -> Vec<Claim> {
    let claims = inner.claim_due().unwrap_or_else(|e| {
        log(
            "error",
            json!({"msg": "webhook deliveries could not be read", "tenant": inner.tenant(), "error": e.message}),
        );
        Vec::new()
    });
    reschedule(inner).await;
    claims
}

async fn reschedule(inner: &Inner) {
    if let Err(e) = inner.reschedule().await {
        log(
            "error",
            json!({"msg": "webhook alarm could not be set", "tenant": inner.tenant(), "error": e.message}),
        );
    }
}

/// Sends reserved deliveries concurrently (each endpoint at its own pace), records the
/// outcomes, then sets the alarm for the next retry. For `window` after it starts it also
/// takes the deliveries that come due meanwhile, so a slow endpoint holds up no other.
async fn deliver(inner: Rc<Inner>, claims: Vec<Claim>, window: Duration) {
    let started = now();
    let mut in_flight: FuturesUnordered<_> = claims
        .into_iter()
        .map(|c| attempt(inner.clone(), c))
        .collect();
    let mut claiming = !window.is_zero();
    while !in_flight.is_empty() {
        let due = if claiming && now().since(started) < window {
            inner.next_due()
        } else {
            None
        };
        let claim_more = match due {
            None => {
                in_flight.next().await;
                false
            }
            Some(at) => {
                let timer = pin!(Delay::from(at.since(now())));
                matches!(select(in_flight.next(), timer).await, Either::Right(_))
            }
        };
        if claim_more {
            let more = claim(&inner).await;
            // Nothing to take after all (e.g. a storage error): stop looking, the alarm
            // comes back for it.
            claiming = !more.is_empty();
            in_flight.extend(more.into_iter().map(|c| attempt(inner.clone(), c)));
        }
    }
    reschedule(&inner).await;
}

/// One attempt of one delivery: signed now, sent, recorded.
async fn attempt(inner: Rc<Inner>, claim: Claim) {
    let Claim {
        seq,
        mut delivery,
        secret,
    } = claim;
    let request = delivery.request(core::slice::from_ref(&secret), now());
    let outcome = send(&request).await;
    let next = delivery.record(now(), outcome);
    if let Err(e) = inner.finish(seq, &delivery, next) {
        // The lease runs out and the alarm tries again: the receiver may see it twice
        // (it deduplicates on `webhook-id`), but it is never lost.
        log(
            "error",
            json!({"msg": "webhook attempt could not be recorded", "tenant": inner.tenant(), "webhook_id": delivery.id, "error": e.message}),
        );
    }
}

/// The Durable Object class that delivers one tenant's webhooks.
#[durable_object]
pub struct WebhookObject {
    inner: Rc<Inner>,
}

impl DurableObject for WebhookObject {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for stmt in [
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            // `secret` is the endpoint's current signing secret (from the tenant's
            // configuration at the last enqueue); it is never listed.
            "CREATE TABLE IF NOT EXISTS endpoints (url TEXT PRIMARY KEY, secret TEXT NOT NULL, \
             disabled_at INTEGER, reason TEXT, updated_at INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY, endpoint TEXT NOT NULL, \
             status TEXT NOT NULL, due_at INTEGER, lease_until INTEGER NOT NULL DEFAULT 0, \
             created_at INTEGER NOT NULL, note TEXT, delivery TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, due_at)",
            "CREATE INDEX IF NOT EXISTS deliveries_endpoint ON deliveries (endpoint, status)",
        ] {
            if let Err(e) = sql.exec(stmt, None) {
                log(
                    "error",
                    json!({"msg": "webhook schema creation failed", "error": e.to_string()}),
                );
            }
        }
        Self {
            inner: Rc::new(Inner { sql, state }),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let result = match (req.method(), req.path().as_str()) {
            // Parsed by serde_json, not as JavaScript: jitter seeds are full 64-bit numbers.
            (Method::Post, ENQUEUE_PATH) => match req
                .bytes()
                .await
                .map_err(internal)
                .and_then(|b| serde_json::from_slice::<EnqueueRequest>(&b).map_err(internal))
            {
                Ok(r) => match self.inner.enqueue(r) {
                    Ok(answer) => {
                        // Send now, without keeping the caller: the answer goes back at
                        // once, the attempts run on in `wait_until`.
                        let claims = claim(&self.inner).await;
                        let inner = self.inner.clone();
                        self.inner
                            .state
                            .wait_until(deliver(inner, claims, Duration::ZERO));
                        json_response(200, &answer)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            (Method::Get, LIST_PATH) => {
                let limit = req
                    .url()
                    .ok()
                    .and_then(|u| crate::http::param(&u, "limit"))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(DEFAULT_LIST)
                    .clamp(1, MAX_LIST);
                self.inner.list(limit).and_then(|v| json_response(200, &v))
            }
            _ => Err(ApiError::internal("unknown webhook route")),
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => error_response(&e),
        }
    }

    async fn alarm(&self) -> worker::Result<Response> {
        // Awaited here (not in `wait_until`), so the runtime knows the alarm's work.
        let claims = claim(&self.inner).await;
        deliver(self.inner.clone(), claims, ALARM_WINDOW).await;
        Response::ok("")
    }
}
