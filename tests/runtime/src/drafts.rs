//! Draft, test, publish: an operator's draft configuration is tested against the tenant's
//! test conversations through the real chat pipeline (the draft's provider: the mock),
//! and publishing is refused while a case fails — unless overridden with a reason, which
//! the version history keeps. Agents can do none of it.

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Answer, Ctx, unique};

/// The tenant key of `draft`.
pub const DRAFT_KEY: &str = "kf-draft.Kefu0Draft0Test0Key0000001";

fn document(mock_base: &str, prompt: &str) -> Value {
    json!({
        "system_prompt": prompt,
        "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": MOCK_MODEL},
        "rules": [{"id": "refund", "when": {"keywords": ["refund"]},
                   "then": {"reply": "Refunds take 5 days."}}],
        "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(DRAFT_KEY)}],
    })
}

/// The tenants these scenarios need.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    vec![("draft".into(), document(mock_base, "Live prompt"))]
}

async fn call(
    ctx: &Ctx,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> anyhow::Result<Answer> {
    let mut req = ctx.http.request(method, ctx.url(path)).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(body);
    }
    Answer::read(req.send().await?).await
}

async fn live(ctx: &Ctx) -> anyhow::Result<Value> {
    let a = call(ctx, reqwest::Method::GET, "/api/v1/config", DRAFT_KEY, None).await?;
    a.expect_status(200)?;
    Ok(a.json.clone())
}

/// A failing suite blocks publishing (the live configuration unchanged); an override with a
/// reason publishes and the history records it; a passing suite publishes.
pub async fn draft_suite_gates_publish(ctx: &Ctx) -> anyhow::Result<()> {
    use reqwest::Method;
    let mock_base = ctx.mock()?.base_url();
    let draft_prompt = unique("Draft prompt");
    // The draft is validated like PUT /api/v1/config: nothing stored when it is wrong.
    call(
        ctx,
        Method::PUT,
        "/api/v1/config/draft",
        DRAFT_KEY,
        Some(&json!({"routes": 3})),
    )
    .await?
    .expect_error(400, "invalid_config")?;
    call(
        ctx,
        Method::PUT,
        "/api/v1/config/draft",
        DRAFT_KEY,
        Some(&document(&mock_base, &draft_prompt)),
    )
    .await?
    .expect_status(200)?;
    let before = live(ctx).await?;
    let got = call(ctx, Method::GET, "/api/v1/config/draft", DRAFT_KEY, None).await?;
    got.expect_status(200)?;
    ensure!(
        got.json["draft"]["system_prompt"] == draft_prompt.as_str(),
        "{}",
        got.text
    );
    ensure!(
        before["config"]["system_prompt"] != draft_prompt.as_str(),
        "a draft went live"
    );

    let shipping = unique("ship");
    let cases = [
        (
            "shipping",
            json!({"messages": [format!("Where is my parcel? {shipping} [mock reply=It_ships_in_3_days]")],
                   "expect": [{"kind": "mentions", "text": "3 days"}, {"kind": "never_mentions", "text": "refund"},
                              {"kind": "no_pii_to_model"}]}),
        ),
        (
            "refund",
            json!({"messages": ["I want a refund"],
                   "expect": [{"kind": "rule", "rule": "refund"}, {"kind": "mentions", "text": "5 days"}]}),
        ),
        (
            "person",
            json!({"messages": ["hello", "talk to a human please"], "expect": [{"kind": "handoff"}]}),
        ),
        (
            "pii",
            json!({"messages": ["I am ana@example.com, where is my order?"],
                   "expect": [{"kind": "no_pii_to_model"}]}),
        ),
    ];
    for (id, case) in &cases {
        call(
            ctx,
            Method::PUT,
            &format!("/api/v1/config/tests/{id}"),
            DRAFT_KEY,
            Some(case),
        )
        .await?
        .expect_status(200)?;
    }
    // A case is validated with the field at fault.
    let bad = call(
        ctx,
        Method::PUT,
        "/api/v1/config/tests/bad",
        DRAFT_KEY,
        Some(&json!({"messages": ["hi"], "expect": [{"kind": "guess"}]})),
    )
    .await?;
    bad.expect_error(400, "invalid_field")?;
    ensure!(
        bad.json["error"]["field"] == "expect[0].kind",
        "{}",
        bad.text
    );
    let listed = call(ctx, Method::GET, "/api/v1/config/tests", DRAFT_KEY, None).await?;
    ensure!(
        listed.json["tests"].as_array().map(Vec::len) == Some(4),
        "{}",
        listed.text
    );

    // Run: the draft's model answered (with the draft's prompt), and the PII case fails.
    let run = call(
        ctx,
        Method::POST,
        "/api/v1/config/draft/test",
        DRAFT_KEY,
        None,
    )
    .await?;
    run.expect_status(200)?;
    ensure!(run.json["passed"] == false, "{}", run.text);
    ensure!(run.json["failing"] == json!(["pii"]), "{}", run.text);
    ensure!(run.json["total"] == 4, "{}", run.text);
    let sent = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&shipping)))
        .context("the shipping case reached the model")?;
    let system = sent
        .messages()
        .first()
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        system.contains(&draft_prompt),
        "the case ran under {system:?}, not the draft"
    );

    // Publish is refused while it fails; the live configuration is unchanged.
    let refused = call(
        ctx,
        Method::POST,
        "/api/v1/config/draft/publish",
        DRAFT_KEY,
        None,
    )
    .await?;
    refused.expect_error(409, "suite_failed")?;
    ensure!(
        refused.json["suite"]["failing"] == json!(["pii"]),
        "{}",
        refused.text
    );
    let after = live(ctx).await?;
    ensure!(
        after["version"] == before["version"] && after["config"] == before["config"],
        "a refused publish changed the live configuration: {after}"
    );
    // An override needs a reason.
    call(
        ctx,
        Method::POST,
        "/api/v1/config/draft/publish",
        DRAFT_KEY,
        Some(&json!({"override": true})),
    )
    .await?
    .expect_error(400, "missing_field")?;
    let reason = "the redactor plugin ships tomorrow";
    let published = call(
        ctx,
        Method::POST,
        "/api/v1/config/draft/publish",
        DRAFT_KEY,
        Some(&json!({"override": true, "reason": reason})),
    )
    .await?;
    published.expect_status(200)?;
    ensure!(published.json["override"] == true, "{}", published.text);
    let version = published.json["version"].as_u64().context("version")?;
    let history = call(ctx, Method::GET, "/api/v1/config/versions", DRAFT_KEY, None).await?;
    let entry = &history.json["history"][0];
    ensure!(entry["version"] == version, "{}", history.text);
    ensure!(
        entry["publication"]["override"] == true
            && entry["publication"]["reason"] == reason
            && entry["publication"]["failing"] == json!(["pii"]),
        "the history does not record the override: {}",
        history.text
    );
    let now_live = live(ctx).await?;
    ensure!(
        now_live["config"]["system_prompt"] == draft_prompt.as_str(),
        "{now_live}"
    );

    // Without the failing case the suite passes and the draft publishes plainly.
    call(
        ctx,
        Method::DELETE,
        "/api/v1/config/tests/pii",
        DRAFT_KEY,
        None,
    )
    .await?
    .expect_status(200)?;
    call(
        ctx,
        Method::GET,
        "/api/v1/config/tests/pii",
        DRAFT_KEY,
        None,
    )
    .await?
    .expect_error(404, "test_not_found")?;
    let passing = call(
        ctx,
        Method::POST,
        "/api/v1/config/draft/publish",
        DRAFT_KEY,
        None,
    )
    .await?;
    passing.expect_status(200)?;
    ensure!(
        passing.json["suite"]["passed"] == true && passing.json["override"] == false,
        "{}",
        passing.text
    );
    let history = call(ctx, Method::GET, "/api/v1/config/versions", DRAFT_KEY, None).await?;
    let entry = &history.json["history"][0];
    ensure!(
        entry["change"] == "publish draft"
            && entry["publication"]["failed"] == 0
            && entry["publication"].get("reason").is_none(),
        "{}",
        history.text
    );
    Ok(())
}

