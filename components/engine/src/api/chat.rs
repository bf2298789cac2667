//! `POST /api/v1/chat`: the request, validated (message, attachments, the visitor's
//! identity), and the answer's shapes — the JSON bodies and the Server-Sent Events frames
//! of a streamed turn.

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::route::{MAX_BODY_BYTES, too_large};
use super::transcript::message_json;
use crate::provider::ProviderError;
use crate::turn::TurnReply;
use crate::vocab::{ConversationId, Message, Part};

/// The longest message accepted, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_000;

/// A validated `POST /api/v1/chat` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRequest {
    /// The conversation to continue, or `None` to start one.
    pub conversation_id: Option<ConversationId>,
    /// The visitor's message.
    pub message: String,
    /// Answer with Server-Sent Events.
    pub stream: bool,
    /// The visitor's identity proof, when the site verifies signed-in users.
    pub visitor: Option<crate::identity::VisitorIdentity>,
    /// Uploaded attachments' ids (see [`crate::attachment`]).
    pub attachments: Vec<String>,
}

impl ChatRequest {
    /// The message's text as parts (attachments join them once the host has looked them
    /// up: see [`crate::attachment::Attachment::part`]).
    pub fn parts(&self) -> Vec<Part> {
        if self.message.trim().is_empty() {
            Vec::new()
        } else {
            vec![Part::Text(self.message.clone())]
        }
    }
}

/// Parses and validates a chat request body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let obj = super::json_object(super::json_body(body)?)?;
    const FIELDS: [&str; 5] = [
        "message",
        "conversation_id",
        "stream",
        "visitor",
        "attachments",
    ];
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::new(
            400,
            "invalid_field",
            format!(
                "unknown field `{unknown}`; expected one of `message`, `conversation_id`, `stream`, `visitor`, `attachments`"
            ),
        )
        .field(unknown));
    }
    let visitor = parse_visitor(obj.get("visitor"))?;
    let attachments = parse_attachment_ids(obj.get("attachments"))?;
    let message = match obj.get("message") {
        // A message may be only files.
        None | Some(Value::Null) if !attachments.is_empty() => String::new(),
        None | Some(Value::Null) => {
            return Err(
                ApiError::new(400, "missing_field", "`message` is required").field("message")
            );
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(
                ApiError::new(400, "invalid_field", "`message` must be a string").field("message"),
            );
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(
                ApiError::new(400, "invalid_field", "`stream` must be a boolean").field("stream"),
            );
        }
    };
    let conversation_id = match obj.get("conversation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(ConversationId::parse(s).ok_or_else(ApiError::conversation_not_found)?)
        }
        Some(_) => {
            return Err(
                ApiError::new(400, "invalid_field", "`conversation_id` must be a string")
                    .field("conversation_id"),
            );
        }
    };
    if message.trim().is_empty() && attachments.is_empty() {
        return Err(
            ApiError::new(400, "empty_message", "`message` must not be empty").field("message"),
        );
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::new(
            413,
            "message_too_large",
            format!("`message` exceeds {MAX_MESSAGE_CHARS} characters"),
        )
        .field("message"));
    }
    Ok(ChatRequest {
        conversation_id,
        message,
        stream,
        visitor,
        attachments,
    })
}

/// `"attachments": ["att_…", …]`: at most [`crate::attachment::MAX_PER_MESSAGE`] uploaded
/// files' ids, no repeats.
pub(super) fn parse_attachment_ids(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    use crate::attachment::{MAX_PER_MESSAGE, is_id};
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_field",
                "`attachments` must be an array of attachment ids",
            )
            .field("attachments"));
        }
    };
    if items.len() > MAX_PER_MESSAGE {
        return Err(ApiError::new(
            400,
            "too_many_attachments",
            format!("a message takes at most {MAX_PER_MESSAGE} attachments"),
        )
        .field("attachments"));
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(id) if is_id(id) && !ids.iter().any(|s| s == id) => ids.push(id.to_owned()),
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalid_field",
                    "each attachment is the `id` an upload answered with (`att_…`), once",
                )
                .field(&format!("attachments[{i}]")));
            }
        }
    }
    Ok(ids)
}

/// `"visitor": {"id": "…", "hash": "…"}`: the shape only; [`crate::identity::verify`] checks
/// the hash against the tenant's secret.
fn parse_visitor(
    value: Option<&Value>,
) -> Result<Option<crate::identity::VisitorIdentity>, ApiError> {
    let invalid = |field: &str, message: &str| {
        Err(ApiError::new(400, "invalid_field", message.to_owned()).field(field))
    };
    let obj = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return invalid(
                "visitor",
                "`visitor` must be an object with `id` and `hash`",
            );
        }
    };
    if let Some(unknown) = obj.keys().find(|k| !["id", "hash"].contains(&k.as_str())) {
        return invalid(
            &format!("visitor.{unknown}"),
            "unknown field; `visitor` takes `id` and `hash`",
        );
    }
    let id = match obj.get("id") {
        Some(Value::String(id))
            if !id.trim().is_empty()
                && id.chars().count() <= crate::identity::MAX_ID_CHARS
                && !id.chars().any(char::is_control) =>
        {
            id.clone()
        }
        _ => {
            return invalid(
                "visitor.id",
                "`visitor.id` must be a string of 1 to 128 printable characters",
            );
        }
    };
    let hash = match obj.get("hash") {
        Some(Value::String(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            h.clone()
        }
        _ => {
            return invalid(
                "visitor.hash",
                "`visitor.hash` must be the 64 hex digits of HMAC-SHA256(identity secret, id)",
            );
        }
    };
    Ok(Some(crate::identity::VisitorIdentity { id, hash }))
}

