//! Gateway runtime scenarios: fallback order, circuit breakers, quotas under concurrency,
//! the official OpenAI SDK against the OpenAI-compatible API, and a long run against a flaky
//! primary. Like every scenario they speak only HTTP to the host and read the mock's log.
//!
//! Per-target faults come from the mock's path profiles: a provider whose base URL is
//! `<mock>/p/status=500/v1` always fails, one at `<mock>/p/fail_percent=33,seed=11/v1` fails a
//! third of its calls, one at `<mock>/v1` is healthy.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Ctx, message_text, unique};

/// The API key tenant `gw-sdk` accepts on the OpenAI-compatible API.
pub const SDK_KEY: &str = "kf-gw-sdk.Kefu0Runtime0Test0Key0123";
/// The API key tenant `gw-formats` accepts.
pub const FORMATS_KEY: &str = "kf-gw-formats.Kefu0Formats0Test0Key01";
/// The provider key the host must bind as `TEST_PROVIDER_KEY` (the mock wants one for the
/// formats that require a key).
pub const PROVIDER_KEY: &str = "test-provider-key";

/// One target per wire format: (provider, model).
const FORMAT_TARGETS: [(&str, &str); 5] = [
    ("oa", MOCK_MODEL),
    ("mi", "mistral-small-latest"),
    ("an", "claude-3-5-haiku-latest"),
    ("ge", "gemini-2.0-flash"),
    ("cf", "@cf/meta/llama-3.1-8b-instruct"),
];

fn origin(mock_base: &str) -> String {
    mock_base
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_owned()
}

fn provider(origin: &str, profile: &str) -> Value {
    let base = if profile.is_empty() {
        format!("{origin}/v1")
    } else {
        format!("{origin}/p/{profile}/v1")
    };
    json!({"kind": "openai_compatible", "base_url": base})
}

fn target(p: &str) -> Value {
    json!({"provider": p, "model": MOCK_MODEL})
}

