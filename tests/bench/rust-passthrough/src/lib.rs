//! The gateway benchmark's second floor (`make bench`): a pass-through Worker written the way
//! a workers-rs Worker is written, forwarding every request to `UPSTREAM` unchanged, body
//! streamed. Beside the JavaScript pass-through (`tests/bench/passthrough-host.mjs`) on the
//! same workerd, it shows what Rust, wasm-bindgen and workers-rs cost by themselves before
//! any of Kefu's work; beside Kefu, what Kefu's own work costs.

use worker::{Context, Env, Fetch, Request, RequestInit, Response, Result, event};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let upstream = env.var("UPSTREAM")?.to_string();
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
