//! Long conversations: what leaves the history window is summarised, the summary reaches the
//! model's prompt, and the agent who takes the conversation over sees it. A tenant may let a
//! model rewrite it, on a route of its own, after the answer.

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::scenarios::{Ctx, unique};

/// A tenant with a short history window, so a few turns push the first out of it.
const TENANT: &str = "cs-summary";
/// The tenant key of `cs-summary` (its agents).
const KEY: &str = "kf-cs-summary.Kefu0Summary0Test0Key001";

/// A tenant whose summaries a model writes, every two messages out of a window of two.
const MODEL_TENANT: &str = "cs-summary-model";
/// The tenant key of `cs-summary-model`.
const MODEL_KEY: &str = "kf-cs-summary-model.Kefu0Summary0Model0Key1";
/// The mock profile the summary route's provider is reached under (a harmless directive),
/// so the summary's requests are told from the chat's.
const SUMMARY_PROFILE: &str = "seed=4242";

/// The tenants these scenarios need, for a mock at `mock_base`.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let root = mock_base.trim_end_matches("/v1");
    let summary_base = format!("{root}/p/{SUMMARY_PROFILE}/v1");
    vec![
        (
            MODEL_TENANT.into(),
            json!({
                "system_prompt": "You are the summary-model tenant's assistant.",
                "providers": {
                    "chat": {"kind": "openai_compatible", "base_url": mock_base},
                    "cheap": {"kind": "openai_compatible", "base_url": summary_base},
                },
                "routes": {
                    "default": {"targets": [{"provider": "chat", "model": crate::mock::MOCK_MODEL}]},
                    "summary": {"targets": [{"provider": "cheap", "model": crate::mock::MOCK_MODEL}]},
                },
                "history_window": 2,
                "summary": {"model": true, "route": "summary", "every": 2},
                "api_keys": [{"id": "agents", "sha256": kefu_engine::auth::hash_key(MODEL_KEY)}],
            }),
        ),
        (
            TENANT.into(),
            json!({
                "system_prompt": "You are the summary tenant's assistant.",
                "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": crate::mock::MOCK_MODEL},
                "history_window": 4,
                "api_keys": [{"id": "agents", "sha256": kefu_engine::auth::hash_key(KEY)}],
            }),
        ),
    ]
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

/// A tenant whose summaries a model writes: after the turn that pushes two messages out of
/// the window, one request reaches the summary route (and only it) with the messages that
/// left; what the model wrote (the mock echoes what it was shown) becomes the summary, masked
/// (no e-mail address), which the agent sees and the next turn's prompt carries. The
/// visitor's answers never wait for it and are the chat route's.
pub async fn long_conversation_summarised_by_model(ctx: &Ctx) -> anyhow::Result<()> {
    let mock = ctx.mock()?;
    let case = unique("case");
    let first = format!(
        "My parcel never came: order #48213 ({case}). Mail me at jane.doe@example.com please."
    );
    let opened = ctx
        .chat(Some(MODEL_TENANT), &json!({"message": first}))
        .await?;
    opened.expect_status(200)?;
    let id = opened.json["conversation_id"]
        .as_str()
        .context("conversation id")?
        .to_owned();
    let second = unique("any news");
    let answered = ctx
        .chat(
            Some(MODEL_TENANT),
            &json!({"message": second, "conversation_id": id}),
        )
        .await?;
    answered.expect_status(200)?;
    ensure!(
        answered.json["reply"]["parts"][0]["text"]
            .as_str()
            .is_some_and(|r| r.starts_with(&format!("Echo: {second}"))),
        "the chat route did not answer: {}",
        answered.text
    );

    // The rewrite runs after the answer: wait for it to be stored.
    let mut agent = None;
    for _ in 0..100 {
        let view = ctx.conversation_as_agent(MODEL_KEY, &id).await?;
        view.expect_status(200)?;
        if view.json["summary"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Summary: Echo: Summary so far:"))
        {
            agent = Some(view);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let agent = agent.context("the model's summary never reached the conversation")?;
    let text = agent.json["summary"]["text"].as_str().unwrap_or_default();
    ensure!(
        text.contains("#48213")
            && !text.contains("jane.doe@example.com")
            && text.contains("[email]"),
        "the model's summary is not the masked rewrite: {text}"
    );

    let asked: Vec<String> = mock
        .requests_for(SUMMARY_PROFILE)
        .iter()
        .filter_map(|r| r.last_user_text())
        .filter(|t| t.contains(&case))
        .collect();
    ensure!(
        asked.len() == 1,
        "expected one summary request, got {}",
        asked.len()
    );
    let shown = &asked[0];
    ensure!(
        shown.contains(&format!("Visitor: {first}"))
            && shown.contains("Messages that left the view"),
        "the summary's model was not shown what left the window: {shown}"
    );

    let third = unique("third message");
    ctx.chat(
        Some(MODEL_TENANT),
        &json!({"message": third, "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    let request = mock
        .chat_requests()
        .into_iter()
        .find(|r| r.last_user_text().as_deref() == Some(third.as_str()))
        .context("the mock never received the third turn")?;
    ensure!(
        request.profile.is_none(),
        "the chat turn went to the summary route"
    );
    let in_prompt = request
        .messages()
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .find(|t| t.starts_with("Summary of the earlier conversation"))
        .map(str::to_owned)
        .context("no summary in the third turn's prompt")?;
    ensure!(
        in_prompt.contains("Summary: Echo: Summary so far:"),
        "the prompt does not carry the model's summary: {in_prompt}"
    );
    Ok(())
}
