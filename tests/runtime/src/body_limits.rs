//! Request bodies are capped while they are read: every route that reads a body refuses one
//! over its limit (the engine's table, `kefu_engine::api::body_limit`) with `413` and its
//! stable code, whether the body declares its length or comes chunked without one, and
//! stores nothing; a body within the limit still works when it comes chunked.

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::attachments::FILES_KEY;
use crate::config::CFG_KEY;
use crate::gateway::SDK_KEY;
use crate::knowledge::KB_KEY;
use crate::plugin_routes::PLG_KEY;
use crate::replay::REPLAY_KEY;
use crate::scenarios::{Answer, Ctx, TENANT_HEADER, unique};

/// The size of each chunk of a chunked body.
const CHUNK: usize = 16 * 1024;

/// How a body says how long it is.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length`.
    Declared,
    /// `Transfer-Encoding: chunked`, no length.
    Chunked,
    /// `Transfer-Encoding: chunked`, a body that ends.
    Whole,
}

/// A JSON object of exactly `len` bytes (at least 12): `{"pad":"aaa…"}`. Valid JSON, so a
/// host that read it whole would answer with something other than a size refusal on routes
/// whose parser does not check the size (typing, tokens, rollback).
fn json_of(len: usize) -> Vec<u8> {
    let mut body = b"{\"pad\":\"".to_vec();
    body.resize(len - 2, b'a');
    body.extend_from_slice(b"\"}");
    body
}

/// `bytes` as a streamed body of [`CHUNK`]-sized pieces that never ends: after the last
/// piece the stream waits forever. Without a `Content-Length` reqwest sends it with
/// `Transfer-Encoding: chunked`. A host that waited for the end of the body would never
/// answer, so an answer proves the host decided on what it had read so far.
fn unending(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Bytes> = bytes.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>))
        .chain(futures::stream::pending());
    reqwest::Body::wrap_stream(stream)
}

/// `bytes` as an ordinary chunked body (it ends).
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Bytes> = bytes.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// A client that never reuses a connection: a host that refuses a body without reading the
/// rest of it may close the connection under it.
fn fresh_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        // A host that waited for the end of an unending body would never answer.
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()?)
}

/// One route that reads a body, and how it refuses one over its limit.
struct Case {
    method: Method,
    path: String,
    /// `X-Kefu-Tenant`, for a visitor's route.
    tenant: Option<&'static str>,
    /// The tenant key (`Authorization: Bearer`), for an operator's or agent's route.
    key: Option<&'static str>,
    content_type: &'static str,
    limit: usize,
    code: &'static str,
}

async fn send(
    http: &reqwest::Client,
    ctx: &Ctx,
    case: &Case,
    body: Vec<u8>,
    framing: Framing,
) -> anyhow::Result<Answer> {
    let mut req = http
        .request(case.method.clone(), ctx.url(&case.path))
        .header("content-type", case.content_type);
    if let Some(tenant) = case.tenant {
        req = req.header(TENANT_HEADER, tenant);
    }
    if let Some(key) = case.key {
        req = req.bearer_auth(key);
    }
    req = match framing {
        // The declared length is the whole body's, but only its first piece is ever sent:
        // the host must refuse on the header alone.
        Framing::Declared => {
            let declared = body.len();
            let first = body[..CHUNK.min(declared)].to_vec();
            req.header("content-length", declared).body(unending(first))
        }
        // The whole over-limit body, then nothing (and no end): the host must refuse once
        // the running total passes the limit.
        Framing::Chunked => req.body(unending(body)),
        Framing::Whole => req.body(chunked(body)),
    };
    let what = format!("{} {} ({framing:?})", case.method, case.path);
    Answer::read(req.send().await.with_context(|| what.clone())?)
        .await
        .with_context(|| what)
}

/// The number of messages in a conversation of tenant `default`, and its status.
async fn state_of(ctx: &Ctx, id: &str) -> anyhow::Result<(usize, Value)> {
    let a = ctx.conversation(None, id).await?;
    a.expect_status(200)?;
    let n = a.json["messages"].as_array().map_or(0, Vec::len);
    Ok((n, a.json["status"].clone()))
}

async fn knowledge_sources(ctx: &Ctx) -> anyhow::Result<String> {
    let resp = ctx
        .http
        .get(ctx.url("/api/v1/knowledge/sources"))
        .bearer_auth(KB_KEY)
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK, "listing sources");
    Ok(resp.text().await?)
}

