//! Draft, test, publish: an operator's draft configuration is tested against the tenant's
//! test conversations through the real chat pipeline (the draft's provider: the mock),
//! and publishing is refused while a case fails — unless overridden with a reason, which
//! the version history keeps. Agents can do none of it. The draft's knowledge sources:
//! staged beside the live ones, searched by the suite and by nobody else until published.

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

/// The tenant key of `draft-kb`.
pub const DRAFT_KB_KEY: &str = "kf-draft-kb.Kefu0DraftKb0Test0Key00001";

fn kb_document(mock_base: &str) -> Value {
    json!({
        "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": MOCK_MODEL},
        "knowledge": {"enabled": true, "top_k": 3},
        "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(DRAFT_KB_KEY)}],
    })
}

/// The tenants these scenarios need.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    vec![
        ("draft".into(), document(mock_base, "Live prompt")),
        ("draft-kb".into(), kb_document(mock_base)),
    ]
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
    live_of(ctx, DRAFT_KEY).await
}

async fn live_of(ctx: &Ctx, key: &str) -> anyhow::Result<Value> {
    let a = call(ctx, reqwest::Method::GET, "/api/v1/config", key, None).await?;
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

/// A word no other page or run has: letters only, so every tokenizer keeps it whole.
fn word(label: &str) -> String {
    let tail: String = unique(label)
        .chars()
        .skip(label.len() + 1)
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from(b'g' + d as u8),
            None => c,
        })
        .collect();
    format!("{label}{tail}")
}

fn source(id: &str, text: &str) -> Value {
    json!({"id": id, "title": id, "kind": "text", "body": text})
}

/// The source ids `GET /api/v1/knowledge/search` finds for `q`: the live knowledge base.
async fn live_search(ctx: &Ctx, q: &str) -> anyhow::Result<Vec<String>> {
    let got = Answer::read(
        ctx.http
            .get(ctx.url("/api/v1/knowledge/search"))
            .query(&[("q", q)])
            .bearer_auth(DRAFT_KB_KEY)
            .send()
            .await?,
    )
    .await?;
    got.expect_status(200)?;
    Ok(got.json["results"]
        .as_array()
        .context("results")?
        .iter()
        .filter_map(|r| r["chunk"]["source_id"].as_str().map(str::to_owned))
        .collect())
}

