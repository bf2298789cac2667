//! Kefu on Cloudflare Workers.
//!
//! A thin driver around `kefu-engine`: this stateless front routes and validates requests
//! (with the engine's rules), reads the tenant's configuration from KV, and hands each chat
//! turn to the conversation's own Durable Object ([`conversation::ConversationObject`]), which
//! stores it in SQLite and calls the provider. No business rule lives here.

mod attachments;
mod batch;
mod config;
mod conversation;
mod drafts;
mod gateway;
mod http;
mod inbox;
mod knowledge;
mod openai_compat;
mod plugins;
mod provider;
mod timer;
mod webhooks;

use std::rc::Rc;

use kefu_engine::TenantId;
use kefu_engine::api::{self, ApiError, Route};
use kefu_engine::demo::{self, DemoRun};
use serde_json::{Value, json};
use worker::{Context, Env, Method, Request, Response, Result, event};

pub use conversation::ConversationObject;
pub use gateway::GatewayObject;
pub use inbox::InboxObject;
pub use knowledge::KnowledgeObject;
pub use webhooks::WebhookObject;

use crate::conversation::{InternalTurn, TRANSCRIPT_PATH};
use crate::http::{error_response, json_response, text_response};

/// The Durable Object namespace binding that holds one object per conversation.
pub(crate) const CONVERSATIONS: &str = "CONVERSATIONS";
/// The Durable Object namespace binding that holds one gateway object per tenant.
pub(crate) const GATEWAYS: &str = "GATEWAYS";
/// The Durable Object namespace binding that holds one webhook delivery object per tenant.
pub(crate) const WEBHOOKS: &str = "WEBHOOKS";
/// The Durable Object namespace binding that holds one inbox per tenant.
pub(crate) const INBOX: &str = "INBOX";
/// The Durable Object namespace binding that holds one knowledge base per tenant.
pub(crate) const KNOWLEDGE: &str = "KNOWLEDGE";

#[event(fetch)]
async fn fetch(raw: worker::web_sys::Request, env: Env, ctx: Context) -> Result<Response> {
    let url = raw.url();
    let path = http::url_path(&url);
    let method = raw.method();
    // Webhook delivery log (tenant API key): a route of this host's delivery object
    // (webhooks.rs), not of the engine's router, so it is matched before `api::route`.
    let route = if path == webhooks::DELIVERIES_ROUTE {
        None
    } else {
        Some(api::route(&method, path))
    };
    // The OpenAI-compatible API reads the platform's request as it is (`http::Incoming`).
    match route {
        Some(Ok(Route::OpenAiChat)) => {
            return openai_compat::chat(http::Incoming::new(raw), &env, &ctx).await;
        }
        Some(Ok(Route::OpenAiModels)) => {
            return openai_compat::models(http::Incoming::new(raw), &env).await;
        }
        _ => {}
    }
    // The visitor widget runs on other sites' pages, so the API answers cross-origin calls.
    // Credentials travel in headers (tenant, visitor proof, agent token), never in cookies,
    // so any origin may call: a page gains nothing it could not do with curl.
    if path.starts_with("/api/") {
        if method == "OPTIONS" {
            // A preflight, or a page asking whether this deployment serves a route at all
            // (the widget shows its attach button only where uploads exist): a route that
            // does not exist is `404 not_found`, without calling anything.
            let wanted = raw.headers().get("access-control-request-method")?;
            return match api::route(wanted.as_deref().unwrap_or("GET"), path) {
                Err(e) if e.code == "not_found" && path != webhooks::DELIVERIES_ROUTE => {
                    http::allow_cross_origin(error_response(&e)?)
                }
                _ => http::preflight(),
            };
        }
        return http::allow_cross_origin(serve(Request::from(raw), route, env).await?);
    }
    serve(Request::from(raw), route, env).await
}

/// Serves `req` on its `route` (`None`: the webhook delivery log).
async fn serve(
    mut req: Request,
    route: Option<std::result::Result<Route, ApiError>>,
    env: Env,
) -> Result<Response> {
    let Some(route) = route else {
        return webhooks::deliveries(req, &env).await;
    };
    let result = match route {
        Ok(route) => handle(route, &mut req, &env).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => {
            // An unread request body would force the runtime to close the connection under
            // a client that is about to reuse it.
            http::drain(&mut req).await;
            error_response(&e)
        }
    }
}

