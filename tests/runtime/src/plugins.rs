//! Plugins (issue 7), written once and run on both runtimes: the example plugins doing their
//! jobs in real chat turns against the mock provider (and the mock shop), and the hostile
//! test plugin (`tests/plugins/hostile`) contained — the turn answered whatever it does.

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Ctx, message_text, unique};

/// The tenants the plugin scenarios use (`mock_base`: the mock's OpenAI base URL).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let provider = json!({"kind": "openai_compatible", "base_url": mock_base, "model": MOCK_MODEL});
    let root = mock_base.trim_end_matches("/v1");
    // The mock's `host:port`, the only host a plugin is granted here.
    let mock_host = root.trim_start_matches("http://").to_owned();
    let hostile = |mode: &str| {
        json!({
            "provider": provider,
            "plugins": [{"id": "hostile", "plugin": "hostile", "budget_ms": 1500,
                         "settings": {"mode": mode, "hooks": "before_model,after_reply,call_tool"}}],
        })
    };
    vec![
        (
            "plug-pii".into(),
            json!({"provider": provider,
                   "plugins": [{"id": "pii", "plugin": "pii-redactor", "budget_ms": 2000}]}),
        ),
        (
            "plug-orders".into(),
            json!({"provider": provider,
                   "plugins": [{"id": "orders", "plugin": "order-status", "budget_ms": 3000,
                                "settings": {"api_base": format!("{root}/shop"),
                                             "api_token": crate::mock::shop::SHOP_TOKEN},
                                "grants": {"hosts": [mock_host]}}]}),
        ),
        (
            "plug-guard".into(),
            json!({"provider": provider,
                   "plugins": [{"id": "guard", "plugin": "reply-guard", "budget_ms": 2000,
                                "settings": {"topics": "refund|chargeback|退款"}}]}),
        ),
        ("plug-trap".into(), hostile("trap")),
        ("plug-huge".into(), hostile("huge")),
        ("plug-fetch".into(), hostile("fetch")),
        ("plug-loop".into(), hostile("loop")),
    ]
}

/// The last request the model got whose last user message contains `marker`.
fn model_request_with(ctx: &Ctx, marker: &str) -> anyhow::Result<crate::mock::RecordedRequest> {
    ctx.mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(marker)))
        .with_context(|| format!("the model never got a request with {marker:?}"))
}

/// The PII redactor rewrites what reaches the model; the transcript keeps the visitor's words.
pub async fn plugins_redactor_reaches_the_model_redacted(ctx: &Ctx) -> anyhow::Result<()> {
    let marker = unique("pii");
    let text = format!(
        "{marker}: I am jane.doe@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958"
    );
    let a = ctx
        .chat(Some("plug-pii"), &json!({"message": text}))
        .await?;
    a.expect_status(200)?;
    let sent = model_request_with(ctx, &marker)?
        .last_user_text()
        .unwrap_or_default();
    ensure!(
        sent.contains("[email]") && sent.contains("[card]") && sent.contains("[phone]"),
        "the model got {sent:?}"
    );
    ensure!(
        !sent.contains("jane.doe@example.com") && !sent.contains("4111"),
        "personal data reached the model: {sent:?}"
    );
    // The model answered the redacted text; the visitor's own message is stored as written.
    ensure!(
        message_text(&a.json["reply"]).contains("[email]"),
        "{}",
        a.text
    );
    ensure!(message_text(&a.json["message"]) == text, "{}", a.text);
    Ok(())
}

