//! Runtime configuration scenarios: the tenant's configuration is a versioned document,
//! validated on write with errors that name the field, effective without a redeploy, with
//! history and rollback.

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::scenarios::{Ctx, unique};

/// The tenant key of `cfg`.
pub const CFG_KEY: &str = "kf-cfg.Kefu0Config0Test0Key000001";
/// The deployment's admin token the runner binds as `KEFU_ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "kefu-test-admin-token-0123456789";

fn document(mock_base: &str, prompt: &str) -> Value {
    json!({
        "system_prompt": prompt,
        "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": crate::mock::MOCK_MODEL},
        "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(CFG_KEY)}],
    })
}

/// The tenants these scenarios need.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    vec![("cfg".into(), document(mock_base, "Prompt A"))]
}

async fn system_prompt_of_next_turn(ctx: &Ctx) -> anyhow::Result<String> {
    let text = unique("cfg-turn");
    let a = ctx.chat(Some("cfg"), &json!({"message": text})).await?;
    a.expect_status(200)?;
    let sent = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&text)))
        .context("the model call")?;
    Ok(sent
        .messages()
        .first()
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned())
}

async fn put(ctx: &Ctx, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
    let resp = ctx
        .http
        .put(ctx.url("/api/v1/config"))
        .bearer_auth(CFG_KEY)
        .json(body)
        .send()
        .await?;
    Ok((resp.status(), resp.json().await.unwrap_or(Value::Null)))
}

/// Write, reject, take effect, roll back.
pub async fn config_versions_and_rollback(ctx: &Ctx) -> anyhow::Result<()> {
    let mock_base = ctx.mock()?.base_url();
    let get = ctx.http.get(ctx.url("/api/v1/config"));
    ensure!(
        get.send().await?.status() == StatusCode::UNAUTHORIZED,
        "config without a key"
    );
    let current: Value = ctx
        .http
        .get(ctx.url("/api/v1/config"))
        .bearer_auth(CFG_KEY)
        .send()
        .await?
        .json()
        .await?;
    // Seeded outside the API (version 0) or through it (a host without a seeding hook):
    // versions count on from here.
    let v0 = current["version"].as_u64().context("version")?;
    ensure!(
        current["config"]["system_prompt"] == "Prompt A",
        "{current}"
    );
    ensure!(
        system_prompt_of_next_turn(ctx).await? == "Prompt A",
        "the seeded prompt"
    );

    // A bad document is refused with the field, and changes nothing.
    let mut bad = document(&mock_base, "Prompt X");
    bad["history_window"] = json!(1);
    let (status, body) = put(ctx, &bad).await?;
    ensure!(
        status == StatusCode::BAD_REQUEST && body["error"]["code"] == "invalid_config",
        "{status} {body}"
    );
    ensure!(
        body["error"]["field"] == "history_window",
        "the error names the field: {body}"
    );
    ensure!(
        system_prompt_of_next_turn(ctx).await? == "Prompt A",
        "a refused document changed the config"
    );

    // Good documents take effect at once, each a new version.
    let (status, body) = put(ctx, &document(&mock_base, "Prompt B")).await?;
    ensure!(
        status == StatusCode::OK && body["version"] == v0 + 1,
        "{status} {body}"
    );
    ensure!(
        system_prompt_of_next_turn(ctx).await? == "Prompt B",
        "version 1 is not in effect"
    );
    let (_, body) = put(ctx, &document(&mock_base, "Prompt C")).await?;
    ensure!(body["version"] == v0 + 2, "{body}");
    ensure!(
        system_prompt_of_next_turn(ctx).await? == "Prompt C",
        "version 2 is not in effect"
    );

    // Rollback makes an earlier document current again, as a new version.
    let resp = ctx
        .http
        .post(ctx.url("/api/v1/config/rollback"))
        .bearer_auth(CFG_KEY)
        .json(&json!({"version": v0 + 1}))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "rollback: {}",
        resp.status()
    );
    let body: Value = resp.json().await?;
    ensure!(
        body["version"] == v0 + 3 && body["restored"] == v0 + 1,
        "{body}"
    );
    ensure!(
        system_prompt_of_next_turn(ctx).await? == "Prompt B",
        "the rollback is not in effect"
    );
    let resp = ctx
        .http
        .post(ctx.url("/api/v1/config/rollback"))
        .bearer_auth(CFG_KEY)
        .json(&json!({"version": v0 + 99}))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::NOT_FOUND,
        "rolling back to a missing version: {}",
        resp.status()
    );
    let history: Value = ctx
        .http
        .get(ctx.url("/api/v1/config/versions"))
        .bearer_auth(CFG_KEY)
        .send()
        .await?
        .json()
        .await?;
    let changes: Vec<&str> = history["history"]
        .as_array()
        .context("history")?
        .iter()
        .filter_map(|h| h["change"].as_str())
        .collect();
    ensure!(
        changes.get(..3) == Some(&[format!("rollback to {}", v0 + 1).as_str(), "put", "put"][..]),
        "history: {history}"
    );

    // The deployment's admin token manages any tenant (bootstrapping one without keys).
    let resp = ctx
        .http
        .get(ctx.url("/api/v1/config"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Kefu-Tenant", "offline-demo")
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "admin token: {}",
        resp.status()
    );
    let body: Value = resp.json().await?;
    ensure!(body["builtin_default"] == true, "{body}");
    Ok(())
}
