//! Kefu's HTTP API, minus the HTTP: routing, request validation, error bodies and the JSON
//! and SSE shapes of every answer (see `docs/api.md`).
//!
//! Both hosts call these functions, so a request that one runtime rejects the other rejects
//! with the same status, code and message.

/// What a handoff or agent action recorded, and why one was refused.
pub use crate::handoff::{Changed, HandoffError};
use serde_json::{Map, Value, json};

use crate::conversation::Conversation;
use crate::provider::ProviderError;
use crate::turn::TurnReply;
use crate::vocab::{ConversationId, Message, Part, TenantId};

impl From<crate::deployment::Refusal> for ApiError {
    fn from(r: crate::deployment::Refusal) -> Self {
        use crate::deployment::Refusal as R;
        match &r {
            R::TenantNotFound(_) => Self::new(404, "tenant_not_found", r.to_string()),
            R::DemoDisabled(_) => Self::new(403, "demo_disabled", r.to_string()),
        }
    }
}

/// The configuration the deployment's admin token manages: a tenant that does not exist
/// yet is managed with an empty configuration (the admin token is how tenants are
/// created); every other error stands.
pub fn config_for_admin(
    loaded: Result<crate::TenantConfig, ApiError>,
) -> Result<crate::TenantConfig, ApiError> {
    match loaded {
        Err(e) if e.code == "tenant_not_found" => Ok(crate::TenantConfig::default()),
        other => other,
    }
}

/// A tenant key's tenant must exist: an unknown one is the key's fault (`401`), so a
/// stranger cannot tell which tenants exist by trying keys.
pub fn config_for_key(
    loaded: Result<crate::TenantConfig, ApiError>,
) -> Result<crate::TenantConfig, ApiError> {
    match loaded {
        Err(e) if e.code == "tenant_not_found" => {
            Err(ApiError::new(401, "unauthorized", "unknown key"))
        }
        other => other,
    }
}

/// Whether an agent's open session goes on, given the tenant's configuration as the host
/// just loaded it ([`crate::auth::session_continues`] on its roster). A tenant that no
/// longer exists ends it; a storage failure keeps it (the host checks again soon).
pub fn session_on(
    loaded: Result<crate::TenantConfig, ApiError>,
    claims: &crate::auth::AgentClaims,
    now: crate::Timestamp,
) -> Result<(), crate::auth::TokenError> {
    match loaded {
        Ok(config) => crate::auth::session_continues(&config.agents, claims, now),
        Err(e) if e.code == "tenant_not_found" => Err(crate::auth::TokenError::UnknownAgent),
        Err(_) => Ok(()),
    }
}

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest body of `POST /v1/chat/completions`, in bytes (a long conversation with
/// images inline fits).
pub const OPENAI_MAX_REQUEST_BYTES: usize = 4 << 20;
/// The longest message accepted, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_000;
/// The header that names the tenant.
pub const TENANT_HEADER: &str = "x-kefu-tenant";

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

    fn field(mut self, field: &str) -> Self {
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

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: where to start.
    Index,
    /// `GET /healthz`.
    Healthz,
    /// `GET /demo`.
    Demo,
    /// `POST /api/v1/chat`.
    Chat,
    /// `GET /api/v1/conversations/{id}`.
    GetConversation(ConversationId),
    /// `GET /api/v1/usage`: the tenant's usage and cost (tenant API key).
    Usage,
    /// `POST /api/v1/conversations/{id}/{action}`: handoff and agent actions.
    ConversationAction(ConversationId, ConversationAction),
    /// `/api/v1/knowledge/…`: the knowledge base (tenant API key).
    Knowledge(KnowledgeRoute),
    /// `/api/v1/config…`: the tenant's configuration, versioned (tenant API key).
    Config(ConfigRoute),
    /// `GET /api/v1/conversations`: the agents' inbox (tenant API key).
    ListConversations,
    /// `GET /api/v1/conversations/{id}/events?after=N`: live updates as Server-Sent Events,
    /// after catching up from the cursor.
    ConversationEvents(ConversationId),
    /// `POST /api/v1/conversations/{id}/typing`: someone is typing.
    Typing(ConversationId),
    /// `GET /api/v1/conversations/{id}/traces`: every model turn's attempts (agents).
    ConversationTraces(ConversationId),
    /// `POST /api/v1/conversations/{id}/replay`: run the conversation again under another
    /// configuration or model, old and new replies side by side (agents).
    ConversationReplay(ConversationId),
    /// `GET /api/v1/conversations/{id}/export`: the conversation and its turn records as one
    /// JSON document (agents).
    ConversationExport(ConversationId),
    /// `POST /api/v1/agents/tokens`: mint an agent's sign-in token (tenant API key).
    AgentToken,
    /// `POST /api/v1/attachments`: upload a file to send with a message.
    Upload,
    /// `GET /api/v1/attachments/{id}`: an uploaded file.
    GetAttachment(String),
    /// `GET /api/v1/plugins`: the installed plugins' manifests and the tenant's plugins
    /// (tenant API key).
    Plugins,
    /// `POST /api/v1/plugins/{id}/test`: run one hook of the tenant's plugin `id` on an
    /// input, as a turn would (tenant API key).
    PluginTest(String),
    /// `POST /v1/chat/completions` (OpenAI-compatible).
    OpenAiChat,
    /// `GET /v1/models` (OpenAI-compatible).
    OpenAiModels,
}

/// Maps a method and path to a route, or to the 404/405 error for it.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let (allowed, route): (&'static str, Result<Route, ApiError>) = match path {
        "/" => ("GET, HEAD", Ok(Route::Index)),
        "/healthz" => ("GET, HEAD", Ok(Route::Healthz)),
        "/demo" => ("GET", Ok(Route::Demo)),
        "/api/v1/chat" => ("POST", Ok(Route::Chat)),
        "/api/v1/conversations" => ("GET", Ok(Route::ListConversations)),
        "/api/v1/agents/tokens" => ("POST", Ok(Route::AgentToken)),
        "/api/v1/usage" => ("GET", Ok(Route::Usage)),
        "/api/v1/config" => (
            "GET, PUT",
            Ok(Route::Config(if method == "PUT" {
                ConfigRoute::Put
            } else {
                ConfigRoute::Get
            })),
        ),
        "/api/v1/config/versions" => ("GET", Ok(Route::Config(ConfigRoute::Versions))),
        "/api/v1/config/rollback" => ("POST", Ok(Route::Config(ConfigRoute::Rollback))),
        "/api/v1/knowledge/sources" => ("GET", Ok(Route::Knowledge(KnowledgeRoute::ListSources))),
        "/api/v1/knowledge/search" => ("GET", Ok(Route::Knowledge(KnowledgeRoute::Search))),
        "/api/v1/knowledge/unanswered" => ("GET", Ok(Route::Knowledge(KnowledgeRoute::Unanswered))),
        _ if path.starts_with("/api/v1/knowledge/sources/") => {
            let id = &path["/api/v1/knowledge/sources/".len()..];
            let valid = !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            let route = if !valid {
                Err(ApiError::new(
                    404,
                    "source_not_found",
                    "source ids are 1 to 128 characters of [A-Za-z0-9_.-]",
                ))
            } else if method == "DELETE" {
                Ok(Route::Knowledge(KnowledgeRoute::DeleteSource(
                    id.to_owned(),
                )))
            } else {
                Ok(Route::Knowledge(KnowledgeRoute::PutSource(id.to_owned())))
            };
            ("PUT, DELETE", route)
        }
        "/api/v1/attachments" => ("POST", Ok(Route::Upload)),
        _ if path.starts_with("/api/v1/attachments/") => {
            let id = &path["/api/v1/attachments/".len()..];
            let route = if crate::attachment::is_id(id) {
                Ok(Route::GetAttachment(id.to_owned()))
            } else {
                Err(ApiError::new(
                    404,
                    "attachment_not_found",
                    "no such attachment",
                ))
            };
            ("GET, HEAD", route)
        }
        "/api/v1/plugins" => ("GET", Ok(Route::Plugins)),
        _ if path.starts_with("/api/v1/plugins/") => {
            let rest = &path["/api/v1/plugins/".len()..];
            let Some(id) = rest.strip_suffix("/test") else {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    format!("no route for {path}"),
                ));
            };
            let valid = !id.is_empty()
                && id.len() <= 40
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let route = if valid {
                Ok(Route::PluginTest(id.to_owned()))
            } else {
                Err(plugin_not_found(id))
            };
            ("POST", route)
        }
        "/v1/chat/completions" => ("POST", Ok(Route::OpenAiChat)),
        "/v1/models" => ("GET", Ok(Route::OpenAiModels)),
        _ => match path.strip_prefix("/api/v1/conversations/") {
            Some(id) if !id.contains('/') => (
                "GET",
                ConversationId::parse(id)
                    .map(Route::GetConversation)
                    .ok_or_else(ApiError::conversation_not_found),
            ),
            Some(rest) if rest.matches('/').count() == 1 => {
                let (id, action) = rest.split_once('/').unwrap_or_default();
                let id = ConversationId::parse(id).ok_or_else(ApiError::conversation_not_found);
                if action == "events" {
                    return check_method(method, "GET", id.map(Route::ConversationEvents));
                }
                if action == "typing" {
                    return check_method(method, "POST", id.map(Route::Typing));
                }
                if action == "traces" {
                    return check_method(method, "GET", id.map(Route::ConversationTraces));
                }
                if action == "replay" {
                    return check_method(method, "POST", id.map(Route::ConversationReplay));
                }
                if action == "export" {
                    return check_method(method, "GET", id.map(Route::ConversationExport));
                }
                let Some(action) = ConversationAction::parse(action) else {
                    return Err(ApiError::new(
                        404,
                        "not_found",
                        format!("no route for {path}"),
                    ));
                };
                ("POST", id.map(|id| Route::ConversationAction(id, action)))
            }
            _ => {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    format!("no route for {path}"),
                ));
            }
        },
    };
    let method_ok = allowed.split(", ").any(|m| m == method);
    if !method_ok {
        let mut e = ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed here; use {allowed}"),
        );
        e.allow = Some(allowed);
        return Err(e);
    }
    route
}

