//! Kefu on Fermyon Spin: an HTTP component that drives `kefu-engine` with Spin's key-value
//! store (conversations and tenant configurations, made safe for concurrent instances with
//! compare-and-swap: see [`store`]), variables (settings and provider keys) and
//! `wasi:http` outbound calls to the providers (limited by the manifest's
//! `allowed_outbound_hosts`).
//!
//! It serves the same API as the Worker for what it supports so far — chat (whole and
//! streamed), a conversation's transcript and its live updates over Server-Sent Events
//! (see [`events`]), the replay console's turn records, replay and export (see [`replay`]),
//! the configuration API, health — with the engine's validation, decisions (rules, handoff,
//! business hours) and gateway (routes, retries, fallback, timeouts, circuit breakers, quotas
//! and usage: see [`gateway`]), signed webhooks with retries, sent after the response (see
//! [`webhooks`]), and the tenant's plugins, each in a component of its own (see [`plugins`]).
//! Routes it does not serve yet answer `501 not_supported_on_spin` and say what to use
//! instead; a tenant configuration that needs a feature it lacks is refused the same way,
//! rather than half-honoured.

mod admin;
mod agents;
mod attachments;
mod chat;
mod db;
mod drafts;
mod events;
mod gateway;
mod http;
mod inbox;
mod knowledge;
mod openai;
mod outbound;
mod plugins;
mod replay;
mod shared;
mod store;
mod webhooks;

use std::collections::BTreeMap;

use kefu_engine::api::{self, ApiError, Route};
use kefu_engine::deployment::{Deployment, settings};
use kefu_engine::{ConversationId, TenantConfig, Timestamp};
use serde_json::{Value, json};
use spin_sdk::wit::wasi::http0_2_0::types::{IncomingRequest, ResponseOutparam};

use crate::http::{Incoming, Reply};
use crate::store::Kv;

#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::ResponseOutparam;
    use spin_sdk::http_component;

    use super::IncomingRequest;

    /// Every request: one instance each (Spin's model), state only in the stores.
    #[http_component]
    async fn handle(req: IncomingRequest, out: ResponseOutparam) {
        super::serve(req, out.into_inner());
    }
}

fn serve(req: IncomingRequest, out: ResponseOutparam) {
    let req = match Incoming::read(req) {
        Ok(req) => req,
        Err(refused) if refused.route == Some(Route::OpenAiChat) => {
            return openai::refused(&refused.error).send(out);
        }
        // Nothing was stored: the body was refused before any route ran.
        Err(refused) => return Reply::error(&refused.error).send(out),
    };
    let kv = match Kv::open() {
        Ok(kv) => kv,
        Err(e) => return Reply::error(&e).send(out),
    };
    respond(&kv, &req, out);
    // The client has its answer: now the plugins that observe events, then the webhooks
    // this request produced (the plugins' actions included) or that came due.
    plugins::after_response(&kv);
    webhooks::after_response(&kv);
}

fn respond(kv: &Kv, req: &Incoming, out: ResponseOutparam) {
    if req.path == kefu_engine::outbox::DELIVERIES_ROUTE {
        return webhooks::deliveries(kv, req)
            .unwrap_or_else(|e| Reply::error(&e))
            .send(out);
    }
    let route = match api::route(&req.method, &req.path) {
        Ok(route) => route,
        Err(e) => return Reply::error(&e).send(out),
    };
    match route {
        Route::Chat => chat::handle(kv, req, out),
        Route::ConversationEvents(id) => events::handle(kv, req, &id, out),
        Route::OpenAiChat => openai::chat(kv, req, out),
        other => handle(kv, req, other)
            .unwrap_or_else(|e| Reply::error(&e))
            .send(out),
    }
}

fn handle(kv: &Kv, req: &Incoming, route: Route) -> Result<Reply, ApiError> {
    match route {
        Route::Healthz => Ok(Reply::json(200, &api::health_json())),
        Route::Index => Ok(Reply::text(
            200,
            "Kefu is running (Spin).\n\n  POST /api/v1/chat                 {\"message\": \"…\", \"conversation_id\"?: \"…\", \"stream\"?: true}\n  \
             GET  /api/v1/conversations/{id}   a conversation and its messages\n  \
             GET  /healthz\n"
                .to_owned(),
        )),
        Route::GetConversation(id) => transcript(kv, req, &id),
        Route::OpenAiModels => Ok(openai::models(kv, req)),
        Route::Chat | Route::ConversationEvents(_) | Route::OpenAiChat => {
            Err(ApiError::internal("routed before handle"))
        }
        Route::Demo => demo(kv, req),
        Route::Config(c) => admin::config(kv, req, c),
        Route::ConversationAction(id, action) => agents::action(kv, req, &id, action),
        Route::AgentToken => admin::mint_token(kv, req),
        Route::Typing(id) => agents::typing(kv, req, &id),
        Route::Knowledge(k) => knowledge::route(kv, req, k),
        Route::ListConversations => inbox::list(&admin::agent(kv, req)?.0, req),
        Route::ConversationTraces(id) => replay::traces(kv, req, &id),
        Route::ConversationReplay(id) => replay::run(kv, req, &id),
        Route::ConversationExport(id) => replay::export(kv, req, &id),
        Route::Plugins => plugins::list(kv, req),
        Route::PluginTest(id) => plugins::test(kv, req, &id),
        Route::Upload => {
            let (tenant, config) = attachments::uploader(kv, req)?;
            attachments::upload(req, &tenant, &config)
        }
        Route::GetAttachment(id) => attachments::download(&attachments::reader(kv, req)?, &id),
        Route::Usage => gateway::usage(kv, req),
    }
}

