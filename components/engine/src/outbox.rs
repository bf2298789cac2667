//! A tenant's webhook outbox as plain data: the deliveries of its events (each a
//! [`Delivery`], the engine's retry state machine), its endpoints' state (signing secret,
//! disabled after a `410 Gone`), and the rules a host applies to it in one read-modify-write
//! step — take new deliveries, reserve the due ones for one sender, record an attempt — plus
//! the operators' delivery log as JSON.
//!
//! A host without SQL keeps the whole outbox as one document (the Spin component, in
//! key-value with compare-and-swap); the Worker's webhook Durable Object keeps the same
//! records as SQLite rows and answers the log with the same [`attempt_json`] and shapes.
//!
//! A delivery being sent holds a lease ([`LEASE`]): no other sender takes it meanwhile, and
//! should its sender die mid-flight the lease runs out and the delivery is due again (at
//! least once, never lost; receivers deduplicate on `webhook-id`).
//!
//! Every host keeps the outbox as this one document — the Spin component in key-value
//! (compare-and-swap), the Worker's webhook Durable Object in one SQLite row — and changes
//! it only through [`Outbox`]'s methods, under the same [`LIMITS`] and [`MAX_BATCH`]: which
//! deliveries are taken, dropped, due, retried and when, and which end, is decided here.
//! A host stores and fetches the document, sends the claimed requests and sets its timers
//! ([`Outbox::next_due`], [`Outbox::wake_at`]).

use core::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Event;
use crate::api::ApiError;
use crate::time::Timestamp;
use crate::webhook::{
    AttemptLog, AttemptResult, Delivery, DeliveryStatus, EventPayload, Next, REQUEST_TIMEOUT,
    WebhookEndpoint, WebhookSecret,
};

/// How long a delivery being sent is reserved for its sender.
pub const LEASE: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 15);
/// The delivery log's default and largest page.
pub const DEFAULT_LIST: usize = 50;
/// See [`DEFAULT_LIST`].
pub const MAX_LIST: usize = 200;
/// The operators' route.
pub const DELIVERIES_ROUTE: &str = "/api/v1/webhooks/deliveries";

/// How large a tenant's outbox may grow, on every host: 200 pending deliveries, the 50
/// newest finished ones kept for the log.
///
/// Why these: the outbox is one document that every webhook step reads, changes and
/// writes back whole (Spin's key-value by compare-and-swap, a Durable Object's row in one
/// synchronous step), so its size is paid on each enqueue, claim and recorded attempt. A
/// delivery is about 0.5 KB of JSON when its first attempt succeeds and at most 2.5 KB with
/// a full attempt log ([`crate::webhook::MAX_ATTEMPTS`] attempts, each with the longest
/// error; `outbox_at_its_limits_stays_small` measures it), so even a full outbox of failing
/// deliveries stays under 650 KB: a few milliseconds to parse per step, and well inside the
/// 2 MB a Durable Object's SQLite row may hold.
/// 200 pending deliveries are what about 70 chat turns make (two or three events each)
/// while an endpoint is down; past that, new deliveries are dropped and logged rather than
/// let storage grow without bound, which an endpoint down for a day would otherwise do.
pub const LIMITS: Limits = Limits {
    max_pending: 200,
    keep_finished: 50,
};

/// The most deliveries one sender claims at once ([`Outbox::claim`]): Spin sends them
/// after a request's response and waits for them (at most [`REQUEST_TIMEOUT`]), so the
/// batch bounds that tail; the Worker takes the next batch as soon as this one is sent.
pub const MAX_BATCH: usize = 16;

