//! The operators' plugin routes: the example and test plugins (`make plugins`), transpiled
//! with jco and bundled with the Worker, run through `GET /api/v1/plugins` and
//! `POST /api/v1/plugins/{id}/test`, each call in a fresh instance with the engine's rules
//! (grants, the output limit, the budget) kept by the host.

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::scenarios::Ctx;

/// The tenant key of `plg`.
pub const PLG_KEY: &str = "kf-plg.Kefu0Plugin0Test0Key000001";

/// The tenant key of `plk`.
pub const KV_KEY: &str = "kf-plk.Kefu0Plugin0KeyValue0Key01";

/// The tenant key of `plt`, whose plugin the budget scenario configures at run time.
pub const SLOW_KEY: &str = "kf-plt.Kefu0Plugin0Budget0Key001";

/// The tenant key of `plh`.
pub const HOSTILE_KEY: &str = "kf-plh.Kefu0Plugin0Hostile0Key01";

/// The tenants these scenarios need.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    // `http://127.0.0.1:PORT/v1` → `127.0.0.1:PORT`, the mock's host as a grant names it.
    let mock_host = mock_base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let hostile =
        |id: &str, settings: Value| json!({"id": id, "plugin": "hostile", "settings": settings});
    let mut granted = hostile(
        "fetch-granted",
        json!({"mode": "fetch", "hooks": "after_reply", "fetch_url": format!("{}/models", mock_base)}),
    );
    granted["grants"] = json!({"hosts": [mock_host]});
    let mut other_port = hostile(
        "fetch-other-port",
        json!({"mode": "fetch", "hooks": "after_reply", "fetch_url": format!("{}/models", mock_base)}),
    );
    other_port["grants"] = json!({"hosts": ["127.0.0.1:1"]});
    let mut slow = hostile("loop-long-budget", json!({"mode": "loop"}));
    slow["budget_ms"] = json!(5000);
    let origin = mock_base.trim_end_matches("/v1");
    let crm = |id: &str, kv: bool| {
        json!({"id": id, "plugin": "crm-forwarder",
            "settings": {"endpoint": format!("{origin}/crm/summaries"), "tag": format!("{id}-synced")},
            "grants": {"hosts": [mock_host], "kv": kv}})
    };
    vec![
        (
            "plt".into(),
            json!({"api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(SLOW_KEY)}]}),
        ),
        (
            "plk".into(),
            json!({
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(KV_KEY)}],
                "plugins": [crm("crm", true), crm("crm-nokv", false)],
            }),
        ),
        (
            "plh".into(),
            json!({
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(HOSTILE_KEY)}],
                "plugins": [
                    hostile("trap", json!({"mode": "trap"})),
                    hostile("loop", json!({"mode": "loop"})),
                    slow,
                    hostile("huge", json!({"mode": "huge", "hooks": "after_reply"})),
                    hostile("fetch-denied", json!({"mode": "fetch"})),
                    granted,
                    other_port,
                ],
            }),
        ),
        (
            "plg".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": crate::mock::MOCK_MODEL},
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(PLG_KEY)}],
                "plugins": [
                    {"id": "pii", "plugin": "pii-redactor", "settings": {"kinds": "email,card"}},
                    {"id": "pii-all", "plugin": "pii-redactor", "enabled": false},
                    {"id": "pii-tight", "plugin": "pii-redactor", "max_output_bytes": 1024},
                    {"id": "ghost", "plugin": "not-installed"},
                ],
            }),
        ),
    ]
}

async fn test_call(ctx: &Ctx, id: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
    test_call_as(ctx, PLG_KEY, id, body).await
}

async fn test_call_as(
    ctx: &Ctx,
    key: &str,
    id: &str,
    body: &Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let resp = ctx
        .http
        .post(ctx.url(&format!("/api/v1/plugins/{id}/test")))
        .bearer_auth(key)
        .json(body)
        .send()
        .await?;
    Ok((resp.status(), resp.json().await.unwrap_or(Value::Null)))
}

fn before_model(user: &str) -> Value {
    json!({"hook": "before_model", "request": {"target": "mock/model", "messages": [
        {"role": "system", "text": "Write to help@acme.example if stuck."},
        {"role": "user", "text": user},
    ]}})
}