/// `GET /demo`: the scripted conversation through the real chat path (the tenant's
/// responder, whatever it is), as text for `curl` or as a page for a browser — the Worker's.
fn demo(kv: &Kv, req: &Incoming) -> Result<Reply, ApiError> {
    let tenant = api::tenant(req.header(api::TENANT_HEADER))?;
    crate::deployment().check_demo(&tenant, &store::config(kv, &tenant)?)?;
    let mut run = kefu_engine::demo::DemoRun::new();
    for question in kefu_engine::demo::QUESTIONS {
        let mut body = json!({"message": question});
        if !run.conversation_id.is_empty() {
            body["conversation_id"] = json!(run.conversation_id);
        }
        let turn = Incoming {
            method: "POST".into(),
            path: "/api/v1/chat".into(),
            query: String::new(),
            headers: vec![
                (
                    api::TENANT_HEADER.to_ascii_lowercase(),
                    tenant.as_str().to_owned(),
                ),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.to_string().into_bytes(),
        };
        let reply = chat::whole_turn(kv, &turn);
        let answer: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if !run.absorb(reply.status, &answer) {
            break;
        }
    }
    let id = ConversationId::parse(&run.conversation_id).ok_or_else(|| {
        ApiError::internal(
            run.error
                .clone()
                .unwrap_or_else(|| "the demo produced no conversation".into()),
        )
    })?;
    let conversation = kv
        .load(&id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    let messages = kv.transcript(&conversation)?;
    run.transcript = kefu_engine::demo::transcript_from_json(&api::conversation_json(
        &conversation,
        &messages,
        false,
        conversation.owner(),
    ));
    // Spin tells the component the URL it was reached at.
    let origin = req
        .header("spin-full-url")
        .and_then(|u| {
            let (scheme, rest) = u.split_once("://")?;
            Some(format!("{scheme}://{}", rest.split('/').next()?))
        })
        .unwrap_or_else(|| "http://127.0.0.1:3000".to_owned());
    let html = req
        .header("accept")
        .is_some_and(|a| a.contains("text/html"));
    Ok(if html {
        Reply::html(
            200,
            kefu_engine::demo::render_html(&run, &origin),
            kefu_engine::demo::PAGE_CSP,
        )
    } else {
        Reply::text(200, kefu_engine::demo::render_text(&run, &origin))
    })
}

/// `GET /api/v1/conversations/{id}` as a visitor (with the tenant header, and the verified
/// visitor's proof for their conversation).
fn transcript(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Reply, ApiError> {
    if req.header("authorization").is_some() {
        return agents::transcript(kv, req, id);
    }
    let tenant = api::tenant(req.header(api::TENANT_HEADER))?;
    let conversation = kv
        .load(id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    check_reader(kv, req, &tenant, &conversation)?;
    let messages = kv.transcript(&conversation)?;
    Ok(Reply::json(
        200,
        &api::conversation_json(&conversation, &messages, false, conversation.owner()),
    ))
}

/// A verified visitor's conversation is read only with its owner's proof (the
/// `X-Kefu-Visitor-Id`/`-Hash` headers, or `visitor_id`/`visitor_hash` in the query for
/// `EventSource`); an anonymous one by anyone who has its id.
pub(crate) fn check_reader(
    kv: &Kv,
    req: &Incoming,
    tenant: &kefu_engine::TenantId,
    conversation: &kefu_engine::Conversation,
) -> Result<(), ApiError> {
    let Some(owner) = conversation.owner() else {
        return Ok(());
    };
    let config = store::config(kv, tenant)?;
    let proof = match (
        req.header("x-kefu-visitor-id")
            .map(str::to_owned)
            .or_else(|| req.param("visitor_id")),
        req.header("x-kefu-visitor-hash")
            .map(str::to_owned)
            .or_else(|| req.param("visitor_hash")),
    ) {
        (Some(id), Some(hash)) => Some(kefu_engine::identity::VisitorIdentity { id, hash }),
        _ => None,
    };
    // Without a proof the reader is anonymous (not "unauthenticated": the conversation is
    // someone else's, 403); a proof that does not verify is 401.
    let reader = match &proof {
        Some(p) => kefu_engine::identity::verify(config.identity.as_ref(), Some(p))
            .map_err(|e| api::identity_error(&e))?,
        None => None,
    };
    kefu_engine::identity::may_continue(Some(owner), reader.as_deref())
        .map_err(|e| api::identity_error(&e))
}

/// `501 not_supported_on_spin`: what is not served here yet, and where it is.
pub(crate) fn not_on_spin(what: &str, instead: &str) -> ApiError {
    ApiError::new(
        501,
        "not_supported_on_spin",
        format!("{what} is not supported by the Spin component yet: {instead}"),
    )
}

/// 64 random bits from the platform (the engine has no randomness of its own).
pub(crate) fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

/// The host's clock, handed to the engine.
pub(crate) fn now() -> Timestamp {
    let t = wasi::clocks::wall_clock::now();
    Timestamp::from_millis(t.seconds * 1000 + u64::from(t.nanoseconds / 1_000_000))
}

/// A Spin variable's value, when set and not empty.
pub(crate) fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// What the deployment gives its tenants ([`kefu_engine::deployment`]), from the Spin
/// variables `kefu_tenant_secrets`, `kefu_open_tenants`, `kefu_provider_tenants`,
/// `kefu_demo_tenants`, `provider_base_url` and `model`. Read once per request (Spin runs
/// a fresh instance for each), however many of its steps ask.
pub(crate) fn deployment() -> Deployment {
    thread_local! {
        static DEPLOYMENT: std::cell::OnceCell<Deployment> = const { std::cell::OnceCell::new() };
    }
    DEPLOYMENT.with(|d| d.get_or_init(read_deployment).clone())
}

fn read_deployment() -> Deployment {
    let deployment = Deployment::from_lookup(|name| match name {
        // The deployment's provider keeps the names its Spin variables always had.
        settings::PROVIDER_BASE_URL => variable("provider_base_url"),
        settings::MODEL => variable("model"),
        other => variable(&other.to_ascii_lowercase()),
    });
    for warning in &deployment.warnings {
        log(
            "warn",
            json!({"msg": "deployment setting ignored", "warning": warning}),
        );
    }
    deployment
}

/// Counts a visitor's message (or upload) against the visitor limits (the engine's
/// [`kefu_engine::visitor_limit`]: per site and address, then per address over every site),
/// from the `kefu_visitor_limit` and `kefu_address_limit` variables (messages a minute).
/// Each bucket is a key-value document changed with compare-and-swap, so concurrent
/// instances count every message once: the guarantee is the store's (see
/// `docs/security.md`). `429 rate_limited` with `Retry-After` when over; nothing is stored.
/// The address is the one Spin saw (`spin-client-addr`), which clients cannot set.
pub(crate) fn limit_visitor(
    kv: &Kv,
    req: &Incoming,
    tenant: &kefu_engine::TenantId,
) -> Result<(), ApiError> {
    use kefu_engine::gateway::quota::Bucket;
    use kefu_engine::visitor_limit::{self, VisitorLimits};
    let limits = VisitorLimits::from_settings(
        variable("kefu_visitor_limit").as_deref(),
        variable("kefu_address_limit").as_deref(),
    );
    let address = req.header("spin-client-addr").unwrap_or("unknown");
    for (key, per_minute) in limits.keys(tenant, address) {
        let t = now();
        let taken = shared::update(kv.bucket(), &key, |bucket: &mut Bucket| {
            let taken = visitor_limit::take(bucket, t, per_minute);
            // A refusal changes nothing: no write.
            let write = taken.is_ok();
            Ok((taken, write))
        })?;
        if let Err(wait) = taken {
            let secs = u32::try_from(wait.as_secs() + 1).unwrap_or(60);
            return Err(ApiError::rate_limited(secs));
        }
    }
    Ok(())
}

/// The secrets a configuration of `tenant` may use, from Spin variables of the same name in
/// lower case (Spin variable names are `[a-z0-9_]`: `TEST_PROVIDER_KEY` →
/// `test_provider_key`): only those the deployment gave the tenant
/// ([`Deployment::resolve_secrets`]), so no configuration reaches the deployment's own
/// variables (`kefu_admin_token`, …) or another tenant's.
pub(crate) fn secrets(
    tenant: &kefu_engine::TenantId,
    config: &TenantConfig,
) -> BTreeMap<String, String> {
    deployment().resolve_secrets(tenant, config, |name| variable(&name.to_ascii_lowercase()))
}

/// One structured log line on stderr (Spin collects it per component).
pub(crate) fn log(level: &str, mut fields: Value) {
    if let Some(obj) = fields.as_object_mut() {
        obj.insert("level".into(), json!(level));
        obj.insert("service".into(), json!("kefu-spin"));
    }
    // One write for the whole line: stderr is unbuffered, and formatting straight into it
    // hands the host each token of the JSON as a write of its own (hundreds for a turn's
    // trace, each a call into the host and two writes there).
    let mut line = fields.to_string();
    line.push('\n');
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}