/// The deliveries `events` (which happened at `at`) make for the tenant's `endpoints`: one
/// per (event, enabled endpoint that wants its type), the same `webhook-id` for one event
/// on every endpoint (the receivers' idempotency key), and one delivery per URL however
/// often it is listed. `random` draws the ids' and jitter seeds' randomness.
pub fn plan(
    endpoints: &[WebhookEndpoint],
    events: &[Event],
    at: Timestamp,
    mut random: impl FnMut() -> u64,
) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for event in events {
        let payload = EventPayload::from_event(event, at);
        let mut event_id: Option<String> = None;
        let mut sent_to: Vec<&str> = Vec::new();
        for endpoint in endpoints {
            if !endpoint.wants(payload.event_type()) || sent_to.contains(&endpoint.url.as_str()) {
                continue;
            }
            sent_to.push(&endpoint.url);
            // The time first, so ids sort roughly by time; then 128 random bits.
            let id = event_id
                .get_or_insert_with(|| {
                    format!("{:011x}{:016x}{:016x}", at.as_millis(), random(), random())
                })
                .clone();
            // Hex ids are always valid event ids.
            if let Ok(d) = Delivery::new(&id, &endpoint.url, &payload, at, random()) {
                deliveries.push(d);
            }
        }
    }
    deliveries
}

/// A `Retry-After` value: delay seconds, or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`)
/// read against `now`.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let ms = crate::provider::parse_http_date(value)?;
    Some(Timestamp::from_millis(u64::try_from(ms).ok()?).since(now))
}

/// `?limit=` of the delivery log: 1 to [`MAX_LIST`], [`DEFAULT_LIST`] when absent.
pub fn list_limit(param: Option<&str>) -> Result<usize, ApiError> {
    match param {
        None => Ok(DEFAULT_LIST),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST).contains(n))
            .ok_or_else(|| ApiError {
                status: 400,
                code: "invalid_field",
                message: format!("`limit` must be a whole number from 1 to {MAX_LIST}"),
                field: Some("limit".into()),
                allow: None,
                retry_after: None,
            }),
    }
}

/// The delivery log only answers `GET`.
pub fn list_method_not_allowed() -> ApiError {
    ApiError {
        status: 405,
        code: "method_not_allowed",
        message: format!("{DELIVERIES_ROUTE} only answers GET"),
        field: None,
        allow: Some("GET"),
        retry_after: None,
    }
}

/// One attempt for logs and the listing: `{"at", "duration_ms", "result", "status_code" |
/// "error"}`.
pub fn attempt_json(at: Timestamp, result: &AttemptResult, duration_ms: u64) -> Value {
    let mut line = json!({"at": at.to_rfc3339(), "duration_ms": duration_ms});
    match result {
        AttemptResult::Status { code } => {
            line["result"] = "status".into();
            line["status_code"] = (*code).into();
        }
        AttemptResult::Timeout => {
            line["result"] = "timeout".into();
            line["error"] = format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()).into();
        }
        AttemptResult::Network { error } => {
            line["result"] = "network".into();
            line["error"] = error.as_str().into();
        }
    }
    line
}

/// A delivery's status as the log names it.
pub fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "failed",
    }
}

/// One delivery in the log (its payload as JSON; never a secret).
pub fn delivery_json(
    delivery: &Delivery,
    status: &str,
    note: Option<&str>,
    created_at: Timestamp,
    in_flight: bool,
) -> Value {
    let payload: Value = serde_json::from_slice(delivery.payload.as_bytes()).unwrap_or(Value::Null);
    json!({
        "id": delivery.id,
        "event_type": delivery.event_type,
        "endpoint": delivery.endpoint,
        "status": status,
        "note": note,
        "created_at": created_at.to_rfc3339(),
        "attempts": delivery.attempts,
        "in_flight": in_flight,
        "next_attempt_at": delivery.next_at.map(Timestamp::to_rfc3339),
        "attempt_log": delivery.log.iter().map(log_json).collect::<Vec<_>>(),
        "payload": payload,
    })
}

fn log_json(l: &AttemptLog) -> Value {
    attempt_json(l.at, &l.result, l.duration_ms)
}

