//! The trace: what every attempt of a turn did, for the replay console, logs and usage.
//!
//! Secrets never enter a trace: it names targets by `provider/model`, never by key or URL
//! credentials.

use serde::{Deserialize, Serialize};

use crate::provider::{ProviderError, Usage};

/// A fine-grained, stable name for an error's kind, for traces and logs (the API's error
/// codes are coarser).
pub fn error_kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Overloaded { .. } => "overloaded",
        ProviderError::ContextTooLong { .. } => "context_too_long",
        ProviderError::ContentFiltered { .. } => "content_filtered",
        ProviderError::Auth { .. } => "auth",
        ProviderError::BadRequest { .. } => "bad_request",
        ProviderError::Upstream { .. } => "upstream",
        ProviderError::Timeout { .. } => "timeout",
        ProviderError::Unreachable { .. } => "unreachable",
        ProviderError::StreamInterrupted { .. } => "stream_interrupted",
        ProviderError::Malformed { .. } => "malformed",
        #[allow(unreachable_patterns)]
        _ => "provider_error",
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AttemptOutcome {
    /// It produced the reply.
    Success,
    /// It failed; `code` is the error's stable code, `next` what the turn did about it.
    Failure {
        /// Stable error code (`provider_error`, `provider_timeout`, …).
        code: String,
        /// The error, for people.
        message: String,
        /// `retry`, `fallback`, `shrink_context` or `stop`.
        next: String,
    },
    /// Not tried: its circuit breaker was open.
    SkippedOpenBreaker,
}

/// One attempt of a turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// `provider/model`.
    pub target: String,
    /// The route that chose it.
    pub route: String,
    /// Milliseconds from the start of the turn to the start of the attempt.
    pub started_ms: u64,
    /// The HTTP status, when one arrived.
    pub status: Option<u16>,
    /// Milliseconds the attempt took.
    pub latency_ms: u64,
    /// Milliseconds from the attempt's start to its first token.
    pub ttft_ms: Option<u64>,
    /// Tokens the provider reported.
    pub usage: Option<Usage>,
    /// Cost in millionths of a dollar, when the model has a price.
    pub cost_micros: Option<u64>,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

impl AttemptRecord {
    /// Whether this attempt counts as a success for its target's breaker (`None`: it says
    /// nothing about the target).
    pub fn breaker_signal(&self) -> Option<bool> {
        match &self.outcome {
            AttemptOutcome::Success => Some(true),
            AttemptOutcome::SkippedOpenBreaker => None,
            AttemptOutcome::Failure { code, .. } => match code.as_str() {
                // The request was wrong, not the target.
                "bad_request" | "content_filtered" | "context_too_long" => None,
                _ => Some(false),
            },
        }
    }
}
