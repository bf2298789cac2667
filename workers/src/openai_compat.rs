//! The OpenAI-compatible API on Workers: `POST /v1/chat/completions` (JSON and SSE) and
//! `GET /v1/models`, authenticated with tenant API keys, so the official SDKs work against
//! Kefu unchanged. The shapes, model selection and key checks are the engine's; this module
//! only carries them.
//!
//! A streamed call commits to `200 text/event-stream` only once the first token is there:
//! a failure before it (every target failed, a quota refused) is an ordinary HTTP error the
//! SDKs raise as such; a failure after it is an `error` event and the stream ends without
//! `[DONE]`, which the SDKs also raise.

use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use kefu_engine::auth;
use kefu_engine::chat::{Failure, ModelCall};
use kefu_engine::openai_api::{self as oa, OpenAiError, Selection};
use kefu_engine::{ReplyMode, TenantConfig, TenantId, TurnReply};
use serde_json::json;
use worker::{Context, Env, Headers, Response, wasm_bindgen_futures};

use crate::http::{Incoming, RequestBody};
use crate::provider::{self, now};
use crate::{config, log};

fn error_response(e: &OpenAiError) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    if let Some(secs) = e.retry_after_secs {
        headers.set("retry-after", &secs.max(1).to_string())?;
    }
    Ok(Response::ok(e.body().to_string())?
        .with_status(e.status)
        .with_headers(headers))
}

fn host_error(e: impl core::fmt::Display) -> OpenAiError {
    OpenAiError {
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: e.to_string(),
        param: None,
        retry_after_secs: None,
    }
}

/// The tenant and its configuration, from the `Authorization: Bearer kf-…` key.
pub(crate) async fn authenticate(
    req: &impl RequestBody,
    env: &Env,
) -> Result<(TenantId, Rc<TenantConfig>), OpenAiError> {
    let header = req.header("authorization").unwrap_or_default();
    let key = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            OpenAiError::unauthorized("send your Kefu API key as `Authorization: Bearer kf-…`")
        })?;
    let tenant = auth::tenant_of_key(key)
        .ok_or_else(|| OpenAiError::unauthorized("this is not a Kefu API key"))?;
    let config =
        kefu_engine::api::config_for_key(config::load(env, &tenant).await).map_err(|e| {
            if e.status == 401 {
                OpenAiError::unauthorized("the API key is not valid")
            } else {
                host_error(e.message)
            }
        })?;
    if auth::verify(key, &config.api_keys).is_none() {
        return Err(OpenAiError::unauthorized("the API key is not valid"));
    }
    Ok((tenant, config))
}

/// `GET /v1/models`.
pub(crate) async fn models(req: Incoming, env: &Env) -> worker::Result<Response> {
    match authenticate(&req, env).await {
        Ok((_, config)) => {
            let body = oa::models_json(&config, now().as_millis() / 1000);
            let headers = Headers::new();
            headers.set("content-type", "application/json; charset=utf-8")?;
            Ok(Response::ok(body.to_string())?.with_headers(headers))
        }
        Err(e) => error_response(&e),
    }
}

/// A completion answered whole: the call is driven right here (no task of its own, no
/// channel), and settling with the gateway happens after the answer, in `wait_until`.
async fn whole(
    env: &Env,
    ctx: &Context,
    tenant: &TenantId,
    config: &TenantConfig,
    mut call: ModelCall,
    id: &str,
    created: u64,
) -> worker::Result<Response> {
    let defer = |f: LocalBoxFuture<'static, ()>| ctx.wait_until(f);
    let host = provider::Host {
        env,
        tenant,
        config,
        conversation: None,
        defer: &defer,
    };
    provider::drive(&host, &mut call, |_| {}).await;
    let result = call.take_result().unwrap_or_else(|| {
        Err(Failure::Host(kefu_engine::api::ApiError::internal(
            "the call ended without a result",
        )))
    });
    log(
        if result.is_ok() { "info" } else { "warn" },
        json!({"msg": "completion", "tenant": tenant.as_str(), "trace": call.turn().trace()}),
    );
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => return error_response(&OpenAiError::from_failure(&e)),
    };
    let headers = Headers::new();
    if let Some(t) = &reply.target {
        headers.set("x-kefu-target", t)?;
    }
    if let Some(r) = &reply.route {
        headers.set("x-kefu-route", r)?;
    }
    headers.set("x-kefu-attempts", &reply.attempts.to_string())?;
    headers.set("content-type", "application/json; charset=utf-8")?;
    Ok(Response::ok(oa::completion_json(id, created, &reply).to_string())?.with_headers(headers))
}

