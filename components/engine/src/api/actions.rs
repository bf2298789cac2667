//! Conversation actions (`POST /api/v1/conversations/{id}/{action}`): a body validated for
//! its action, bound to the signed-in agent, and applied to the conversation through the
//! handoff state machine.

use serde_json::Value;

use super::chat::{MAX_MESSAGE_CHARS, parse_attachment_ids};
use super::error::ApiError;
use super::route::{ConversationAction, MAX_BODY_BYTES, too_large};
use crate::conversation::Conversation;
use crate::vocab::Part;

/// A validated action body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionRequest {
    /// `{"queue"?}`
    Handoff {
        /// The queue to wait in.
        queue: Option<String>,
    },
    /// `{"agent", "name"?}`
    Claim {
        /// The agent's id.
        agent: String,
        /// The name the visitor sees.
        name: String,
    },
    /// `{"agent", "text", "internal"?, "attachments"?}`
    Message {
        /// The agent's id.
        agent: String,
        /// The text (may be empty when files are attached).
        text: String,
        /// An internal note (agents only).
        internal: bool,
        /// Uploaded attachments' ids.
        attachments: Vec<String>,
    },
    /// `{"agent", "to_agent"?, "to_agent_name"?, "to_queue"?}`
    Transfer {
        /// The assigned agent.
        agent: String,
        /// The agent to hand it to.
        to_agent: Option<String>,
        /// That agent's name.
        to_agent_name: String,
        /// Or the queue to put it back in.
        to_queue: Option<String>,
    },
    /// `{"agent"?}`
    Resolve {
        /// The agent closing it.
        agent: Option<String>,
    },
    /// `{"score"}`
    Csat {
        /// 1 to 5.
        score: u8,
    },
}

/// Parses and validates an action's body (an empty body counts as `{}`).
pub fn parse_action(action: ConversationAction, body: &[u8]) -> Result<ActionRequest, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let obj = super::json_object(super::json_body_or_empty(body)?)?;
    let allowed: &[&str] = match action {
        ConversationAction::Handoff => &["queue"],
        ConversationAction::Claim => &["agent", "name"],
        ConversationAction::Message => &["agent", "text", "internal", "attachments"],
        ConversationAction::Transfer => &["agent", "to_agent", "to_agent_name", "to_queue"],
        ConversationAction::Resolve => &["agent"],
        ConversationAction::Csat => &["score"],
    };
    if let Some(unknown) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(
            ApiError::new(400, "invalid_field", format!("unknown field `{unknown}`"))
                .field(unknown),
        );
    }
    let string = |k: &'static str, required: bool| -> Result<Option<String>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) if required => {
                Err(ApiError::new(400, "missing_field", format!("`{k}` is required")).field(k))
            }
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() && required => {
                Err(
                    ApiError::new(400, "invalid_field", format!("`{k}` must not be empty"))
                        .field(k),
                )
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(_) => {
                Err(ApiError::new(400, "invalid_field", format!("`{k}` must be a string")).field(k))
            }
        }
    };
    let need = |k: &'static str| string(k, true).map(Option::unwrap_or_default);
    Ok(match action {
        ConversationAction::Handoff => ActionRequest::Handoff {
            queue: string("queue", false)?,
        },
        ConversationAction::Claim => ActionRequest::Claim {
            agent: need("agent")?,
            name: string("name", false)?.unwrap_or_default(),
        },
        ConversationAction::Message => {
            let attachments = parse_attachment_ids(obj.get("attachments"))?;
            let text = if attachments.is_empty() {
                need("text")?
            } else {
                string("text", false)?.unwrap_or_default()
            };
            if text.chars().count() > MAX_MESSAGE_CHARS {
                return Err(ApiError::new(
                    413,
                    "message_too_large",
                    format!("`text` exceeds {MAX_MESSAGE_CHARS} characters"),
                )
                .field("text"));
            }
            let internal = match obj.get("internal") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::new(
                        400,
                        "invalid_field",
                        "`internal` must be a boolean",
                    )
                    .field("internal"));
                }
            };
            ActionRequest::Message {
                agent: need("agent")?,
                text,
                internal,
                attachments,
            }
        }
        ConversationAction::Transfer => ActionRequest::Transfer {
            agent: need("agent")?,
            to_agent: string("to_agent", false)?,
            to_agent_name: string("to_agent_name", false)?.unwrap_or_default(),
            to_queue: string("to_queue", false)?,
        },
        ConversationAction::Resolve => ActionRequest::Resolve {
            agent: string("agent", false)?,
        },
        ConversationAction::Csat => match obj.get("score").and_then(Value::as_u64) {
            Some(n @ 1..=5) => ActionRequest::Csat { score: n as u8 },
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalid_field",
                    "`score` must be a whole number from 1 to 5",
                )
                .field("score"));
            }
        },
    })
}

