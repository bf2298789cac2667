//! What every model provider has in common, whatever its wire format: the HTTP request the
//! host must send, the events the host feeds back, and the normalized results (usage, finish
//! reasons, typed errors).

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// An HTTP request for the host to send. The engine builds it; the host only carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `POST`, `GET`, …
    pub method: &'static str,
    /// The absolute URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<Header>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// One request header.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Its name, lower case.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Holds a secret: never printed, logged or traced.
    pub sensitive: bool,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.sensitive {
            "<redacted>"
        } else {
            &self.value
        };
        write!(f, "{}: {}", self.name, value)
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What the host observed of a provider call, fed back in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// The response's status line and headers arrived.
    Head {
        /// HTTP status.
        status: u16,
        /// Headers, names in any case.
        headers: Vec<(String, String)>,
    },
    /// The next bytes of the body, cut wherever the network cut them.
    Data(Vec<u8>),
    /// The body ended cleanly.
    End,
    /// The connection failed: before the head (unreachable) or during the body (cut).
    Failed {
        /// What the platform said, for the trace.
        reason: String,
    },
}

/// Tokens a call consumed, as the provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens in the reply.
    pub completion_tokens: u32,
    /// Their sum, as reported.
    pub total_tokens: u32,
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end.
    Stop,
    /// The token limit cut the reply.
    Length,
    /// The provider's filter cut the reply.
    ContentFilter,
    /// The model asked for tools.
    ToolCalls,
    /// A reason this build does not know.
    Other(String),
}

impl FinishReason {
    /// Parses the provider's spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "stop" | "end_turn" | "STOP" => Self::Stop,
            "length" | "max_tokens" | "MAX_TOKENS" => Self::Length,
            "content_filter" | "SAFETY" => Self::ContentFilter,
            "tool_calls" | "function_call" | "tool_use" => Self::ToolCalls,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The API's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ContentFilter => "content_filter",
            Self::ToolCalls => "tool_calls",
            Self::Other(s) => s,
        }
    }
}

/// Which limit a timeout hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// No response head in time (connection, TLS, the provider's queue).
    Connect,
    /// No first token (or, for a whole reply, no response head) in time.
    FirstToken,
    /// The whole reply took too long.
    Total,
}

/// A provider call's failure, normalized across providers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// 429: slow down; `retry_after` from `Retry-After` or the rate-limit headers.
    #[error("rate limited by the provider (retry after {retry_after:?}): {message}")]
    RateLimited {
        /// When the provider says a retry may succeed.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// 503/529 or an `overloaded` error: the provider is busy.
    #[error("the provider is overloaded: {message}")]
    Overloaded {
        /// The provider's message.
        message: String,
    },
    /// The prompt exceeds the model's context window.
    #[error("the prompt is too long for the model: {message}")]
    ContextTooLong {
        /// The provider's message.
        message: String,
    },
    /// The provider's safety filter refused.
    #[error("the provider's content filter refused: {message}")]
    ContentFiltered {
        /// The provider's message.
        message: String,
    },
    /// 401/403: the key is wrong or lacks access.
    #[error("the provider refused the credentials (HTTP {status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// Another 4xx: the request itself was refused.
    #[error("the provider refused the request (HTTP {status}): {message}")]
    BadRequest {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// A 5xx or an error event mid-stream.
    #[error("the provider failed (HTTP {status}): {message}")]
    Upstream {
        /// HTTP status (the stream's status when the error came mid-stream).
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// A time limit passed.
    #[error("the provider did not answer in time ({phase:?} limit)")]
    Timeout {
        /// Which limit.
        phase: TimeoutPhase,
    },
    /// The provider could not be reached at all.
    #[error("the provider could not be reached: {reason}")]
    Unreachable {
        /// What the platform said.
        reason: String,
    },
    /// The stream ended before the reply was complete.
    #[error(
        "the provider's stream ended before the reply was complete ({received_chars} characters received)"
    )]
    StreamInterrupted {
        /// How much text had arrived.
        received_chars: usize,
    },
    /// The answer could not be understood.
    #[error("the provider's answer could not be understood: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
}