enum Out {
    Delta {
        text: String,
        target: Option<String>,
        route: Option<String>,
        attempts: u32,
    },
    Done(Box<TurnReply>),
    Failed(Failure),
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(mut req: Incoming, env: &Env, ctx: &Context) -> worker::Result<Response> {
    let (tenant, config) = match authenticate(&req, env).await {
        Ok(t) => t,
        Err(e) => {
            crate::http::drain(&mut req).await;
            return error_response(&e);
        }
    };
    let body = match crate::http::read_body(
        &mut req,
        kefu_engine::api::body_limit(&kefu_engine::api::Route::OpenAiChat),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return error_response(&OpenAiError::from_api(&e)),
    };
    let request = match oa::parse_request(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let selection = match oa::select(&config, &request.model) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let mode = if request.stream {
        ReplyMode::Stream
    } else {
        ReplyMode::Whole
    };
    let mut options = config::turn_options(env, &tenant, &config, mode);
    match selection {
        Selection::ChatRoute => {}
        Selection::Route(r) => options.route = Some(r),
        Selection::Target(t) => options.target = Some(t),
    }
    options.temperature = request.temperature;
    options.max_tokens = request.max_tokens;
    options.tools = request.tools.clone();
    // Admission, the turn and settlement are the engine's model call; this only drives it.
    let mut call = ModelCall::on_prompt(now(), config.clone(), request.messages.clone(), options);
    let id = format!("chatcmpl-kefu{:016x}", config::random_u64());
    let created = now().as_millis() / 1000;
    if !request.stream {
        return whole(env, ctx, &tenant, &config, call, &id, created).await;
    }

    // The call runs on its own task; what it produces comes through `rx`. Settling with the
    // gateway happens after the answer, in `wait_until`.
    let (tx, mut rx) = mpsc::unbounded::<Out>();
    let (defer_tx, defer_rx) = mpsc::unbounded::<LocalBoxFuture<'static, ()>>();
    ctx.wait_until(defer_rx.for_each(|f| f));
    let deltas = tx.clone();
    let env_for_turn = env.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let defer = move |f| {
            let _ = defer_tx.unbounded_send(f);
        };
        let host = provider::Host {
            env: &env_for_turn,
            tenant: &tenant,
            config: &config,
            conversation: None,
            defer: &defer,
        };
        provider::drive(&host, &mut call, |d| {
            let _ = deltas.unbounded_send(Out::Delta {
                text: d.text,
                target: d.target,
                route: d.route,
                attempts: d.attempts,
            });
        })
        .await;
        let result = call.take_result().unwrap_or_else(|| {
            Err(Failure::Host(kefu_engine::api::ApiError::internal(
                "the call ended without a result",
            )))
        });
        log(
            if result.is_ok() { "info" } else { "warn" },
            json!({"msg": "completion", "tenant": tenant.as_str(), "trace": call.turn().trace()}),
        );
        let _ = tx.unbounded_send(match result {
            Ok(reply) => Out::Done(Box::new(reply)),
            Err(e) => Out::Failed(e),
        });
    });

    let first = rx.next().await;
    let headers = Headers::new();
    let set_meta =
        |target: Option<&str>, route: Option<&str>, attempts: u32| -> worker::Result<()> {
            if let Some(t) = target {
                headers.set("x-kefu-target", t)?;
            }
            if let Some(r) = route {
                headers.set("x-kefu-route", r)?;
            }
            headers.set("x-kefu-attempts", &attempts.to_string())
        };
    match first {
        None => error_response(&host_error("the turn ended without an answer")),
        Some(Out::Failed(e)) => error_response(&OpenAiError::from_failure(&e)),
        Some(first) => {
            // Streaming: the first token (or a whole reply) is here; commit to 200.
            if let Out::Delta {
                target,
                route,
                attempts,
                ..
            } = &first
            {
                set_meta(target.as_deref(), route.as_deref(), *attempts)?;
            }
            headers.set("content-type", "text/event-stream; charset=utf-8")?;
            headers.set("cache-control", "no-cache, no-transform")?;
            let mut out = oa::StreamFrames::new(&id, created, request.include_usage);
            let frames = futures::stream::once(async move { first })
                .chain(rx)
                .map(move |o| {
                    let buf = match o {
                        Out::Delta { text, target, .. } => out.delta(&text, target.as_deref()),
                        Out::Done(reply) => out.done(&reply),
                        Out::Failed(e) => out.failed(&e),
                    };
                    Ok::<Vec<u8>, worker::Error>(buf.into_bytes())
                });
            Ok(Response::from_stream(frames)?.with_headers(headers))
        }
    }
}