async fn handle(
    route: Route,
    req: &mut Request,
    env: &Env,
) -> std::result::Result<Response, ApiError> {
    // Every body this route reads is read under its limit, the engine's (413 past it).
    let limit = api::body_limit(&route);
    match route {
        Route::Healthz => json_response(200, &api::health_json()),
        Route::Index => text_response(
            200,
            "text/plain; charset=utf-8",
            "Kefu is running.\n\n  GET  /demo                        a demo conversation\n  \
             POST /api/v1/chat                 {\"message\": \"…\", \"conversation_id\"?: \"…\", \"stream\"?: true}\n  \
             GET  /api/v1/conversations/{id}   a conversation and its messages\n  \
             GET  /healthz\n"
                .to_owned(),
        ),
        Route::Chat => {
            let tenant = tenant_of(req)?;
            // The (bounded) body is read even when the visitor's limit refuses the message:
            // answering before the body is consumed makes the runtime reset the client's
            // keep-alive connection.
            let body = http::read_body(req, limit).await?;
            // A tenant nobody configured is not a site: `404` before anything is counted.
            let config = config::load(env, &tenant).await?;
            limit_visitor(req, env, &tenant).await?;
            let chat = api::parse_chat_request(&body)?;
            let visitor = kefu_engine::identity::verify(config.identity.as_ref(), chat.visitor.as_ref())
                .map_err(|e| api::identity_error(&e))?;
            let attachments = attachments::lookup(env, &tenant, &chat.attachments).await?;
            let turn = InternalTurn {
                tenant: tenant.as_str().to_owned(),
                conversation_id: chat.conversation_id.as_ref().map(|c| c.as_str().to_owned()),
                message: chat.message,
                stream: chat.stream,
                visitor,
                attachments,
            };
            conversation::send_turn(env, &turn).await
        }
        Route::GetConversation(id) => {
            // With a tenant key the caller is an agent and sees internal notes; otherwise the
            // tenant header names a visitor's view.
            let (tenant, notes) = if req.headers().has("authorization").unwrap_or(false) {
                (agent_tenant(req, env).await?.0, 1)
            } else {
                (tenant_of(req)?, 0)
            };
            let visitor = if notes == 0 { verified_reader(req, env, &tenant).await? } else { None };
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            let path = format!(
                "{TRANSCRIPT_PATH}?{}",
                http::query_string(&[
                    ("tenant", tenant.as_str()),
                    ("notes", &notes.to_string()),
                    ("visitor", visitor.as_deref().unwrap_or_default()),
                ])
            );
            http::forward(&stub, Method::Get, &path, None).await
        }
        Route::ConversationAction(id, action) => {
            let (tenant, config, claims) = if action.by_agent() {
                agent_identity(req, env).await?
            } else {
                let tenant = tenant_of(req)?;
                let config = config::load(env, &tenant).await?;
                (tenant, config, None)
            };
            // A visitor's action (a handoff request, a rating) takes their identity proof, like
            // their messages: a verified visitor's conversation is theirs alone.
            let visitor = if action.by_agent() { None } else { verified_reader(req, env, &tenant).await? };
            let mut body = http::read_body(req, limit).await?;
            if let Some(claims) = &claims {
                // A signed-in agent acts as itself: the token says who.
                body = api::bind_agent(action, &body, claims)?;
            }
            // Validate here so a bad request never reaches the conversation's object.
            let parsed = api::parse_action(action, &body)?;
            let attachments = match &parsed {
                api::ActionRequest::Message { attachments, .. } => attachments::lookup(env, &tenant, attachments).await?,
                _ => Vec::new(),
            };
            let internal = conversation::InternalAction {
                tenant: tenant.as_str().to_owned(),
                action: req.path().rsplit('/').next().unwrap_or_default().to_owned(),
                request: String::from_utf8_lossy(&body).into_owned(),
                config: (*config).clone(),
                visitor,
                attachments,
            };
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            let body = serde_json::to_vec(&internal).map_err(|e| ApiError::internal(e.to_string()))?;
            http::forward(&stub, Method::Post, conversation::ACTION_PATH, Some(body)).await
        }
        Route::OpenAiChat | Route::OpenAiModels => Err(ApiError::internal("routed before handle")),
        Route::Upload => {
            // Agents upload with their token or the tenant key; visitors name the site (and,
            // where it verifies visitors, prove who they are), and count against their limit.
            let (tenant, config) = if req.headers().has("authorization").unwrap_or(false) {
                agent_tenant(req, env).await?
            } else {
                let tenant = visitor_tenant(req)?;
                let config = config::load(env, &tenant).await?;
                if config.identity.as_ref().is_some_and(|i| i.required) && verified_reader(req, env, &tenant).await?.is_none() {
                    return Err(api::identity_error(&kefu_engine::identity::IdentityError::Required));
                }
                limit_visitor(req, env, &tenant).await?;
                (tenant, config)
            };
            attachments::upload(req, env, &tenant, &config, limit).await
        }
        Route::GetAttachment(id) => {
            // `<img src>` cannot send headers: the tenant may come in the query. The id (128
            // random bits) is what grants reading the file.
            let tenant = if req.headers().has("authorization").unwrap_or(false) {
                agent_tenant(req, env).await?.0
            } else {
                visitor_tenant(req)?
            };
            attachments::download(env, &tenant, &id).await
        }
        Route::AgentToken => {
            let (tenant, config) = admin_tenant(req, env).await?;
            let secret = token_secret(env).ok_or_else(|| ApiError {
                status: 503,
                code: "agent_tokens_unavailable",
                message: "set the KEFU_TOKEN_SECRET secret (16 bytes or more) to issue agent tokens".into(),
                field: None,
                allow: None,
                retry_after: None,
            })?;
            let body = http::read_body(req, limit).await?;
            let claims = api::mint_agent_claims(&config, &tenant, &body, provider::now())?;
            let token = kefu_engine::auth::sign_agent_token(&secret, &claims);
            json_response(200, &json!({"token": token, "agent": claims.agent, "expires_at": kefu_engine::Timestamp::from_millis(claims.expires).to_rfc3339()}))
        }
        Route::ConversationEvents(id) => {
            // Browsers' `EventSource` and `WebSocket` cannot set headers, so the stream also
            // takes its credentials from the query: `tenant` for a visitor, `access_token`
            // for an agent (a short-lived `kfa.` token only, never the tenant key).
            let query = |name: &str| {
                req.url()
                    .ok()
                    .and_then(|u| http::param(&u, name))
            };
            // An agent signed in with a token keeps its stream only while the token and the
            // roster allow: its claims go with the stream (the object checks them).
            let (tenant, notes, claims) = if req.headers().has("authorization").unwrap_or(false) {
                let (tenant, _, claims) = agent_identity(req, env).await?;
                (tenant, 1, claims)
            } else if let Some(token) = query("access_token") {
                api::check_access_token(&token)?;
                let (tenant, _, claims) = agent_by_token(env, &token).await?;
                (tenant, 1, claims)
            } else if req.headers().has(api::TENANT_HEADER).unwrap_or(false) {
                (tenant_of(req)?, 0, None)
            } else {
                (api::tenant(query("tenant").as_deref())?, 0, None)
            };
            let claims = claims.map(|c| serde_json::to_string(&c).unwrap_or_default()).unwrap_or_default();
            // The cursor: `?after=N`, or the SSE reconnect header.
            let after = query("after")
                .or_else(|| req.headers().get("last-event-id").ok().flatten())
                .and_then(|a| a.trim().parse::<u32>().ok())
                .unwrap_or(0);
            let visitor = if notes == 0 { verified_reader(req, env, &tenant).await? } else { None };
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            let path = format!(
                "{}?{}",
                conversation::EVENTS_PATH,
                http::query_string(&[
                    ("tenant", tenant.as_str()),
                    ("after", &after.to_string()),
                    ("notes", &notes.to_string()),
                    ("visitor", visitor.as_deref().unwrap_or_default()),
                    ("claims", &claims),
                ])
            );
            let upgrade = req.headers().get("upgrade").ok().flatten().is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
            if upgrade {
                // The WebSocket handshake travels to the object, which accepts the socket.
                http::forward_with_headers(&stub, Method::Get, &path, req.headers()).await
            } else {
                http::forward(&stub, Method::Get, &path, None).await
            }
        }
        Route::Typing(id) => {
            let body = http::read_body(req, limit).await?;
            let visitor = api::parse_typing(&body)?;
            let tenant = if visitor {
                tenant_of(req)?
            } else {
                agent_tenant(req, env).await?.0
            };
            let who = if visitor { "visitor" } else { "agent" };
            let proof = if visitor { verified_reader(req, env, &tenant).await? } else { None };
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            let path = format!(
                "{}?{}",
                conversation::TYPING_PATH,
                http::query_string(&[
                    ("tenant", tenant.as_str()),
                    ("who", who),
                    ("visitor", proof.as_deref().unwrap_or_default()),
                ])
            );
            http::forward(&stub, Method::Post, &path, None).await
        }
        Route::ConversationTraces(id) => {
            let (tenant, _) = agent_tenant(req, env).await?;
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            let path = format!("{}?{}", conversation::TRACES_PATH, http::query_string(&[("tenant", tenant.as_str())]));
            http::forward(&stub, Method::Get, &path, None).await
        }
        Route::ConversationReplay(id) => {
            // An agent replays under the stored configuration; an operator (the tenant key or
            // the admin token) also under another: the engine's rule, given who this is.
            let header = req.headers().get("authorization").ok().flatten();
            let by_agent = kefu_engine::auth::agent_bearer(header.as_deref()).is_some();
            let (tenant, config) = if by_agent { agent_tenant(req, env).await? } else { admin_tenant(req, env).await? };
            let body = http::read_body(req, limit).await?;
            let deployment = config::deployment(env);
            let caller = kefu_engine::replay::ReplayCaller { tenant: &tenant, operator: !by_agent, deployment: &deployment };
            let request = kefu_engine::replay::parse_replay_request(&body, &config, caller)?;
            let internal = conversation::InternalReplay {
                tenant: tenant.as_str().to_owned(),
                config: request.config,
                max_turns: request.max_turns,
                model: request.model,
            };
            let body = serde_json::to_vec(&internal).map_err(|e| ApiError::internal(e.to_string()))?;
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            http::forward(&stub, Method::Post, conversation::REPLAY_PATH, Some(body)).await
        }
        Route::ConversationExport(id) => {
            let (tenant, _) = agent_tenant(req, env).await?;
            let stub = conversation::stub_for(env, Some(id.as_str()))?;
            let path = format!("{}?{}", conversation::EXPORT_PATH, http::query_string(&[("tenant", tenant.as_str())]));
            http::forward(&stub, Method::Get, &path, None).await
        }
        Route::ListConversations => {
            let (tenant, _) = agent_tenant(req, env).await?;
            let query = req.url().ok().and_then(|u| u.query().map(str::to_owned)).unwrap_or_default();
            inbox::list(env, &tenant, &query).await
        }
        Route::Config(c) => {
            let (tenant, _) = admin_tenant(req, env).await?;
            match c {
                api::ConfigRoute::Draft
                | api::ConfigRoute::PutDraft
                | api::ConfigRoute::RunTests
                | api::ConfigRoute::Publish
                | api::ConfigRoute::Tests
                | api::ConfigRoute::Test(_)
                | api::ConfigRoute::PutTest(_)
                | api::ConfigRoute::DeleteTest(_)
                | api::ConfigRoute::DraftSources
                | api::ConfigRoute::StageSource(_)
                | api::ConfigRoute::DropSource(_) => drafts::handle(c, req, env, &tenant, limit).await,
                api::ConfigRoute::Get => {
                    let meta = config::meta(env, &tenant).await?;
                    let document = config::current_document(env, &tenant).await?;
                    let current: serde_json::Value = match &document {
                        Some(d) => serde_json::from_slice(d.as_bytes()).unwrap_or(serde_json::Value::Null),
                        None => serde_json::Value::Null,
                    };
                    json_response(200, &json!({"tenant": tenant.as_str(), "version": meta.version, "config": current, "builtin_default": document.is_none(), "server_time": provider::now().to_rfc3339()}))
                }
                api::ConfigRoute::Put => {
                    let body = http::read_body(req, limit).await?;
                    api::parse_config_document(&body, &tenant, &config::deployment(env))?;
                    let document = String::from_utf8_lossy(&body).into_owned();
                    let version = config::store_version(env, &tenant, &document, "put".into()).await?;
                    log("info", json!({"msg": "config changed", "tenant": tenant.as_str(), "version": version}));
                    json_response(200, &json!({"tenant": tenant.as_str(), "version": version}))
                }
                api::ConfigRoute::Versions => {
                    let meta = config::meta(env, &tenant).await?;
                    json_response(200, &json!({"version": meta.version, "history": meta.history}))
                }
                api::ConfigRoute::Rollback => {
                    let body = http::read_body(req, limit).await?;
                    let target = api::parse_rollback(&body)?;
                    let document = config::version_document(env, &tenant, target).await?.ok_or_else(|| ApiError {
                        status: 404,
                        code: "version_not_found",
                        message: format!("version {target} is not in the history"),
                        field: Some("version".into()),
                        allow: None,
                        retry_after: None,
                    })?;
                    // What was valid then must still be valid now (limits may have changed).
                    api::parse_config_document(document.as_bytes(), &tenant, &config::deployment(env))?;
                    let version = config::store_version(env, &tenant, &document, format!("rollback to {target}")).await?;
                    log("info", json!({"msg": "config rolled back", "tenant": tenant.as_str(), "to": target, "version": version}));
                    json_response(200, &json!({"tenant": tenant.as_str(), "version": version, "restored": target}))
                }
            }
        }
        Route::Knowledge(k) => {
            // Agents may search and read; changing the knowledge base, and the unanswered
            // groups, are the operator's.
            let (tenant, _) = if k.operator_only() { admin_tenant(req, env).await? } else { agent_tenant(req, env).await? };
            let t = tenant.as_str();
            let q = |key: &str| {
                req.url().ok().and_then(|u| http::param(&u, key))
            };
            let enc = |s: &str| worker::url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            match k {
                api::KnowledgeRoute::ListSources => {
                    knowledge::operator(env, &tenant, Method::Get, &format!("/sources?tenant={t}"), None).await
                }
                api::KnowledgeRoute::PutSource(id) => {
                    let body = http::read_body(req, limit).await?;
                    knowledge::operator(env, &tenant, Method::Put, &format!("/sources/{id}?tenant={t}"), Some(body)).await
                }
                api::KnowledgeRoute::DeleteSource(id) => {
                    knowledge::operator(env, &tenant, Method::Delete, &format!("/sources/{id}?tenant={t}"), None).await
                }
                api::KnowledgeRoute::Search => {
                    let question = q("q").unwrap_or_default();
                    let k = q("k").unwrap_or_else(|| "5".into());
                    let path = format!("/query?tenant={t}&q={}&k={}", enc(&question), enc(&k));
                    knowledge::operator(env, &tenant, Method::Get, &path, None).await
                }
                api::KnowledgeRoute::Unanswered => {
                    knowledge::operator(env, &tenant, Method::Get, &format!("/unanswered?tenant={t}"), None).await
                }
                api::KnowledgeRoute::UnansweredGroups => {
                    knowledge::operator(env, &tenant, Method::Get, &format!("/unanswered/groups?tenant={t}"), None).await
                }
                api::KnowledgeRoute::AnswerGroup(key) => {
                    let body = http::read_body(req, limit).await?;
                    let path = format!("/unanswered/groups/{key}/answer?tenant={t}");
                    knowledge::operator(env, &tenant, Method::Post, &path, Some(body)).await
                }
            }
        }
        Route::Plugins => {
            let (tenant, config) = admin_tenant(req, env).await?;
            let mut installed = Vec::new();
            for name in plugins::installed() {
                let manifest = plugins::describe(env, &tenant, &name).await;
                installed.push((name, manifest));
            }
            json_response(200, &api::plugins_json(&installed, &config))
        }
        Route::PluginTest(id) => {
            let (tenant, config) = admin_tenant(req, env).await?;
            let spec = api::plugin_spec(&config, &id)?;
            let body = http::read_body(req, limit).await?;
            let call = api::parse_plugin_test(&body, &tenant, spec)?;
            let started = provider::now();
            let result = plugins::call(env, &tenant, spec, &call).await;
            let took = provider::now().since(started).as_millis() as u64;
            let record = api::plugin_call_record(spec, &call, took, &result);
            log("info", json!({"msg": "plugin test", "tenant": tenant.as_str(), "record": record}));
            json_response(200, &api::plugin_test_json(&result, &record))
        }
        Route::Usage => {
            let (tenant, _) = agent_tenant(req, env).await?;
            json_response(200, &gateway::usage(env, &tenant).await?)
        }
        Route::Demo => {
            let tenant = tenant_of(req)?;
            // A tenant nobody configured is `404`; a configured one serves the demo only if
            // the deployment lists it or it turned the demo on.
            let config = config::load(env, &tenant).await?;
            config::deployment(env).check_demo(&tenant, &config)?;
            let origin = req
                .url()
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|_| "http://localhost:8080".to_owned());
            let html = req.headers().get("accept").ok().flatten().is_some_and(|a| a.contains("text/html"));
            let run = run_demo(req, env, &tenant, config).await?;
            if html {
                text_response(200, "text/html; charset=utf-8", demo::render_html(&run, &origin))
            } else {
                text_response(200, "text/plain; charset=utf-8", demo::render_text(&run, &origin))
            }
        }
    }
}