impl ProviderError {
    /// Replaces every occurrence of each secret in the error's text with `<redacted>`, so a
    /// provider that echoes a key in an error message cannot leak it into traces, logs or
    /// answers. Secrets shorter than 8 characters are left alone (they would match noise).
    pub fn redact(&mut self, secrets: &[&str]) {
        let text = match self {
            Self::RateLimited { message, .. }
            | Self::Overloaded { message }
            | Self::ContextTooLong { message }
            | Self::ContentFiltered { message }
            | Self::Auth { message, .. }
            | Self::BadRequest { message, .. }
            | Self::Upstream { message, .. } => message,
            Self::Unreachable { reason } => reason,
            Self::Malformed { detail } => detail,
            Self::Timeout { .. } | Self::StreamInterrupted { .. } => return,
        };
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            if text.contains(secret) {
                *text = text.replace(secret, "<redacted>");
            }
        }
    }

    /// Stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "provider_timeout",
            Self::Unreachable { .. } => "provider_unreachable",
            Self::StreamInterrupted { .. } => "provider_stream_interrupted",
            Self::Malformed { .. } => "provider_malformed_response",
            _ => "provider_error",
        }
    }

    /// What a visitor is told when this failure leaves their turn without a reply: the kind
    /// of failure, never the provider's own words (they can name accounts, models, limits
    /// or echo a key), which stay in the turn's trace for the operator.
    pub fn visitor_message(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => {
                "The assistant took too long to answer. Your message is saved; please try again."
            }
            Self::StreamInterrupted { .. } => {
                "The assistant's answer was cut off. Your message is saved; please try again."
            }
            _ => {
                "The assistant cannot answer just now. Your message is saved; please try again in a moment."
            }
        }
    }

    /// HTTP status Kefu answers with when this failure leaves a turn without a reply.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Timeout { .. } => 504,
            _ => 502,
        }
    }

    /// Classifies an error status and body (JSON `{"error": {...}}` in OpenAI's shape, or
    /// anything else) into a typed error.
    pub fn from_status(status: u16, headers: &[(String, String)], body: &[u8]) -> Self {
        let (message, code) = error_message_and_code(body);
        classify_parts(status, retry_after(headers), message, &code)
    }
}

/// The status-and-keyword rules of [`ProviderError::from_status`], for formats that read the
/// message, code and retry delay out of their own error shapes first.
pub(crate) fn classify_parts(
    status: u16,
    retry_after: Option<Duration>,
    message: String,
    code: &str,
) -> ProviderError {
    let text = format!("{message} {code}").to_ascii_lowercase();
    match status {
        429 => ProviderError::RateLimited {
            retry_after,
            message,
        },
        401 | 403 => ProviderError::Auth { status, message },
        503 | 529 => ProviderError::Overloaded { message },
        _ if text.contains("overloaded") => ProviderError::Overloaded { message },
        400..=499
            if text.contains("context_length")
                || text.contains("maximum context")
                || text.contains("too many tokens") =>
        {
            ProviderError::ContextTooLong { message }
        }
        400..=499
            if text.contains("content_filter")
                || text.contains("content_policy")
                || text.contains("safety") =>
        {
            ProviderError::ContentFiltered { message }
        }
        400..=499 => ProviderError::BadRequest { status, message },
        _ => ProviderError::Upstream { status, message },
    }
}

/// The message and code of an error body, in the shapes providers use:
/// `{"error":{"message":..,"code":..,"type":..}}`, `{"error":"..."}`, `{"message":..}`.
pub(crate) fn error_message_and_code(body: &[u8]) -> (String, String) {
    let fallback = || {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(300).collect();
        (
            if text.trim().is_empty() {
                "no error message".to_owned()
            } else {
                text
            },
            String::new(),
        )
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return fallback();
    };
    let err = v.get("error").unwrap_or(&v);
    if let Some(s) = err.as_str() {
        return (s.to_owned(), String::new());
    }
    let message = err
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned);
    let code = ["code", "type", "status"]
        .iter()
        .filter_map(|k| err.get(*k))
        .map(|c| {
            c.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| c.to_string())
        })
        .collect::<Vec<_>>()
        .join(" ");
    match message {
        Some(m) => (m, code),
        None => fallback(),
    }
}

