//! Webhooks for conversation events, in the Standard Webhooks format
//! (<https://www.standardwebhooks.com>), so a tenant's receiver can verify them with any of
//! that project's libraries.
//!
//! Four pieces, all pure:
//! - **Signing and verification**: secrets are `whsec_` + base64 key bytes; every request
//!   carries `webhook-id`, `webhook-timestamp` (seconds) and `webhook-signature`, a
//!   space-separated list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
//!   (one per secret, so secrets can be rotated without downtime). [`verify`] compares in
//!   constant time and rejects timestamps outside a tolerance (replays).
//! - **Payloads**: [`EventPayload`] builds `{"type", "timestamp", "data"}` from an [`Event`].
//! - **Endpoints**: [`WebhookEndpoint`] is what a tenant configures; [`validate_endpoints`]
//!   checks it, naming the field at fault.
//! - **Delivery**: [`Delivery`] is one event on its way to one endpoint: the host sends
//!   [`Delivery::request`] when [`Delivery::next_at`] comes, and feeds the result to
//!   [`Delivery::record`], which decides whether and when to try again.
//!
//! The engine reads no clock and draws no randomness: the host passes `now` and a jitter
//! seed, so a delivery's whole schedule is replayable.

use core::fmt;
use core::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Event;
use crate::error::ConfigError;
use crate::gateway::Rng;
use crate::provider::{Header, HttpRequest};
use crate::time::Timestamp;
use crate::vocab::ConversationId;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a serialized signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The header carrying the message id (the same on every retry: the receiver's idempotency
/// key).
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the attempt's time, in seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a `webhook-timestamp` may be from the verifier's clock, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// How long the host should wait for an endpoint's response (the spec suggests 15 to 30 s);
/// a longer wait is recorded as [`AttemptResult::Timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The event types Kefu sends.
pub const EVENT_TYPES: [&str; 5] = [
    "conversation.created",
    "message.created",
    "conversation.status_changed",
    "conversation.assigned",
    "csat.submitted",
];

/// The wait before each retry: attempt 1 goes out immediately, attempt `n + 1` this long
/// after attempt `n` failed (±10 % jitter). After [`MAX_ATTEMPTS`] failures the delivery
/// gives up, about 27.5 hours after the first attempt.
///
/// This is the schedule Svix (the Standard Webhooks authors) use; the spec's own example
/// table goes on past the second 10 h step to 14 h, 20 h and 24 h.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How many attempts a delivery gets in all.
pub const MAX_ATTEMPTS: u32 = RETRY_DELAYS.len() as u32 + 1;

/// The longest `Retry-After` honoured: a receiver cannot park a delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);

/// Secrets are at least this many bytes (the spec asks for 24 to 64 random bytes).
pub const MIN_SECRET_BYTES: usize = 24;
/// Secrets are at most this many bytes.
pub const MAX_SECRET_BYTES: usize = 64;

/// The most signatures [`verify`] looks at in one header, and the header's longest length:
/// enough for any rotation, and a bound on the work an unauthenticated request can cause.
const MAX_SIGNATURES: usize = 16;
const MAX_SIGNATURE_HEADER: usize = 4096;
/// How much of a network error the attempt log keeps, in bytes.
const MAX_ERROR_BYTES: usize = 200;

/// What went wrong with a secret, an id or a request being verified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret is not `whsec_` followed by base64 of 1 to 64 key bytes.
    #[error("a webhook secret must be `whsec_` followed by base64 of 1 to 64 key bytes")]
    InvalidSecret,
    /// An event id is not 1 to 128 characters of `[A-Za-z0-9_-]`.
    #[error("an event id must be 1 to 128 characters of [A-Za-z0-9_-]")]
    InvalidEventId,
    /// A required header is absent.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// A header is present but malformed (a timestamp that is not a number, an oversized
    /// signature list).
    #[error("malformed header `{0}`")]
    InvalidHeader(&'static str),
    /// The timestamp is older than the tolerance: possibly a replay.
    #[error("the webhook timestamp is too old")]
    TimestampTooOld,
    /// The timestamp is further in the future than the tolerance.
    #[error("the webhook timestamp is too far in the future")]
    TimestampInFuture,
    /// No `v1` signature matches the body under any of the secrets.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
}

/// A signing secret: the key bytes behind `whsec_…`. Its `Debug` output never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Parses `whsec_` + standard base64 (padded, as the spec's libraries write it). Like
    /// those libraries it also takes the bare base64; endpoint configuration insists on the
    /// prefix.
    pub fn parse(s: &str) -> Result<Self, WebhookError> {
        let s = s.trim();
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        // Checked before decoding so a huge string costs nothing.
        if b64.is_empty() || b64.len() > MAX_SECRET_BYTES.div_ceil(3) * 4 {
            return Err(WebhookError::InvalidSecret);
        }
        let key = BASE64
            .decode(b64)
            .map_err(|_| WebhookError::InvalidSecret)?;
        Self::from_bytes(key)
    }

    /// A secret from key bytes (e.g. fresh random bytes from the host), 1 to 64 of them.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, WebhookError> {
        if key.is_empty() || key.len() > MAX_SECRET_BYTES {
            return Err(WebhookError::InvalidSecret);
        }
        Ok(Self(key))
    }

    /// The secret as the tenant copies it: `whsec_` + base64.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }

    /// How many key bytes it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty (never, for a parsed secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keyed MAC over `{id}.{timestamp}.{body}`.
    fn mac(&self, id: &str, timestamp_secs: u64, body: &[u8]) -> HmacSha256 {
        // Not input-dependent: HMAC takes keys of any length (long ones are hashed first).
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret(<{} bytes redacted>)", self.0.len())
    }
}