/// The tenant an operator manages: with the deployment's admin token
/// (`Authorization: Bearer <KEFU_ADMIN_TOKEN>`, for bootstrapping) the `X-Kefu-Tenant` header
/// names it; otherwise a tenant API key does.
async fn admin_tenant(
    req: &Request,
    env: &Env,
) -> std::result::Result<(TenantId, Rc<kefu_engine::TenantConfig>), ApiError> {
    let presented = req
        .headers()
        .get("authorization")
        .ok()
        .flatten()
        .unwrap_or_default();
    let token = env
        .secret("KEFU_ADMIN_TOKEN")
        .ok()
        .map(|s| s.to_string())
        .or_else(|| env.var("KEFU_ADMIN_TOKEN").ok().map(|v| v.to_string()));
    if let (Some(token), Some(given)) = (
        token.filter(|t| t.len() >= 16),
        presented.strip_prefix("Bearer "),
    ) && kefu_engine::auth::constant_time_eq(
        kefu_engine::auth::hash_key(given.trim()).as_bytes(),
        kefu_engine::auth::hash_key(&token).as_bytes(),
    ) {
        let tenant = tenant_of(req)?;
        let config = kefu_engine::api::config_for_admin(config::load(env, &tenant).await)?;
        return Ok((tenant, config));
    }
    // An agent's sign-in token is for conversations: it may not configure the tenant, mint
    // tokens (for itself or anyone) or change the knowledge base.
    if kefu_engine::auth::agent_bearer(Some(&presented)).is_some() {
        return Err(ApiError::operator_only());
    }
    openai_authenticate(req, env).await
}