/// The gateway tenants' configurations, for a mock at `mock_base` (`http://127.0.0.1:N/v1`).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let o = origin(mock_base);
    let one_try = json!({"attempts_per_target": 1});
    vec![
        (
            "gw-order".into(),
            json!({
                "providers": {"p1": provider(&o, "status=500"), "p2": provider(&o, "status=503"), "p3": provider(&o, "")},
                "routes": {"default": {"strategy": "fallback", "targets": [target("p1"), target("p2"), target("p3")]}},
                "retry": one_try,
                "breaker": {"consecutive_failures": 1000, "min_requests": 64, "window": 64},
                "api_keys": [{"id": "agents", "sha256": kefu_engine::auth::hash_key(ORDER_KEY)}],
            }),
        ),
        (
            "gw-breaker".into(),
            json!({
                "providers": {"p1": provider(&o, "fail_first=2,fail_status=500"), "p2": provider(&o, "")},
                "routes": {"default": {"targets": [target("p1"), target("p2")]}},
                "retry": one_try,
                "breaker": {"consecutive_failures": 2, "min_requests": 2, "window": 4, "cooldown_ms": 1500},
            }),
        ),
        (
            "gw-quota".into(),
            json!({
                "providers": {"p": provider(&o, "")},
                "routes": {"default": {"targets": [target("p")]}},
                "quotas": {"daily_requests": 40},
            }),
        ),
        (
            "gw-flaky".into(),
            json!({
                "providers": {"p1": provider(&o, "fail_percent=33,seed=11"), "p2": provider(&o, "")},
                "routes": {"default": {"targets": [target("p1"), target("p2")]}},
                "retry": one_try,
                // Tolerant breakers: this scenario is about per-turn fallback; a breaker that
                // opens would just send everything to p2 (also answered, but less to see).
                "breaker": {"consecutive_failures": 10, "failure_rate": 0.9},
                "prices": {MOCK_MODEL: {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            }),
        ),
        (
            "gw-formats".into(),
            json!({
                "providers": {
                    "oa": {"kind": "openai", "base_url": format!("{o}/v1"), "api_key_secret": "TEST_PROVIDER_KEY"},
                    "mi": {"kind": "mistral", "base_url": format!("{o}/v1"), "api_key_secret": "TEST_PROVIDER_KEY"},
                    "an": {"kind": "anthropic", "base_url": o, "api_key_secret": "TEST_PROVIDER_KEY"},
                    "ge": {"kind": "gemini", "base_url": o, "api_key_secret": "TEST_PROVIDER_KEY"},
                    "cf": {"kind": "workers_ai", "base_url": format!("{o}/client/v4/accounts/test-account/ai"), "api_key_secret": "TEST_PROVIDER_KEY"},
                },
                "routes": {"default": {"targets": FORMAT_TARGETS.iter().map(|(p, m)| json!({"provider": p, "model": m})).collect::<Vec<_>>()}},
                "retry": one_try,
                "api_keys": [{"id": "runtime-tests", "sha256": kefu_engine::auth::hash_key(FORMATS_KEY)}],
            }),
        ),
        (
            "gw-ai-binding".into(),
            json!({
                "providers": {"cf": {"kind": "workers_ai", "base_url": "binding:AI"}},
                "routes": {"default": {"targets": [{"provider": "cf", "model": "@cf/meta/llama-3.1-8b-instruct"}]}},
                "retry": one_try,
            }),
        ),
        (
            // Its provider always answers with a call to the handoff tool (the directive sits in
            // the URL: in the message, the word "human" would trigger the visitor's own handoff).
            "gw-model-handoff".into(),
            json!({
                "providers": {"p": {"kind": "openai_compatible",
                    "base_url": format!("{o}/p/tool=handoff_to_human,args=%7B%22reason%22:%22refund_dispute%22%7D/v1")}},
                "routes": {"default": {"targets": [target("p")]}},
            }),
        ),
        (
            "gw-sdk".into(),
            json!({
                "providers": {"p": provider(&o, "")},
                "routes": {"default": {"targets": [target("p")]}},
                "api_keys": [{"id": "runtime-tests", "sha256": kefu_engine::auth::hash_key(SDK_KEY)}],
                "prices": {MOCK_MODEL: {"input_per_mtok": 2.5, "output_per_mtok": 10.0}},
            }),
        ),
    ]
}

fn reply_target(answer: &Value) -> Option<&str> {
    answer.get("target").and_then(Value::as_str)
}

/// A fallback route tries its targets in order and reports which one answered.
pub async fn gateway_fallback_order(ctx: &Ctx) -> anyhow::Result<()> {
    let text = unique("fallback-order");
    let a = ctx
        .chat(Some("gw-order"), &json!({"message": text}))
        .await?;
    a.expect_status(200)?;
    ensure!(
        reply_target(&a.json) == Some("p3/mock-gpt"),
        "answered by {:?}: {}",
        reply_target(&a.json),
        a.text
    );
    ensure!(a.json["attempts"] == 3, "attempts: {}", a.json["attempts"]);
    ensure!(
        a.header("x-kefu-attempts") == "3" && a.header("x-kefu-target") == "p3/mock-gpt",
        "headers: {:?}",
        a.headers
    );
    let profiles: Vec<String> = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .filter(|r| r.last_user_text().is_some_and(|t| t.contains(&text)))
        .map(|r| r.profile.unwrap_or_default())
        .collect();
    ensure!(
        profiles == ["status=500", "status=503", ""],
        "targets were called in this order: {profiles:?}"
    );

    // Agents (and the replay console) read every attempt of the turn, and why it moved on.
    let id = a.json["conversation_id"].as_str().context("id")?;
    let traces = crate::scenarios::Answer::read(
        ctx.http
            .get(ctx.url(&format!("/api/v1/conversations/{id}/traces")))
            .bearer_auth(ORDER_KEY)
            .send()
            .await?,
    )
    .await?;
    traces.expect_status(200)?;
    let turn = &traces.json["turns"][0];
    let attempts = turn["attempts"].as_array().context("attempts")?;
    let seen: Vec<(&str, Option<u64>)> = attempts
        .iter()
        .map(|t| (t["target"].as_str().unwrap_or("?"), t["status"].as_u64()))
        .collect();
    ensure!(
        turn["seq"] == 1
            && seen
                == [
                    ("p1/mock-gpt", Some(500)),
                    ("p2/mock-gpt", Some(503)),
                    ("p3/mock-gpt", Some(200))
                ]
            && attempts[0]["outcome"]["next"] == "fallback",
        "{}",
        traces.text
    );
    // Without an agent's key: 401; another tenant's key: no such conversation.
    let anonymous = ctx
        .http
        .get(ctx.url(&format!("/api/v1/conversations/{id}/traces")))
        .send()
        .await?;
    ensure!(
        anonymous.status() == 401,
        "traces without a key: {}",
        anonymous.status()
    );
    crate::scenarios::Answer::read(
        ctx.http
            .get(ctx.url(&format!("/api/v1/conversations/{id}/traces")))
            .bearer_auth(SDK_KEY)
            .send()
            .await?,
    )
    .await?
    .expect_error(404, "conversation_not_found")?;
    Ok(())
}

/// The tenant key of `gw-order` (its agents read traces).
pub const ORDER_KEY: &str = "kf-gw-order.Kefu0Order0Test0Key000001";

/// A failing target's breaker opens (the target is skipped, not called), and after the
/// cool-down one probe finds it healthy again and closes it.
pub async fn gateway_breaker_opens_and_recovers(ctx: &Ctx) -> anyhow::Result<()> {
    let profile = "fail_first=2,fail_status=500";
    let mock = ctx.mock()?;
    let turn = |label: &'static str| async move {
        let a = ctx
            .chat(Some("gw-breaker"), &json!({"message": unique(label)}))
            .await?;
        a.expect_status(200)?;
        // Breaker outcomes are reported right after the answer; give that a moment to land.
        tokio::time::sleep(Duration::from_millis(150)).await;
        anyhow::Ok(reply_target(&a.json).unwrap_or_default().to_owned())
    };
    ensure!(
        turn("breaker-1").await? == "p2/mock-gpt",
        "first failure falls back"
    );
    ensure!(
        turn("breaker-2").await? == "p2/mock-gpt",
        "second failure falls back"
    );
    let calls_when_open = mock.calls_for(profile);
    ensure!(
        calls_when_open == 2,
        "p1 was called {calls_when_open} times before opening"
    );
    ensure!(
        turn("breaker-3").await? == "p2/mock-gpt",
        "open breaker: straight to p2"
    );
    ensure!(
        mock.calls_for(profile) == 2,
        "an open breaker let a call through to p1"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ensure!(
        turn("breaker-4").await? == "p1/mock-gpt",
        "after the cool-down the probe goes to p1 and succeeds"
    );
    ensure!(
        turn("breaker-5").await? == "p1/mock-gpt",
        "closed again: p1 answers"
    );
    Ok(())
}

/// 100 concurrent turns against a daily budget of 40: exactly 40 answered, 60 refused with
/// 429, `quota_exceeded` and `Retry-After`.
pub async fn gateway_quota_exact_under_concurrency(ctx: &Ctx) -> anyhow::Result<()> {
    let calls = (0..100).map(|i| {
        let body = json!({"message": unique(&format!("quota-{i}"))});
        async move { ctx.chat(Some("gw-quota"), &body).await }
    });
    let answers = futures::future::join_all(calls).await;
    let (mut ok, mut refused) = (0, 0);
    for a in answers {
        let a = a?;
        match a.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                ensure!(
                    a.json["error"]["code"] == "quota_exceeded",
                    "429 body: {}",
                    a.text
                );
                let retry: u64 = a
                    .header("retry-after")
                    .parse()
                    .context("Retry-After is a number of seconds")?;
                ensure!(retry >= 1, "Retry-After {retry}");
                refused += 1;
            }
            other => bail!("unexpected {other}: {}", a.text),
        }
    }
    ensure!(
        (ok, refused) == (40, 60),
        "{ok} admitted, {refused} refused"
    );
    Ok(())
}

