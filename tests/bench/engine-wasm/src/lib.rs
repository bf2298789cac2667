//! The engine's CPU per chat turn in wasm on workerd (`make bench`): a Worker, built with
//! workers-rs as Kefu's is, that runs the simulator's scripted chat turns
//! ([`kefu_engine::sim::bench_turns`], the very code `make bench` times natively) inside
//! the runtime. The benchmark reads the workerd process's CPU time before and after one
//! request; the Worker itself reads no clock.
//!
//! `GET /turns?n=5000&mode=whole|stream` runs `n` turns (1 to [`MAX_TURNS`]) and answers
//! `{"turns": <how many ran>, "mode": ...}`; a bad query answers `400 invalid_field`, any
//! other path `404 not_found`, with Kefu's JSON error body.

use kefu_engine::ReplyMode;
use kefu_engine::api::ApiError;
use serde_json::json;
use worker::{Context, Env, Request, Response, Result, event};

/// The most turns one request runs: about ten seconds of CPU here, well inside what a
/// benchmark asks for (5,000).
pub const MAX_TURNS: u32 = 50_000;

#[event(fetch)]
async fn fetch(req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let answer = match url.path() {
        "/turns" => turns(url.query_pairs()),
        _ => Err(ApiError::new(
            404,
            "not_found",
            "no such route: try GET /turns",
        )),
    };
    match answer {
        Ok(body) => Response::from_json(&body),
        Err(e) => Ok(Response::from_json(&e.body())?.with_status(e.status)),
    }
}

/// Runs the turns `query` asks for.
fn turns<'a>(
    query: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
) -> core::result::Result<serde_json::Value, ApiError> {
    let (mut n, mut mode) = (None, ReplyMode::Whole);
    for (key, value) in query {
        match key.as_ref() {
            "n" => {
                n = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_TURNS).contains(n))
                        .ok_or_else(|| {
                            invalid("n", format!("n must be a whole number, 1 to {MAX_TURNS}"))
                        })?,
                );
            }
            "mode" => {
                mode = match value.as_ref() {
                    "whole" => ReplyMode::Whole,
                    "stream" => ReplyMode::Stream,
                    _ => return Err(invalid("mode", "mode must be whole or stream".into())),
                };
            }
            _ => {}
        }
    }
    let n = n.ok_or_else(|| invalid("n", "n is required".into()))?;
    let ran = kefu_engine::sim::bench_turns(n, mode);
    Ok(json!({
        "turns": ran,
        "mode": if mode == ReplyMode::Whole { "whole" } else { "stream" },
    }))
}

/// `400 invalid_field` for the query parameter `field`.
fn invalid(field: &str, message: String) -> ApiError {
    let mut e = ApiError::new(400, "invalid_field", message);
    e.field = Some(field.to_owned());
    e
}