/// When a rate-limited call may be retried, from `retry-after-ms`, `Retry-After` (seconds;
/// an HTTP date is not trusted without a clock and is ignored) or OpenAI's
/// `x-ratelimit-reset-*` durations (`1s`, `6m0s`, `20ms`), whichever says longest.
pub fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_millis(ms as u64));
    }
    if let Some(secs) = get("retry-after").and_then(|v| v.parse::<f64>().ok())
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_millis((secs * 1000.0) as u64));
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| get(h).and_then(parse_go_duration))
        .max()
}

/// Parses durations such as `1s`, `6m0s`, `1h2m3.5s`, `20ms` (also protobuf's JSON form of
/// a duration, `13s` or `0.250s`).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_millis((total * 1000.0) as u64))
}

/// A header's value, by case-insensitive name, trimmed.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

pub(crate) use crate::time::{days_from_civil, parse_http_date, parse_rfc3339};

/// The year and month of a day count since 1970-01-01.
fn year_month_of_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// How long from `now_ms` (a server's clock, from its `Date` header) until the next 00:00 UTC,
/// when daily quotas reset.
pub(crate) fn until_next_utc_day(now_ms: i64) -> Duration {
    let next = (now_ms.div_euclid(86_400_000) + 1) * 86_400_000;
    Duration::from_millis(u64::try_from(next - now_ms).unwrap_or(0))
}

/// How long from `now_ms` until 00:00 UTC on the first day of the next month, when monthly
/// spend limits reset.
pub(crate) fn until_next_utc_month(now_ms: i64) -> Duration {
    let (year, month) = year_month_of_days(now_ms.div_euclid(86_400_000));
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let next = days_from_civil(year, month, 1) * 86_400_000;
    Duration::from_millis(u64::try_from(next - now_ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn classifies_statuses_and_bodies() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            ProviderError::from_status(429, &h(&[("Retry-After", "2")]), body),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
                message: "Rate limit reached".into()
            }
        );
        let ctx = br#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            ProviderError::from_status(400, &[], ctx),
            ProviderError::ContextTooLong { .. }
        ));
        let overloaded =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert!(matches!(
            ProviderError::from_status(529, &[], overloaded),
            ProviderError::Overloaded { .. }
        ));
        assert!(matches!(
            ProviderError::from_status(401, &[], b"nope"),
            ProviderError::Auth { status: 401, .. }
        ));
        let e = ProviderError::from_status(500, &[], b"<html>oops</html>");
        assert_eq!(
            e,
            ProviderError::Upstream {
                status: 500,
                message: "<html>oops</html>".into()
            }
        );
        assert_eq!(e.code(), "provider_error");
        assert_eq!(
            ProviderError::Timeout {
                phase: TimeoutPhase::Total
            }
            .http_status(),
            504
        );
    }

    #[test]
    fn retry_after_sources() {
        assert_eq!(
            retry_after(&h(&[("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "0.5")])),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&h(&[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s")
            ])),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
            None
        );
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("5x"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let req = HttpRequest {
            method: "POST",
            url: "https://api.example/v1/chat/completions".into(),
            headers: vec![Header {
                name: "authorization",
                value: "Bearer sk-secret".into(),
                sensitive: true,
            }],
            body: vec![],
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn timestamps_become_delays_only_against_each_other() {
        let date = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(date, 784_111_777_000);
        assert_eq!(parse_rfc3339("1994-11-06T08:49:37Z"), Some(784_111_777_000));
        assert_eq!(
            parse_rfc3339("1994-11-06T09:49:38.5+01:00"),
            Some(784_111_778_500)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z").map(|t| t % 86_400_000),
            Some(0)
        );
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(
            until_next_utc_day(date),
            Duration::from_secs(24 * 3600 - (8 * 3600 + 49 * 60 + 37))
        );
        let dec = parse_rfc3339("2023-12-31T23:00:00Z").unwrap();
        assert_eq!(until_next_utc_month(dec), Duration::from_secs(3600));
        let feb = parse_rfc3339("2024-02-28T00:00:00Z").unwrap();
        assert_eq!(until_next_utc_month(feb), Duration::from_secs(2 * 86_400));
    }
}