/// With the primary failing a third of its calls, every turn of a 300-turn run is answered.
pub async fn gateway_300_turns_with_a_flaky_primary(ctx: &Ctx) -> anyhow::Result<()> {
    let mut conversation: Option<String> = None;
    let mut by_target = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..300 {
        let mut body = json!({"message": unique(&format!("flaky-{i}"))});
        if let Some(id) = &conversation {
            body["conversation_id"] = json!(id);
        }
        let a = ctx.chat(Some("gw-flaky"), &body).await?;
        ensure!(
            a.status == StatusCode::OK,
            "turn {i} unanswered: {} {}",
            a.status,
            a.text
        );
        ensure!(
            message_text(&a.json["reply"]).starts_with("Echo: "),
            "turn {i}: {}",
            a.text
        );
        conversation = a.json["conversation_id"].as_str().map(str::to_owned);
        *by_target
            .entry(reply_target(&a.json).unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let primary_calls = ctx.mock()?.calls_for("fail_percent=33,seed=11");
    let primary_answers = by_target.get("p1/mock-gpt").copied().unwrap_or(0);
    let backup_answers = by_target.get("p2/mock-gpt").copied().unwrap_or(0);
    // About two thirds of the turns reach the primary first time; the rest fall back.
    ensure!(
        primary_answers > 150 && backup_answers > 50,
        "answers by target: {by_target:?}"
    );
    println!("    300 turns answered: {by_target:?}; primary called {primary_calls} times");
    Ok(())
}

fn python() -> PathBuf {
    crate::worker::repo_root().join(".tools/venv/bin/python")
}

/// The official `openai` Python SDK, a real client, drives `/v1/chat/completions` in both
/// modes and `/v1/models`, and gets its own AuthenticationError for a wrong key.
pub async fn openai_sdk_python(ctx: &Ctx) -> anyhow::Result<()> {
    let python = python();
    ensure!(
        python.exists(),
        "{} is missing: run `make setup` (it installs the openai SDK)",
        python.display()
    );
    let script = crate::worker::repo_root().join("tests/runtime/python/openai_sdk_check.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&ctx.base)
        .arg(SDK_KEY)
        .kill_on_drop(true)
        .output()
        .await
        .context("running the openai SDK check")?;
    ensure!(
        out.status.success(),
        "the SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The OpenAI-compatible API refuses what it must, in OpenAI's error shape.
pub async fn openai_api_errors(ctx: &Ctx) -> anyhow::Result<()> {
    let url = ctx.url("/v1/chat/completions");
    let body = json!({"model": "kefu", "messages": [{"role": "user", "content": "hi"}]});
    let cases: Vec<(Option<String>, Value, u16, &str)> = vec![
        (None, body.clone(), 401, "invalid_api_key"),
        (
            Some("sk-not-kefu".into()),
            body.clone(),
            401,
            "invalid_api_key",
        ),
        (
            Some(format!("{SDK_KEY}x")),
            body.clone(),
            401,
            "invalid_api_key",
        ),
        (
            Some(SDK_KEY.into()),
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "model_not_found",
        ),
        (
            Some(SDK_KEY.into()),
            json!({"model": "kefu", "messages": []}),
            400,
            "invalid_request",
        ),
    ];
    for (key, body, status, code) in cases {
        let mut req = ctx.http.post(&url).json(&body);
        if let Some(k) = &key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await?;
        let got = resp.status().as_u16();
        let json: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(
            got == status && json["error"]["code"] == code,
            "{key:?} {body}: got {got} {json}"
        );
        ensure!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no message: {json}"
        );
    }
    Ok(())
}

/// Every provider wire format, end to end through the Worker: a whole and a streamed
/// completion per format, each reaching the mock in that format's own shape.
pub async fn gateway_every_wire_format(ctx: &Ctx) -> anyhow::Result<()> {
    let url = ctx.url("/v1/chat/completions");
    for (provider, model) in FORMAT_TARGETS {
        let target = format!("{provider}/{model}");
        for stream in [false, true] {
            let text = unique(&format!("format-{provider}"));
            let body = json!({"model": target, "stream": stream, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": text},
            ]});
            let resp = ctx
                .http
                .post(&url)
                .bearer_auth(FORMATS_KEY)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            let answered_by = resp
                .headers()
                .get("x-kefu-target")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let raw = resp.text().await?;
            ensure!(
                status == StatusCode::OK,
                "{target} stream={stream}: {status} {raw}"
            );
            ensure!(
                answered_by.as_deref() == Some(target.as_str()),
                "{target}: answered by {answered_by:?}"
            );
            let reply = if stream {
                let mut out = String::new();
                for line in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if line == "[DONE]" {
                        break;
                    }
                    let v: Value = serde_json::from_str(line)
                        .with_context(|| format!("{target}: chunk {line}"))?;
                    out.push_str(
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .unwrap_or_default(),
                    );
                }
                ensure!(
                    raw.trim_end().ends_with("data: [DONE]"),
                    "{target}: stream did not end with [DONE]:\n{raw}"
                );
                out
            } else {
                let v: Value = serde_json::from_str(&raw)?;
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            ensure!(
                reply.starts_with(&format!("Echo: {text}")),
                "{target} stream={stream}: reply {reply:?}"
            );
            let seen = ctx
                .mock()?
                .model_requests()
                .into_iter()
                .find(|r| r.last_user_text().is_some_and(|t| t.contains(&text)))
                .with_context(|| format!("{target}: the mock never saw the request"))?;
            let format = seen.format().map(|f| f.as_str());
            ensure!(
                format == Some(expected_format(provider)),
                "{target}: reached the mock as {format:?}"
            );
        }
    }
    Ok(())
}

fn expected_format(provider: &str) -> &'static str {
    match provider {
        "an" => "anthropic",
        "ge" => "gemini",
        "cf" => "workers_ai",
        _ => "openai",
    }
}

/// A Workers AI target reached through the `AI` binding (`base_url: "binding:AI"`) rather
/// than REST: whole and streamed replies, and a failure classified from the binding's
/// `AiError: <code>` (the test host's binding answers from the mock's Workers AI endpoint).
pub async fn gateway_workers_ai_binding(ctx: &Ctx) -> anyhow::Result<()> {
    let text = unique("binding");
    let a = ctx
        .chat(Some("gw-ai-binding"), &json!({"message": text}))
        .await?;
    a.expect_status(200)?;
    ensure!(
        message_text(&a.json["reply"]).starts_with(&format!("Echo: {text}")),
        "{}",
        a.text
    );
    ensure!(
        a.json["model"] == "@cf/meta/llama-3.1-8b-instruct",
        "{}",
        a.text
    );
    let text = unique("binding-stream");
    let events = ctx
        .chat_stream(
            Some("gw-ai-binding"),
            &json!({"message": text, "stream": true}),
        )
        .await?;
    let names: Vec<&str> = events.events.iter().map(|e| e.event.as_str()).collect();
    ensure!(
        names.first() == Some(&"accepted") && names.last() == Some(&"done"),
        "events: {names:?}"
    );
    ensure!(
        names.iter().filter(|n| **n == "delta").count() >= 2,
        "events: {names:?}"
    );
    let seen = ctx.mock()?.model_requests().into_iter().any(|r| {
        r.path.contains("/ai/run/") && r.last_user_text().is_some_and(|t| t.contains(&text))
    });
    ensure!(
        seen,
        "the binding's call never reached the Workers AI endpoint"
    );
    let failed = ctx
        .chat(
            Some("gw-ai-binding"),
            &json!({"message": "fail [mock status=503]"}),
        )
        .await?;
    failed.expect_error(502, "provider_error")?;
    Ok(())
}

/// Usage and cost are accounted per tenant, day, route and target, and readable with the
/// tenant's key.
pub async fn gateway_usage_accounted(ctx: &Ctx) -> anyhow::Result<()> {
    let url = ctx.url("/v1/chat/completions");
    for i in 0..3 {
        let body = json!({"model": "kefu", "messages": [{"role": "user", "content": unique(&format!("usage-{i}"))}]});
        let resp = ctx
            .http
            .post(&url)
            .bearer_auth(SDK_KEY)
            .json(&body)
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "completion {i}: {}",
            resp.status()
        );
    }
    // Successful reports travel in batches of up to 250 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let resp = ctx
        .http
        .get(ctx.url("/api/v1/usage"))
        .bearer_auth(SDK_KEY)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "usage: {}", resp.status());
    let usage: Value = resp.json().await?;
    let rows = usage["usage"].as_array().context("a usage array")?;
    let row = rows
        .iter()
        .find(|r| r["target"] == "p/mock-gpt" && r["route"] == "default")
        .with_context(|| format!("no row for p/mock-gpt: {usage}"))?;
    ensure!(
        row["requests"].as_u64().unwrap_or(0) >= 3,
        "requests: {row}"
    );
    ensure!(
        row["prompt_tokens"].as_u64().unwrap_or(0) > 0
            && row["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{row}"
    );
    ensure!(
        row["cost_micros"].as_u64().unwrap_or(0) > 0,
        "the price table was not applied: {row}"
    );
    let anonymous = ctx.http.get(ctx.url("/api/v1/usage")).send().await?;
    ensure!(
        anonymous.status() == StatusCode::UNAUTHORIZED,
        "without a key: {}",
        anonymous.status()
    );
    Ok(())
}
