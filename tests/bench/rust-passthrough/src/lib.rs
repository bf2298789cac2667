//! The gateway benchmark's second floor (`make bench`): a pass-through Worker written the way
//! a workers-rs Worker is written, forwarding every request to `UPSTREAM` unchanged, body
//! streamed. Beside the JavaScript pass-through (`tests/bench/passthrough-host.mjs`) on the
//! same workerd, it shows what Rust, wasm-bindgen and workers-rs cost by themselves before
//! any of Kefu's work; beside Kefu, what Kefu's own work costs.
//!
//! With the variable `STEPS` set to `kefu` it is the third floor: the same pass-through taking
//! the platform steps Kefu's gateway takes for a whole answer, and nothing of Kefu's own work.
//! The request body is read into wasm and sent on from there, with headers of its own, an
//! abort signal and a deadline timer raced against the call. The answer's headers and body
//! are read into wasm and answered in a new response with four headers of its own, and a
//! `waitUntil` is registered (Kefu's settlement). What Kefu costs above this floor is its
//! own work: the engine, the key check, the configuration, the logs.

use futures::future::{Either, select};
use worker::js_sys::Uint8Array;
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    AbortController, Context, Delay, Env, Fetch, Request, RequestInit, Response, Result, event,
    web_sys,
};

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<Response> {
    let upstream = env.var("UPSTREAM")?.to_string();
    if env.var("STEPS").is_ok_and(|s| s.to_string() == "kefu") {
        return kefu_steps(req, &upstream, &ctx).await;
    }
    let req = Request::from(req);
    let url = req.url()?;
    let target = match url.query() {
        Some(q) => format!("{upstream}{}?{q}", url.path()),
        None => format!("{upstream}{}", url.path()),
    };
    let mut init = RequestInit::new();
    init.with_method(req.method())
        .with_headers(req.headers().clone())
        .with_body(req.inner().body().map(Into::into));
    Fetch::Request(Request::new_with_init(&target, &init)?)
        .send()
        .await
}

/// The pass-through taking Kefu's platform steps (see the crate's documentation).
async fn kefu_steps(req: web_sys::Request, upstream: &str, ctx: &Context) -> Result<Response> {
    ctx.wait_until(async {});
    let path = req.url();
    let path = path
        .find("/v1/")
        .map_or("/v1/chat/completions", |i| &path[i..]);
    let target = format!("{upstream}{path}");
    let auth = req.headers().get("authorization")?.unwrap_or_default();
    let body = Uint8Array::new(&JsFuture::from(req.array_buffer()?).await?).to_vec();
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    headers.set("authorization", &auth)?;
    let controller = AbortController::default();
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&Uint8Array::from(body.as_slice()));
    init.set_signal(Some(&controller.signal()));
    let scope: web_sys::WorkerGlobalScope = worker::js_sys::global().unchecked_into();
    let call = JsFuture::from(scope.fetch_with_str_and_init(&target, &init));
    let deadline = Delay::from(core::time::Duration::from_secs(60));
    let resp: web_sys::Response = match select(call, deadline).await {
        Either::Left((resp, _)) => resp?.dyn_into()?,
        Either::Right(_) => {
            controller.abort();
            return Response::error("the upstream took too long", 504);
        }
    };
    let copied: Vec<(String, String)> = worker::Headers(resp.headers()).entries().collect();
    let bytes = Uint8Array::new(&JsFuture::from(resp.array_buffer()?).await?).to_vec();
    let content_type = copied
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map_or("application/json", |(_, value)| value.as_str());
    let out = worker::Headers::new();
    out.set("content-type", content_type)?;
    out.set("x-kefu-target", "upstream")?;
    out.set("x-kefu-route", "default")?;
    out.set("x-kefu-attempts", "1")?;
    Ok(Response::from_bytes(bytes)?
        .with_status(resp.status())
        .with_headers(out))
}