/// The source ids whose chunks a suite case's turns put before the model.
fn case_sources(suite: &Value, id: &str) -> Vec<String> {
    suite["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["id"] == id)
        .flat_map(|c| c["turns"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| {
            t["record"]["knowledge"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|k| k["source_id"].as_str().map(str::to_owned))
        .collect()
}

/// Draft knowledge sources: a staged source answers the suite's case (which fails without
/// it) while the live search and a visitor's chat never see it; a staged removal hides a
/// live source from the suite; bad input is refused with nothing staged; publishing a
/// draft that only stages sources makes them live, removes the removed one, clears the
/// staged set and records the sources in the history. Agents may do none of it.
pub async fn draft_knowledge_sources_staged_tested_published(ctx: &Ctx) -> anyhow::Result<()> {
    use reqwest::Method;
    let key = DRAFT_KB_KEY;
    let staged_path = |id: &str| format!("/api/v1/config/draft/knowledge/sources/{id}");
    let drones = word("dronz");
    let returns = word("retz");
    let fact = word("factz");
    let drones_id = unique("drones").replace('-', "_");
    let returns_id = unique("returns").replace('-', "_");
    call(
        ctx,
        Method::PUT,
        &format!("/api/v1/knowledge/sources/{returns_id}"),
        key,
        Some(&source(
            &returns_id,
            &format!("Returns of {returns} items are accepted within thirty days."),
        )),
    )
    .await?
    .expect_status(200)?;
    let cases = [
        (
            "drone",
            json!({"messages": [format!("How does {drones} delivery work?")],
                   "expect": [{"kind": "answered_from", "source": drones_id}]}),
        ),
        (
            "returns",
            json!({"messages": [format!("Can I send back {returns} items?")],
                   "expect": [{"kind": "never_mentions", "text": "no such text anywhere"}]}),
        ),
    ];
    for (id, case) in &cases {
        call(
            ctx,
            Method::PUT,
            &format!("/api/v1/config/tests/{id}"),
            key,
            Some(case),
        )
        .await?
        .expect_status(200)?;
    }
    // No draft configuration and nothing staged: no draft to test.
    call(ctx, Method::POST, "/api/v1/config/draft/test", key, None)
        .await?
        .expect_error(404, "draft_not_found")?;

    // Bad input: a JSON error with a stable code, nothing staged.
    let refusals: [(Method, String, Option<Value>, u16, &str); 5] = [
        (
            Method::PUT,
            staged_path("nope"),
            Some(json!({"remove": true})),
            404,
            "source_not_found",
        ),
        (
            Method::PUT,
            staged_path(&returns_id),
            Some(json!({"remove": "yes"})),
            400,
            "invalid_field",
        ),
        (
            Method::PUT,
            staged_path(&drones_id),
            Some(source("other-id", "text")),
            400,
            "invalid_source",
        ),
        (
            Method::PUT,
            staged_path(&drones_id),
            Some(json!({"id": drones_id, "kind": "pdf", "body": "x"})),
            400,
            "invalid_source",
        ),
        (
            Method::DELETE,
            staged_path(&drones_id),
            None,
            404,
            "staged_source_not_found",
        ),
    ];
    for (method, path, body, status, code) in &refusals {
        call(ctx, method.clone(), path, key, body.as_ref())
            .await?
            .expect_error(*status, code)
            .with_context(|| format!("{method} {path}"))?;
    }
    let listed = call(
        ctx,
        Method::GET,
        "/api/v1/config/draft/knowledge/sources",
        key,
        None,
    )
    .await?;
    listed.expect_status(200)?;
    ensure!(listed.json["sources"] == json!([]), "{}", listed.text);

    // A draft that stages only the removal of a live source: the suite runs under the live
    // configuration, the removed source is hidden from it, and the staged-source case fails.
    let removal = call(
        ctx,
        Method::PUT,
        &staged_path(&returns_id),
        key,
        Some(&json!({"remove": true})),
    )
    .await?;
    removal.expect_status(200)?;
    ensure!(removal.json["staged"] == "remove", "{}", removal.text);
    let run = call(ctx, Method::POST, "/api/v1/config/draft/test", key, None).await?;
    run.expect_status(200)?;
    ensure!(run.json["failing"] == json!(["drone"]), "{}", run.text);
    ensure!(
        !case_sources(&run.json, "returns").contains(&returns_id),
        "a staged removal did not hide the live source from the suite: {}",
        run.text
    );
    ensure!(
        live_search(ctx, &format!("send back {returns} items"))
            .await?
            .contains(&returns_id),
        "the live search lost a source whose removal is only staged"
    );

    // Staging the source the case needs: the suite finds it, nobody else does.
    let staged = call(
        ctx,
        Method::PUT,
        &staged_path(&drones_id),
        key,
        Some(&source(
            &drones_id,
            &format!("{drones} parcels are delivered by drone within {fact} minutes."),
        )),
    )
    .await?;
    staged.expect_status(200)?;
    ensure!(
        staged.json["staged"] == "put" && staged.json["chunks"] == 1,
        "{}",
        staged.text
    );
    let listed = call(
        ctx,
        Method::GET,
        "/api/v1/config/draft/knowledge/sources",
        key,
        None,
    )
    .await?;
    let changes: Vec<(String, String, bool)> = listed.json["sources"]
        .as_array()
        .context("sources")?
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                s["change"].as_str().unwrap_or_default().to_owned(),
                s["live"] == true,
            )
        })
        .collect();
    let mut want = vec![
        (drones_id.clone(), "put".to_owned(), false),
        (returns_id.clone(), "remove".to_owned(), true),
    ];
    want.sort();
    ensure!(changes == want, "{}", listed.text);
    let run = call(ctx, Method::POST, "/api/v1/config/draft/test", key, None).await?;
    run.expect_status(200)?;
    ensure!(run.json["passed"] == true, "{}", run.text);
    ensure!(
        !live_search(ctx, &format!("{drones} delivery"))
            .await?
            .contains(&drones_id),
        "the live search found a staged source"
    );
    let question = format!("How is a {drones} parcel delivered?");
    ctx.request(Method::POST, "/api/v1/chat", Some("draft-kb"))
        .json(&json!({"message": question}))
        .send()
        .await?
        .error_for_status()?;
    let sent = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&question)))
        .context("the visitor's question reached the model")?;
    ensure!(
        !serde_json::to_string(sent.messages())?.contains(&fact),
        "a visitor's turn saw a staged source"
    );

    // Dropping a staged change, then staging it again.
    let dropped = call(ctx, Method::DELETE, &staged_path(&drones_id), key, None).await?;
    dropped.expect_status(200)?;
    let listed = call(
        ctx,
        Method::GET,
        "/api/v1/config/draft/knowledge/sources",
        key,
        None,
    )
    .await?;
    ensure!(
        listed.json["sources"].as_array().map(Vec::len) == Some(1),
        "{}",
        listed.text
    );
    call(
        ctx,
        Method::PUT,
        &staged_path(&drones_id),
        key,
        Some(&source(
            &drones_id,
            &format!("{drones} parcels are delivered by drone within {fact} minutes."),
        )),
    )
    .await?
    .expect_status(200)?;

    // An agent can do none of it.
    let agent = ctx
        .agent_token(key, &json!({"agent": "ana", "name": "Ana"}))
        .await?;
    let attempts: [(Method, String, Option<Value>); 4] = [
        (
            Method::GET,
            "/api/v1/config/draft/knowledge/sources".into(),
            None,
        ),
        (
            Method::PUT,
            staged_path("agent-src"),
            Some(source("agent-src", "An agent's page.")),
        ),
        (
            Method::PUT,
            staged_path(&returns_id),
            Some(json!({"remove": true})),
        ),
        (Method::DELETE, staged_path(&drones_id), None),
    ];
    for (method, path, body) in &attempts {
        call(ctx, method.clone(), path, &agent, body.as_ref())
            .await?
            .expect_error(403, "operator_only")
            .with_context(|| format!("{method} {path}"))?;
    }

    // Publishing: the staged source goes live, the removed one goes, the set is cleared,
    // the configuration stays what it was and the history names the sources.
    let before = live_of(ctx, key).await?;
    let published = call(ctx, Method::POST, "/api/v1/config/draft/publish", key, None).await?;
    published.expect_status(200)?;
    let mut want = vec![
        json!({"id": drones_id, "change": "put"}),
        json!({"id": returns_id, "change": "remove"}),
    ];
    want.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_owned());
    ensure!(
        published.json["sources"] == json!(want),
        "{}",
        published.text
    );
    let history = call(ctx, Method::GET, "/api/v1/config/versions", key, None).await?;
    let entry = &history.json["history"][0];
    ensure!(
        entry["version"] == published.json["version"]
            && entry["publication"]["sources"] == json!(want)
            && entry["change"] == "publish draft, 2 knowledge sources",
        "{}",
        history.text
    );
    let after = live_of(ctx, key).await?;
    ensure!(after["config"] == before["config"], "{after}");
    ensure!(
        live_search(ctx, &format!("{drones} delivery"))
            .await?
            .contains(&drones_id),
        "the published source is not live"
    );
    ensure!(
        !live_search(ctx, &format!("send back {returns} items"))
            .await?
            .contains(&returns_id),
        "the source removed by the draft is still live"
    );
    let listed = call(
        ctx,
        Method::GET,
        "/api/v1/config/draft/knowledge/sources",
        key,
        None,
    )
    .await?;
    ensure!(listed.json["sources"] == json!([]), "{}", listed.text);
    call(
        ctx,
        Method::DELETE,
        &format!("/api/v1/knowledge/sources/{returns_id}"),
        key,
        None,
    )
    .await?
    .expect_error(404, "source_not_found")?;
    Ok(())
}
