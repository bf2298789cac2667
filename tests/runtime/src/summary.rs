//! Long conversations: what leaves the history window is summarised, the summary reaches the
//! model's prompt, and the agent who takes the conversation over sees it.

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::scenarios::{Ctx, unique};

/// A tenant with a short history window, so a few turns push the first out of it.
const TENANT: &str = "cs-summary";
/// The tenant key of `cs-summary` (its agents).
const KEY: &str = "kf-cs-summary.Kefu0Summary0Test0Key001";

/// The tenants these scenarios need, for a mock at `mock_base`.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    vec![(
        TENANT.into(),
        json!({
            "system_prompt": "You are the summary tenant's assistant.",
            "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": crate::mock::MOCK_MODEL},
            "history_window": 4,
            "api_keys": [{"id": "agents", "sha256": kefu_engine::auth::hash_key(KEY)}],
        }),
    )]
}

/// Five turns with a window of four messages: the fifth turn's prompt carries a summary with
/// the order number from the first (and not the visitor's e-mail address), and after a
/// handoff the agent's view of the conversation shows the summary; the visitor's does not.
pub async fn long_conversation_summarised(ctx: &Ctx) -> anyhow::Result<()> {
    let order = "#48213";
    let first =
        format!("My parcel never came: order {order}. Mail me at jane.doe@example.com please.");
    let opened = ctx.chat(Some(TENANT), &json!({"message": first})).await?;
    opened.expect_status(200)?;
    let id = opened.json["conversation_id"]
        .as_str()
        .context("conversation id")?
        .to_owned();
    let mut last = String::new();
    for _ in 0..4 {
        last = unique("and another thing");
        ctx.chat(
            Some(TENANT),
            &json!({"message": last, "conversation_id": id}),
        )
        .await?
        .expect_status(200)?;
    }

    let request = ctx
        .mock()?
        .chat_requests()
        .into_iter()
        .find(|r| r.last_user_text().as_deref() == Some(last.as_str()))
        .context("the mock never received the last turn")?;
    let messages = request.messages();
    let summary = messages
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .find(|t| t.starts_with("Summary of the earlier conversation"))
        .with_context(|| format!("no summary in the prompt: {messages:?}"))?;
    ensure!(
        summary.contains(order) && summary.contains("My parcel never came"),
        "the summary misses the first message: {summary}"
    );
    ensure!(
        !summary.contains("jane.doe@example.com") && summary.contains("[email]"),
        "the summary copied the address: {summary}"
    );
    ensure!(
        !messages
            .iter()
            .any(|m| m["role"] == "user" && m["content"].as_str() == Some(first.as_str())),
        "the first message is still in the window: {messages:?}"
    );

    ctx.chat(
        Some(TENANT),
        &json!({"message": "Can I talk to a human please?", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    let agent = ctx.conversation_as_agent(KEY, &id).await?;
    agent.expect_status(200)?;
    ensure!(
        agent.json["status"] == "waiting_for_agent",
        "not handed off: {}",
        agent.text
    );
    let text = agent.json["summary"]["text"].as_str().unwrap_or_default();
    ensure!(
        text.contains(order) && agent.json["summary"]["messages"].as_u64() >= Some(4),
        "the agent's view lacks the summary: {}",
        agent.text
    );
    let visitor = ctx.conversation(Some(TENANT), &id).await?;
    visitor.expect_status(200)?;
    ensure!(
        visitor.json.get("summary").is_none(),
        "the visitor's view carries the summary: {}",
        visitor.text
    );
    Ok(())
}