/// The PII redactor, installed in the Worker, describes itself and rewrites a prompt with
/// the settings of the plugin id it runs under; failures are records, not errors.
pub async fn plugin_routes_redactor(ctx: &Ctx) -> anyhow::Result<()> {
    // Operators only.
    let resp = ctx.http.get(ctx.url("/api/v1/plugins")).send().await?;
    ensure!(
        resp.status() == StatusCode::UNAUTHORIZED,
        "{}",
        resp.status()
    );

    let list: Value = ctx
        .http
        .get(ctx.url("/api/v1/plugins"))
        .bearer_auth(PLG_KEY)
        .send()
        .await?
        .json()
        .await?;
    let installed = list["installed"].as_array().context("installed")?;
    let redactor = installed
        .iter()
        .find(|p| p["name"] == "pii-redactor")
        .with_context(|| format!("pii-redactor is not installed: {list}"))?;
    ensure!(
        redactor["manifest"]["hooks"]
            == json!({"on_event": false, "before_model": true, "after_reply": false}),
        "the manifest's hooks, through jco's flags: {redactor}"
    );
    ensure!(
        redactor["manifest"]["tools"] == json!([]),
        "no tools: {redactor}"
    );
    let ids: Vec<&str> = list["plugins"]
        .as_array()
        .context("plugins")?
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    ensure!(ids == ["pii", "pii-all", "pii-tight", "ghost"], "{list}");

    // `pii` redacts emails and cards only (its `kinds` setting); the system message is the
    // operator's own text and stays.
    let user = "I am ana@example.com, card 4111 1111 1111 1111, phone +1 415 555 0100";
    let (status, body) = test_call(ctx, "pii", &before_model(user)).await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    ensure!(
        body["answer"]
            == json!({"rewrite": [
                "Write to help@acme.example if stuck.",
                "I am [email], card [card], phone +1 415 555 0100",
            ]}),
        "{body}"
    );
    let record = &body["record"];
    ensure!(
        record["plugin_id"] == "pii"
            && record["plugin"] == "pii-redactor"
            && record["hook"] == "before_model"
            && record["outcome"] == json!({"kind": "ok", "effect": "rewrote 1 of 2 messages"}),
        "{record}"
    );
    // The same plugin under another id, with its defaults (every kind); disabled plugins may
    // be tried before they are enabled.
    let (_, body) = test_call(ctx, "pii-all", &before_model(user)).await?;
    ensure!(
        body["answer"]["rewrite"][1] == "I am [email], card [card], phone [phone]",
        "{body}"
    );
    // Nothing to redact: keep.
    let (_, body) = test_call(ctx, "pii", &before_model("Where is my order?")).await?;
    ensure!(body["answer"] == "keep", "{body}");
    // Other hooks, through jco's variants and results.
    let (_, body) = test_call(
        ctx,
        "pii",
        &json!({"hook": "after_reply", "question": "q", "reply": "r"}),
    )
    .await?;
    ensure!(body["answer"] == "keep", "{body}");
    let (_, body) = test_call(
        ctx,
        "pii",
        &json!({"hook": "call_tool", "name": "lookup", "arguments": "{}"}),
    )
    .await?;
    ensure!(
        body["answer"] == json!({"err": "pii-redactor has no tool named \"lookup\""})
            && body["record"]["tool"] == "lookup"
            && body["record"]["outcome"]["kind"] == "ok",
        "{body}"
    );
    let (_, body) = test_call(
        ctx,
        "pii",
        &json!({"hook": "on_event", "event": {"kind": "resolved", "text": null, "transcript": [{"author": "agent", "text": "done"}], "tags": ["vip"]}}),
    )
    .await?;
    ensure!(
        body["answer"] == json!([]) && body["record"]["outcome"]["effect"] == "no actions",
        "{body}"
    );

    // An answer over the plugin's output limit is cut off: the plugin is skipped.
    let long = "ana@example.com ".repeat(200);
    let (status, body) = test_call(ctx, "pii-tight", &before_model(&long)).await?;
    ensure!(
        status == StatusCode::OK
            && body["answer"].is_null()
            && body["record"]["outcome"]["kind"] == "failed"
            && body["record"]["outcome"]["failure"] == "too_large",
        "{status} {body}"
    );

    // A plugin the deployment does not have is unavailable, not an error of the request.
    let (status, body) = test_call(ctx, "ghost", &before_model(user)).await?;
    ensure!(
        status == StatusCode::OK && body["record"]["outcome"]["failure"] == "unavailable",
        "{status} {body}"
    );

    // Bad requests change nothing and say why.
    let (status, body) = test_call(ctx, "nobody", &before_model(user)).await?;
    ensure!(
        status == StatusCode::NOT_FOUND && body["error"]["code"] == "plugin_not_found",
        "{status} {body}"
    );
    let (status, body) = test_call(ctx, "pii", &json!({"hook": "before_model"})).await?;
    ensure!(
        status == StatusCode::BAD_REQUEST && body["error"]["code"] == "invalid_field",
        "{status} {body}"
    );
    Ok(())
}