/// An endpoint as the outbox knows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Its URL.
    pub url: String,
    /// Its current signing secret (from the tenant's configuration); never listed.
    secret: String,
    /// When a `410 Gone` disabled it (a new secret enables it again).
    pub disabled_at: Option<Timestamp>,
    /// Why it is disabled.
    pub reason: Option<String>,
}

impl core::fmt::Debug for EndpointRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EndpointRecord")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("disabled_at", &self.disabled_at)
            .finish()
    }
}

/// One delivery in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its number in this outbox (increasing).
    pub seq: u64,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Until when a sender holds it (in the past: nobody).
    pub lease_until: Timestamp,
    /// Why it ended without an attempt deciding it (`endpoint_disabled`, …).
    pub note: Option<String>,
    /// The delivery.
    pub delivery: Delivery,
}

/// A due delivery reserved for one sender: sign it with `secret`, send it, then
/// [`Outbox::finish`] it.
#[derive(Clone, Debug)]
pub struct Claim {
    /// Its entry's number.
    pub seq: u64,
    /// The delivery, as it was when claimed.
    pub delivery: Delivery,
    /// The endpoint's current signing secret.
    pub secret: WebhookSecret,
}

/// What [`Outbox::enqueue`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Deliveries taken.
    pub accepted: u32,
    /// Endpoints skipped because they are disabled.
    pub skipped: Vec<String>,
    /// Deliveries dropped because too many are pending.
    pub dropped: u32,
    /// Endpoints no longer configured whose pending retries ended, and how many.
    pub cancelled: Vec<(String, u32)>,
    /// Disabled endpoints enabled again because the tenant gave them a new secret.
    pub reenabled: Vec<String>,
}

/// How big an outbox may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Pending deliveries past which new ones are dropped (and logged), so an endpoint that
    /// is down for a day cannot grow storage without bound.
    pub max_pending: usize,
    /// Finished deliveries kept for the log.
    pub keep_finished: usize,
}

/// A tenant's webhook outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    next_seq: u64,
    endpoints: Vec<EndpointRecord>,
    /// Oldest first.
    entries: Vec<Entry>,
}