/// A configuration request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigRoute {
    /// `GET /api/v1/config`: the current document and its version.
    Get,
    /// `PUT /api/v1/config`: validate and store a new version.
    Put,
    /// `GET /api/v1/config/versions`: the history.
    Versions,
    /// `POST /api/v1/config/rollback` `{"version"}`: make an earlier version current again.
    Rollback,
}

/// The largest configuration document accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Validates `tenant`'s configuration document for `PUT /api/v1/config` (and a rollback, and
/// a replay's configuration): `400 invalid_config` with the field at fault, or the parsed
/// configuration. Besides the document's own rules, it may name only the secrets the
/// deployment gave this tenant ([`crate::deployment::Deployment::check_config`]).
pub fn parse_config_document(
    body: &[u8],
    tenant: &TenantId,
    deployment: &crate::deployment::Deployment,
) -> Result<crate::TenantConfig, ApiError> {
    let limit = body_limit(&Route::Config(ConfigRoute::Put));
    if !limit.admits(body.len() as u64) {
        return Err(limit.refusal());
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(400, "invalid_json", "the body is not UTF-8"))?;
    let invalid = |e: crate::config::ConfigError| {
        let mut err = ApiError::new(400, "invalid_config", e.to_string());
        err.field = Some(e.field);
        err
    };
    let config = crate::TenantConfig::from_json(text).map_err(invalid)?;
    deployment.check_config(tenant, &config).map_err(invalid)?;
    Ok(config)
}

/// A validated `POST /api/v1/agents/tokens` body: `{"agent", "name"?, "ttl_secs"?}`
/// (default 8 hours, at most 7 days). Returns (agent, name if given, ttl in ms).
pub fn parse_agent_token_request(body: &[u8]) -> Result<(String, Option<String>, u64), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let agent = v
        .get("agent")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if !crate::auth::valid_agent_id(agent) {
        return Err(ApiError::new(
            400,
            "invalid_field",
            "`agent` is 1 to 64 characters of [A-Za-z0-9._@-]",
        )
        .field("agent"));
    }
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 80) {
        return Err(
            ApiError::new(400, "invalid_field", "`name` is at most 80 characters").field("name"),
        );
    }
    let ttl = match v.get("ttl_secs") {
        None | Some(Value::Null) => 8 * 3600,
        Some(t) => t
            .as_u64()
            .filter(|t| (60..=crate::auth::MAX_AGENT_TOKEN_MS / 1000).contains(t))
            .ok_or_else(|| {
                ApiError::new(400, "invalid_field", "`ttl_secs` is between 60 and 604800")
                    .field("ttl_secs")
            })?,
    };
    Ok((agent.to_owned(), name.map(str::to_owned), ttl * 1000))
}

/// The claims of the token `POST /api/v1/agents/tokens` mints for `tenant` at `now`: the
/// body's agent, which must be on the tenant's roster and enabled when the roster is not
/// empty (`400 unknown_agent`, `403 agent_disabled`); its name is the body's, else the
/// roster's, else the agent id.
pub fn mint_agent_claims(
    config: &crate::TenantConfig,
    tenant: &TenantId,
    body: &[u8],
    now: crate::Timestamp,
) -> Result<crate::auth::AgentClaims, ApiError> {
    let (agent, name, ttl_ms) = parse_agent_token_request(body)?;
    let listed = crate::auth::agent_for_minting(&config.agents, &agent).map_err(|e| {
        let status = if e == crate::auth::TokenError::AgentDisabled {
            403
        } else {
            400
        };
        ApiError::new(status, e.code(), format!("no token for `{agent}`: {e}")).field("agent")
    })?;
    let name = name
        .or_else(|| listed.map(|a| a.name.trim().to_owned()))
        .unwrap_or_else(|| agent.clone());
    Ok(crate::auth::AgentClaims {
        tenant: tenant.as_str().to_owned(),
        agent,
        name,
        expires: now.as_millis() + ttl_ms,
        issued: now.as_millis(),
    })
}