/// The model calls the order-status tool; the plugin asks the (mock) shop with its token;
/// the reply carries the order's status.
pub async fn plugins_order_status_tool(ctx: &Ctx) -> anyhow::Result<()> {
    let marker = unique("order");
    let text = format!(
        r#"{marker} where is my order? [mock tool=order_status args={{"order_id":"KF-1001"}}]"#
    );
    let a = ctx
        .chat(Some("plug-orders"), &json!({"message": text}))
        .await?;
    a.expect_status(200)?;
    let reply = message_text(&a.json["reply"]);
    ensure!(
        reply.starts_with("Tool result:") && reply.contains("shipped") && reply.contains("KF-1001"),
        "the reply does not carry the tool's result: {}",
        a.text
    );
    // The model was offered the tool, and the shop was asked with the plugin's token.
    let first = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&marker)))
        .context("no model request")?;
    let tools = first
        .body
        .map(|b| b["tools"].to_string())
        .unwrap_or_default();
    ensure!(tools.contains("order_status"), "tools offered: {tools}");
    let shop = ctx
        .mock()?
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.starts_with("/shop/orders/KF-1001"))
        .context("the plugin never asked the shop")?;
    ensure!(
        shop.headers.get("authorization").map(String::as_str)
            == Some(&format!("Bearer {}", crate::mock::shop::SHOP_TOKEN)),
        "{:?}",
        shop.headers
    );
    // An unknown order: the tool says so and the model can tell the visitor.
    let marker = unique("order");
    let text = format!(r#"{marker} [mock tool=order_status args={{"order_id":"KF-9999"}}]"#);
    let a = ctx
        .chat(Some("plug-orders"), &json!({"message": text}))
        .await?;
    a.expect_status(200)?;
    let reply = message_text(&a.json["reply"]);
    ensure!(
        reply.starts_with("Tool result:") && reply.contains("false"),
        "{}",
        a.text
    );
    Ok(())
}

/// The reply guard hands a conversation about a blocked topic to a human before the model
/// says anything about it.
pub async fn plugins_guard_hands_off(ctx: &Ctx) -> anyhow::Result<()> {
    let a = ctx
        .chat(
            Some("plug-guard"),
            &json!({"message": format!("{} I want a refund for my order", unique("guard"))}),
        )
        .await?;
    a.expect_status(200)?;
    ensure!(
        a.json["status"] == "waiting_for_agent",
        "the guard did not hand off: {}",
        a.text
    );
    let id = a.json["conversation_id"].as_str().context("no id")?;
    let messages = ctx.messages(Some("plug-guard"), id).await?;
    ensure!(
        !messages
            .iter()
            .any(|m| m["role"] == "bot" && message_text(m).starts_with("Echo:")),
        "the model's reply on a blocked topic reached the visitor: {messages:?}"
    );
    // Other topics pass.
    let b = ctx
        .chat(
            Some("plug-guard"),
            &json!({"message": format!("{} when do you open?", unique("guard"))}),
        )
        .await?;
    b.expect_status(200)?;
    ensure!(b.json["status"] == "bot", "{}", b.text);
    ensure!(
        message_text(&b.json["reply"]).starts_with("Echo:"),
        "{}",
        b.text
    );
    Ok(())
}

/// A plugin that traps, answers megabytes or reaches for a host it was not granted is cut
/// off (or refused) and every turn is still answered by the model.
pub async fn plugins_hostile_contained(ctx: &Ctx) -> anyhow::Result<()> {
    for tenant in ["plug-trap", "plug-huge", "plug-fetch"] {
        let marker = unique(tenant);
        let a = ctx
            .chat(Some(tenant), &json!({"message": format!("{marker} hello")}))
            .await?;
        a.expect_status(200)
            .with_context(|| format!("{tenant}: the turn was not answered"))?;
        let reply = message_text(&a.json["reply"]);
        match tenant {
            // Its rewrites are the host's denial: the plugin ran, the request never left.
            "plug-fetch" => ensure!(
                reply.contains("denied") && reply.contains("ungranted.example.net"),
                "{tenant}: {reply}"
            ),
            _ => ensure!(
                reply.starts_with("Echo:") && reply.contains(&marker),
                "{tenant}: the model's answer did not come through untouched: {reply}"
            ),
        }
        // Nothing the failed plugin said reached the model.
        let sent = model_request_with(ctx, &marker)?
            .last_user_text()
            .unwrap_or_default();
        if tenant != "plug-fetch" {
            ensure!(sent.ends_with("hello"), "{tenant}: the model got {sent:?}");
        }
    }
    Ok(())
}