/// The tenant (and its configuration) of a caller authenticated with a tenant API key
/// (`Authorization: Bearer kf-…`): operators' back ends and agents.
async fn agent_tenant(
    req: &Request,
    env: &Env,
) -> std::result::Result<(TenantId, Rc<kefu_engine::TenantConfig>), ApiError> {
    agent_identity(req, env).await.map(|(t, c, _)| (t, c))
}

/// The deployment's agent-token secret, if one is set (16 bytes or more).
fn token_secret(env: &Env) -> Option<Vec<u8>> {
    env.secret("KEFU_TOKEN_SECRET")
        .ok()
        .map(|s| s.to_string())
        .or_else(|| env.var("KEFU_TOKEN_SECRET").ok().map(|v| v.to_string()))
        .filter(|s| s.len() >= 16)
        .map(String::into_bytes)
}

/// A caller on the agents' API: the tenant, its configuration, and the agent's claims when
/// they signed in with a token (`None` for the tenant key).
type AgentIdentity = (
    TenantId,
    Rc<kefu_engine::TenantConfig>,
    Option<kefu_engine::auth::AgentClaims>,
);

/// Who is calling: an agent signed in with a `kfa.` token (its claims), or an operator's
/// back end with the tenant key.
async fn agent_identity(req: &Request, env: &Env) -> std::result::Result<AgentIdentity, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .ok()
        .flatten()
        .unwrap_or_default();
    if let Some(token) = kefu_engine::auth::agent_bearer(Some(&header)) {
        return agent_by_token(env, token).await;
    }
    let (tenant, config) = openai_authenticate(req, env).await?;
    Ok((tenant, config, None))
}

