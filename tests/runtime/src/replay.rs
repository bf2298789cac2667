//! The replay/debug console's API: each visitor turn's record (the rule that matched, the
//! knowledge chunks with scores, the exact prompt, every attempt, the state changes), a
//! replay under another model that reaches the provider with that model and changes
//! nothing, and the export.

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Answer, Ctx, message_text, unique};

/// The tenant key of `replay`.
pub const REPLAY_KEY: &str = "kf-replay.Kefu0Replay0Test0Key00001";

/// The tenants these scenarios need, for a mock at `mock_base` (`http://127.0.0.1:N/v1`).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let origin = mock_base.trim_end_matches('/').trim_end_matches("/v1");
    let provider = |profile: &str| {
        let base = if profile.is_empty() {
            format!("{origin}/v1")
        } else {
            format!("{origin}/p/{profile}/v1")
        };
        json!({"kind": "openai_compatible", "base_url": base})
    };
    vec![(
        "replay".into(),
        json!({
            "system_prompt": "You are the replay tenant's assistant.",
            "providers": {"p1": provider("status=500"), "p2": provider("")},
            "routes": {"default": {"targets": [
                {"provider": "p1", "model": MOCK_MODEL}, {"provider": "p2", "model": MOCK_MODEL}]}},
            "retry": {"attempts_per_target": 1},
            "breaker": {"consecutive_failures": 1000, "min_requests": 64, "window": 64},
            "rules": [{"id": "refund-policy", "when": {"keywords": ["refund"]},
                       "then": {"reply": "Refunds take 5 to 7 business days.", "tag": "billing"}}],
            "knowledge": {"enabled": true, "top_k": 3},
            "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(REPLAY_KEY)}],
        }),
    )]
}

