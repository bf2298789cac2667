//! The OpenAI-compatible API on Spin: `POST /v1/chat/completions` (JSON and SSE) and
//! `GET /v1/models`, authenticated with tenant API keys, with the engine's shapes, model
//! selection and stream framing ([`oa::StreamFrames`]) — as on Workers.
//!
//! A streamed call commits to `200 text/event-stream` only once the first token is there:
//! a failure before it is an ordinary HTTP error the SDKs raise as such; a failure after it
//! is an `error` event without `[DONE]`.

use std::rc::Rc;

use kefu_engine::auth;
use kefu_engine::chat::{Failure, ModelCall};
use kefu_engine::openai_api::{self as oa, OpenAiError, Selection};
use kefu_engine::{ReplyMode, TenantConfig, TenantId, TurnOptions};
use serde_json::json;
use spin_sdk::wit::wasi::http0_2_0::types::ResponseOutparam;

use crate::http::{Incoming, Reply, Stream};
use crate::store::{self, Kv};
use crate::{log, now, outbound};

fn error_reply(e: &OpenAiError) -> Reply {
    let reply = Reply::json(e.status, &e.body());
    match e.retry_after_secs {
        Some(secs) => reply.with_header("retry-after", &secs.max(1).to_string()),
        None => reply,
    }
}

fn host_error(message: impl Into<String>, status: u16, code: &'static str) -> OpenAiError {
    OpenAiError {
        status,
        kind: "api_error",
        code,
        message: message.into(),
        param: None,
        retry_after_secs: None,
    }
}

/// A request refused before it was routed (a body over the limit), in OpenAI's shape.
pub(crate) fn refused(e: &kefu_engine::api::ApiError) -> Reply {
    error_reply(&OpenAiError::from_api(e))
}

fn from_api(e: &kefu_engine::api::ApiError) -> OpenAiError {
    host_error(e.message.clone(), e.status, e.code)
}

/// The tenant and its configuration, from the `Authorization: Bearer kf-…` key.
fn authenticate(kv: &Kv, req: &Incoming) -> Result<(TenantId, TenantConfig), OpenAiError> {
    let key = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            OpenAiError::unauthorized("send your Kefu API key as `Authorization: Bearer kf-…`")
        })?;
    let tenant = auth::tenant_of_key(key)
        .ok_or_else(|| OpenAiError::unauthorized("this is not a Kefu API key"))?;
    let config = kefu_engine::api::config_for_key(store::config(kv, &tenant)).map_err(|e| {
        if e.status == 401 {
            OpenAiError::unauthorized("the API key is not valid")
        } else {
            from_api(&e)
        }
    })?;
    if auth::verify(key, &config.api_keys).is_none() {
        return Err(OpenAiError::unauthorized("the API key is not valid"));
    }
    Ok((tenant, config))
}

/// `GET /v1/models`.
pub fn models(kv: &Kv, req: &Incoming) -> Reply {
    match authenticate(kv, req) {
        Ok((_, config)) => Reply::json(200, &oa::models_json(&config, now().as_millis() / 1000)),
        Err(e) => error_reply(&e),
    }
}

/// `POST /v1/chat/completions`.
pub fn chat(kv: &Kv, req: &Incoming, out: ResponseOutparam) {
    let prepared = (|| {
        let (tenant, config) = authenticate(kv, req)?;
        let request = oa::parse_request(&req.body)?;
        let selection = oa::select(&config, &request.model)?;
        Ok::<_, OpenAiError>((tenant, config, request, selection))
    })();
    let (tenant, config, request, selection) = match prepared {
        Ok(p) => p,
        Err(e) => return error_reply(&e).send(out),
    };
    let mode = if request.stream {
        ReplyMode::Stream
    } else {
        ReplyMode::Whole
    };
    let mut options = TurnOptions::new(mode);
    options.secrets = crate::secrets(&tenant, &config);
    options.seed = crate::random_u64();
    match selection {
        Selection::ChatRoute => {}
        Selection::Route(r) => options.route = Some(r),
        Selection::Target(t) => options.target = Some(t),
    }
    options.temperature = request.temperature;
    options.max_tokens = request.max_tokens;
    options.tools = request.tools.clone();
    // Admission, the turn and settlement are the engine's model call; this only drives it.
    let mut call = ModelCall::on_prompt(
        now(),
        Rc::new(config.clone()),
        request.messages.clone(),
        options,
    );
    let random: String = wasi::random::random::get_random_bytes(8)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = format!("chatcmpl-kefu{random}");
    let created = now().as_millis() / 1000;

    let mut out = Some(out);
    let mut sse: Option<Stream> = None;
    let mut frames = oa::StreamFrames::new(&id, created, request.include_usage);
    let meta = |target: Option<&str>, route: Option<&str>, attempts: u32| {
        let mut headers = vec![("x-kefu-attempts".to_owned(), attempts.to_string())];
        if let Some(t) = target {
            headers.push(("x-kefu-target".into(), t.to_owned()));
        }
        if let Some(r) = route {
            headers.push(("x-kefu-route".into(), r.to_owned()));
        }
        headers
    };
    let sse_headers = |mut headers: Vec<(String, String)>| {
        headers.push((
            "content-type".into(),
            "text/event-stream; charset=utf-8".into(),
        ));
        headers.push(("cache-control".into(), "no-cache, no-transform".into()));
        headers
    };
    let host = outbound::Host {
        kv,
        tenant: &tenant,
        config: &config,
        conversation: None,
    };
    outbound::drive(&host, &mut call, |d| {
        if sse.is_none()
            && let Some(out) = out.take()
        {
            // The first token: commit to 200.
            let headers = sse_headers(meta(d.target.as_deref(), d.route.as_deref(), d.attempts));
            sse = Some(Stream::open(out, 200, &headers));
        }
        if let Some(s) = sse.as_mut() {
            s.write(frames.delta(&d.text, d.target.as_deref()).as_bytes());
        }
    });
    let result = call.take_result().unwrap_or_else(|| {
        Err(Failure::Host(kefu_engine::api::ApiError::internal(
            "the call ended without a result",
        )))
    });
    log(
        if result.is_ok() { "info" } else { "warn" },
        json!({"msg": "completion", "tenant": tenant.as_str(), "trace": call.turn().trace()}),
    );
    match (result, sse, out) {
        (Ok(reply), Some(mut s), _) => {
            s.write(frames.done(&reply).as_bytes());
            s.finish();
        }
        (Err(e), Some(mut s), _) => {
            s.write(frames.failed(&e).as_bytes());
            s.finish();
        }
        (Ok(reply), None, Some(out)) if request.stream => {
            let headers = sse_headers(meta(
                reply.target.as_deref(),
                reply.route.as_deref(),
                reply.attempts,
            ));
            let mut s = Stream::open(out, 200, &headers);
            s.write(frames.done(&reply).as_bytes());
            s.finish();
        }
        (Ok(reply), None, Some(out)) => {
            let mut r = Reply::json(200, &oa::completion_json(&id, created, &reply));
            for (k, v) in meta(
                reply.target.as_deref(),
                reply.route.as_deref(),
                reply.attempts,
            ) {
                r = r.with_header(&k, &v);
            }
            r.send(out);
        }
        (Err(e), None, Some(out)) => error_reply(&OpenAiError::from_failure(&e)).send(out),
        // The response was opened exactly when the stream began.
        (_, None, None) => {}
    }
}