/// Verifies an agent's `kfa.` token: the tenant, its configuration and the agent's claims.
async fn agent_by_token(env: &Env, token: &str) -> std::result::Result<AgentIdentity, ApiError> {
    let unauthorized = |message: String| ApiError {
        status: 401,
        code: "unauthorized",
        message,
        field: None,
        allow: None,
        retry_after: None,
    };
    let secret = token_secret(env)
        .ok_or_else(|| unauthorized("agent tokens are not enabled here".into()))?;
    let claims = kefu_engine::auth::verify_agent_token(&secret, token, provider::now())
        .map_err(|e| api::agent_token_error(&e))?;
    let tenant = TenantId::parse(&claims.tenant)
        .ok_or_else(|| unauthorized("the token names no valid tenant".into()))?;
    let config = config::load(env, &tenant).await?;
    // The roster rules (disabled, removed, signed out everywhere) need the tenant's
    // configuration: the one of the tenant the token names.
    kefu_engine::auth::admit_agent(&config.agents, &claims)
        .map_err(|e| api::agent_token_error(&e))?;
    Ok((tenant, config, Some(claims)))
}

async fn openai_authenticate(
    req: &Request,
    env: &Env,
) -> std::result::Result<(TenantId, Rc<kefu_engine::TenantConfig>), ApiError> {
    openai_compat::authenticate(req, env)
        .await
        .map_err(|e| ApiError {
            status: e.status,
            code: if e.status == 401 {
                "unauthorized"
            } else {
                "internal_error"
            },
            message: e.message,
            field: None,
            allow: None,
            retry_after: None,
        })
}