fn after_reply() -> Value {
    json!({"hook": "after_reply", "question": "Where is my order?", "reply": "On its way."})
}

/// A plugin that traps, loops, answers megabytes or reaches for a host it was not granted is
/// cut off (or refused) and recorded; the Worker, and the next plugin call, carry on.
pub async fn plugin_routes_hostile_contained(ctx: &Ctx) -> anyhow::Result<()> {
    let failure = |body: &Value| body["record"]["outcome"]["failure"].clone();
    let input = after_reply();
    let call = |id: &'static str| test_call_as(ctx, HOSTILE_KEY, id, &input);

    let message = |body: &Value| {
        body["record"]["outcome"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (status, body) = call("trap").await?;
    ensure!(
        status == StatusCode::OK && body["answer"].is_null() && failure(&body) == "trap",
        "{status} {body}"
    );
    if ctx.spin {
        // Spin answers a trapped component with a plain 500: the kind is not guessed.
        ensure!(
            message(&body).contains(crate::plugins::SPIN_TRAP_UNSAID),
            "{body}"
        );
    } else {
        ensure!(
            message(&body).contains("unreachable"),
            "a panic is the wasm `unreachable` trap: {body}"
        );
    }

    // An endless loop cannot be preempted; its CPU allowance (components/plugin-meter) ends
    // it, well before a generous wall-clock budget would. Workers names the meter's trap (a
    // timeout); Spin does not (a trap it cannot say more of), but the time says who ended
    // it: `loop-long-budget` has 5000 ms.
    for id in ["loop", "loop-long-budget"] {
        let started = std::time::Instant::now();
        let (status, body) = call(id).await?;
        if ctx.spin {
            ensure!(
                status == StatusCode::OK
                    && failure(&body) == "trap"
                    && message(&body).contains(crate::plugins::SPIN_TRAP_UNSAID),
                "{id}: {status} {body}"
            );
            ensure!(
                body["record"]["duration_ms"]
                    .as_u64()
                    .is_some_and(|ms| ms < 1000),
                "{id}: not ended by its CPU allowance: {body}"
            );
        } else {
            ensure!(
                status == StatusCode::OK && failure(&body) == "timeout",
                "{id}: {status} {body}"
            );
            ensure!(
                message(&body).contains("CPU allowance"),
                "{id}: the metering trap, not a timer: {body}"
            );
        }
        ensure!(
            started.elapsed() < std::time::Duration::from_millis(4000),
            "{id}: took {:?}",
            started.elapsed()
        );
    }

    let (_, body) = call("huge").await?;
    ensure!(failure(&body) == "too_large", "{body}");

    // Grants: deny by default, the host and port as granted, and nothing else.
    let (_, body) = call("fetch-denied").await?;
    ensure!(
        body["answer"]
            == json!({"rewrite": "hostile fetch of https://ungranted.example.net/ denied: ungranted.example.net is not a host this plugin was granted"}),
        "{body}"
    );
    // The denial names the port too: it is the port that was not granted.
    let (_, body) = call("fetch-other-port").await?;
    let port = ctx.mock()?.addr().port();
    ensure!(
        body["answer"]["rewrite"]
            .as_str()
            .is_some_and(|t| t.contains(&format!(
                " denied: 127.0.0.1:{port} is not a host this plugin was granted"
            ))),
        "{body}"
    );
    let (_, body) = call("fetch-granted").await?;
    ensure!(
        body["answer"]["rewrite"]
            .as_str()
            .is_some_and(|t| t.ends_with(": HTTP 200")),
        "the granted host is reached: {body}"
    );
    let models = ctx
        .mock()?
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/models")
        .count();
    ensure!(models >= 1, "the mock saw no GET /v1/models");

    // The Worker is unharmed: the next plugin call and a chat turn work.
    let (_, body) = test_call(ctx, "pii", &before_model("mail me at ana@example.com")).await?;
    ensure!(
        body["answer"]["rewrite"][1] == "mail me at [email]",
        "{body}"
    );
    let answer = ctx
        .chat(
            None,
            &json!({"message": "still there after the hostile plugin?"}),
        )
        .await?;
    answer.expect_status(200)?;
    Ok(())
}

/// A plugin's key-value space (Workers KV, scoped to the tenant and plugin id) holds across
/// calls, each of which runs in a fresh instance; without the grant the plugin is told
/// `denied` and carries on. The CRM forwarder remembers a forwarded conversation there.
pub async fn plugin_routes_key_value_and_outbound_post(ctx: &Ctx) -> anyhow::Result<()> {
    let resolved = json!({"hook": "on_event", "event": {"kind": "resolved", "text": "refund sent",
        "transcript": [{"author": "visitor", "text": "Where is my refund?"}, {"author": "agent", "text": "Sent today."}],
        "tags": []}});
    let posts = || {
        ctx.mock().map(|m| {
            m.requests()
                .into_iter()
                .filter(|r| r.path == "/crm/summaries")
                .count()
        })
    };
    let before = posts()?;
    // Granted a key-value space: the first resolved event is posted and tagged, the second
    // is known from the store and not posted again.
    let (status, body) = test_call_as(ctx, KV_KEY, "crm", &resolved).await?;
    ensure!(
        status == StatusCode::OK && body["answer"] == json!([{"tag": "crm-synced"}]),
        "{status} {body}"
    );
    ensure!(posts()? == before + 1, "one summary posted");
    let (_, body) = test_call_as(ctx, KV_KEY, "crm", &resolved).await?;
    ensure!(body["answer"] == json!([]), "remembered in KV: {body}");
    ensure!(posts()? == before + 1, "not posted twice");
    // Another plugin id has its own space, and one without the grant is denied the store
    // (the plugin then forwards every time).
    for _ in 0..2 {
        let (_, body) = test_call_as(ctx, KV_KEY, "crm-nokv", &resolved).await?;
        ensure!(
            body["answer"] == json!([{"tag": "crm-nokv-synced"}]),
            "{body}"
        );
    }
    ensure!(
        posts()? == before + 3,
        "the ungranted plugin posts each time"
    );
    let summary = ctx
        .mock()?
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/crm/summaries")
        .and_then(|r| r.body)
        .context("the posted summary")?;
    ensure!(
        summary.to_string().contains("Where is my refund?"),
        "the POST body arrived: {summary}"
    );
    Ok(())
}

/// A plugin waiting on the network is bounded by its wall-clock budget: its fetch of a
/// stream that never ends (this Worker's own live updates, held open for 25 s) is cut off
/// within the budget, and the call ends either with the plugin told `timeout` or as a
/// `timeout` failure, whichever of the host's two deadlines fires first.
pub async fn plugin_routes_budget_bounds_a_slow_fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let a = ctx
        .chat(None, &json!({"message": "a conversation to listen to"}))
        .await?;
    a.expect_status(200)?;
    let id = a.json["conversation_id"]
        .as_str()
        .context("conversation_id")?;
    let events = ctx.url(&format!("/api/v1/conversations/{id}/events?tenant=default"));
    let host = ctx
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let document = json!({
        "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(SLOW_KEY)}],
        "plugins": [{"id": "slow", "plugin": "hostile", "budget_ms": 400,
            "settings": {"mode": "fetch", "hooks": "after_reply", "fetch_url": events},
            "grants": {"hosts": [host]}}],
    });
    let put = ctx
        .http
        .put(ctx.url("/api/v1/config"))
        .bearer_auth(SLOW_KEY)
        .json(&document)
        .send()
        .await?;
    ensure!(put.status() == StatusCode::OK, "{}", put.text().await?);
    let started = std::time::Instant::now();
    let (status, body) = test_call_as(ctx, SLOW_KEY, "slow", &after_reply()).await?;
    let took = started.elapsed();
    ensure!(status == StatusCode::OK, "{status} {body}");
    let told_timeout = body["answer"]["rewrite"]
        .as_str()
        .is_some_and(|t| t.ends_with(" timed out"));
    let timed_out = body["record"]["outcome"]["failure"] == "timeout";
    ensure!(told_timeout || timed_out, "{body}");
    ensure!(
        took < std::time::Duration::from_millis(3000),
        "a 400 ms budget took {took:?}"
    );
    Ok(())
}