fn reply_fields(reply_message: &Message, reply: &TurnReply) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("reply".into(), message_json(reply_message));
    m.insert("responder".into(), Value::from(reply.responder.kind()));
    m.insert(
        "target".into(),
        reply.target.as_deref().map_or(Value::Null, Value::from),
    );
    m.insert("attempts".into(), Value::from(reply.attempts));
    m.insert(
        "model".into(),
        reply.responder.model().map_or(Value::Null, Value::from),
    );
    m.insert(
        "finish_reason".into(),
        Value::from(reply.finish_reason.as_str()),
    );
    m.insert(
        "usage".into(),
        reply.usage.map_or(Value::Null, |u| json!(u)),
    );
    // The sources the reply's `[n]` markers cite (empty when it cites none).
    m.insert(
        "citations".into(),
        super::transcript::citations_json(reply_message.citations()),
    );
    m
}

/// The JSON answer to a chat turn that produced a reply.
pub fn chat_reply_json(
    id: &ConversationId,
    created: bool,
    visitor: &Message,
    reply_message: &Message,
    reply: &TurnReply,
) -> Value {
    let mut m = Map::new();
    m.insert("conversation_id".into(), Value::from(id.as_str()));
    m.insert("created".into(), Value::from(created));
    m.insert("message".into(), message_json(visitor));
    m.extend(reply_fields(reply_message, reply));
    Value::Object(m)
}

/// The JSON answer to a visitor message no model answered: a human owns the conversation
/// (`reply: None`, responder `none`: the message waits for the agent), it was just handed
/// to one (the notice, responder `handoff`), or a rule answered (responder `rule`).
pub fn chat_notice_json(
    id: &ConversationId,
    created: bool,
    visitor: &Message,
    reply: Option<&Message>,
    responder: &str,
    status: crate::Status,
) -> Value {
    json!({
        "conversation_id": id.as_str(),
        "created": created,
        "message": message_json(visitor),
        "reply": reply.map(message_json),
        "responder": responder,
        "status": status.as_str(),
        "model": null,
        "finish_reason": null,
        "usage": null,
        "citations": [],
    })
}

/// The stream's last frame for [`chat_notice_json`]'s cases.
pub fn sse_done_notice(reply: Option<&Message>, responder: &str, status: crate::Status) -> String {
    sse_frame(
        "done",
        &json!({"reply": reply.map(message_json), "responder": responder, "status": status.as_str(), "citations": []}),
    )
}

/// The JSON answer (with its status) to a turn whose provider failed; the visitor's message
/// was stored all the same.
pub fn chat_failure_json(
    id: &ConversationId,
    created: bool,
    visitor: &Message,
    error: &ProviderError,
) -> (u16, Value) {
    (
        error.http_status(),
        json!({
            "error": {"code": error.code(), "message": error.visitor_message()},
            "conversation_id": id.as_str(),
            "created": created,
            "message": message_json(visitor),
        }),
    )
}

/// A turn that could not run at all (e.g. a storage failure after the message was stored).
pub fn chat_error_json(
    id: &ConversationId,
    created: bool,
    visitor: &Message,
    error: &ApiError,
) -> Value {
    let mut body = error.body();
    if let Value::Object(m) = &mut body {
        m.insert("conversation_id".into(), Value::from(id.as_str()));
        m.insert("created".into(), Value::from(created));
        m.insert("message".into(), message_json(visitor));
    }
    body
}

/// The SSE `error` event for a turn whose provider failed: the stable code and the
/// visitor's message ([`ProviderError::visitor_message`]), never the upstream's words.
pub fn sse_provider_error(error: &ProviderError) -> String {
    sse_error(error.code(), error.visitor_message())
}

/// One Server-Sent Events frame.
pub fn sse_frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The stream's first frame: the visitor's message is stored.
pub fn sse_accepted(id: &ConversationId, created: bool, visitor: &Message) -> String {
    sse_frame(
        "accepted",
        &json!({"conversation_id": id.as_str(), "created": created, "message": message_json(visitor)}),
    )
}

/// A frame of reply text.
pub fn sse_delta(text: &str) -> String {
    sse_frame("delta", &json!({"text": text}))
}

/// The stream's last frame when a reply was produced and stored.
pub fn sse_done(reply_message: &Message, reply: &TurnReply) -> String {
    sse_frame("done", &Value::Object(reply_fields(reply_message, reply)))
}

/// The stream's last frame when no reply was produced.
pub fn sse_error(code: &str, message: &str) -> String {
    sse_frame(
        "error",
        &json!({"error": {"code": code, "message": message}}),
    )
}