/// `401` for an agent token that was refused, with the reason's stable code
/// ([`crate::auth::TokenError::code`]).
pub fn agent_token_error(e: &crate::auth::TokenError) -> ApiError {
    ApiError::new(401, e.code(), e.to_string())
}

/// The version a rollback asks for.
pub fn parse_rollback(body: &[u8]) -> Result<u64, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    v.get("version")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_field",
                "`version` must be a version number (1 or more)",
            )
            .field("version")
        })
}

/// A knowledge-base request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnowledgeRoute {
    /// `GET /api/v1/knowledge/sources`
    ListSources,
    /// `PUT /api/v1/knowledge/sources/{id}`: add or replace a source.
    PutSource(String),
    /// `DELETE /api/v1/knowledge/sources/{id}`
    DeleteSource(String),
    /// `GET /api/v1/knowledge/search?q=…&k=…`
    Search,
    /// `GET /api/v1/knowledge/unanswered`
    Unanswered,
}

/// An action on a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversationAction {
    /// The visitor asks for a human (`handoff`).
    Handoff,
    /// An agent takes it (`claim`).
    Claim,
    /// An agent writes, or leaves an internal note (`messages`).
    Message,
    /// The assigned agent passes it on (`transfer`).
    Transfer,
    /// It is closed (`resolve`).
    Resolve,
    /// The visitor rates it (`csat`).
    Csat,
}

impl ConversationAction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "handoff" => Self::Handoff,
            "claim" => Self::Claim,
            "messages" => Self::Message,
            "transfer" => Self::Transfer,
            "resolve" => Self::Resolve,
            "csat" => Self::Csat,
            _ => return None,
        })
    }

    /// Whether agents (authenticated with a tenant key) perform it, rather than visitors.
    pub fn by_agent(self) -> bool {
        matches!(
            self,
            Self::Claim | Self::Message | Self::Transfer | Self::Resolve
        )
    }
}

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
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                400,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?
    };
    let Value::Object(obj) = value else {
        return Err(ApiError::new(
            400,
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
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

fn check_method(
    method: &str,
    allowed: &'static str,
    route: Result<Route, ApiError>,
) -> Result<Route, ApiError> {
    if method != allowed {
        let mut e = ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed here; use {allowed}"),
        );
        e.allow = Some(allowed);
        return Err(e);
    }
    route
}

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

/// The tenant a request belongs to, from its `X-Kefu-Tenant` header.
pub fn tenant(header: Option<&str>) -> Result<TenantId, ApiError> {
    match header {
        None => Ok(TenantId::default_tenant()),
        Some(h) => TenantId::parse(h.trim()).ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_tenant",
                "X-Kefu-Tenant must be 1 to 64 characters of [A-Za-z0-9_-]",
            )
        }),
    }
}

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

fn too_large() -> ApiError {
    body_limit(&Route::Chat).refusal()
}

// ---- Request body limits -----------------------------------------------------------------

/// The largest body of `POST /api/v1/conversations/{id}/replay`, in bytes: a configuration
/// and a few fields beside it.
pub const MAX_REPLAY_BYTES: usize = MAX_CONFIG_BYTES + 1024;

/// How much of a request body a route accepts, and the `413` that refuses more.
///
/// Both hosts read every body through one capped reader that asks [`request_body_limit`]
/// first: a declared `Content-Length` over the limit is refused before a byte is read, and a
/// body that declares no length (`Transfer-Encoding: chunked`) is refused as soon as the
/// running total passes the limit, so no host ever holds more than the limit (and one
/// chunk) of a body, and a refused request stores nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit {
    /// The most bytes accepted.
    pub max_bytes: usize,
    /// The refusal's stable code: `payload_too_large`, or `attachment_too_large` for uploads.
    pub code: &'static str,
    /// What the body is, for the refusal's message ("the request body", "a file", …).
    pub subject: &'static str,
}

impl BodyLimit {
    const fn payload(max_bytes: usize, subject: &'static str) -> Self {
        Self {
            max_bytes,
            code: "payload_too_large",
            subject,
        }
    }

    /// Whether `bytes` (declared, or read so far) are within the limit.
    pub fn admits(&self, bytes: u64) -> bool {
        bytes <= self.max_bytes as u64
    }

    /// Checks a declared `Content-Length` before the body is read.
    pub fn check_declared(&self, content_length: Option<u64>) -> Result<(), ApiError> {
        match content_length {
            Some(n) if !self.admits(n) => Err(self.refusal()),
            _ => Ok(()),
        }
    }

    /// The `413` for a body over the limit.
    pub fn refusal(&self) -> ApiError {
        ApiError::new(
            413,
            self.code,
            format!("{} exceeds {} bytes", self.subject, self.max_bytes),
        )
    }
}

/// The body limit of a request no route takes a larger body for: every small JSON body
/// (chat, actions, typing, tokens, rollbacks) and every route that reads none.
pub const DEFAULT_BODY_LIMIT: BodyLimit = BodyLimit::payload(MAX_BODY_BYTES, "the request body");

/// The body limit of a host's internal hop (the Worker's request to one of its Durable
/// Objects): a public body already within its route's limit (at most a 12 MiB knowledge
/// source) with the tenant's configuration and an envelope around it. A backstop: no
/// stranger reaches these routes.
pub const INTERNAL_BODY_LIMIT: BodyLimit =
    BodyLimit::payload(16 << 20, "the internal request body");

/// The body limit of `route`: the one table both hosts enforce while they read.
pub fn body_limit(route: &Route) -> BodyLimit {
    match route {
        Route::Config(ConfigRoute::Put) => {
            BodyLimit::payload(MAX_CONFIG_BYTES, "the configuration")
        }
        Route::ConversationReplay(_) => BodyLimit::payload(MAX_REPLAY_BYTES, "the replay request"),
        Route::PluginTest(_) => BodyLimit::payload(MAX_PLUGIN_TEST_BYTES, "a plugin test"),
        Route::Knowledge(KnowledgeRoute::PutSource(_)) => BodyLimit::payload(
            crate::knowledge::MAX_SOURCE_JSON_BYTES,
            "the knowledge source",
        ),
        Route::OpenAiChat => BodyLimit::payload(OPENAI_MAX_REQUEST_BYTES, "the request body"),
        Route::Upload => BodyLimit {
            // The largest file of any accepted type: the type's own limit is checked once
            // the bytes are in (`attachment::accept`).
            max_bytes: usize::try_from(crate::attachment::max_upload_bytes()).unwrap_or(usize::MAX),
            code: "attachment_too_large",
            subject: "a file",
        },
        Route::Chat
        | Route::ConversationAction(..)
        | Route::Typing(_)
        | Route::AgentToken
        | Route::Config(_)
        | Route::Index
        | Route::Healthz
        | Route::Demo
        | Route::GetConversation(_)
        | Route::Usage
        | Route::Knowledge(_)
        | Route::ListConversations
        | Route::ConversationEvents(_)
        | Route::ConversationTraces(_)
        | Route::ConversationExport(_)
        | Route::GetAttachment(_)
        | Route::Plugins
        | Route::OpenAiModels => DEFAULT_BODY_LIMIT,
    }
}

