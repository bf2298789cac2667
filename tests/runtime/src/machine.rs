//! The engine's chat-turn machine as each host drives it: a rule whose only action is a tag
//! tags (and the model still answers), a replay gives the same record on Workers and on
//! Spin, and a replay is admitted by the tenant's quotas like a live turn.

use std::sync::Mutex;

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Answer, Ctx};

/// The tenant key of `machine-replay`.
pub const MACHINE_KEY: &str = "kf-machine-replay.Kefu0Machine0Test0Key1";
/// The tenant key of `machine-quota`.
pub const QUOTA_KEY: &str = "kf-machine-quota.Kefu0Machine0Quota0Key1";

/// The tenants these scenarios need, for a mock at `mock_base` (`http://127.0.0.1:N/v1`).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let provider = json!({"kind": "openai_compatible", "base_url": mock_base});
    vec![
        (
            "machine-replay".into(),
            json!({
                "system_prompt": "You are the machine tenant's assistant.",
                "providers": {"p": provider},
                "routes": {"default": {"targets": [{"provider": "p", "model": MOCK_MODEL}]}},
                "rules": [
                    {"id": "refund", "when": {"keywords": ["refund"]},
                     "then": {"reply": "Refunds take 5 to 7 business days.", "tag": "billing"}},
                    {"id": "vip", "when": {"keywords": ["vip"]}, "then": {"tag": "vip"}}
                ],
                "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(MACHINE_KEY)}],
            }),
        ),
        (
            "machine-quota".into(),
            json!({
                "providers": {"p": provider},
                "routes": {"default": {"targets": [{"provider": "p", "model": MOCK_MODEL}]}},
                "quotas": {"daily_requests": 3},
                "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(QUOTA_KEY)}],
            }),
        ),
    ]
}

async fn replay(ctx: &Ctx, id: &str, key: &str) -> anyhow::Result<Answer> {
    let req = ctx
        .http
        .post(ctx.url(&format!("/api/v1/conversations/{id}/replay")))
        .bearer_auth(key)
        .json(&json!({}));
    Answer::read(req.send().await?).await
}

/// A rule whose only action is a tag tags the conversation, and the model still answers.
pub async fn tag_only_rule_tags(ctx: &Ctx) -> anyhow::Result<()> {
    let answer = ctx
        .chat(
            Some("machine-replay"),
            &json!({"message": "I am a VIP customer, where is my parcel?"}),
        )
        .await?;
    answer.expect_status(200)?;
    ensure!(
        answer.json["responder"] == "provider",
        "the model answers: {}",
        answer.text
    );
    let id = answer.json["conversation_id"].as_str().context("id")?;
    let view = ctx
        .http
        .get(ctx.url(&format!("/api/v1/conversations/{id}")))
        .bearer_auth(MACHINE_KEY)
        .send()
        .await?;
    let view = Answer::read(view).await?;
    view.expect_status(200)?;
    ensure!(
        view.json["tags"] == json!(["vip"]),
        "the tag-only rule tagged the conversation: {}",
        view.text
    );
    // Another message without the keyword adds nothing.
    ctx.chat(
        Some("machine-replay"),
        &json!({"message": "thanks", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    Ok(())
}

/// What a replay's turns say, without what differs between runs (times, latencies).
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !(k.ends_with("_ms")
                        || k.as_str() == "at"
                        || k.as_str() == "local_time"
                        || k.as_str() == "duration"
                        || k.as_str() == "conversation_id")
                })
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// The first runtime's normalized replay, for the second to compare with.
static FIRST_REPLAY: Mutex<Option<Value>> = Mutex::new(None);

/// The same conversation replayed gives the same turns and records on both runtimes (the
/// replay is the engine's machine on a scratch copy, whichever host drives it): the first
/// runtime's answer is kept, the second's must equal it.
pub async fn replay_matches_across_runtimes(ctx: &Ctx) -> anyhow::Result<()> {
    let first = ctx
        .chat(
            Some("machine-replay"),
            &json!({"message": "What are your opening hours?"}),
        )
        .await?;
    first.expect_status(200)?;
    let id = first.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    ctx.chat(
        Some("machine-replay"),
        &json!({"message": "I want a refund", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    ctx.chat(
        Some("machine-replay"),
        &json!({"message": "And I am a VIP", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    let replayed = replay(ctx, &id, MACHINE_KEY).await?;
    replayed.expect_status(200)?;
    let turns = replayed.json["turns"].as_array().context("turns")?;
    ensure!(turns.len() == 3, "three turns: {}", replayed.text);
    let responders: Vec<&str> = turns
        .iter()
        .map(|t| t["new"]["responder"].as_str().unwrap_or("?"))
        .collect();
    ensure!(
        responders == ["provider", "rule", "provider"],
        "responders: {responders:?}"
    );
    ensure!(
        turns[2]["new"]["record"]["rules"][0]["actions"] == json!(["tag:vip"]),
        "the tag-only rule is in the record: {}",
        turns[2]
    );
    let mine = normalized(&replayed.json);
    let mut first_seen = FIRST_REPLAY.lock().expect("not poisoned");
    match first_seen.as_ref() {
        None => *first_seen = Some(mine),
        Some(theirs) => ensure!(
            *theirs == mine,
            "the replay differs between the runtimes:\n{theirs:#}\n---\n{mine:#}"
        ),
    }
    Ok(())
}

/// A replay is admitted by the tenant's quotas like a live turn: it counts against them,
/// and where they refuse it stops and says so, with the stable code.
pub async fn replay_is_admitted_by_quotas(ctx: &Ctx) -> anyhow::Result<()> {
    // Two live turns use two of the three daily requests.
    let first = ctx
        .chat(Some("machine-quota"), &json!({"message": "first question"}))
        .await?;
    first.expect_status(200)?;
    let id = first.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    ctx.chat(
        Some("machine-quota"),
        &json!({"message": "second question", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    // The replay's first turn takes the third; its second is refused.
    let replayed = replay(ctx, &id, QUOTA_KEY).await?;
    replayed.expect_status(200)?;
    let r = &replayed.json;
    ensure!(
        r["turns"].as_array().map(Vec::len) == Some(1)
            && r["turns"][0]["new"]["responder"] == "provider",
        "one replayed turn admitted: {}",
        replayed.text
    );
    ensure!(
        r["stopped"]["seq"] == r["turns"][0]["seq"].as_u64().map_or(0, |s| s + 2)
            && r["stopped"]["error"]["code"] == "quota_exceeded",
        "the replay stopped at the second turn with quota_exceeded: {}",
        replayed.text
    );
    // The live path is refused the same way now.
    let refused = ctx
        .chat(
            Some("machine-quota"),
            &json!({"message": "third question", "conversation_id": id}),
        )
        .await?;
    refused.expect_status(429)?;
    ensure!(
        refused.json["error"]["code"] == "quota_exceeded",
        "{}",
        refused.text
    );
    Ok(())
}