/// An agent's token can neither read nor change the draft and its tests, run them, or
/// publish.
pub async fn drafts_are_the_operators(ctx: &Ctx) -> anyhow::Result<()> {
    use reqwest::Method;
    let agent = ctx
        .agent_token(DRAFT_KEY, &json!({"agent": "ana", "name": "Ana"}))
        .await?;
    let version = ctx.config_version(DRAFT_KEY).await?;
    let mock_base = ctx.mock()?.base_url();
    let case = json!({"messages": ["hi"], "expect": [{"kind": "handoff"}]});
    let doc = document(&mock_base, "An agent's prompt");
    let attempts: [(Method, &str, Option<&Value>); 8] = [
        (Method::GET, "/api/v1/config/draft", None),
        (Method::PUT, "/api/v1/config/draft", Some(&doc)),
        (Method::GET, "/api/v1/config/tests", None),
        (Method::PUT, "/api/v1/config/tests/agent-case", Some(&case)),
        (Method::DELETE, "/api/v1/config/tests/shipping", None),
        (Method::POST, "/api/v1/config/draft/test", None),
        (Method::POST, "/api/v1/config/draft/publish", None),
        (
            Method::POST,
            "/api/v1/config/draft/publish",
            Some(&json!({"override": true, "reason": "because"})),
        ),
    ];
    for (method, path, body) in attempts {
        call(ctx, method.clone(), path, &agent, body)
            .await?
            .expect_error(403, "operator_only")
            .with_context(|| format!("{method} {path}"))?;
    }
    ensure!(
        ctx.config_version(DRAFT_KEY).await? == version,
        "an agent changed the configuration"
    );
    let got = call(
        ctx,
        Method::GET,
        "/api/v1/config/tests/agent-case",
        DRAFT_KEY,
        None,
    )
    .await?;
    got.expect_error(404, "test_not_found")?;
    Ok(())
}