/// A visitor reading a conversation (its transcript or live updates) with an identity
/// proof: the `X-Kefu-Visitor-Id` and `X-Kefu-Visitor-Hash` headers, or `visitor_id` and
/// `visitor_hash` in the query (browsers' `EventSource` and `WebSocket` set no headers).
/// `Some(id)` once verified; `None` without a proof. A verified visitor's conversation is
/// readable only with its owner's proof (checked in the conversation's object).
async fn verified_reader(
    req: &Request,
    env: &Env,
    tenant: &TenantId,
) -> std::result::Result<Option<String>, ApiError> {
    let from = |header: &str, param: &str| {
        req.headers()
            .get(header)
            .ok()
            .flatten()
            .or_else(|| req.url().ok().and_then(|u| http::param(&u, param)))
    };
    let (Some(id), Some(hash)) = (
        from("x-kefu-visitor-id", "visitor_id"),
        from("x-kefu-visitor-hash", "visitor_hash"),
    ) else {
        return Ok(None);
    };
    let proof = kefu_engine::identity::VisitorIdentity { id, hash };
    let config = config::load(env, tenant).await?;
    kefu_engine::identity::verify(config.identity.as_ref(), Some(&proof))
        .map_err(|e| api::identity_error(&e))
}

/// The per-visitor message limit's binding (Cloudflare's Rate Limiting; see wrangler.toml).
const VISITOR_LIMITER: &str = "VISITOR_LIMITER";
/// The limiter's period, for `Retry-After` (wrangler.toml's `simple.period`).
const VISITOR_LIMIT_PERIOD_SECS: u32 = 60;