impl Outbox {
    /// Whether any delivery is pending (due, waiting for a retry, or being sent).
    pub fn has_pending(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.delivery.status == DeliveryStatus::Pending)
    }

    /// Whether a delivery nobody holds is due at `now` (a claim would take something).
    pub fn has_due(&self, now: Timestamp) -> bool {
        self.entries
            .iter()
            .any(|e| e.lease_until <= now && e.delivery.is_due(now))
    }

    /// When the next pending delivery nobody holds comes due (`now` or earlier when one is
    /// due already), or `None` when none is pending outside a lease.
    pub fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        self.entries
            .iter()
            .filter(|e| e.lease_until <= now && e.delivery.status == DeliveryStatus::Pending)
            .filter_map(|e| e.delivery.next_at)
            .min()
    }

    /// The earliest moment a pending delivery needs a sender: its next attempt, or the end
    /// of the lease of one being sent (should that sender have died mid-flight). `None` when
    /// nothing is pending. A host without its own clock sets its wake-up timer to this.
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.entries
            .iter()
            .filter(|e| e.delivery.status == DeliveryStatus::Pending)
            .map(|e| e.delivery.next_at.unwrap_or_default().max(e.lease_until))
            .min()
    }

    /// Takes new deliveries. The tenant's `configured` endpoints (its configuration now)
    /// update the known secrets — a new secret enables a disabled endpoint again — and
    /// pending retries to endpoints no longer configured (or switched off) end. Deliveries
    /// to a disabled endpoint are skipped; past `limits.max_pending` they are dropped.
    pub fn enqueue(
        &mut self,
        now: Timestamp,
        configured: &[WebhookEndpoint],
        deliveries: Vec<Delivery>,
        limits: Limits,
    ) -> Enqueued {
        let mut out = Enqueued::default();
        for endpoint in configured.iter().filter(|e| e.enabled) {
            match self.endpoints.iter_mut().find(|r| r.url == endpoint.url) {
                Some(r) if r.secret != endpoint.secret => {
                    if r.disabled_at.is_some() {
                        out.reenabled.push(r.url.clone());
                    }
                    r.secret = endpoint.secret.clone();
                    r.disabled_at = None;
                    r.reason = None;
                }
                Some(_) => {}
                None => self.endpoints.push(EndpointRecord {
                    url: endpoint.url.clone(),
                    secret: endpoint.secret.clone(),
                    disabled_at: None,
                    reason: None,
                }),
            }
        }
        let mut stale: Vec<String> = Vec::new();
        for e in &self.entries {
            let url = &e.delivery.endpoint;
            if e.delivery.status == DeliveryStatus::Pending
                && !configured.iter().any(|c| c.enabled && &c.url == url)
                && !stale.contains(url)
            {
                stale.push(url.clone());
            }
        }
        for url in stale {
            let n = self.cancel_pending(now, &url, "endpoint_not_configured");
            out.cancelled.push((url, n));
        }
        let mut pending = self
            .entries
            .iter()
            .filter(|e| e.delivery.status == DeliveryStatus::Pending)
            .count();
        for d in deliveries {
            let disabled = self
                .endpoints
                .iter()
                .any(|r| r.url == d.endpoint && r.disabled_at.is_some());
            if disabled {
                if !out.skipped.contains(&d.endpoint) {
                    out.skipped.push(d.endpoint);
                }
                continue;
            }
            if pending >= limits.max_pending {
                out.dropped += 1;
                continue;
            }
            self.next_seq += 1;
            self.entries.push(Entry {
                seq: self.next_seq,
                created_at: now,
                lease_until: Timestamp::default(),
                note: None,
                delivery: d,
            });
            pending += 1;
            out.accepted += 1;
        }
        // The log keeps the newest finished deliveries only.
        let finished = self
            .entries
            .iter()
            .filter(|e| e.delivery.status != DeliveryStatus::Pending)
            .count();
        let mut extra = finished.saturating_sub(limits.keep_finished);
        self.entries.retain(|e| {
            if extra > 0 && e.delivery.status != DeliveryStatus::Pending {
                extra -= 1;
                false
            } else {
                true
            }
        });
        out
    }

    /// Reserves up to `max` due deliveries nobody holds for this sender until `now` +
    /// [`LEASE`], oldest due first. Deliveries to a disabled endpoint, or one whose secret
    /// is unknown or unreadable, end instead.
    pub fn claim(&mut self, now: Timestamp, max: usize) -> Vec<Claim> {
        let mut due: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                e.lease_until <= now && e.delivery.is_due(now)
            })
            .collect();
        crate::sort::sort_by_key(&mut due, |&i| {
            (self.entries[i].delivery.next_at, self.entries[i].seq)
        });
        let mut claims = Vec::new();
        for i in due {
            if claims.len() >= max {
                break;
            }
            let url = self.entries[i].delivery.endpoint.clone();
            let record = self.endpoints.iter().find(|r| r.url == url);
            if record.is_some_and(|r| r.disabled_at.is_some()) {
                end(&mut self.entries[i], "endpoint_disabled");
                continue;
            }
            let Some(secret) = record.and_then(|r| WebhookSecret::parse(&r.secret).ok()) else {
                end(&mut self.entries[i], "no signing secret for the endpoint");
                continue;
            };
            let e = &mut self.entries[i];
            e.lease_until = now + LEASE;
            claims.push(Claim {
                seq: e.seq,
                delivery: e.delivery.clone(),
                secret,
            });
        }
        claims
    }

    /// Records a claimed delivery's attempt (`delivery` after [`Delivery::record`] said
    /// `next`) and releases its lease. A `410 Gone` disables the endpoint and ends its other
    /// pending deliveries: returns how many, or `None` when nothing was disabled now.
    pub fn finish(
        &mut self,
        now: Timestamp,
        seq: u64,
        delivery: Delivery,
        next: Next,
    ) -> Option<u32> {
        let url = delivery.endpoint.clone();
        if let Some(e) = self.entries.iter_mut().find(|e| e.seq == seq) {
            e.delivery = delivery;
            e.lease_until = Timestamp::default();
        }
        if next != Next::DisableEndpoint {
            return None;
        }
        let record = self.endpoints.iter_mut().find(|r| r.url == url)?;
        if record.disabled_at.is_some() {
            return None;
        }
        record.disabled_at = Some(now);
        record.reason = Some("the endpoint answered 410 Gone".into());
        Some(self.cancel_pending(now, &url, "endpoint_disabled"))
    }

    /// Ends the pending deliveries to `url` nobody is sending; returns how many.
    fn cancel_pending(&mut self, now: Timestamp, url: &str, note: &str) -> u32 {
        let mut n = 0;
        for e in &mut self.entries {
            if e.delivery.endpoint == url
                && e.delivery.status == DeliveryStatus::Pending
                && e.lease_until <= now
            {
                end(e, note);
                n += 1;
            }
        }
        n
    }

    /// The delivery log: the newest `limit` deliveries with every attempt, and each
    /// endpoint's state and pending count (never a secret).
    pub fn to_json(&self, now: Timestamp, limit: usize) -> Value {
        let deliveries: Vec<Value> = self
            .entries
            .iter()
            .rev()
            .take(limit)
            .map(|e| {
                delivery_json(
                    &e.delivery,
                    status_name(e.delivery.status),
                    e.note.as_deref(),
                    e.created_at,
                    e.lease_until > now,
                )
            })
            .collect();
        let mut endpoints: Vec<&EndpointRecord> = self.endpoints.iter().collect();
        crate::sort::sort_by(&mut endpoints, |a, b| a.url.cmp(&b.url));
        let endpoints: Vec<Value> = endpoints
            .into_iter()
            .map(|r| {
                let pending = self
                    .entries
                    .iter()
                    .filter(|e| {
                        e.delivery.endpoint == r.url && e.delivery.status == DeliveryStatus::Pending
                    })
                    .count();
                json!({
                    "url": r.url,
                    "state": if r.disabled_at.is_some() { "disabled" } else { "active" },
                    "disabled_at": r.disabled_at.map(Timestamp::to_rfc3339),
                    "reason": r.reason,
                    "pending": pending,
                })
            })
            .collect();
        json!({"deliveries": deliveries, "endpoints": endpoints})
    }
}

