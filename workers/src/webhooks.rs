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
//! 2. The object stores them in the tenant's outbox — the engine's
//!    [`kefu_engine::outbox::Outbox`], one document in the object's SQLite, changed in one
//!    synchronous step and only by the engine's rules and limits, as on Spin — answers at
//!    once, and sends the due ones in `wait_until`, concurrently: a slow or failing endpoint
//!    delays no other endpoint and no caller.
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
use kefu_engine::outbox::{self, Claim, Outbox, attempt_json};
use kefu_engine::webhook::{self, AttemptOutcome, Delivery, Next, WebhookEndpoint};
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
/// How long an alarm keeps taking deliveries that come due while it sends others.
const ALARM_WINDOW: Duration = Duration::from_secs(60);
/// The listing's default and largest page.
const DEFAULT_LIST: usize = outbox::DEFAULT_LIST;
const MAX_LIST: usize = outbox::MAX_LIST;
/// How much of an endpoint's answer body is read (then the rest is dropped).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What `emit` hands the object.
#[derive(Serialize, Deserialize)]
struct EnqueueRequest {
    tenant: String,
    /// The tenant's endpoints as its configuration has them now (with their current
    /// secrets): pending retries to any endpoint not enabled here end.
    endpoints: Vec<WebhookEndpoint>,
    deliveries: Vec<Delivery>,
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
    let deliveries = outbox::plan(&config.webhooks, events, now(), random_u64);
    if deliveries.is_empty() {
        return;
    }
    let count = deliveries.len();
    let request = EnqueueRequest {
        tenant: tenant.as_str().to_owned(),
        endpoints: config.webhooks.clone(),
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
        let resp = forward(
            &stub(env, &tenant)?,
            Method::Get,
            &format!("{LIST_PATH}?limit={limit}"),
            None,
        )
        .await?;
        let body: Value = crate::http::body_json(&resp).await.map_err(internal)?;
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

/// The object's storage: the tenant's name (for logs) and the tenant's outbox, the engine's
/// [`Outbox`] document in one row. Every change is one synchronous read-modify-write
/// ([`Inner::update`]): a Durable Object runs one request's synchronous code at a time, so
/// no other request or alarm sees a half-made change, and every rule (limits, what is due,
/// retries, what ends) is the engine's, as on Spin.
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

    fn text_at(&self, query: &str) -> Result<Option<String>, ApiError> {
        Ok(self
            .exec(query, vec![])?
            .into_iter()
            .next()
            .and_then(|row| match row.into_iter().next() {
                Some(SqlStorageValue::String(s)) => Some(s),
                _ => None,
            }))
    }

    /// The tenant this object serves (for logs), as the last `/enqueue` named it.
    fn tenant(&self) -> String {
        self.text_at("SELECT value FROM meta WHERE key = 'tenant'")
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The stored outbox (empty before the first delivery).
    fn load(&self) -> Result<Outbox, ApiError> {
        match self.text_at("SELECT document FROM outbox WHERE id = 0")? {
            Some(json) => serde_json::from_slice(json.as_bytes()).map_err(internal),
            None => Ok(Outbox::default()),
        }
    }

    /// Applies `change` to the outbox and stores the result, in one synchronous step.
    fn update<T>(&self, change: impl FnOnce(&mut Outbox) -> T) -> Result<T, ApiError> {
        let mut outbox = self.load()?;
        let out = change(&mut outbox);
        let json = serde_json::to_string(&outbox).map_err(internal)?;
        self.exec(
            "INSERT INTO outbox (id, document) VALUES (0, ?) \
             ON CONFLICT (id) DO UPDATE SET document = excluded.document",
            vec![json.into()],
        )?;
        Ok(out)
    }

    /// Takes new deliveries ([`Outbox::enqueue`] under the engine's [`outbox::LIMITS`]).
    fn enqueue(&self, req: EnqueueRequest) -> Result<Value, ApiError> {
        let t = now();
        let tenant = req.tenant;
        self.exec(
            "INSERT INTO meta (key, value) VALUES ('tenant', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![tenant.as_str().into()],
        )?;
        let q = self.update(|o| o.enqueue(t, &req.endpoints, req.deliveries, outbox::LIMITS))?;
        for url in &q.reenabled {
            log(
                "info",
                json!({"msg": "webhook endpoint re-enabled: its secret changed", "tenant": tenant, "endpoint": url}),
            );
        }
        for (url, n) in &q.cancelled {
            log(
                "info",
                json!({"msg": "webhook retries ended: the endpoint is no longer configured", "tenant": tenant, "endpoint": url, "cancelled_deliveries": n}),
            );
        }
        if !q.skipped.is_empty() {
            log(
                "info",
                json!({"msg": "webhook events not sent to disabled endpoints", "tenant": tenant, "endpoints": q.skipped}),
            );
        }
        if q.dropped > 0 {
            log(
                "error",
                json!({"msg": "webhook events dropped: too many pending deliveries", "tenant": tenant, "dropped": q.dropped, "max_pending": outbox::LIMITS.max_pending}),
            );
        }
        Ok(json!({"accepted": q.accepted, "skipped": q.skipped, "dropped": q.dropped}))
    }

    /// Reserves the due deliveries (up to the engine's [`outbox::MAX_BATCH`]) for this
    /// sender, so no other sender takes them; deliveries to an endpoint disabled meanwhile
    /// end instead.
    fn claim_due(&self) -> Result<Vec<Claim>, ApiError> {
        let t = now();
        if !self.load()?.has_due(t) {
            return Ok(Vec::new());
        }
        self.update(|o| o.claim(t, outbox::MAX_BATCH))
    }

    /// Stores an attempt's result ([`Outbox::finish`]) and logs what the delivery decided.
    fn finish(&self, seq: u64, delivery: &Delivery, next: Next) -> Result<(), ApiError> {
        let t = now();
        let disabled = self.update(|o| o.finish(t, seq, delivery.clone(), next))?;
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
            Next::DisableEndpoint => match disabled {
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

    /// When the next delivery nobody is sending comes due.
    fn next_due(&self) -> Option<Timestamp> {
        self.load().ok()?.next_due(now())
    }

    /// Sets the alarm to the earliest moment a pending delivery needs attention (its next
    /// attempt, or the end of its sender's lease: [`Outbox::wake_at`]), or clears it when
    /// nothing is pending.
    async fn reschedule(&self) -> Result<(), ApiError> {
        let next = self.load()?.wake_at();
        let storage = self.state.storage();
        match next {
            Some(at) => {
                let date = worker::js_sys::Date::new(&(at.as_millis() as f64).into());
                storage.set_alarm(ScheduledTime::new(date)).await
            }
            None => storage.delete_alarm().await,
        }
        .map_err(internal)
    }

    fn list(&self, limit: usize) -> Result<Value, ApiError> {
        Ok(self.load()?.to_json(now(), limit))
    }
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
            // The engine's outbox document (JSON), with the endpoints' current signing
            // secrets, which its log never lists.
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY CHECK (id = 0), \
             document TEXT NOT NULL)",
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
            // From text, as the stored outbox is: the deliveries' and endpoints' parsers are
            // then the ones the outbox already needs (a second reader type would compile
            // each again into the Worker's wasm).
            (Method::Post, ENQUEUE_PATH) => match req.text().await.map_err(internal).and_then(|t| {
                serde_json::from_slice::<EnqueueRequest>(t.as_bytes()).map_err(internal)
            }) {
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
