//! Routing and body limits: which route a method and path ask for (or the 404/405 for them),
//! the tenant a request belongs to, and how much of a body each route may send — the one
//! table both hosts enforce while they read.

use serde_json::{Value, json};

use super::config::MAX_CONFIG_BYTES;
use super::error::{ApiError, group_not_found, plugin_not_found};
use super::plugins::MAX_PLUGIN_TEST_BYTES;
use crate::vocab::{ConversationId, TenantId};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest body of `POST /v1/chat/completions`, in bytes (a long conversation with
/// images inline fits).
pub const OPENAI_MAX_REQUEST_BYTES: usize = 4 << 20;

/// The header that names the tenant.
pub const TENANT_HEADER: &str = "x-kefu-tenant";

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

/// Whether `key` is shaped like the key of a group of unanswered questions (a row id: 1
/// to 19 digits).
pub fn is_group_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 19 && key.bytes().all(|b| b.is_ascii_digit())
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
        "/api/v1/config/draft" => (
            "GET, PUT",
            Ok(Route::Config(if method == "PUT" {
                ConfigRoute::PutDraft
            } else {
                ConfigRoute::Draft
            })),
        ),
        "/api/v1/config/draft/test" => ("POST", Ok(Route::Config(ConfigRoute::RunTests))),
        "/api/v1/config/draft/publish" => ("POST", Ok(Route::Config(ConfigRoute::Publish))),
        "/api/v1/config/tests" => ("GET", Ok(Route::Config(ConfigRoute::Tests))),
        "/api/v1/config/draft/knowledge/sources" => {
            ("GET", Ok(Route::Config(ConfigRoute::DraftSources)))
        }
        _ if path.starts_with("/api/v1/config/draft/knowledge/sources/") => {
            let id = &path["/api/v1/config/draft/knowledge/sources/".len()..];
            let route = if !is_source_id(id) {
                Err(ApiError::new(
                    404,
                    "source_not_found",
                    "source ids are 1 to 128 characters of [A-Za-z0-9_.-]",
                ))
            } else if method == "DELETE" {
                Ok(Route::Config(ConfigRoute::DropSource(id.to_owned())))
            } else {
                Ok(Route::Config(ConfigRoute::StageSource(id.to_owned())))
            };
            ("PUT, DELETE", route)
        }
        _ if path.starts_with("/api/v1/config/tests/") => {
            let id = &path["/api/v1/config/tests/".len()..];
            let route = if !is_test_id(id) {
                Err(ApiError::new(
                    404,
                    "test_not_found",
                    "test ids are 1 to 64 characters of [A-Za-z0-9_.-]",
                ))
            } else {
                Ok(Route::Config(match method {
                    "PUT" => ConfigRoute::PutTest(id.to_owned()),
                    "DELETE" => ConfigRoute::DeleteTest(id.to_owned()),
                    _ => ConfigRoute::Test(id.to_owned()),
                }))
            };
            ("GET, PUT, DELETE", route)
        }
        "/api/v1/knowledge/sources" => ("GET", Ok(Route::Knowledge(KnowledgeRoute::ListSources))),
        "/api/v1/knowledge/search" => ("GET", Ok(Route::Knowledge(KnowledgeRoute::Search))),
        "/api/v1/knowledge/unanswered" => ("GET", Ok(Route::Knowledge(KnowledgeRoute::Unanswered))),
        "/api/v1/knowledge/unanswered/groups" => (
            "GET",
            Ok(Route::Knowledge(KnowledgeRoute::UnansweredGroups)),
        ),
        _ if path.starts_with("/api/v1/knowledge/unanswered/groups/") => {
            let rest = &path["/api/v1/knowledge/unanswered/groups/".len()..];
            let Some(key) = rest.strip_suffix("/answer") else {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    format!("no route for {path}"),
                ));
            };
            let route = if is_group_key(key) {
                Ok(Route::Knowledge(KnowledgeRoute::AnswerGroup(
                    key.to_owned(),
                )))
            } else {
                Err(group_not_found(key))
            };
            ("POST", route)
        }
        _ if path.starts_with("/api/v1/knowledge/sources/") => {
            let id = &path["/api/v1/knowledge/sources/".len()..];
            let route = if !is_source_id(id) {
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

/// Whether `id` may name a test case (`/api/v1/config/tests/{id}`): 1 to 64 characters of
/// `[A-Za-z0-9_.-]`.
pub fn is_test_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Whether `id` is shaped like a knowledge source's id: 1 to 128 characters of
/// `[A-Za-z0-9_.-]`.
fn is_source_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A configuration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigRoute {
    /// `GET /api/v1/config`: the current document and its version.
    Get,
    /// `PUT /api/v1/config`: validate and store a new version.
    Put,
    /// `GET /api/v1/config/versions`: the history.
    Versions,
    /// `POST /api/v1/config/rollback` `{"version"}`: make an earlier version current again.
    Rollback,
    /// `GET /api/v1/config/draft`: the draft beside the live version.
    Draft,
    /// `PUT /api/v1/config/draft`: validate and store the draft (nothing goes live).
    PutDraft,
    /// `POST /api/v1/config/draft/test`: run the test suite against the draft.
    RunTests,
    /// `POST /api/v1/config/draft/publish` `{"override"?, "reason"?}`: run the suite, then
    /// make the draft the next version if it passes (or the operator overrides).
    Publish,
    /// `GET /api/v1/config/tests`: every test case.
    Tests,
    /// `GET /api/v1/config/tests/{id}`.
    Test(String),
    /// `PUT /api/v1/config/tests/{id}`: add or replace a test case.
    PutTest(String),
    /// `DELETE /api/v1/config/tests/{id}`.
    DeleteTest(String),
    /// `GET /api/v1/config/draft/knowledge/sources`: the draft's staged sources.
    DraftSources,
    /// `PUT /api/v1/config/draft/knowledge/sources/{id}`: stage a source (the body of a live
    /// `PUT /api/v1/knowledge/sources/{id}`), or `{"remove": true}`: stage the live
    /// source's removal.
    StageSource(String),
    /// `DELETE /api/v1/config/draft/knowledge/sources/{id}`: drop what the draft stages
    /// for the source.
    DropSource(String),
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
    /// `GET /api/v1/knowledge/unanswered/groups`: the log in groups of near-duplicate
    /// questions (the operator's).
    UnansweredGroups,
    /// `POST /api/v1/knowledge/unanswered/groups/{key}/answer`: answer a group (the
    /// operator's).
    AnswerGroup(String),
}

impl KnowledgeRoute {
    /// Whether only the operator (the tenant key or the deployment's admin token) may ask
    /// for it: changing the knowledge base, and the unanswered groups, which lead to
    /// changing it. Agents may search and read the rest.
    pub fn operator_only(&self) -> bool {
        matches!(
            self,
            Self::PutSource(_)
                | Self::DeleteSource(_)
                | Self::UnansweredGroups
                | Self::AnswerGroup(_)
        )
    }
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

pub(super) fn too_large() -> ApiError {
    body_limit(&Route::Chat).refusal()
}

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
        Route::Config(ConfigRoute::Put | ConfigRoute::PutDraft) => {
            BodyLimit::payload(MAX_CONFIG_BYTES, "the configuration")
        }
        Route::ConversationReplay(_) => BodyLimit::payload(MAX_REPLAY_BYTES, "the replay request"),
        Route::PluginTest(_) => BodyLimit::payload(MAX_PLUGIN_TEST_BYTES, "a plugin test"),
        Route::Knowledge(KnowledgeRoute::PutSource(_))
        | Route::Config(ConfigRoute::StageSource(_)) => BodyLimit::payload(
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

/// The `/healthz` body.
pub fn health_json() -> Value {
    json!({"status": "ok", "version": crate::VERSION})
}