/// The `webhook-id` for an event: `msg_` + the host's event id.
///
/// The id is signed as `{id}.{timestamp}.{body}`, so it must not contain a `.` (nor anything
/// a header cannot carry): event ids are 1 to 128 characters of `[A-Za-z0-9_-]`.
pub fn message_id(event_id: &str) -> Result<String, WebhookError> {
    let ok = !event_id.is_empty()
        && event_id.len() <= 128
        && event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(format!("msg_{event_id}"))
    } else {
        Err(WebhookError::InvalidEventId)
    }
}

/// One signature: `v1,` + base64 of HMAC-SHA256(key, `{id}.{timestamp}.{body}`).
pub fn sign(secret: &WebhookSecret, id: &str, timestamp_secs: u64, body: &[u8]) -> String {
    let tag = secret.mac(id, timestamp_secs, body).finalize().into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// The three Standard Webhooks headers for one attempt, signed with every secret given
/// (the new one and, during a rotation, the old one).
pub fn headers(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp_secs: u64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| sign(s, id, timestamp_secs, body))
        .collect();
    vec![
        (HEADER_ID, id.to_owned()),
        (HEADER_TIMESTAMP, timestamp_secs.to_string()),
        (HEADER_SIGNATURE, signatures.join(" ")),
    ]
}

/// Verifies a received webhook: the timestamp is within `tolerance` of `now`, and some `v1`
/// signature in `webhook-signature` matches the body under some secret.
///
/// Header names are matched case-insensitively; signatures with other versions (`v1a`) are
/// skipped. Signatures are compared in constant time.
pub fn verify<K: AsRef<str>, V: AsRef<str>>(
    secrets: &[WebhookSecret],
    headers: &[(K, V)],
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let header = |name: &'static str| {
        headers
            .iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref().trim())
            .ok_or(WebhookError::MissingHeader(name))
    };
    let id = header(HEADER_ID)?;
    let timestamp = header(HEADER_TIMESTAMP)?;
    let signatures = header(HEADER_SIGNATURE)?;

    let ts: u64 = if !timestamp.is_empty()
        && timestamp.len() <= 19
        && timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        timestamp
            .parse()
            .map_err(|_| WebhookError::InvalidHeader(HEADER_TIMESTAMP))?
    } else {
        return Err(WebhookError::InvalidHeader(HEADER_TIMESTAMP));
    };
    let now_secs = now.as_millis() / 1000;
    let tolerance = tolerance.as_secs();
    if now_secs.saturating_sub(ts) > tolerance {
        return Err(WebhookError::TimestampTooOld);
    }
    if ts.saturating_sub(now_secs) > tolerance {
        return Err(WebhookError::TimestampInFuture);
    }

    if signatures.len() > MAX_SIGNATURE_HEADER {
        return Err(WebhookError::InvalidHeader(HEADER_SIGNATURE));
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64.decode(sig).ok())
        .take(MAX_SIGNATURES)
        .collect();
    for secret in secrets {
        let mac = secret.mac(id, ts, body);
        // `verify_slice` compares in constant time (and rejects other lengths).
        if candidates
            .iter()
            .any(|c| mac.clone().verify_slice(c).is_ok())
        {
            return Ok(());
        }
    }
    Err(WebhookError::NoMatchingSignature)
}