async fn get(ctx: &Ctx, path: &str, key: Option<&str>) -> anyhow::Result<Answer> {
    let mut req = ctx.http.get(ctx.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    Answer::read(req.send().await?).await
}

async fn replay(ctx: &Ctx, id: &str, body: &Value, key: Option<&str>) -> anyhow::Result<Answer> {
    let mut req = ctx
        .http
        .post(ctx.url(&format!("/api/v1/conversations/{id}/replay")))
        .json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    Answer::read(req.send().await?).await
}

/// A model turn (grounded, falling back from a failing primary) and a rule turn are
/// recorded with what they decided, saw and sent; a replay under another model reaches the
/// mock with that model and leaves the conversation as it was; the export carries both.
pub async fn replay_console_records_and_replays(ctx: &Ctx) -> anyhow::Result<()> {
    let mock = ctx
        .mock
        .as_ref()
        .context("this scenario reads the mock's log")?;
    let source = json!({"id": "shipping", "title": "Shipping FAQ", "kind": "faq_json", "body": json!([
        {"question": "How long does shipping take?", "answer": "Parcels arrive within 3 business days in the EU."},
        {"question": "Do you ship to Canada?", "answer": "Yes, to Canada in 7 to 10 days."},
    ]).to_string()});
    let put = ctx
        .http
        .put(ctx.url("/api/v1/knowledge/sources/shipping"))
        .bearer_auth(REPLAY_KEY)
        .json(&source)
        .send()
        .await?;
    ensure!(put.status() == StatusCode::OK, "ingest: {}", put.status());

    // Turn 1: the model, grounded in the FAQ; p1 fails, p2 answers.
    let question = format!("How long does shipping take? {}", unique("ship"));
    let first = ctx
        .chat(Some("replay"), &json!({"message": question}))
        .await?;
    first.expect_status(200)?;
    let id = first.json["conversation_id"]
        .as_str()
        .context("conversation id")?
        .to_owned();
    let old_reply = message_text(&first.json["reply"]);
    // Turn 2: the rule answers.
    let second = ctx
        .chat(
            Some("replay"),
            &json!({"message": "I would like a refund please", "conversation_id": id}),
        )
        .await?;
    second.expect_status(200)?;

    let traces = get(
        ctx,
        &format!("/api/v1/conversations/{id}/traces"),
        Some(REPLAY_KEY),
    )
    .await?;
    traces.expect_status(200)?;
    let turns = traces.json["turns"].as_array().context("turns")?;
    ensure!(turns.len() == 2, "two turn records: {}", traces.text);
    let model_turn = &turns[0];
    ensure!(
        model_turn["seq"] == 1 && model_turn["decision"] == "model",
        "turn 1: {model_turn}"
    );
    let chunks = model_turn["knowledge"].as_array().context("knowledge")?;
    ensure!(
        chunks.iter().any(|c| c["chunk_id"] == "shipping#0"
            && c["score"].is_number()
            && c["in_prompt"] == true),
        "the FAQ chunk with its score, in the prompt: {chunks:?}"
    );
    let attempts = model_turn["attempts"].as_array().context("attempts")?;
    let seen: Vec<(&str, Option<u64>)> = attempts
        .iter()
        .map(|a| (a["target"].as_str().unwrap_or("?"), a["status"].as_u64()))
        .collect();
    ensure!(
        seen == [("p1/mock-gpt", Some(500)), ("p2/mock-gpt", Some(200))]
            && attempts[0]["outcome"]["next"] == "fallback",
        "attempts: {seen:?}"
    );
    ensure!(
        model_turn["plugins"] == json!([]),
        "plugins: {}",
        model_turn["plugins"]
    );
    // The recorded prompt is exactly what the provider that answered received.
    let prompt = &model_turn["prompt"];
    ensure!(
        prompt["target"] == "p2/mock-gpt" && prompt["truncated"] == false,
        "prompt: {prompt}"
    );
    let recorded: Value = serde_json::from_str(prompt["body"].as_str().context("prompt body")?)?;
    let received = mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.profile.is_none() && r.last_user_text().is_some_and(|t| t.contains(&question)))
        .context("the mock received turn 1")?;
    ensure!(
        received.body.as_ref() == Some(&recorded),
        "recorded prompt {recorded} != received {:?}",
        received.body
    );
    ensure!(
        prompt["body"]
            .as_str()
            .unwrap_or_default()
            .contains("3 business days"),
        "the chunk's text is in the prompt"
    );
    let rule_turn = &turns[1];
    ensure!(
        rule_turn["decision"] == "rule"
            && rule_turn["rules"][0]["id"] == "refund-policy"
            && rule_turn["rules"][0]["actions"] == json!(["reply", "tag:billing"])
            && rule_turn["attempts"] == json!([])
            && rule_turn["outcome"]["responder"] == "rule",
        "turn 2: {rule_turn}"
    );
    ensure!(
        rule_turn["state"].as_array().is_some_and(|s| s
            .iter()
            .any(|c| c["field"] == "tags" && c["after"] == json!(["billing"]))),
        "the tag is a state change: {}",
        rule_turn["state"]
    );

    // Replay under another model: the mock sees that model, the replies sit side by side.
    let before = get(
        ctx,
        &format!("/api/v1/conversations/{id}"),
        Some(REPLAY_KEY),
    )
    .await?;
    before.expect_status(200)?;
    let calls_before = mock.requests().len();
    let replayed = replay(
        ctx,
        &id,
        &json!({"model": "p2/mock-next"}),
        Some(REPLAY_KEY),
    )
    .await?;
    replayed.expect_status(200)?;
    let r = &replayed.json;
    ensure!(
        r["total_turns"] == 2 && r["truncated"] == false,
        "{}",
        replayed.text
    );
    let t1 = &r["turns"][0];
    ensure!(
        t1["seq"] == 1
            && t1["old"]["reply"].as_str() == Some(old_reply.as_str())
            && t1["new"]["responder"] == "provider"
            && t1["new"]["reply"].as_str().is_some_and(|s| !s.is_empty())
            && t1["new"]["record"]["attempts"][0]["target"] == "p2/mock-next"
            && t1["new"]["record"]["attempts"][0]["status"] == 200,
        "replayed turn 1: {t1}"
    );
    let replay_calls: Vec<_> = mock.requests().into_iter().skip(calls_before).collect();
    ensure!(
        replay_calls.len() == 1
            && replay_calls[0]
                .body
                .as_ref()
                .is_some_and(|b| b["model"] == "mock-next")
            && replay_calls[0]
                .last_user_text()
                .is_some_and(|t| t.contains(&question)),
        "the replay reached the mock once with the new model: {replay_calls:?}"
    );
    let t2 = &r["turns"][1];
    ensure!(
        t2["new"]["responder"] == "rule"
            && t2["new"]["reply"] == "Refunds take 5 to 7 business days."
            && t2["old"]["reply"] == "Refunds take 5 to 7 business days.",
        "replayed turn 2: {t2}"
    );
    let after = get(
        ctx,
        &format!("/api/v1/conversations/{id}"),
        Some(REPLAY_KEY),
    )
    .await?;
    ensure!(
        after.json["messages"] == before.json["messages"]
            && after.json["status"] == before.json["status"]
            && after.json["tags"] == before.json["tags"],
        "the replay changed the conversation: {} vs {}",
        before.text,
        after.text
    );
    let traces_after = get(
        ctx,
        &format!("/api/v1/conversations/{id}/traces"),
        Some(REPLAY_KEY),
    )
    .await?;
    ensure!(
        traces_after.json == traces.json,
        "the replay changed the stored records"
    );

    // Bad input: a stable code, nothing replayed.
    let calls = mock.requests().len();
    replay(ctx, &id, &json!({"model": "nope/x"}), Some(REPLAY_KEY))
        .await?
        .expect_error(400, "invalid_field")?;
    replay(
        ctx,
        &id,
        &json!({"config": {"history_window": 0}}),
        Some(REPLAY_KEY),
    )
    .await?
    .expect_error(400, "invalid_config")?;
    replay(ctx, &id, &json!({"max_turns": 99}), Some(REPLAY_KEY))
        .await?
        .expect_error(400, "invalid_field")?;
    let anonymous = replay(ctx, &id, &json!({}), None).await?;
    ensure!(
        anonymous.status == StatusCode::UNAUTHORIZED,
        "replay without a key: {}",
        anonymous.status
    );
    ensure!(
        mock.requests().len() == calls,
        "bad input reached a provider"
    );

    // The export: the conversation and its records, as a download.
    let export = get(
        ctx,
        &format!("/api/v1/conversations/{id}/export"),
        Some(REPLAY_KEY),
    )
    .await?;
    export.expect_status(200)?;
    let disposition = export
        .headers
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ensure!(
        disposition == format!("attachment; filename=\"kefu-conversation-{id}.json\""),
        "disposition: {disposition}"
    );
    ensure!(
        export.json["format"] == "kefu.conversation-export/1"
            && export.json["conversation"]["messages"] == before.json["messages"]
            && export.json["turns"] == traces.json["turns"],
        "export: {}",
        export.text
    );
    get(ctx, &format!("/api/v1/conversations/{id}/export"), None)
        .await?
        .expect_error(401, "unauthorized")?;
    Ok(())
}
