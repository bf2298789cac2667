//! The API's error answer, [`ApiError`], and how each of the engine's refusals (a
//! deployment's, a conversation's, a handoff's, an upload's, a visitor identity's, a quota's,
//! an agent token's) becomes one: the status, the stable code and the field at fault.

use serde_json::{Map, Value, json};

impl From<crate::deployment::Refusal> for ApiError {
    fn from(r: crate::deployment::Refusal) -> Self {
        use crate::deployment::Refusal as R;
        match &r {
            R::TenantNotFound(_) => Self::new(404, "tenant_not_found", r.to_string()),
            R::DemoDisabled(_) => Self::new(403, "demo_disabled", r.to_string()),
        }
    }
}

/// An error answer: status, stable code, message, and the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable, documented code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// For 405: the methods the route allows (the `Allow` header).
    pub allow: Option<&'static str>,
    /// For 429: when to try again, in seconds (the `Retry-After` header).
    pub retry_after: Option<u32>,
}

/// A request body as JSON, or `400 invalid_json` saying why it is not.
pub(crate) fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// [`json_body`], where an empty (all-whitespace) body stands for `{}`.
pub(crate) fn json_body_or_empty(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Object(Map::new()))
    } else {
        json_body(body)
    }
}

/// A request body that must be a JSON object (`400 invalid_json` otherwise).
pub(crate) fn json_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(fields) => Ok(fields),
        _ => Err(ApiError::new(
            400,
            "invalid_json",
            "the body must be a JSON object",
        )),
    }
}

impl ApiError {
    /// An error with its status, stable code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            allow: None,
            retry_after: None,
        }
    }

    pub(crate) fn field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// `404 conversation_not_found`.
    pub fn conversation_not_found() -> Self {
        Self::new(404, "conversation_not_found", "no such conversation")
    }

    /// `429 rate_limited`: this visitor sent more than the visitor limits allow; nothing was
    /// stored; try again after `retry_after` seconds.
    pub fn rate_limited(retry_after: u32) -> Self {
        let mut e = Self::new(
            429,
            "rate_limited",
            format!(
                "too many messages from this visitor; nothing was stored, try again in {retry_after} seconds"
            ),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// `403 operator_only`: an agent's token asked for what only the tenant key (or the
    /// deployment's admin token) may do.
    pub fn operator_only() -> Self {
        Self::new(
            403,
            "operator_only",
            "this needs the tenant key (or the deployment's admin token); an agent token cannot do it",
        )
    }

    /// `500 internal_error`, with what failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message.clone()));
        if let Some(f) = &self.field {
            error.insert("field".into(), Value::from(f.as_str()));
        }
        json!({ "error": error })
    }
}

/// `401` for an agent token that was refused, with the reason's stable code
/// ([`crate::auth::TokenError::code`]).
pub fn agent_token_error(e: &crate::auth::TokenError) -> ApiError {
    ApiError::new(401, e.code(), e.to_string())
}

/// The error answer for a visitor's message the conversation refused: `400 empty_message`,
/// `409 conversation_full` (start a new conversation).
pub fn conversation_error(e: &crate::conversation::ConversationError) -> ApiError {
    use crate::conversation::ConversationError as E;
    match e {
        E::EmptyMessage => ApiError::new(400, "empty_message", e.to_string()),
        E::Full => ApiError::new(409, "conversation_full", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// The error answer for a handoff or agent action the state machine refused.
pub fn handoff_error(e: &crate::handoff::HandoffError) -> ApiError {
    ApiError::new(e.status(), e.code(), e.to_string())
}

/// The API's answer to a refused upload.
pub fn attachment_error(e: &crate::attachment::AttachmentError) -> ApiError {
    ApiError::new(e.status(), e.code(), e.to_string())
}

/// An attachment a message names that this tenant never uploaded (or that expired).
pub fn attachment_not_found(index: usize, id: &str) -> ApiError {
    ApiError::new(
        400,
        "attachment_not_found",
        format!("no uploaded attachment `{id}`; upload it first with POST /api/v1/attachments"),
    )
    .field(&format!("attachments[{index}]"))
}

/// The API's answer when a visitor's identity does not let them go on.
pub fn identity_error(e: &crate::identity::IdentityError) -> ApiError {
    use crate::identity::IdentityError as E;
    let message = e.to_string();
    match e {
        E::NotConfigured => ApiError::new(400, "invalid_field", message).field("visitor"),
        E::Required => ApiError::new(401, "identity_required", message).field("visitor"),
        E::Invalid => ApiError::new(401, "invalid_identity", message).field("visitor.hash"),
        E::NotYours => ApiError::new(403, "conversation_not_yours", message),
    }
}

/// `429 quota_exceeded`: the tenant's quota or budget refused the turn (the host adds
/// `Retry-After`).
pub fn quota_error(e: &crate::gateway::QuotaError) -> ApiError {
    ApiError::new(429, "quota_exceeded", e.to_string())
}

pub(super) fn plugin_not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "plugin_not_found",
        format!("the tenant has no plugin with the id {id:?} (see `plugins` in its configuration)"),
    )
}

/// `404 group_not_found`: no open group of unanswered questions has this key.
pub fn group_not_found(key: &str) -> ApiError {
    ApiError::new(
        404,
        "group_not_found",
        format!(
            "no open group `{key}`: it was answered, or its questions left the log; read the groups again"
        ),
    )
}