/// A webhook body: `{"type", "timestamp", "data"}`, as the spec recommends.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPayload {
    event_type: &'static str,
    json: Value,
}

impl EventPayload {
    /// The payload for an engine [`Event`] that happened at `at`: `data` is the event's
    /// JSON ([`Event::to_json`]) without its `type`.
    pub fn from_event(event: &Event, at: Timestamp) -> Self {
        let mut data = event.to_json();
        if let Some(fields) = data.as_object_mut() {
            fields.remove("type");
        }
        Self::new(event.name(), at, data)
    }

    /// `conversation.assigned`: an agent took the conversation.
    pub fn conversation_assigned(
        conversation: &ConversationId,
        agent: &str,
        at: Timestamp,
    ) -> Self {
        Self::new(
            "conversation.assigned",
            at,
            json!({"conversation_id": conversation.as_str(), "agent": agent}),
        )
    }

    /// `csat.submitted`: the visitor rated the conversation, `score` from 1 (bad) to 5.
    pub fn csat_submitted(conversation: &ConversationId, score: u8, at: Timestamp) -> Self {
        Self::new(
            "csat.submitted",
            at,
            json!({"conversation_id": conversation.as_str(), "score": score}),
        )
    }

    fn new(event_type: &'static str, at: Timestamp, data: Value) -> Self {
        Self {
            event_type,
            json: json!({"type": event_type, "timestamp": at.to_rfc3339(), "data": data}),
        }
    }

    /// The event type (`message.created`, …).
    pub fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// The payload as JSON.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The exact body sent and signed: minified JSON.
    pub fn to_body(&self) -> String {
        self.json.to_string()
    }
}