fn end(e: &mut Entry, note: &str) {
    e.delivery.status = DeliveryStatus::Failed;
    e.delivery.next_at = None;
    e.lease_until = Timestamp::default();
    e.note = Some(note.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{ConversationId, Role};
    use crate::webhook::AttemptOutcome;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const LIMITS: Limits = Limits {
        max_pending: 100,
        keep_finished: 3,
    };

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_795_593_600_000 + ms)
    }

    fn endpoint(url: &str, events: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint {
            url: url.into(),
            secret: SECRET.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            enabled: true,
        }
    }

    fn events() -> Vec<Event> {
        let c = ConversationId::parse("c1").unwrap();
        vec![
            Event::ConversationCreated {
                conversation: c.clone(),
            },
            Event::MessageCreated {
                conversation: c,
                seq: 1,
                role: Role::Visitor,
            },
        ]
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn plan_fans_out_by_endpoint_and_type_with_one_id_per_event() {
        let endpoints = [
            endpoint("https://a.example/h", &[]),
            endpoint("https://b.example/h", &["message.created"]),
            endpoint("https://a.example/h", &[]),
            WebhookEndpoint {
                enabled: false,
                ..endpoint("https://c.example/h", &[])
            },
        ];
        let d = plan(&endpoints, &events(), t(0), counter());
        let seen: Vec<(&str, &str)> = d
            .iter()
            .map(|d| (d.endpoint.as_str(), d.event_type.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("https://a.example/h", "conversation.created"),
                ("https://a.example/h", "message.created"),
                ("https://b.example/h", "message.created"),
            ]
        );
        assert_eq!(d[1].id, d[2].id);
        assert_ne!(d[0].id, d[1].id);
        assert!(d[0].id.starts_with("msg_"));
    }

    #[test]
    fn outbox_at_its_limits_stays_small() {
        // The worst case the engine's LIMITS allow: every pending delivery with all but its
        // last attempt failed on the longest error, every finished one with all of them.
        let configured = [endpoint("https://receiver.example.com/kefu/webhooks", &[])];
        let mut outbox = Outbox::default();
        let mut random = counter();
        let error = "x".repeat(400);
        let total = super::LIMITS.max_pending + super::LIMITS.keep_finished;
        let mut now = t(0);
        while outbox.entries.len() < total {
            let d = plan(&configured, &events()[1..], now, &mut random);
            outbox.enqueue(now, &configured, d, super::LIMITS);
            let finished = outbox.entries.len() <= super::LIMITS.keep_finished;
            let e = outbox.entries.last_mut().unwrap();
            let attempts = crate::webhook::MAX_ATTEMPTS - u32::from(!finished);
            for _ in 0..attempts {
                let at = e.delivery.next_at.unwrap_or(now);
                e.delivery.record(
                    at,
                    AttemptOutcome::network(&error, Duration::from_millis(15_000)),
                );
            }
            now = now + Duration::from_secs(1);
        }
        let pending = outbox
            .entries
            .iter()
            .filter(|e| e.delivery.status == DeliveryStatus::Pending)
            .count();
        assert_eq!(pending, super::LIMITS.max_pending);
        // The usual delivery: delivered at its first attempt.
        let mut one = Outbox::default();
        let d = plan(&configured, &events()[1..], t(0), counter());
        one.enqueue(t(0), &configured, d, super::LIMITS);
        let e = &mut one.entries[0];
        e.delivery
            .record(t(1), AttemptOutcome::status(200, Duration::from_millis(80)));
        let usual = serde_json::to_vec(&one.entries[0]).unwrap().len();
        println!("a delivery delivered at once: {usual} bytes");
        assert!(usual < 700, "{usual} bytes");
        let bytes = serde_json::to_vec(&outbox).unwrap().len();
        let each = bytes / total;
        println!("outbox at its limits: {bytes} bytes, {each} a delivery");
        assert!(each < 2_500, "{each} bytes a delivery");
        assert!(bytes < 650_000, "{bytes} bytes");
    }

    #[test]
    fn claims_lease_sends_and_retries() {
        let configured = [endpoint("https://a.example/h", &[])];
        let mut outbox = Outbox::default();
        let d = plan(&configured, &events(), t(0), counter());
        let q = outbox.enqueue(t(0), &configured, d, LIMITS);
        assert_eq!(q.accepted, 2);
        let claims = outbox.claim(t(0), 1);
        assert_eq!(claims.len(), 1);
        // Leased: another sender gets only the other one, then nothing.
        assert_eq!(outbox.claim(t(1), 10).len(), 1);
        assert!(outbox.claim(t(2), 10).is_empty());
        let Claim {
            seq, mut delivery, ..
        } = claims.into_iter().next().unwrap();
        let next = delivery.record(
            t(100),
            AttemptOutcome::status(503, Duration::from_millis(100)),
        );
        assert!(matches!(next, Next::RetryAt(_)));
        assert_eq!(outbox.finish(t(100), seq, delivery, next), None);
        let log = outbox.to_json(t(100), 10);
        assert_eq!(log["deliveries"][1]["attempt_log"][0]["status_code"], 503);
        assert_eq!(log["deliveries"][1]["in_flight"], false);
        assert_eq!(log["deliveries"][0]["in_flight"], true);
        assert!(!log.to_string().contains("MfKQ9r8"));
        // Not due before the retry; due after it.
        assert!(!outbox.has_due(t(200)));
        assert!(outbox.has_due(t(10_000)));
        // The retry is the next due; the other one's lease ends first, so a host wakes then.
        let retry = outbox.entries[0].delivery.next_at.unwrap();
        assert_eq!(outbox.next_due(t(200)), Some(retry));
        assert_eq!(outbox.wake_at(), Some(retry.min(t(1) + LEASE)));
        // A sender that died: its lease runs out and the delivery is due again.
        assert_eq!(outbox.claim(t(1) + LEASE, 10).len(), 2);
    }

    #[test]
    fn gone_disables_the_endpoint_until_its_secret_changes() {
        let configured = [endpoint("https://a.example/h", &[])];
        let mut outbox = Outbox::default();
        let d = plan(&configured, &events(), t(0), counter());
        outbox.enqueue(t(0), &configured, d, LIMITS);
        let mut claims = outbox.claim(t(0), 1);
        let Claim {
            seq, mut delivery, ..
        } = claims.remove(0);
        let next = delivery.record(t(5), AttemptOutcome::status(410, Duration::ZERO));
        assert_eq!(next, Next::DisableEndpoint);
        // The other pending delivery ends with it.
        assert_eq!(outbox.finish(t(5), seq, delivery, next), Some(1));
        assert!(!outbox.has_pending());
        let log = outbox.to_json(t(5), 10);
        assert_eq!(log["endpoints"][0]["state"], "disabled");
        assert_eq!(log["deliveries"][0]["note"], "endpoint_disabled");
        // New events are not taken for it…
        let d = plan(&configured, &events(), t(6), counter());
        assert_eq!(outbox.enqueue(t(6), &configured, d, LIMITS).accepted, 0);
        // …until the tenant configures it anew with another secret.
        let renewed = [WebhookEndpoint {
            secret: "whsec_a2VmdS1ydW50aW1lLXRlc3RzLXdlYmhvb2sta2V5ISE=".into(),
            ..configured[0].clone()
        }];
        let d = plan(&renewed, &events(), t(7), counter());
        assert_eq!(outbox.enqueue(t(7), &renewed, d, LIMITS).accepted, 2);
    }

    #[test]
    fn removed_endpoints_end_and_the_outbox_stays_bounded() {
        let configured = [endpoint("https://a.example/h", &[])];
        let mut outbox = Outbox::default();
        let d = plan(&configured, &events(), t(0), counter());
        outbox.enqueue(t(0), &configured, d, LIMITS);
        let other = [endpoint("https://b.example/h", &[])];
        let q = outbox.enqueue(t(1), &other, Vec::new(), LIMITS);
        assert_eq!(q.cancelled, vec![("https://a.example/h".to_owned(), 2)]);
        // Past max_pending new deliveries are dropped; finished ones are trimmed.
        let small = Limits {
            max_pending: 3,
            keep_finished: 1,
        };
        let mut d = plan(&other, &events(), t(2), counter());
        d.extend(plan(&other, &events(), t(2), counter()));
        let q = outbox.enqueue(t(2), &other, d, small);
        assert_eq!((q.accepted, q.dropped), (3, 1));
        assert_eq!(outbox.entries.len(), 4);
    }

    #[test]
    fn limits_and_retry_after() {
        assert_eq!(list_limit(None), Ok(DEFAULT_LIST));
        assert_eq!(list_limit(Some("2")), Ok(2));
        for bad in ["0", "201", "x", "-1"] {
            assert_eq!(list_limit(Some(bad)).unwrap_err().code, "invalid_field");
        }
        let now = Timestamp::from_millis(784_111_777_000 - 10_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
