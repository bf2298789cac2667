//! Kefu's HTTP API, minus the HTTP: routing, request validation, error bodies and the JSON
//! and SSE shapes of every answer (see `docs/api.md`).
//!
//! Both hosts call these functions, so a request that one runtime rejects the other rejects
//! with the same status, code and message.
//!
//! This module is the API's one public face; its parts, by concern:
//! - `error`: [`ApiError`] and how each of the engine's refusals becomes one;
//! - `route`: [`route`], the tenant header and the body limits ([`body_limit`]);
//! - `chat`: `POST /api/v1/chat` — [`parse_chat_request`] and the answer's JSON and SSE;
//! - `config`: configuration documents and versions;
//! - `actions`: conversation actions, validated and applied ([`apply_action`]);
//! - `agents`: agent tokens and sessions;
//! - `live`: live updates ([`LiveUpdate`]), typing, the subscriber cap;
//! - `transcript`: a conversation and its messages as the API shows them;
//! - `plugins`: the operators' plugin list and plugin tests.

mod actions;
mod agents;
mod chat;
mod config;
mod error;
mod live;
mod plugins;
mod route;
mod transcript;

/// What a handoff or agent action recorded, and why one was refused.
pub use crate::handoff::{Changed, HandoffError};
pub use actions::{ActionRequest, apply_action, bind_agent, parse_action};
pub use agents::{check_access_token, mint_agent_claims, parse_agent_token_request, session_on};
pub use chat::{
    ChatRequest, MAX_MESSAGE_CHARS, chat_error_json, chat_failure_json, chat_notice_json,
    chat_reply_json, parse_chat_request, sse_accepted, sse_delta, sse_done, sse_done_notice,
    sse_error, sse_frame, sse_provider_error,
};
pub use config::{
    MAX_CONFIG_BYTES, config_for_admin, config_for_key, parse_config_document, parse_rollback,
    stored_config,
};
pub use error::{
    ApiError, agent_token_error, attachment_error, attachment_not_found, conversation_error,
    group_not_found, handoff_error, identity_error, quota_error,
};
pub(crate) use error::{json_body, json_body_or_empty, json_object};
pub use live::{
    LiveUpdate, MAX_LIVE_SUBSCRIBERS, TYPING_TTL_MS, parse_typing, too_many_subscribers,
};
pub use plugins::{
    MAX_PLUGIN_TEST_BYTES, PLUGIN_TEST_CONVERSATION, parse_plugin_test, plugin_answer_json,
    plugin_call_record, plugin_effect, plugin_spec, plugin_test_json, plugins_json,
};
pub use route::{
    BodyLimit, ConfigRoute, ConversationAction, DEFAULT_BODY_LIMIT, INTERNAL_BODY_LIMIT,
    KnowledgeRoute, MAX_BODY_BYTES, MAX_REPLAY_BYTES, OPENAI_MAX_REQUEST_BYTES, Route,
    TENANT_HEADER, body_limit, health_json, is_group_key, is_test_id, request_body_limit, route,
    tenant,
};
pub use transcript::{citations_json, conversation_json, inbox_entry_json, message_json};

#[cfg(test)]
mod tests;