/// A tenant's webhook endpoint, as configured.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Where events are POSTed: `https://…` (or `http://localhost`/`127.0.0.1` for
    /// development).
    pub url: String,
    /// The signing secret, `whsec_` + base64 of 24 to 64 random bytes.
    pub secret: String,
    /// The event types sent here; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Whether events are sent at all (a `410 Gone` answer turns this off).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint should receive `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled && (self.events.is_empty() || self.events.iter().any(|e| e == event_type))
    }

    /// The parsed signing secret.
    pub fn signing_secret(&self) -> Result<WebhookSecret, WebhookError> {
        WebhookSecret::parse(&self.secret)
    }

    /// Checks the endpoint; errors name fields under `path` (e.g. `webhooks[0]`).
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError {
            field: format!("{path}.{field}"),
            message,
        };
        check_url(&self.url).map_err(|m| invalid("url", m.to_owned()))?;
        // Messages about the secret never repeat it.
        let secret = match self.secret.trim().strip_prefix(SECRET_PREFIX) {
            Some(_) => self.signing_secret(),
            None => Err(WebhookError::InvalidSecret),
        };
        match secret {
            Ok(s) if s.len() >= MIN_SECRET_BYTES => {}
            Ok(_) => {
                return Err(invalid(
                    "secret",
                    format!("must hold at least {MIN_SECRET_BYTES} random bytes"),
                ));
            }
            Err(_) => {
                return Err(invalid(
                    "secret",
                    format!(
                        "must be `whsec_` followed by base64 of {MIN_SECRET_BYTES} to \
                         {MAX_SECRET_BYTES} random bytes"
                    ),
                ));
            }
        }
        for (i, event) in self.events.iter().enumerate() {
            if !EVENT_TYPES.contains(&event.as_str()) {
                return Err(invalid(
                    &format!("events[{i}]"),
                    format!(
                        "unknown event type `{event}`; known: {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a tenant's endpoints; errors name the field (`webhooks[1].url`).
pub fn validate_endpoints(endpoints: &[WebhookEndpoint]) -> Result<(), ConfigError> {
    if endpoints.len() > 20 {
        return Err(ConfigError {
            field: "webhooks".into(),
            message: "at most 20 webhook endpoints are allowed".into(),
        });
    }
    for (i, e) in endpoints.iter().enumerate() {
        e.validate(&format!("webhooks[{i}]"))?;
    }
    Ok(())
}

/// An `https://` URL with a host, or `http://` to this machine only (development).
fn check_url(url: &str) -> Result<(), &'static str> {
    const MESSAGE: &str = "must be an https:// URL (http:// only to localhost or 127.0.0.1)";
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(MESSAGE);
    }
    let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(MESSAGE);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain credentials (`user@`): use the signing secret");
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => (addr, None),
            Some((addr, after)) => match after.strip_prefix(':') {
                Some(port) => (addr, Some(port)),
                None => return Err(MESSAGE),
            },
            None => return Err(MESSAGE),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(MESSAGE);
    }
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    if !host_ok {
        return Err(MESSAGE);
    }
    if !secure && !matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return Err(MESSAGE);
    }
    // Deliveries leave from inside the deployment: never to its internal names or private
    // addresses, nor to a host parsers could read differently (see `crate::destination`).
    match crate::destination::strict_host(url) {
        None => Err(MESSAGE),
        Some(host) if crate::destination::is_internal_host(&host) => {
            Err(crate::destination::INTERNAL_MESSAGE)
        }
        Some(_) => Ok(()),
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt at [`Delivery::next_at`].
    Pending,
    /// An attempt got a 2xx answer.
    Succeeded,
    /// Given up: the attempts ran out, or the endpoint answered `410 Gone`.
    Failed,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AttemptResult {
    /// The endpoint answered with this status code.
    Status {
        /// The HTTP status code.
        code: u16,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    Timeout,
    /// The request could not be made or the connection broke (DNS, TLS, reset, …).
    Network {
        /// What the host saw, cut to 200 bytes.
        error: String,
    },
}

/// The result of one attempt, as the host fed it to [`Delivery::record`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// What happened.
    pub result: AttemptResult,
    /// How long the attempt took.
    pub duration: Duration,
    /// The response's `Retry-After`, if any (429 and 503 often carry one).
    pub retry_after: Option<Duration>,
}

impl AttemptOutcome {
    /// The endpoint answered with `code`.
    pub fn status(code: u16, duration: Duration) -> Self {
        Self {
            result: AttemptResult::Status { code },
            duration,
            retry_after: None,
        }
    }

    /// No answer in time.
    pub fn timeout(duration: Duration) -> Self {
        Self {
            result: AttemptResult::Timeout,
            duration,
            retry_after: None,
        }
    }

    /// The request failed below HTTP.
    pub fn network(error: &str, duration: Duration) -> Self {
        let mut end = error.len().min(MAX_ERROR_BYTES);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            result: AttemptResult::Network {
                error: error[..end].to_owned(),
            },
            duration,
            retry_after: None,
        }
    }

    /// With the response's `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }
}

/// One line of a delivery's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// When the attempt started (the `now` passed to [`Delivery::record`] less its
    /// duration).
    pub at: Timestamp,
    /// What happened.
    pub result: AttemptResult,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// What the host does after [`Delivery::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Delivered; nothing more to do.
    Delivered,
    /// Try again at this time (persist the delivery and set an alarm).
    RetryAt(Timestamp),
    /// The attempts ran out; the delivery failed. Tell the tenant (the spec suggests
    /// another channel, e.g. e-mail) and consider disabling the endpoint if it keeps
    /// happening.
    GaveUp,
    /// The endpoint answered `410 Gone`: it wants no more webhooks. Set its `enabled` to
    /// false and stop its other pending deliveries.
    DisableEndpoint,
}

/// One event on its way to one endpoint: a small state machine the host persists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The `webhook-id`: the same on every attempt, so the receiver can deduplicate.
    pub id: String,
    /// The endpoint's URL.
    pub endpoint: String,
    /// The event type, for filtering and display.
    pub event_type: String,
    /// The exact body sent (and signed) on every attempt.
    pub payload: String,
    /// How many attempts have been recorded.
    pub attempts: u32,
    /// When the next attempt is due; `None` once the delivery is over.
    pub next_at: Option<Timestamp>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first (at most [`MAX_ATTEMPTS`]).
    pub log: Vec<AttemptLog>,
    /// The host's seed for retry jitter, so the schedule is replayable.
    pub jitter_seed: u64,
}