/// The per-address limit's binding, over every site together.
const ADDRESS_LIMITER: &str = "ADDRESS_LIMITER";

/// Counts a visitor's message (or upload) against the per-visitor limit, keyed on the site
/// (tenant) and the visitor's real address (`CF-Connecting-IP`, which Cloudflare sets and
/// clients cannot forge), then against the per-address limit over every site, which naming
/// another tenant does not reset. `Some(429 response)` when over either — before anything
/// is stored, so the visitor's widget knows to resend. No binding (e.g. a deployment that
/// removed it): no limit.
async fn limit_visitor(
    req: &Request,
    env: &Env,
    tenant: &TenantId,
) -> std::result::Result<(), ApiError> {
    let address = req
        .headers()
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".to_owned());
    for (binding, key) in [
        (VISITOR_LIMITER, format!("{}|{address}", tenant.as_str())),
        (ADDRESS_LIMITER, format!("address|{address}")),
    ] {
        let Ok(limiter) = env.rate_limiter(binding) else {
            continue;
        };
        let outcome = limiter
            .limit(key)
            .await
            .map_err(|e| ApiError::internal(format!("the visitor rate limiter: {e}")))?;
        if !outcome.success {
            return Err(ApiError::rate_limited(VISITOR_LIMIT_PERIOD_SECS));
        }
    }
    Ok(())
}