/// The body limit of a request by its method and path, routed or not (a request the router
/// refuses, or a host's own route, reads at most [`DEFAULT_BODY_LIMIT`]).
pub fn request_body_limit(method: &str, path: &str) -> BodyLimit {
    route(method, path).map_or(DEFAULT_BODY_LIMIT, |r| body_limit(&r))
}

/// The tenant's stored configuration document, parsed and validated: a stored document
/// that fails validation is `500 tenant_config_invalid` naming the field, never a silent
/// fall-back to another provider.
pub fn stored_config(tenant: &TenantId, json: &str) -> Result<crate::TenantConfig, ApiError> {
    crate::TenantConfig::from_json(json).map_err(|e| {
        ApiError::new(
            500,
            "tenant_config_invalid",
            format!(
                "the stored configuration of tenant {} is invalid: {e}",
                tenant.as_str()
            ),
        )
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
    let mut v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                400,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?
    };
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

/// Parses and validates a chat request body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::new(
            400,
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
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
fn parse_attachment_ids(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
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

/// A message as the API shows it.
pub fn message_json(m: &Message) -> Value {
    let parts: Vec<Value> = m
        .parts
        .iter()
        .map(|p| match p {
            Part::Text(text) => json!({"type": "text", "text": text}),
            // A stored upload is shown by its API path (and id); other URLs as given.
            _ if crate::attachment::part_ref(p).is_some() => {
                let id = crate::attachment::part_ref(p).unwrap_or_default();
                let kind = crate::attachment::part_kind(p).map_or("document", |k| k.as_str());
                let (name, mime) = match p {
                    Part::Document { name, mime, .. } => (Some(name), mime),
                    Part::Image { mime, .. } => (None, mime),
                    Part::Text(_) => (None, &None),
                };
                json!({"type": kind, "attachment_id": id, "url": crate::attachment::api_path(id), "name": name, "mime": mime})
            }
            Part::Image { url, mime } => json!({"type": "image", "url": url, "mime": mime}),
            Part::Document { url, name, mime } => {
                json!({"type": "document", "url": url, "name": name, "mime": mime})
            }
        })
        .collect();
    json!({"seq": m.seq, "role": m.role.as_str(), "parts": parts, "created_at": m.created_at.to_rfc3339()})
}

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

/// The verified visitor a conversation belongs to, as the API shows it (`null` when the
/// visitor is anonymous).
fn visitor_json(visitor: Option<&str>) -> Value {
    visitor.map_or(Value::Null, |id| json!({"id": id, "verified": true}))
}

/// One line of the agents' inbox: where a conversation stands, without its transcript.
/// `visitor` is the verified visitor it belongs to, if any.
pub fn inbox_entry_json(c: &Conversation, visitor: Option<&str>) -> Value {
    let last = c
        .window()
        .iter()
        .rev()
        .find(|m| m.role != crate::vocab::Role::Note);
    let preview: String = last
        .map(|m| m.text())
        .unwrap_or_default()
        .chars()
        .take(140)
        .collect();
    json!({
        "id": c.id().as_str(),
        "status": c.status().as_str(),
        "assignee": c.assignee(),
        "queue": c.queue(),
        "tags": c.tags(),
        "csat": c.csat(),
        "messages": c.message_count(),
        "visitor": visitor_json(visitor),
        "last_message": {"role": last.map(|m| m.role.as_str()), "preview": preview},
        "created_at": c.created_at().to_rfc3339(),
        "updated_at": c.updated_at().to_rfc3339(),
        "updated_ms": c.updated_at().as_millis(),
    })
}

/// A conversation and its transcript as the API shows them. Visitors never see internal
/// notes (`with_notes: false`); agents do. `visitor` is the verified visitor it belongs
/// to, if any.
pub fn conversation_json(
    c: &Conversation,
    transcript: &[Message],
    with_notes: bool,
    visitor: Option<&str>,
) -> Value {
    json!({
        "id": c.id().as_str(),
        "tenant": c.tenant().as_str(),
        "status": c.status().as_str(),
        "visitor": visitor_json(visitor),
        "assignee": c.assignee(),
        "queue": c.queue(),
        "tags": c.tags(),
        "csat": c.csat(),
        "created_at": c.created_at().to_rfc3339(),
        "updated_at": c.updated_at().to_rfc3339(),
        "messages": transcript
            .iter()
            .filter(|m| with_notes || m.role != crate::vocab::Role::Note)
            .map(message_json)
            .collect::<Vec<_>>(),
    })
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
    })
}

/// The stream's last frame for [`chat_notice_json`]'s cases.
pub fn sse_done_notice(reply: Option<&Message>, responder: &str, status: crate::Status) -> String {
    sse_frame(
        "done",
        &json!({"reply": reply.map(message_json), "responder": responder, "status": status.as_str()}),
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

/// `429 quota_exceeded`: the tenant's quota or budget refused the turn (the host adds
/// `Retry-After`).
pub fn quota_error(e: &crate::gateway::QuotaError) -> ApiError {
    ApiError::new(429, "quota_exceeded", e.to_string())
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

/// The `/healthz` body.
pub fn health_json() -> Value {
    json!({"status": "ok", "version": crate::VERSION})
}

// ---- Plugins (operators) -----------------------------------------------------------------

/// The largest body of `POST /api/v1/plugins/{id}/test`, in bytes.
pub const MAX_PLUGIN_TEST_BYTES: usize = 256 * 1024;

/// The conversation id a plugin test's hook call carries.
pub const PLUGIN_TEST_CONVERSATION: &str = "test";

fn plugin_not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "plugin_not_found",
        format!("the tenant has no plugin with the id {id:?} (see `plugins` in its configuration)"),
    )
}

/// The tenant's plugin `id` (enabled or not: an operator may try one before enabling it), or
/// `404 plugin_not_found`.
pub fn plugin_spec<'a>(
    config: &'a crate::TenantConfig,
    id: &str,
) -> Result<&'a crate::plugin::PluginSpec, ApiError> {
    config
        .plugins
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| plugin_not_found(id))
}

