//! Handoff and agent actions on Spin: `POST /api/v1/conversations/{id}/{action}` (the
//! engine's state machine, stored with compare-and-swap) and the agents' view of a
//! transcript (internal notes included).

use kefu_engine::api::HandoffError;
use kefu_engine::api::{self, ActionRequest, ApiError, ConversationAction};
use kefu_engine::{ConversationId, TenantId};

use crate::http::{Incoming, Reply};
use crate::store::{self, Kv};
use crate::{admin, now};

/// A conversation action by a visitor (`handoff`, `csat`) or an agent.
pub fn action(
    kv: &Kv,
    req: &Incoming,
    id: &ConversationId,
    action: ConversationAction,
) -> Result<Reply, ApiError> {
    let (tenant, config, claims) = if action.by_agent() {
        admin::agent(kv, req)?
    } else {
        let tenant = api::tenant(req.header(api::TENANT_HEADER))?;
        let config = store::config(kv, &tenant)?;
        (tenant, config, None)
    };
    let body = match &claims {
        Some(claims) => api::bind_agent(action, &req.body, claims)?,
        None => req.body.clone(),
    };
    let request = api::parse_action(action, &body)?;
    let files = match &request {
        ActionRequest::Message { attachments, .. } => {
            crate::attachments::lookup(&tenant, attachments)?
        }
        _ => Vec::new(),
    };
    let conversation = kv
        .load(id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    // A visitor's action takes their identity proof, like their messages.
    if !action.by_agent() {
        crate::check_reader(kv, req, &tenant, &conversation)?;
    }
    if matches!(request, ActionRequest::Handoff { .. }) && !config.handoff.enabled {
        return Err(api::handoff_error(&HandoffError::WrongStatus {
            status: conversation.status().as_str(),
            action: "a handoff (handoff is turned off for this tenant)",
        }));
    }
    let (conversation, ..) = kv.change(id, &tenant, None, |c| {
        // A message's parts: its text (when it has any), then its files.
        let mut parts = match &request {
            ActionRequest::Message { text, .. } if !text.trim().is_empty() => {
                vec![kefu_engine::Part::Text(text.clone())]
            }
            _ => Vec::new(),
        };
        parts.extend(files.iter().map(kefu_engine::attachment::Attachment::part));
        let changed = api::apply_action(c, now(), &config, &request, parts)
            .map_err(|e| api::handoff_error(&e))?;
        crate::webhooks::stage(&changed.events);
        Ok((changed.messages, ()))
    })?;
    let messages = kv.transcript(&conversation)?;
    Ok(Reply::json(
        200,
        &api::conversation_json(
            &conversation,
            &messages,
            action.by_agent(),
            conversation.owner(),
        ),
    ))
}

/// `GET /api/v1/conversations/{id}` with an agent's token or the tenant key: internal notes
/// included.
pub fn transcript(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Reply, ApiError> {
    let (tenant, _, _): (TenantId, _, _) = admin::agent(kv, req)?;
    let conversation = kv
        .load(id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    let messages = kv.transcript(&conversation)?;
    Ok(Reply::json(
        200,
        &api::conversation_json(&conversation, &messages, true, conversation.owner()),
    ))
}

/// `POST /api/v1/conversations/{id}/typing`: a visitor (with the tenant header, and their
/// proof on a verified visitor's conversation) or an agent is typing; followers' streams
/// show it until it expires ([`api::TYPING_TTL_MS`]).
pub fn typing(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Reply, ApiError> {
    let visitor = api::parse_typing(&req.body)?;
    let tenant = if visitor {
        api::tenant(req.header(api::TENANT_HEADER))?
    } else {
        admin::agent(kv, req)?.0
    };
    let conversation = kv
        .load(id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    if visitor {
        crate::check_reader(kv, req, &tenant, &conversation)?;
    }
    let until = now().as_millis() + api::TYPING_TTL_MS;
    kv.set_typing(id, if visitor { "visitor" } else { "agent" }, until)?;
    Ok(Reply::json(
        200,
        &serde_json::json!({"ok": true, "until_ms": until}),
    ))
}