/// A visitor's tenant: the `X-Kefu-Tenant` header, else the `tenant` query parameter (for
/// requests a browser makes without headers).
fn visitor_tenant(req: &Request) -> std::result::Result<TenantId, ApiError> {
    if req.headers().has(api::TENANT_HEADER).unwrap_or(false) {
        return tenant_of(req);
    }
    let query = req.url().ok().and_then(|u| http::param(&u, "tenant"));
    api::tenant(query.as_deref())
}

fn tenant_of(req: &Request) -> std::result::Result<TenantId, ApiError> {
    let header = req.headers().get(api::TENANT_HEADER).ok().flatten();
    api::tenant(header.as_deref())
}

/// Runs the demo questions through the real chat path, one turn after another, then reads
/// the stored transcript back.
async fn run_demo(
    req: &Request,
    env: &Env,
    tenant: &TenantId,
    config: Rc<kefu_engine::TenantConfig>,
) -> std::result::Result<DemoRun, ApiError> {
    // The visitor path's rules: a site that verifies its visitors has no anonymous demo.
    kefu_engine::identity::verify(config.identity.as_ref(), None)
        .map_err(|e| api::identity_error(&e))?;
    let mut run = DemoRun::new();
    let mut conversation_id: Option<String> = None;
    for question in demo::QUESTIONS {
        // Each demo turn counts against the visitor limit like a message posted to chat.
        limit_visitor(req, env, tenant).await?;
        let turn = InternalTurn {
            tenant: tenant.as_str().to_owned(),
            conversation_id: conversation_id.clone(),
            message: (*question).to_owned(),
            stream: false,
            visitor: None,
            attachments: Vec::new(),
        };
        let resp = conversation::send_turn(env, &turn).await?;
        let body: Value = http::body_json(&resp)
            .await
            .map_err(|e| ApiError::internal(format!("demo turn: {e}")))?;
        let go_on = run.absorb(resp.status_code(), &body);
        if !run.conversation_id.is_empty() {
            conversation_id = Some(run.conversation_id.clone());
        }
        if !go_on {
            break;
        }
    }
    let Some(id) = conversation_id else {
        return Err(ApiError::internal(
            run.error
                .unwrap_or_else(|| "the demo produced no conversation".into()),
        ));
    };
    let stub = conversation::stub_for(env, Some(&id))?;
    let resp = http::forward(
        &stub,
        Method::Get,
        &format!("{TRANSCRIPT_PATH}?tenant={}", tenant.as_str()),
        None,
    )
    .await?;
    let body: Value = http::body_json(&resp)
        .await
        .map_err(|e| ApiError::internal(format!("demo transcript: {e}")))?;
    run.transcript = demo::transcript_from_json(&body);
    run.conversation_id = id;
    Ok(run)
}

/// Logs one structured line (JSON) to the Workers log.
pub(crate) fn log(level: &str, fields: Value) {
    let mut line = json!({"level": level, "service": "kefu-worker"});
    if let (Value::Object(l), Value::Object(f)) = (&mut line, fields) {
        l.extend(f);
    }
    worker::console_log!("{line}");
}