impl Delivery {
    /// A new delivery of `payload` to `endpoint`, due at once. `event_id` is the host's
    /// unique id for the event (the `webhook-id` is `msg_` + it); `jitter_seed` is any
    /// random number (it spreads retries of many deliveries apart).
    pub fn new(
        event_id: &str,
        endpoint: &str,
        payload: &EventPayload,
        now: Timestamp,
        jitter_seed: u64,
    ) -> Result<Self, WebhookError> {
        Ok(Self {
            id: message_id(event_id)?,
            endpoint: endpoint.to_owned(),
            event_type: payload.event_type().to_owned(),
            payload: payload.to_body(),
            attempts: 0,
            next_at: Some(now),
            status: DeliveryStatus::Pending,
            log: Vec::new(),
            jitter_seed,
        })
    }

    /// Whether an attempt is due at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.status == DeliveryStatus::Pending && self.next_at.is_some_and(|t| t <= now)
    }

    /// The signed POST for an attempt starting at `now` (each attempt is signed afresh
    /// with its own timestamp, so retries pass the receiver's replay check).
    pub fn request(&self, secrets: &[WebhookSecret], now: Timestamp) -> HttpRequest {
        let body = self.payload.as_bytes();
        let mut headers = vec![Header {
            name: "content-type",
            value: "application/json".to_owned(),
            sensitive: false,
        }];
        headers.extend(
            self::headers(secrets, &self.id, now.as_millis() / 1000, body)
                .into_iter()
                .map(|(name, value)| Header {
                    name,
                    value,
                    sensitive: false,
                }),
        );
        HttpRequest {
            method: "POST",
            url: self.endpoint.clone(),
            headers,
            body: body.to_vec(),
        }
    }

    /// Records an attempt's outcome and decides what comes next.
    ///
    /// - `2xx`: delivered.
    /// - `410 Gone`: failed for good; the endpoint should be disabled.
    /// - Anything else is retried on the [`RETRY_DELAYS`] schedule until [`MAX_ATTEMPTS`]:
    ///   `429`, `5xx`, timeouts and network errors, and also `3xx` (redirects are not
    ///   followed) and the other `4xx`. The spec counts every non-2xx as a failure to retry,
    ///   and a receiver's 400/401/404 is most often a deploy or configuration slip that is
    ///   fixed within the day-long schedule; giving up at once would lose those events.
    ///   A `Retry-After` (capped at [`MAX_RETRY_AFTER`]) can push a retry later, never
    ///   sooner.
    ///
    /// Recording on a delivery that is already over changes nothing and returns how it
    /// ended.
    pub fn record(&mut self, now: Timestamp, outcome: AttemptOutcome) -> Next {
        if self.status != DeliveryStatus::Pending {
            return self.ending();
        }
        let duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX);
        self.attempts += 1;
        self.log.push(AttemptLog {
            at: Timestamp::from_millis(now.as_millis().saturating_sub(duration_ms)),
            result: outcome.result.clone(),
            duration_ms,
        });
        match outcome.result {
            AttemptResult::Status { code } if (200..300).contains(&code) => {
                self.finish(DeliveryStatus::Succeeded)
            }
            AttemptResult::Status { code: 410 } => self.finish(DeliveryStatus::Failed),
            _ if self.attempts >= MAX_ATTEMPTS => self.finish(DeliveryStatus::Failed),
            _ => {
                let base = RETRY_DELAYS[(self.attempts - 1) as usize];
                let mut delay = self.jittered(base);
                if let Some(after) = outcome.retry_after {
                    delay = delay.max(after.min(MAX_RETRY_AFTER));
                }
                let at = now + delay;
                self.next_at = Some(at);
                Next::RetryAt(at)
            }
        }
    }

    fn finish(&mut self, status: DeliveryStatus) -> Next {
        self.status = status;
        self.next_at = None;
        self.ending()
    }

    /// How a finished delivery ended.
    fn ending(&self) -> Next {
        match self.status {
            DeliveryStatus::Succeeded => Next::Delivered,
            DeliveryStatus::Failed
                if matches!(
                    self.log.last(),
                    Some(AttemptLog {
                        result: AttemptResult::Status { code: 410 },
                        ..
                    })
                ) =>
            {
                Next::DisableEndpoint
            }
            DeliveryStatus::Failed => Next::GaveUp,
            DeliveryStatus::Pending => Next::RetryAt(self.next_at.unwrap_or_default()),
        }
    }

    /// `base` scaled by a factor in [0.9, 1.1] drawn from the seed and the attempt number.
    fn jittered(&self, base: Duration) -> Duration {
        let mut rng = Rng::new(self.jitter_seed ^ u64::from(self.attempts).rotate_left(32));
        let permille = 900 + rng.next_u64() % 201;
        let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(ms / 1000 * permille + ms % 1000 * permille / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    #[test]
    fn secrets_round_trip_and_never_print() {
        let s = secret();
        assert_eq!(s.len(), 24);
        assert_eq!(s.to_whsec(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(format!("{s:?}"), "WebhookSecret(<24 bytes redacted>)");
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Ok(s)
        );
        for bad in [
            "",
            "whsec_",
            "whsec_!!!",
            "whsec_abc",
            "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert_eq!(
                WebhookSecret::parse(bad),
                Err(WebhookError::InvalidSecret),
                "{bad}"
            );
        }
        let huge = format!("whsec_{}", "A".repeat(10_000));
        assert!(WebhookSecret::parse(&huge).is_err());
        assert!(WebhookSecret::from_bytes(vec![]).is_err());
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_depends_on_the_seed() {
        let payload = EventPayload::csat_submitted(
            &ConversationId::parse("c").unwrap(),
            5,
            Timestamp::from_millis(0),
        );
        let mut seen = Vec::new();
        for seed in 0..50 {
            let mut d = Delivery::new(
                "e",
                "https://x.example",
                &payload,
                Timestamp::default(),
                seed,
            )
            .unwrap();
            d.attempts = 3;
            let j = d.jittered(Duration::from_secs(1000)).as_millis();
            assert!((900_000..=1_100_000).contains(&j), "{j}");
            seen.push(j);
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 40, "jitter should vary with the seed");
    }

    #[test]
    fn urls() {
        for ok in [
            "https://hooks.example.com/kefu",
            "https://hooks.example.com:8443/x?y=1",
            "http://localhost:8787/hook",
            "http://127.0.0.1/hook",
            "http://[::1]:9000/",
            "https://[2001:db8::1]/h",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/kefu",
            "http://localhost.evil.example/",
            "http://127.0.0.1@evil.example/",
            "https://user:pw@hooks.example.com/",
            "https://",
            "https://exa mple.com",
            "ftp://example.com",
            "HTTPS://example.com",
            "https://example.com:99999999/",
            "https://example.com:/",
            "//example.com",
            "http://[::1]x/",
            "https://10.0.0.8/hook",
            "https://169.254.169.254/latest",
            "https://plugin-x.spin.internal/",
            "https://intranet/hook",
            "https://hooks.example.com\\.evil.example/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