/// Over-limit bodies, declared and chunked, to every kind of route: `413` with the route's
/// code, nothing stored; a chunked body within the limit is a normal turn.
pub async fn body_limits_enforced_while_reading(ctx: &Ctx) -> anyhow::Result<()> {
    let http = fresh_client()?;
    let created = ctx
        .chat(None, &json!({ "message": unique("before the big bodies") }))
        .await?;
    created.expect_status(200)?;
    let id = created.json["conversation_id"]
        .as_str()
        .context("conversation_id")?
        .to_owned();
    let before = state_of(ctx, &id).await?;
    let version = ctx.config_version(CFG_KEY).await?;
    let source = unique("body-cap-source").replace(' ', "-");

    let json = "application/json";
    let small = |method: Method, path: String, tenant, key| Case {
        method,
        path,
        tenant,
        key,
        content_type: json,
        limit: 64 * 1024,
        code: "payload_too_large",
    };
    let cases = [
        small(Method::POST, "/api/v1/chat".into(), Some("default"), None),
        small(
            Method::POST,
            format!("/api/v1/conversations/{id}/handoff"),
            Some("default"),
            None,
        ),
        small(
            Method::POST,
            format!("/api/v1/conversations/{id}/typing"),
            Some("default"),
            None,
        ),
        small(
            Method::POST,
            "/api/v1/agents/tokens".into(),
            None,
            Some(CFG_KEY),
        ),
        small(
            Method::POST,
            "/api/v1/config/rollback".into(),
            None,
            Some(CFG_KEY),
        ),
        Case {
            limit: 256 * 1024,
            ..small(Method::PUT, "/api/v1/config".into(), None, Some(CFG_KEY))
        },
        Case {
            limit: 257 * 1024,
            ..small(
                Method::POST,
                format!("/api/v1/conversations/{id}/replay"),
                None,
                Some(REPLAY_KEY),
            )
        },
        Case {
            limit: 256 * 1024,
            ..small(
                Method::POST,
                "/api/v1/plugins/pii/test".into(),
                None,
                Some(PLG_KEY),
            )
        },
        Case {
            limit: 4 << 20,
            ..small(
                Method::POST,
                "/v1/chat/completions".into(),
                None,
                Some(SDK_KEY),
            )
        },
        Case {
            limit: 12 << 20,
            ..small(
                Method::PUT,
                format!("/api/v1/knowledge/sources/{source}"),
                None,
                Some(KB_KEY),
            )
        },
        Case {
            content_type: "image/png",
            limit: 10 << 20,
            code: "attachment_too_large",
            ..small(
                Method::POST,
                "/api/v1/attachments?name=big.png".into(),
                None,
                Some(FILES_KEY),
            )
        },
    ];
    for case in &cases {
        for framing in [Framing::Declared, Framing::Chunked] {
            let answer = send(&http, ctx, case, json_of(case.limit + 1), framing).await?;
            answer
                .expect_error(413, case.code)
                .with_context(|| format!("{} {} ({framing:?})", case.method, case.path))?;
        }
    }

    // Nothing was stored: no message, no handoff, no configuration version, no source.
    ensure!(
        state_of(ctx, &id).await? == before,
        "a refused body changed the conversation: {:?} then {:?}",
        before,
        state_of(ctx, &id).await?
    );
    ensure!(
        ctx.config_version(CFG_KEY).await? == version,
        "a refused configuration was stored"
    );
    ensure!(
        !knowledge_sources(ctx).await?.contains(&source),
        "a refused knowledge source was stored"
    );

    // Within the limit, a chunked body is an ordinary message.
    let text = unique("a chunked message");
    let body = json!({ "message": text, "conversation_id": id })
        .to_string()
        .into_bytes();
    let ok = send(
        &http,
        ctx,
        &small(Method::POST, "/api/v1/chat".into(), Some("default"), None),
        body,
        Framing::Whole,
    )
    .await?;
    ok.expect_status(200)?;
    let messages = ctx.messages(None, &id).await?;
    ensure!(
        messages
            .iter()
            .any(|m| m["text"].as_str() == Some(text.as_str())
                || m.to_string().contains(text.as_str())),
        "the chunked message is not in the conversation"
    );
    ensure!(
        messages.len() == before.0 + 2,
        "expected one question and one answer more than {}, got {}",
        before.0,
        messages.len()
    );
    Ok(())
}
