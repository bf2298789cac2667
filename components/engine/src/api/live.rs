//! Live updates on a conversation: the frames of its event stream and WebSocket, the typing
//! indicator, and the cap on how many watch one conversation at once.

use serde_json::{Value, json};

use super::error::ApiError;
use super::transcript::message_json;
use crate::conversation::Conversation;
use crate::vocab::Message;

/// `POST /api/v1/conversations/{id}/typing`: `{"who": "visitor" | "agent"}`; returns whether
/// it is the visitor typing.
pub fn parse_typing(body: &[u8]) -> Result<bool, ApiError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v.get("who").and_then(Value::as_str) {
        Some("visitor") => Ok(true),
        Some("agent") => Ok(false),
        _ => Err(ApiError::new(
            400,
            "invalid_field",
            "`who` must be \"visitor\" or \"agent\"",
        )
        .field("who")),
    }
}

/// The most live-update streams and sockets open on one conversation at once (a visitor's
/// tabs and the agents watching it); one more is `429 too_many_subscribers`, so nobody can
/// hold a conversation's memory hostage with connections.
pub const MAX_LIVE_SUBSCRIBERS: usize = 32;

/// `429 too_many_subscribers`.
pub fn too_many_subscribers() -> ApiError {
    ApiError::new(
        429,
        "too_many_subscribers",
        format!(
            "this conversation already has {MAX_LIVE_SUBSCRIBERS} live-update connections; close one first"
        ),
    )
}

/// How long a typing indicator lasts unless renewed: clients clear it by themselves after
/// this, so it always clears even if the typist vanishes.
pub const TYPING_TTL_MS: u64 = 6_000;

/// One live update on a conversation's stream (`GET /api/v1/conversations/{id}/events`):
/// a Server-Sent Events frame, or the same as a WebSocket JSON text. Every host sends these
/// shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveUpdate {
    /// `message`, `status` or `typing`.
    pub event: &'static str,
    /// The cursor a client resumes from (a message's sequence number).
    pub id: Option<u32>,
    /// The payload.
    pub data: Value,
}

impl LiveUpdate {
    /// A stored message.
    pub fn message(m: &Message) -> Self {
        Self {
            event: "message",
            id: Some(m.seq),
            data: message_json(m),
        }
    }

    /// Where the conversation stands.
    pub fn status(c: &Conversation) -> Self {
        Self {
            event: "status",
            id: None,
            data: json!({"status": c.status().as_str(), "assignee": c.assignee(), "queue": c.queue()}),
        }
    }

    /// Someone is typing, until this time (epoch ms; the indicator clears by itself).
    pub fn typing(who: &str, until_ms: u64) -> Self {
        Self {
            event: "typing",
            id: None,
            data: json!({"who": who, "until_ms": until_ms}),
        }
    }

    /// As a Server-Sent Events frame.
    pub fn sse(&self) -> Vec<u8> {
        match self.id {
            Some(id) => format!("event: {}\nid: {id}\ndata: {}\n\n", self.event, self.data),
            None => format!("event: {}\ndata: {}\n\n", self.event, self.data),
        }
        .into_bytes()
    }

    /// As a WebSocket text message.
    pub fn json(&self) -> String {
        json!({"event": self.event, "id": self.id, "data": self.data}).to_string()
    }
}