/// The hook call a plugin test asks for: the body is a hook call in the engine's shape
/// (`{"hook": "after_reply", "question": "…", "reply": "…"}`) without `ctx`, which the server
/// fills with the tenant, the plugin's id, the conversation id `test` and the body's
/// optional `language`.
pub fn parse_plugin_test(
    body: &[u8],
    tenant: &TenantId,
    spec: &crate::plugin::PluginSpec,
) -> Result<crate::plugin::HookCall, ApiError> {
    let limit = body_limit(&Route::PluginTest(spec.id.clone()));
    if !limit.admits(body.len() as u64) {
        return Err(limit.refusal());
    }
    let mut v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Some(fields) = v.as_object_mut() else {
        return Err(ApiError::new(
            400,
            "invalid_field",
            "the body must be a JSON object naming a `hook`",
        ));
    };
    if fields.contains_key("ctx") {
        return Err(ApiError::new(
            400,
            "invalid_field",
            "`ctx` is filled by the server (the tenant, the plugin's id, conversation `test`)",
        )
        .field("ctx"));
    }
    let language = match fields.remove("language") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if !l.is_empty() && l.len() <= 35 => Some(l),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_field",
                "`language` must be a BCP 47 tag such as `en` or `zh-CN`",
            )
            .field("language"));
        }
    };
    let hook = fields.get("hook").and_then(Value::as_str).unwrap_or("");
    if hook != "describe" {
        let ctx = crate::plugin::PluginContext {
            tenant: tenant.as_str().to_owned(),
            conversation_id: PLUGIN_TEST_CONVERSATION.to_owned(),
            plugin_id: spec.id.clone(),
            language,
        };
        fields.insert(
            "ctx".into(),
            serde_json::to_value(ctx).map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            400,
            "invalid_field",
            format!(
                "not a hook call (`hook` is one of describe, on_event, before_model, after_reply, call_tool, with that hook's fields): {e}"
            ),
        )
    })
}

/// A hook's answer in the engine's JSON shapes (what plugin runners return).
pub fn plugin_answer_json(answer: &crate::plugin::Answer) -> Value {
    use crate::plugin::Answer;
    let value = match answer {
        Answer::Manifest(m) => serde_json::to_value(m),
        Answer::Actions(a) => serde_json::to_value(a),
        Answer::Model(d) => serde_json::to_value(d),
        Answer::Reply(d) => serde_json::to_value(d),
        Answer::Tool(Ok(r)) => Ok(json!({ "ok": r })),
        Answer::Tool(Err(e)) => Ok(json!({ "err": e })),
    };
    value.unwrap_or(Value::Null)
}

/// Checks a plugin's answer to `call` as a turn would and says what Kefu would do with it
/// (the trace's `effect`), or why it would skip the plugin.
pub fn plugin_effect(
    call: &crate::plugin::HookCall,
    answer: &crate::plugin::Answer,
) -> Result<String, crate::plugin::PluginFailure> {
    use crate::plugin::{
        Answer, FailureKind, HookCall, ModelDecision, PluginAction, PluginFailure, ReplyDecision,
    };
    Ok(match (call, answer) {
        (_, Answer::Manifest(m)) => format!("describes {} {}", m.name, m.version),
        (_, Answer::Actions(actions)) => {
            let (taken, refused) = crate::plugin::accept_actions(actions.clone());
            let mut parts: Vec<String> = taken
                .iter()
                .map(|a| match a {
                    PluginAction::Tag(t) => format!("tag {t}"),
                    PluginAction::Handoff(r) => format!("handoff: {r}"),
                    PluginAction::SendMessage(_) => "send a message".to_owned(),
                })
                .collect();
            parts.extend(refused.into_iter().map(|r| format!("refused {r}")));
            if parts.is_empty() {
                "no actions".to_owned()
            } else {
                parts.join("; ")
            }
        }
        (HookCall::BeforeModel { request, .. }, Answer::Model(decision)) => {
            crate::plugin::check_model_decision(decision)?;
            match decision {
                ModelDecision::Keep => "kept".to_owned(),
                ModelDecision::Rewrite(texts) => {
                    if texts.len() != request.messages.len() {
                        return Err(PluginFailure::new(
                            FailureKind::Invalid,
                            format!(
                                "rewrite has {} texts for {} messages",
                                texts.len(),
                                request.messages.len()
                            ),
                        ));
                    }
                    let changed = texts
                        .iter()
                        .zip(&request.messages)
                        .filter(|(t, m)| **t != m.text)
                        .count();
                    format!("rewrote {changed} of {} messages", texts.len())
                }
                ModelDecision::Answer(_) => "answered instead of the model".to_owned(),
                ModelDecision::Handoff(r) => format!("handoff: {r}"),
            }
        }
        (_, Answer::Reply(decision)) => {
            crate::plugin::check_reply_decision(decision)?;
            match decision {
                ReplyDecision::Keep => "kept".to_owned(),
                ReplyDecision::Rewrite(_) => "rewrote the reply".to_owned(),
                ReplyDecision::Block(r) => format!("blocked: {r}"),
                ReplyDecision::Handoff(r) => format!("handoff: {r}"),
            }
        }
        (_, Answer::Tool(Ok(result))) => format!("tool result ({} bytes)", result.len()),
        (_, Answer::Tool(Err(e))) => format!("tool error: {e}"),
        (_, Answer::Model(_)) => {
            return Err(PluginFailure::new(
                FailureKind::Invalid,
                "a model decision answers before_model only",
            ));
        }
    })
}

/// The record of one plugin call, for a trace or a plugin test: the answer's effect (checked
/// with [`plugin_effect`]) or the failure.
pub fn plugin_call_record(
    spec: &crate::plugin::PluginSpec,
    call: &crate::plugin::HookCall,
    duration_ms: u64,
    result: &Result<crate::plugin::Answer, crate::plugin::PluginFailure>,
) -> crate::plugin::PluginCallRecord {
    use crate::plugin::{CallOutcome, HookCall};
    let outcome = match result
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|a| plugin_effect(call, a))
    {
        Ok(effect) => CallOutcome::Ok { effect },
        Err(f) => CallOutcome::Failed {
            failure: f.kind,
            message: f.message.clone(),
        },
    };
    crate::plugin::PluginCallRecord {
        plugin_id: spec.id.clone(),
        plugin: spec.plugin.clone(),
        hook: call.hook(),
        tool: match call {
            HookCall::CallTool { name, .. } => Some(name.clone()),
            _ => None,
        },
        duration_ms,
        outcome,
    }
}

/// Checks a live-update stream's `access_token` (browsers' `EventSource` and `WebSocket`
/// cannot set headers): only a short-lived agent token (`kfa.…`), never the tenant key, may
/// travel in a URL.
pub fn check_access_token(token: &str) -> Result<(), ApiError> {
    if token.starts_with("kfa.") {
        Ok(())
    } else {
        Err(ApiError {
            status: 401,
            code: "unauthorized",
            message: "access_token takes an agent token (kfa.…); send the tenant key in the Authorization header".into(),
            field: Some("access_token".into()),
            allow: None,
            retry_after: None,
        })
    }
}

/// The answer of `GET /api/v1/plugins`: each installed plugin with its manifest (or why it
/// could not describe itself), and the tenant's plugins as configured.
pub fn plugins_json(
    installed: &[(
        String,
        Result<crate::plugin::Manifest, crate::plugin::PluginFailure>,
    )],
    config: &crate::TenantConfig,
) -> Value {
    let installed: Vec<Value> = installed
        .iter()
        .map(|(name, manifest)| match manifest {
            Ok(m) => json!({ "name": name, "manifest": m }),
            Err(f) => json!({ "name": name, "error": { "kind": f.kind, "message": f.message } }),
        })
        .collect();
    json!({ "installed": installed, "plugins": config.plugins })
}