/// Applies a validated conversation action to `c` (the handoff state machine's
/// transitions); `parts` are an agent message's text and files. What every host runs for
/// `POST /api/v1/conversations/{id}/{action}` once it has the conversation.
pub fn apply_action(
    c: &mut Conversation,
    now: crate::Timestamp,
    config: &crate::TenantConfig,
    request: &ActionRequest,
    parts: Vec<Part>,
) -> Result<crate::handoff::Changed, crate::handoff::HandoffError> {
    use crate::handoff::HandoffReason;
    match request {
        ActionRequest::Handoff { queue } => {
            let queue = queue
                .clone()
                .or_else(|| config.handoff.default_queue.clone());
            c.request_handoff(
                now,
                config,
                &HandoffReason::VisitorAsked,
                queue.as_deref(),
                None,
            )
        }
        ActionRequest::Claim { agent, name } => c.assign(now, config, agent, name),
        ActionRequest::Message {
            agent, internal, ..
        } => c.handle_agent_message(now, config, agent, parts, *internal),
        ActionRequest::Transfer {
            agent,
            to_agent,
            to_agent_name,
            to_queue,
        } => c.transfer(
            now,
            config,
            agent,
            to_agent.as_deref().map(|a| (a, to_agent_name.as_str())),
            to_queue.as_deref(),
        ),
        ActionRequest::Resolve { agent } => c.resolve(now, config, agent.as_deref()),
        ActionRequest::Csat { score } => c.submit_csat(*score),
    }
}

/// An action's body as a signed-in agent sends it: the token says who acts, so a body that
/// names another agent is refused (`403 agent_mismatch`), the token's agent is filled in,
/// and a claim without a name takes the token's.
pub fn bind_agent(
    action: ConversationAction,
    body: &[u8],
    claims: &crate::auth::AgentClaims,
) -> Result<Vec<u8>, ApiError> {
    let mut v = super::json_body_or_empty(body)?;
    if let Some(obj) = v.as_object_mut() {
        match obj.get("agent").and_then(Value::as_str) {
            Some(a) if a != claims.agent => {
                return Err(ApiError::new(
                    403,
                    "agent_mismatch",
                    format!("this token is agent {}'s", claims.agent),
                )
                .field("agent"));
            }
            _ => {
                obj.insert("agent".into(), claims.agent.clone().into());
            }
        }
        // The name visitors see is the one the tenant signed into the token: an agent
        // cannot claim a conversation under another name (a colleague's, "Manager").
        if action == ConversationAction::Claim {
            match obj.get("name").and_then(Value::as_str) {
                Some(n) if n != claims.name => {
                    return Err(ApiError::new(
                        403,
                        "agent_mismatch",
                        format!(
                            "this token's agent is named {:?}; the name comes from the token",
                            claims.name
                        ),
                    )
                    .field("name"));
                }
                _ => {
                    obj.insert("name".into(), claims.name.clone().into());
                }
            }
        }
    }
    Ok(v.to_string().into_bytes())
}