/// The answer of `POST /api/v1/plugins/{id}/test`: the plugin's answer (null when it failed)
/// and the call's record.
pub fn plugin_test_json(
    result: &Result<crate::plugin::Answer, crate::plugin::PluginFailure>,
    record: &crate::plugin::PluginCallRecord,
) -> Value {
    json!({
        "answer": result.as_ref().map(plugin_answer_json).unwrap_or(Value::Null),
        "record": record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_session_follows_the_tenant_as_loaded() {
        let claims = crate::auth::AgentClaims {
            tenant: "default".into(),
            agent: "ana".into(),
            name: "Ana".into(),
            expires: 10_000,
            issued: 0,
        };
        let now = crate::Timestamp::from_millis(1);
        let roster = crate::TenantConfig::from_json(
            r#"{"agents": [{"id": "ana", "name": "Ana", "disabled": true}]}"#,
        );
        assert_eq!(
            session_on(
                roster.map_err(|e| ApiError::internal(e.to_string())),
                &claims,
                now
            ),
            Err(crate::auth::TokenError::AgentDisabled)
        );
        let gone = Err(ApiError::new(404, "tenant_not_found", "gone"));
        assert_eq!(
            session_on(gone, &claims, now),
            Err(crate::auth::TokenError::UnknownAgent)
        );
        // A storage hiccup does not cut an agent off.
        assert_eq!(
            session_on(Err(ApiError::internal("kv")), &claims, now),
            Ok(())
        );
    }

    #[test]
    fn a_visitor_never_reads_the_providers_own_error() {
        let e = ProviderError::Upstream {
            status: 500,
            message: "org-1234 over budget; key sk-live-abc".into(),
        };
        let id = ConversationId::parse("c1").unwrap();
        let visitor = Message {
            seq: 1,
            role: crate::Role::Visitor,
            parts: vec![Part::Text("hi".into())],
            created_at: crate::Timestamp::from_millis(0),
        };
        let (status, body) = chat_failure_json(&id, true, &visitor, &e);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (502, Some("provider_error"))
        );
        assert!(!body.to_string().contains("org-1234"), "{body}");
        assert!(!sse_provider_error(&e).contains("sk-live"));
    }

    #[test]
    fn an_agent_acts_under_the_name_and_id_its_token_carries() {
        let claims = crate::auth::AgentClaims {
            tenant: "default".into(),
            agent: "ana".into(),
            name: "Ana".into(),
            expires: u64::MAX,
            issued: 0,
        };
        let bound = bind_agent(ConversationAction::Claim, b"", &claims).unwrap();
        let v: Value = serde_json::from_slice(&bound).unwrap();
        assert_eq!(
            (v["agent"].as_str(), v["name"].as_str()),
            (Some("ana"), Some("Ana"))
        );
        let e = bind_agent(
            ConversationAction::Claim,
            br#"{"name": "Manager"}"#,
            &claims,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (403, "agent_mismatch", Some("name"))
        );
        let e = bind_agent(ConversationAction::Claim, br#"{"agent": "bob"}"#, &claims).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("agent"));
    }

    fn code(body: &[u8]) -> &'static str {
        parse_chat_request(body).unwrap_err().code
    }

    #[test]
    fn body_limits_by_route() {
        let limit = |method: &str, path: &str| request_body_limit(method, path);
        let id = "c_0123456789abcdef0123456789abcdef";
        // Small JSON bodies: 64 KiB.
        for (method, path) in [
            ("POST", "/api/v1/chat".to_owned()),
            ("POST", format!("/api/v1/conversations/{id}/message")),
            ("POST", format!("/api/v1/conversations/{id}/handoff")),
            ("POST", format!("/api/v1/conversations/{id}/typing")),
            ("POST", "/api/v1/agents/tokens".to_owned()),
            ("POST", "/api/v1/config/rollback".to_owned()),
            // Routes that read no body, and requests no route takes, read no more.
            ("GET", "/api/v1/config".to_owned()),
            ("POST", "/no/such/route".to_owned()),
            ("DELETE", "/api/v1/chat".to_owned()),
        ] {
            assert_eq!(limit(method, &path), DEFAULT_BODY_LIMIT, "{method} {path}");
        }
        assert_eq!(DEFAULT_BODY_LIMIT.max_bytes, 64 * 1024);
        let larger = [
            ("PUT", "/api/v1/config".to_owned(), 256 * 1024),
            (
                "POST",
                format!("/api/v1/conversations/{id}/replay"),
                257 * 1024,
            ),
            ("POST", "/api/v1/plugins/pii/test".to_owned(), 256 * 1024),
            ("PUT", "/api/v1/knowledge/sources/faq".to_owned(), 12 << 20),
            ("POST", "/v1/chat/completions".to_owned(), 4 << 20),
        ];
        for (method, path, max) in larger {
            let l = limit(method, &path);
            assert_eq!((l.max_bytes, l.code), (max, "payload_too_large"), "{path}");
        }
        let upload = limit("POST", "/api/v1/attachments");
        assert_eq!(upload.max_bytes, 10 << 20);
        assert_eq!(upload.code, "attachment_too_large");
    }

    #[test]
    fn body_limits_refuse_declared_and_read_lengths() {
        let l = body_limit(&Route::Chat);
        assert!(l.check_declared(None).is_ok());
        assert!(l.check_declared(Some(64 * 1024)).is_ok());
        let refused = l.check_declared(Some(64 * 1024 + 1)).unwrap_err();
        assert_eq!((refused.status, refused.code), (413, "payload_too_large"));
        assert_eq!(refused.body()["error"]["code"], "payload_too_large");
        assert!(refused.message.contains("65536"), "{}", refused.message);
        assert!(l.admits(64 * 1024) && !l.admits(64 * 1024 + 1));
        // The parsers refuse with the very same error as the readers.
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_chat_request(&huge).unwrap_err(), l.refusal());
        let config = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(
            parse_config_document(&config, &TenantId::default_tenant(), &Default::default())
                .unwrap_err(),
            body_limit(&Route::Config(ConfigRoute::Put)).refusal()
        );
        let openai = crate::openai_api::parse_request(&vec![b' '; (4 << 20) + 1]).unwrap_err();
        assert_eq!((openai.status, openai.code), (413, "payload_too_large"));
    }

    #[test]
    fn messages_carry_attachments() {
        let a = crate::attachment::new_id([1; 16]);
        let b = crate::attachment::new_id([2; 16]);
        // Files alone are a message; text alone still is one.
        let only_files =
            parse_chat_request(format!(r#"{{"attachments": ["{a}"]}}"#).as_bytes()).unwrap();
        assert_eq!(
            (only_files.message.as_str(), only_files.attachments.len()),
            ("", 1)
        );
        assert!(only_files.parts().is_empty());
        assert_eq!(code(br#"{"attachments": []}"#), "missing_field");
        let five =
            format!(r#"{{"message": "x", "attachments": ["{a}", "{b}", "{a}1", "{b}2", "{a}3"]}}"#);
        assert_eq!(code(five.as_bytes()), "too_many_attachments");
        let twice = parse_chat_request(
            format!(r#"{{"message": "x", "attachments": ["{a}", "{a}"]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            (twice.code, twice.field.as_deref()),
            ("invalid_field", Some("attachments[1]"))
        );
        assert_eq!(
            code(br#"{"message": "x", "attachments": "att_1"}"#),
            "invalid_field"
        );
        assert_eq!(
            code(br#"{"message": "x", "attachments": [7]}"#),
            "invalid_field"
        );
        // An agent may answer with a file and no text.
        let sent = parse_action(
            ConversationAction::Message,
            format!(r#"{{"agent": "ana", "attachments": ["{b}"]}}"#).as_bytes(),
        )
        .unwrap();
        assert!(
            matches!(sent, ActionRequest::Message { ref text, ref attachments, .. } if text.is_empty() && attachments == std::slice::from_ref(&b))
        );
        assert!(parse_action(ConversationAction::Message, br#"{"agent": "ana"}"#).is_err());
    }

    #[test]
    fn attachment_routes() {
        let id = crate::attachment::new_id([3; 16]);
        assert_eq!(route("POST", "/api/v1/attachments").unwrap(), Route::Upload);
        assert_eq!(
            route("GET", &format!("/api/v1/attachments/{id}")).unwrap(),
            Route::GetAttachment(id)
        );
        assert_eq!(
            route("GET", "/api/v1/attachments/../x").unwrap_err().code,
            "attachment_not_found"
        );
        assert_eq!(
            route("GET", "/api/v1/attachments").unwrap_err().code,
            "method_not_allowed"
        );
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(route("POST", "/api/v1/chat"), Ok(Route::Chat));
        assert_eq!(route("GET", "/healthz/"), Ok(Route::Healthz));
        let e = route("GET", "/api/v1/chat").unwrap_err();
        assert_eq!(
            (e.status, e.code, e.allow),
            (405, "method_not_allowed", Some("POST"))
        );
        assert_eq!(
            route("DELETE", "/api/v1/conversations/abc")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route("GET", "/api/v1/conversations/a%20b")
                .unwrap_err()
                .code,
            "conversation_not_found"
        );
        assert_eq!(
            route("GET", "/api/v1/conversations/a/b").unwrap_err().code,
            "not_found"
        );
        assert_eq!(route("GET", "/nope").unwrap_err().code, "not_found");
        assert!(matches!(
            route("GET", "/api/v1/conversations/abc"),
            Ok(Route::GetConversation(_))
        ));
    }

    #[test]
    fn plugin_routes_and_tests() {
        use crate::plugin::{
            Answer, CallOutcome, FailureKind, HookCall, ModelDecision, PluginFailure, PluginSpec,
        };
        assert_eq!(route("GET", "/api/v1/plugins"), Ok(Route::Plugins));
        assert_eq!(
            route("POST", "/api/v1/plugins/pii/test"),
            Ok(Route::PluginTest("pii".into()))
        );
        assert_eq!(
            route("GET", "/api/v1/plugins/pii/test").unwrap_err().status,
            405
        );
        assert_eq!(
            route("POST", "/api/v1/plugins/PII/test").unwrap_err().code,
            "plugin_not_found"
        );
        assert_eq!(
            route("POST", "/api/v1/plugins/pii").unwrap_err().code,
            "not_found"
        );

        let config = crate::TenantConfig::from_json(
            r#"{"plugins": [{"id": "pii", "plugin": "pii-redactor", "enabled": false}]}"#,
        )
        .unwrap();
        assert_eq!(
            plugin_spec(&config, "other").unwrap_err().code,
            "plugin_not_found"
        );
        let spec: &PluginSpec = plugin_spec(&config, "pii").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let body = br#"{"hook": "before_model", "language": "en",
            "request": {"target": "p/m", "messages": [{"role": "user", "text": "a@b.co"}]}}"#;
        let call = parse_plugin_test(body, &tenant, spec).unwrap();
        let HookCall::BeforeModel { ctx, request } = &call else {
            panic!("{call:?}")
        };
        assert_eq!(
            (
                ctx.tenant.as_str(),
                ctx.conversation_id.as_str(),
                ctx.plugin_id.as_str()
            ),
            ("acme", "test", "pii")
        );
        assert_eq!(ctx.language.as_deref(), Some("en"));
        assert_eq!(request.messages.len(), 1);
        for (bad, code) in [
            (&b"[1]"[..], "invalid_field"),
            (b"{", "invalid_json"),
            (br#"{"hook": "explode"}"#, "invalid_field"),
            (
                br#"{"hook": "after_reply", "question": "q"}"#,
                "invalid_field",
            ),
            (
                br#"{"hook": "after_reply", "question": "q", "reply": "r", "ctx": {}}"#,
                "invalid_field",
            ),
        ] {
            assert_eq!(
                parse_plugin_test(bad, &tenant, spec).unwrap_err().code,
                code,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = vec![b' '; MAX_PLUGIN_TEST_BYTES + 1];
        assert_eq!(
            parse_plugin_test(&huge, &tenant, spec).unwrap_err().status,
            413
        );

        // What a turn would do with the answer, checked as a turn checks it.
        let rewrite = Ok(Answer::Model(ModelDecision::Rewrite(vec![
            "[email]".into(),
        ])));
        let record = plugin_call_record(spec, &call, 3, &rewrite);
        assert_eq!(
            record.outcome,
            CallOutcome::Ok {
                effect: "rewrote 1 of 1 messages".into()
            }
        );
        let wrong_length = Ok(Answer::Model(ModelDecision::Rewrite(vec![])));
        let record = plugin_call_record(spec, &call, 3, &wrong_length);
        assert!(matches!(
            record.outcome,
            CallOutcome::Failed {
                failure: FailureKind::Invalid,
                ..
            }
        ));
        let failed = Err(PluginFailure::new(FailureKind::Timeout, "ran out"));
        let record = plugin_call_record(spec, &call, 250, &failed);
        let v = plugin_test_json(&failed, &record);
        assert_eq!(v["answer"], Value::Null);
        assert_eq!(v["record"]["outcome"]["failure"], "timeout");
        assert_eq!(v["record"]["hook"], "before_model");
        assert_eq!(
            plugin_test_json(&rewrite, &record)["answer"],
            json!({"rewrite": ["[email]"]})
        );
    }

    #[test]
    fn conversation_actions_route_and_validate() {
        let r = route("POST", "/api/v1/conversations/c1/claim").unwrap();
        assert!(matches!(
            r,
            Route::ConversationAction(_, ConversationAction::Claim)
        ));
        assert_eq!(
            route("GET", "/api/v1/conversations/c1/claim")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route("POST", "/api/v1/conversations/c1/fly")
                .unwrap_err()
                .code,
            "not_found"
        );
        assert_eq!(
            parse_action(
                ConversationAction::Claim,
                br#"{"agent":"alex","name":"Alex"}"#
            )
            .unwrap(),
            ActionRequest::Claim {
                agent: "alex".into(),
                name: "Alex".into()
            }
        );
        assert_eq!(
            parse_action(ConversationAction::Handoff, b"").unwrap(),
            ActionRequest::Handoff { queue: None }
        );
        let code = |a, b: &[u8]| parse_action(a, b).unwrap_err().code;
        assert_eq!(code(ConversationAction::Claim, b"{}"), "missing_field");
        assert_eq!(
            code(ConversationAction::Message, br#"{"agent":"a","text":"  "}"#),
            "invalid_field"
        );
        assert_eq!(
            code(
                ConversationAction::Message,
                br#"{"agent":"a","text":"x","internal":"yes"}"#
            ),
            "invalid_field"
        );
        assert_eq!(
            code(ConversationAction::Csat, br#"{"score":6}"#),
            "invalid_field"
        );
        assert_eq!(
            code(ConversationAction::Csat, br#"{"score":3,"comment":"x"}"#),
            "invalid_field"
        );
        assert_eq!(code(ConversationAction::Resolve, b"[1]"), "invalid_json");
    }

    #[test]
    fn config_documents_are_validated_with_the_field() {
        assert!(matches!(
            route("PUT", "/api/v1/config"),
            Ok(Route::Config(ConfigRoute::Put))
        ));
        assert!(matches!(
            route("GET", "/api/v1/config"),
            Ok(Route::Config(ConfigRoute::Get))
        ));
        assert_eq!(route("DELETE", "/api/v1/config").unwrap_err().status, 405);
        let e = parse_config_document(
            br#"{"history_window": 1}"#,
            &TenantId::default_tenant(),
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (400, "invalid_config", Some("history_window"))
        );
        assert!(
            parse_config_document(
                br#"{"system_prompt": "Be brief."}"#,
                &TenantId::default_tenant(),
                &Default::default()
            )
            .is_ok()
        );
        assert_eq!(
            parse_rollback(br#"{"version": 0}"#).unwrap_err().code,
            "invalid_field"
        );
        assert_eq!(parse_rollback(br#"{"version": 3}"#).unwrap(), 3);
    }

    #[test]
    fn validates_chat_bodies() {
        assert_eq!(code(b"{"), "invalid_json");
        assert_eq!(code(b"[]"), "invalid_json");
        assert_eq!(code(b"{}"), "missing_field");
        assert_eq!(code(br#"{"message":42}"#), "invalid_field");
        assert_eq!(code(br#"{"message":"hi","stream":"yes"}"#), "invalid_field");
        assert_eq!(code(br#"{"message":"hi","strem":true}"#), "invalid_field");
        assert_eq!(
            code(br#"{"message":"hi","conversation_id":7}"#),
            "invalid_field"
        );
        assert_eq!(
            code(br#"{"message":"hi","conversation_id":"no pe"}"#),
            "conversation_not_found"
        );
        assert_eq!(code(br#"{"message":" \n "}"#), "empty_message");
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(MAX_MESSAGE_CHARS + 1));
        assert_eq!(code(long.as_bytes()), "message_too_large");
        let huge = format!(r#"{{"message":"{}"}}"#, "x".repeat(1 << 20));
        assert_eq!(code(huge.as_bytes()), "payload_too_large");
        // Characters, not bytes: 16 000 Chinese characters are allowed (48 000 bytes).
        let zh = format!(r#"{{"message":"{}"}}"#, "你".repeat(MAX_MESSAGE_CHARS));
        assert!(parse_chat_request(zh.as_bytes()).is_ok());
        let ok = parse_chat_request(br#"{"message":"hi","stream":true,"conversation_id":"c_1"}"#)
            .unwrap();
        assert!(ok.stream);
        assert_eq!(ok.conversation_id.unwrap().as_str(), "c_1");
    }

    #[test]
    fn validates_the_visitor_identity_shape() {
        let hash = "ab".repeat(32);
        let ok = parse_chat_request(
            format!(r#"{{"message":"hi","visitor":{{"id":"user-42","hash":"{hash}"}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.visitor.unwrap().id, "user-42");
        let field = |body: String| parse_chat_request(body.as_bytes()).unwrap_err().field;
        assert_eq!(
            field(r#"{"message":"hi","visitor":"user-42"}"#.into()).as_deref(),
            Some("visitor")
        );
        assert_eq!(
            field(format!(
                r#"{{"message":"hi","visitor":{{"id":"","hash":"{hash}"}}}}"#
            ))
            .as_deref(),
            Some("visitor.id")
        );
        assert_eq!(
            field(r#"{"message":"hi","visitor":{"id":"u","hash":"xyz"}}"#.into()).as_deref(),
            Some("visitor.hash")
        );
        assert_eq!(
            field(format!(
                r#"{{"message":"hi","visitor":{{"id":"u","hash":"{hash}","email":"a@b"}}}}"#
            ))
            .as_deref(),
            Some("visitor.email")
        );
    }

    #[test]
    fn error_bodies_are_stable() {
        let e = parse_chat_request(b"{}").unwrap_err();
        assert_eq!(
            e.body(),
            json!({"error": {"code": "missing_field", "message": "`message` is required", "field": "message"}})
        );
        assert_eq!(
            tenant(Some("bad tenant!")).unwrap_err().code,
            "invalid_tenant"
        );
        assert_eq!(tenant(None).unwrap().as_str(), "default");
    }

    #[test]
    fn sse_frames() {
        assert_eq!(
            sse_delta("Hi\n"),
            "event: delta\ndata: {\"text\":\"Hi\\n\"}\n\n"
        );
        assert!(sse_error("provider_timeout", "slow").starts_with("event: error\n"));
    }

    #[test]
    fn minting_follows_the_roster() {
        let tenant = TenantId::parse("acme").unwrap();
        let now = crate::Timestamp::from_millis(1_000);
        let open = crate::TenantConfig::default();
        let c = mint_agent_claims(&open, &tenant, br#"{"agent":"anyone"}"#, now).unwrap();
        assert_eq!(
            (c.name.as_str(), c.issued, c.expires),
            ("anyone", 1_000, 1_000 + 8 * 3_600_000)
        );
        let listed = crate::TenantConfig::from_json(
            r#"{"agents":[{"id":"alex","name":"Alex"},{"id":"kim","name":"Kim","disabled":true}]}"#,
        )
        .unwrap();
        let c = mint_agent_claims(&listed, &tenant, br#"{"agent":"alex"}"#, now).unwrap();
        assert_eq!((c.tenant.as_str(), c.name.as_str()), ("acme", "Alex"));
        let c =
            mint_agent_claims(&listed, &tenant, br#"{"agent":"alex","name":"Al"}"#, now).unwrap();
        assert_eq!(c.name, "Al");
        let e = mint_agent_claims(&listed, &tenant, br#"{"agent":"anyone"}"#, now).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (400, "unknown_agent", Some("agent"))
        );
        let e = mint_agent_claims(&listed, &tenant, br#"{"agent":"kim"}"#, now).unwrap_err();
        assert_eq!((e.status, e.code), (403, "agent_disabled"));
        let e = agent_token_error(&crate::auth::TokenError::Revoked);
        assert_eq!((e.status, e.code), (401, "token_revoked"));
    }
}
