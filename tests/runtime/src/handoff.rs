//! Handoff scenarios: a visitor asks for a person, the bot falls silent, an agent claims,
//! answers, leaves a note, resolves, and the visitor rates; the model hands off by itself.
//!
//! Agents authenticate with the tenant's API key (`gw-sdk`'s, from [`crate::gateway`]).

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::gateway::SDK_KEY;
use crate::scenarios::{Ctx, message_text, unique};

const TENANT: &str = "gw-sdk";

/// The customer-service tenants these scenarios need, for a mock at `mock_base`.
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    vec![
        (
            "cs-rules".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": crate::mock::MOCK_MODEL},
                "api_keys": [{"id": "runtime-tests", "sha256": kefu_engine::auth::hash_key(RULES_KEY)}],
                "rules": [
                    {"id": "refund", "priority": 10, "when": {"keywords": ["refund", "退款"]},
                     "then": {"reply": "Refunds reach your card within 5 working days.", "tag": "billing"}},
                    {"id": "legal", "priority": 20, "when": {"regex": "(?i)\\blawyers?\\b"},
                     "then": {"handoff": true, "queue": "legal"}}
                ],
                // No opening hours at all: every handoff happens "after hours".
                "business_hours": {"timezone": "Europe/Berlin", "weekly": {}},
            }),
        ),
        (
            ROSTER_TENANT.into(),
            json!({"api_keys": [{"id": "runtime-tests", "sha256": kefu_engine::auth::hash_key(ROSTER_KEY)}]}),
        ),
        (
            VERIFIED_SITE.into(),
            json!({"identity": {"secret": IDENTITY_SECRET, "required": true},
                   "api_keys": [{"id": "agents", "sha256": kefu_engine::auth::hash_key(VERIFIED_KEY)}]}),
        ),
    ]
}

/// A site that only talks to signed-in visitors (verified with an HMAC of their id).
pub const VERIFIED_SITE: &str = "verified-site";
const IDENTITY_SECRET: &str = "a-random-identity-secret-for-the-runtime-tests";
/// The tenant key of the verified site (its agents).
const VERIFIED_KEY: &str = "kf-verified-site.Kefu0Verified0Test0Key1";

/// A tenant that keeps a roster of its agents.
const ROSTER_TENANT: &str = "cs-roster";
/// The tenant key of `cs-roster`.
const ROSTER_KEY: &str = "kf-cs-roster.Kefu0Roster0Test0Key00001";

/// The tenant key of `cs-rules`.
pub const RULES_KEY: &str = "kf-cs-rules.Kefu0Rules0Test0Key000001";

fn roles(conversation: &Value) -> Vec<String> {
    conversation["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["role"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The whole path, bot → waiting → with an agent → resolved → rated → reopened.
pub async fn handoff_end_to_end(ctx: &Ctx) -> anyhow::Result<()> {
    let first = ctx
        .chat(Some(TENANT), &json!({"message": unique("hello")}))
        .await?;
    first.expect_status(200)?;
    let id = first.json["conversation_id"]
        .as_str()
        .context("conversation id")?
        .to_owned();

    let asked = ctx
        .chat(
            Some(TENANT),
            &json!({"message": "Can I talk to a human please?", "conversation_id": id}),
        )
        .await?;
    asked.expect_status(200)?;
    ensure!(
        asked.json["responder"] == "handoff" && asked.json["status"] == "waiting_for_agent",
        "{}",
        asked.text
    );
    ensure!(
        asked.json["reply"]["role"] == "system",
        "the visitor sees a notice: {}",
        asked.text
    );

    // The bot is silent now: the message is stored, no model is asked.
    let waiting_text = unique("still-there");
    let silent = ctx
        .chat(
            Some(TENANT),
            &json!({"message": waiting_text, "conversation_id": id}),
        )
        .await?;
    silent.expect_status(200)?;
    ensure!(
        silent.json["reply"].is_null() && silent.json["responder"] == "none",
        "{}",
        silent.text
    );
    let asked_model = ctx.mock()?.model_requests().iter().any(|r| {
        r.last_user_text()
            .is_some_and(|t| t.contains(&waiting_text))
    });
    ensure!(!asked_model, "the bot called the model after the handoff");
    let streamed = ctx
        .chat_stream(
            Some(TENANT),
            &json!({"message": unique("stream-wait"), "conversation_id": id, "stream": true}),
        )
        .await?;
    let last = streamed.events.last().context("events")?;
    ensure!(
        last.event == "done" && last.json()?["responder"] == "none",
        "stream while waiting: {:?}",
        streamed.events
    );

    // Agents need the tenant key.
    ctx.action(
        Some(TENANT),
        None,
        &id,
        "claim",
        &json!({"agent": "alex", "name": "Alex"}),
    )
    .await?
    .expect_error(401, "unauthorized")?;
    let claimed = ctx
        .action(
            None,
            Some(SDK_KEY),
            &id,
            "claim",
            &json!({"agent": "alex", "name": "Alex"}),
        )
        .await?;
    claimed.expect_status(200)?;
    ensure!(
        claimed.json["status"] == "with_agent" && claimed.json["assignee"] == "alex",
        "{}",
        claimed.text
    );

    alex_says(ctx, &id, "Hi, I'm Alex. How can I help?", false).await?;
    ctx.action(
        None,
        Some(SDK_KEY),
        &id,
        "messages",
        &json!({"agent": "sam", "text": "Gold customer", "internal": true}),
    )
    .await?
    .expect_status(200)?;
    ctx.action(
        None,
        Some(SDK_KEY),
        &id,
        "messages",
        &json!({"agent": "sam", "text": "I'll take over"}),
    )
    .await?
    .expect_error(409, "not_assignee")?;
    ctx.action(
        None,
        Some(SDK_KEY),
        &id,
        "messages",
        &json!({"agent": "alex", "text": " "}),
    )
    .await?
    .expect_error(400, "invalid_field")?;

    let visitor_view = ctx.conversation(Some(TENANT), &id).await?;
    visitor_view.expect_status(200)?;
    let visible = roles(&visitor_view.json);
    ensure!(
        !visible.contains(&"note".to_owned()),
        "the visitor sees an internal note: {visible:?}"
    );
    ensure!(
        visible.contains(&"agent".to_owned()),
        "the agent's reply is missing: {visible:?}"
    );
    let texts: Vec<String> = visitor_view.json["messages"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(message_text)
        .collect();
    ensure!(
        texts.iter().any(|t| t.contains("Alex joined")),
        "no join notice: {texts:?}"
    );
    let agent_view = ctx.conversation_as_agent(SDK_KEY, &id).await?;
    ensure!(
        roles(&agent_view.json).contains(&"note".to_owned()),
        "agents see notes: {}",
        agent_view.text
    );

    ctx.action(Some(TENANT), None, &id, "csat", &json!({"score": 5}))
        .await?
        .expect_error(409, "invalid_state")?;
    let resolved = ctx
        .action(
            None,
            Some(SDK_KEY),
            &id,
            "resolve",
            &json!({"agent": "alex"}),
        )
        .await?;
    resolved.expect_status(200)?;
    ensure!(resolved.json["status"] == "resolved", "{}", resolved.text);
    ctx.action(Some(TENANT), None, &id, "csat", &json!({"score": 9}))
        .await?
        .expect_error(400, "invalid_field")?;
    let rated = ctx
        .action(Some(TENANT), None, &id, "csat", &json!({"score": 5}))
        .await?;
    rated.expect_status(200)?;
    ensure!(rated.json["csat"] == 5, "{}", rated.text);

    // A new visitor message reopens the conversation to the bot.
    let again = ctx
        .chat(
            Some(TENANT),
            &json!({"message": unique("one more thing"), "conversation_id": id}),
        )
        .await?;
    again.expect_status(200)?;
    ensure!(
        again.json["responder"] == "provider",
        "reopened to the bot: {}",
        again.text
    );
    Ok(())
}

/// The model hands the conversation off by calling its `handoff_to_human` tool.
pub async fn handoff_by_the_model(ctx: &Ctx) -> anyhow::Result<()> {
    let text = unique("angry");
    let a = ctx
        .chat(Some("gw-model-handoff"), &json!({"message": text}))
        .await?;
    a.expect_status(200)?;
    ensure!(
        a.json["responder"] == "handoff" && a.json["status"] == "waiting_for_agent",
        "{}",
        a.text
    );
    let sent_tools = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&text)))
        .and_then(|r| r.body)
        .map(|b| b["tools"].to_string())
        .unwrap_or_default();
    ensure!(
        sent_tools.contains("handoff_to_human"),
        "the model was not offered the tool: {sent_tools}"
    );
    Ok(())
}

/// Rules answer before the model (with their tags), a rule hands off to its queue, and a
/// handoff outside business hours says so instead of promising an agent.
pub async fn rules_and_business_hours(ctx: &Ctx) -> anyhow::Result<()> {
    let refund = ctx
        .chat(
            Some("cs-rules"),
            &json!({"message": "I would like a refund please"}),
        )
        .await?;
    refund.expect_status(200)?;
    ensure!(refund.json["responder"] == "rule", "{}", refund.text);
    ensure!(
        message_text(&refund.json["reply"]).starts_with("Refunds reach your card"),
        "{}",
        refund.text
    );
    let id = refund.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let view = ctx.conversation_as_agent(RULES_KEY, &id).await?;
    ensure!(
        view.json["tags"] == json!(["billing"]),
        "tags: {}",
        view.text
    );
    // The site is closed: before its first answer the bot says so, honestly.
    ensure!(
        roles(&view.json) == ["visitor", "system", "bot"],
        "{}",
        view.text
    );
    let closed = message_text(&view.json["messages"][1]);
    ensure!(
        closed.contains("leave your message") && !closed.contains("connecting you"),
        "the closed notice: {closed:?}"
    );

    let legal = ctx
        .chat(
            Some("cs-rules"),
            &json!({"message": "My lawyer will contact you", "conversation_id": id}),
        )
        .await?;
    legal.expect_status(200)?;
    ensure!(
        legal.json["responder"] == "handoff" && legal.json["status"] == "waiting_for_agent",
        "{}",
        legal.text
    );
    let notice = message_text(&legal.json["reply"]);
    ensure!(
        notice.contains("closed") && notice.contains("saved"),
        "the after-hours notice: {notice:?}"
    );
    ensure!(
        !notice.contains("connecting you"),
        "it promised an agent after hours: {notice:?}"
    );
    let view = ctx.conversation_as_agent(RULES_KEY, &id).await?;
    ensure!(view.json["queue"] == "legal", "queue: {}", view.text);

    let other = ctx
        .chat(
            Some("cs-rules"),
            &json!({"message": unique("how do I reset my password")}),
        )
        .await?;
    other.expect_status(200)?;
    ensure!(
        other.json["responder"] == "provider",
        "no rule matched, so the model answers: {}",
        other.text
    );
    // Said once a closed stretch, however many answers follow.
    let other_id = other.json["conversation_id"].as_str().context("id")?;
    ctx.chat(
        Some("cs-rules"),
        &json!({"message": unique("and my username?"), "conversation_id": other_id}),
    )
    .await?
    .expect_status(200)?;
    let view = ctx.conversation_as_agent(RULES_KEY, other_id).await?;
    ensure!(
        roles(&view.json) == ["visitor", "system", "bot", "visitor", "bot"],
        "{}",
        view.text
    );
    Ok(())
}

/// The agents' inbox lists conversations by status, queue and assignee, newest first.
pub async fn inbox_lists_and_filters(ctx: &Ctx) -> anyhow::Result<()> {
    let waiting = ctx
        .chat(
            Some(TENANT),
            &json!({"message": "I need to speak to a person"}),
        )
        .await?;
    waiting.expect_status(200)?;
    let waiting_id = waiting.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let bot = ctx
        .chat(Some(TENANT), &json!({"message": unique("just a question")}))
        .await?;
    bot.expect_status(200)?;
    let bot_id = bot.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let list = |query: &'static str| async move {
        let resp = ctx
            .http
            .get(ctx.url(&format!("/api/v1/conversations?{query}")))
            .bearer_auth(SDK_KEY)
            .send()
            .await?;
        ensure!(resp.status().is_success(), "inbox: {}", resp.status());
        let v: Value = resp.json().await?;
        anyhow::Ok(
            v["conversations"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["id"].as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
    };
    // The inbox is updated right after each answer: give it a moment.
    let mut found = false;
    for _ in 0..30 {
        let waiting_list = list("status=waiting_for_agent&limit=200").await?;
        if waiting_list.contains(&waiting_id) {
            ensure!(
                !waiting_list.contains(&bot_id),
                "a bot conversation listed as waiting"
            );
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(
        found,
        "the handed-off conversation never showed up as waiting"
    );
    ensure!(
        list("status=bot&limit=200").await?.contains(&bot_id),
        "the bot conversation is not listed"
    );
    let anonymous = ctx
        .http
        .get(ctx.url("/api/v1/conversations"))
        .send()
        .await?;
    ensure!(
        anonymous.status() == reqwest::StatusCode::UNAUTHORIZED,
        "inbox without a key"
    );
    Ok(())
}

/// The deployment token secret the runner binds as `KEFU_TOKEN_SECRET`.
pub const TOKEN_SECRET: &str = "kefu-test-agent-token-secret-0123";

/// Agents sign in with expiring tokens the tenant's back end mints; a token acts as its
/// agent only.
pub async fn agent_tokens(ctx: &Ctx) -> anyhow::Result<()> {
    let mint = |body: Value, key: &'static str| async move {
        let resp = ctx
            .http
            .post(ctx.url("/api/v1/agents/tokens"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        anyhow::Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
    };
    let (status, _) = mint(json!({"agent": "kim"}), "kf-gw-sdk.wrongwrongwrongwrong").await?;
    ensure!(
        status == reqwest::StatusCode::UNAUTHORIZED,
        "minting with a wrong key: {status}"
    );
    let (status, body) = mint(json!({"agent": "bad id!"}), SDK_KEY).await?;
    ensure!(
        status == reqwest::StatusCode::BAD_REQUEST && body["error"]["field"] == "agent",
        "{status} {body}"
    );
    let (status, body) = mint(
        json!({"agent": "kim", "name": "Kim", "ttl_secs": 3600}),
        SDK_KEY,
    )
    .await?;
    ensure!(status == reqwest::StatusCode::OK, "{status} {body}");
    let token = body["token"].as_str().context("token")?.to_owned();
    ensure!(token.starts_with("kfa."), "{token}");

    let waiting = ctx
        .chat(Some(TENANT), &json!({"message": "please get me a person"}))
        .await?;
    let id = waiting.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    // The token says who the agent is: no agent field needed, and another agent's is refused.
    let claimed = ctx
        .action(None, Some(&token), &id, "claim", &json!({}))
        .await?;
    claimed.expect_status(200)?;
    ensure!(claimed.json["assignee"] == "kim", "{}", claimed.text);
    let texts: Vec<String> = claimed.json["messages"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(message_text)
        .collect();
    ensure!(
        texts.iter().any(|t| t.contains("Kim joined")),
        "the token's name is shown: {texts:?}"
    );
    ctx.action(
        None,
        Some(&token),
        &id,
        "messages",
        &json!({"agent": "alex", "text": "hi"}),
    )
    .await?
    .expect_error(403, "agent_mismatch")?;
    ctx.action(
        None,
        Some(&token),
        &id,
        "messages",
        &json!({"text": "Hi, Kim here."}),
    )
    .await?
    .expect_status(200)?;
    let inbox = ctx
        .http
        .get(ctx.url("/api/v1/conversations?assignee=kim"))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(
        inbox.status().is_success(),
        "the inbox with a token: {}",
        inbox.status()
    );
    // A tampered token is refused.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    ctx.action(None, Some(&forged), &id, "resolve", &json!({}))
        .await?
        .expect_error(401, "unauthorized")?;
    ctx.action(None, Some(&token), &id, "resolve", &json!({}))
        .await?
        .expect_status(200)?;
    // A sign-in token is for conversations, not the operator's API: it cannot mint tokens
    // (for itself or another agent) or read the tenant's configuration.
    let mint = ctx
        .http
        .post(ctx.url("/api/v1/agents/tokens"))
        .bearer_auth(&token)
        .json(&json!({"agent": "boss", "name": "The Boss"}))
        .send()
        .await?;
    crate::scenarios::Answer::read(mint)
        .await?
        .expect_error(403, "operator_only")?;
    let config = ctx
        .http
        .get(ctx.url("/api/v1/config"))
        .bearer_auth(&token)
        .send()
        .await?;
    crate::scenarios::Answer::read(config)
        .await?
        .expect_error(403, "operator_only")?;
    Ok(())
}

/// A roster decides who may sign in: tokens only for listed agents, refused (each with its
/// code) once the agent is disabled or removed, or when issued before "sign out everywhere";
/// re-enabling and a fresh token bring the agent back.
pub async fn agent_roster(ctx: &Ctx) -> anyhow::Result<()> {
    let put_roster = |agents: Value| async move {
        let doc = json!({
            "api_keys": [{"id": "runtime-tests", "sha256": kefu_engine::auth::hash_key(ROSTER_KEY)}],
            "agents": agents,
        });
        let resp = ctx
            .http
            .put(ctx.url("/api/v1/config"))
            .bearer_auth(ROSTER_KEY)
            .json(&doc)
            .send()
            .await?;
        crate::scenarios::Answer::read(resp).await
    };
    let mint = |agent: &'static str| async move {
        let resp = ctx
            .http
            .post(ctx.url("/api/v1/agents/tokens"))
            .bearer_auth(ROSTER_KEY)
            .json(&json!({"agent": agent, "ttl_secs": 600}))
            .send()
            .await?;
        crate::scenarios::Answer::read(resp).await
    };
    // The agents' inbox: a call any signed-in agent may make.
    let inbox = |token: String| async move {
        let resp = ctx
            .http
            .get(ctx.url("/api/v1/conversations"))
            .bearer_auth(token)
            .send()
            .await?;
        crate::scenarios::Answer::read(resp).await
    };
    let rio = |extra: Value| {
        let mut a = json!({"id": "rio", "name": "Rio", "email": "rio@example.com"});
        if let (Some(a), Some(extra)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(extra.clone());
        }
        json!([a, {"id": "mo", "name": "Mo", "role": "supervisor"}])
    };

    // The roster is validated like the rest of the configuration, naming the field.
    put_roster(json!([{"id": "rio", "name": "Rio"}, {"id": "rio", "name": "Rio again"}]))
        .await?
        .expect_error(400, "invalid_config")?;
    let bad = put_roster(json!([{"id": "rio", "name": "Rio", "email": "not an email"}])).await?;
    ensure!(
        bad.json["error"]["field"] == "agents[0].email",
        "the field at fault: {}",
        bad.text
    );
    put_roster(rio(json!({}))).await?.expect_status(200)?;

    let minted = mint("rio").await?;
    minted.expect_status(200)?;
    let first = minted.json["token"].as_str().context("token")?.to_owned();
    inbox(first.clone()).await?.expect_status(200)?;
    // Nobody off the roster gets a token.
    let unknown = mint("stranger").await?;
    unknown.expect_error(400, "unknown_agent")?;
    ensure!(
        unknown.json["error"]["field"] == "agent",
        "{}",
        unknown.text
    );

    // Disabled: the token is refused, and no new one is minted.
    put_roster(rio(json!({"disabled": true})))
        .await?
        .expect_status(200)?;
    inbox(first.clone())
        .await?
        .expect_error(401, "agent_disabled")?;
    mint("rio").await?.expect_error(403, "agent_disabled")?;
    // Enabled again: the same token works.
    put_roster(rio(json!({"disabled": false})))
        .await?
        .expect_status(200)?;
    inbox(first.clone()).await?.expect_status(200)?;

    // Signed out everywhere, at Kefu's time (as the admin pages do it): tokens issued before
    // are refused; a new one works.
    let config = ctx
        .http
        .get(ctx.url("/api/v1/config"))
        .bearer_auth(ROSTER_KEY)
        .send()
        .await?;
    let config = crate::scenarios::Answer::read(config).await?;
    config.expect_status(200)?;
    let now_ms = config.json["server_time"]
        .as_str()
        .and_then(kefu_engine::Timestamp::from_rfc3339)
        .with_context(|| format!("server_time: {}", config.text))?
        .as_millis();
    put_roster(rio(json!({"tokens_not_before": now_ms})))
        .await?
        .expect_status(200)?;
    inbox(first.clone())
        .await?
        .expect_error(401, "token_revoked")?;
    let minted = mint("rio").await?;
    minted.expect_status(200)?;
    let second = minted.json["token"].as_str().context("token")?.to_owned();
    inbox(second.clone()).await?.expect_status(200)?;

    // Removed from the roster: refused (while others remain listed).
    put_roster(json!([{"id": "mo", "name": "Mo"}]))
        .await?
        .expect_status(200)?;
    inbox(second.clone())
        .await?
        .expect_error(401, "unknown_agent")?;
    Ok(())
}

/// Live updates over Server-Sent Events: a stream catches up from its cursor, then carries
/// every stored change (status, messages, typing) as it happens; visitors never see notes.
pub async fn live_updates_via_sse(ctx: &Ctx) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::time::Duration;

    let waiting = ctx
        .chat(Some(TENANT), &json!({"message": "a person please"}))
        .await?;
    let id = waiting.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let resp = ctx
        .http
        .get(ctx.url(&format!("/api/v1/conversations/{id}/events?after=0")))
        .header(crate::scenarios::TENANT_HEADER, TENANT)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "events: {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut parser = crate::sse::SseParser::default();
    let mut pending: std::collections::VecDeque<crate::sse::SseEvent> = Default::default();
    // The next event other than heartbeats, within 10 s.
    let mut next = async || -> anyhow::Result<crate::sse::SseEvent> {
        loop {
            if let Some(e) = pending.pop_front() {
                return Ok(e);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .context("no live update within 10 s")?
                .context("the stream ended")??;
            pending.extend(parser.push(&chunk));
        }
    };
    // Catch-up: the visitor's message and the handoff notice, then the status.
    let (first, second, status) = (next().await?, next().await?, next().await?);
    ensure!(
        first.event == "message" && second.event == "message",
        "{first:?} {second:?}"
    );
    ensure!(
        status.event == "status" && status.json()?["status"] == "waiting_for_agent",
        "{status:?}"
    );

    let claimed = ctx
        .action(
            None,
            Some(SDK_KEY),
            &id,
            "claim",
            &json!({"agent": "alex", "name": "Alex"}),
        )
        .await?;
    claimed.expect_status(200)?;
    let joined = next().await?;
    ensure!(
        joined.event == "message" && message_text(&joined.json()?).contains("Alex joined"),
        "{joined:?}"
    );
    let status = next().await?;
    ensure!(
        status.event == "status" && status.json()?["status"] == "with_agent",
        "{status:?}"
    );

    let typing = ctx
        .http
        .post(ctx.url(&format!("/api/v1/conversations/{id}/typing")))
        .bearer_auth(SDK_KEY)
        .json(&json!({"who": "agent"}))
        .send()
        .await?;
    ensure!(typing.status().is_success(), "typing: {}", typing.status());
    let t = next().await?;
    ensure!(
        t.event == "typing"
            && t.json()?["who"] == "agent"
            && t.json()?["until_ms"].as_u64().is_some(),
        "{t:?}"
    );

    alex_says(ctx, &id, "internal only", true).await?;
    alex_says(ctx, &id, "Hello from Alex", false).await?;
    let reply = next().await?;
    ensure!(reply.event == "message", "{reply:?}");
    let m = reply.json()?;
    ensure!(
        m["role"] == "agent" && message_text(&m) == "Hello from Alex",
        "the visitor's stream got {m} (a note must never reach it)"
    );

    // Reconnecting from the cursor brings nothing already seen.
    let last_seq = m["seq"].as_u64().context("seq")?;
    let resp = ctx
        .http
        .get(ctx.url(&format!("/api/v1/conversations/{id}/events")))
        .header(crate::scenarios::TENANT_HEADER, TENANT)
        .header("last-event-id", last_seq.to_string())
        .send()
        .await?;
    let mut again = resp.bytes_stream();
    let mut p2 = crate::sse::SseParser::default();
    let first_again = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .context("reconnect")?
            .context("ended")??;
        if let Some(e) = p2.push(&chunk).into_iter().next() {
            break e;
        }
    };
    ensure!(
        first_again.event == "status",
        "after the cursor only the status comes: {first_again:?}"
    );

    // An agent's console follows over SSE too, signed in with an agent token in the query
    // (`EventSource` sets no headers; the tenant key never goes in a URL), and sees the
    // internal notes the visitor's stream never carries.
    let in_url = ctx
        .http
        .get(ctx.url(&format!(
            "/api/v1/conversations/{id}/events?after=0&access_token={SDK_KEY}"
        )))
        .send()
        .await?;
    ensure!(
        in_url.status() == reqwest::StatusCode::UNAUTHORIZED,
        "a tenant key in the URL: {}",
        in_url.status()
    );
    let token = ctx
        .agent_token(
            SDK_KEY,
            &json!({"agent": "alex", "name": "Alex", "ttl_secs": 600}),
        )
        .await?;
    let resp = ctx
        .http
        .get(ctx.url(&format!(
            "/api/v1/conversations/{id}/events?after=0&access_token={token}"
        )))
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "agent events: {}",
        resp.status()
    );
    let mut agent_body = resp.bytes_stream();
    let mut p3 = crate::sse::SseParser::default();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &crate::sse::SseEvent| e.event == "status")
    {
        let chunk = tokio::time::timeout(Duration::from_secs(10), agent_body.next())
            .await
            .context("the agent's stream")?
            .context("ended")??;
        seen.extend(p3.push(&chunk));
    }
    let notes: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "message")
        .filter_map(|e| e.json().ok())
        .filter(|m| m["role"] == "note")
        .map(|m| message_text(&m))
        .collect();
    ensure!(
        notes == ["internal only"],
        "the agent's catch-up lacks the internal note: {notes:?}"
    );
    Ok(())
}

/// Live updates over a WebSocket (the Durable Object's hibernatable sockets): the same
/// catch-up and updates as the SSE stream, and typing announced over the socket itself.
pub async fn live_updates_via_websocket(ctx: &Ctx) -> anyhow::Result<()> {
    let waiting = ctx
        .chat(Some(TENANT), &json!({"message": "I need a human agent"}))
        .await?;
    let id = waiting.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    // As a browser connects: credentials in the query, since `WebSocket` sets no headers.
    let connect = |query: String| open_socket(ctx, &id, query);
    // The tenant key is never accepted in a URL; only a short-lived agent token is.
    let refused = connect(format!("after=0&access_token={SDK_KEY}")).await;
    ensure!(
        refused.is_err(),
        "a tenant key in the query opened a socket"
    );
    let mut ws = connect(format!("after=0&tenant={TENANT}")).await?;
    let (a, b, status) = (
        next_json(&mut ws).await?,
        next_json(&mut ws).await?,
        next_json(&mut ws).await?,
    );
    ensure!(
        a["event"] == "message" && b["event"] == "message",
        "{a} {b}"
    );
    ensure!(
        status["event"] == "status" && status["data"]["status"] == "waiting_for_agent",
        "{status}"
    );

    ctx.action(
        None,
        Some(SDK_KEY),
        &id,
        "claim",
        &json!({"agent": "alex", "name": "Alex"}),
    )
    .await?
    .expect_status(200)?;
    let joined = next_json(&mut ws).await?;
    ensure!(
        joined["event"] == "message" && message_text(&joined["data"]).contains("Alex joined"),
        "{joined}"
    );
    let status = next_json(&mut ws).await?;
    ensure!(status["data"]["status"] == "with_agent", "{status}");
    // Alex's console, signed in with an agent token, watches the same conversation.
    let token = ctx
        .agent_token(
            SDK_KEY,
            &json!({"agent": "alex", "name": "Alex", "ttl_secs": 600}),
        )
        .await?;
    let mut console = connect(format!("after=999&access_token={token}")).await?;
    let status = next_json(&mut console).await?;
    ensure!(status["data"]["assignee"] == "alex", "{status}");
    alex_says(ctx, &id, "note", true).await?;
    alex_says(ctx, &id, "Hi over the socket", false).await?;
    let reply = next_json(&mut ws).await?;
    ensure!(
        message_text(&reply["data"]) == "Hi over the socket",
        "a note reached the visitor's socket: {reply}"
    );
    let note = next_json(&mut console).await?;
    ensure!(
        message_text(&note["data"]) == "note",
        "the agent's socket missed the internal note: {note}"
    );
    Ok(())
}

/// Typing announced over a visitor's socket reaches everyone watching (here, the socket itself).
pub async fn typing_over_websocket(ctx: &Ctx) -> anyhow::Result<()> {
    use futures::SinkExt;

    let first = ctx
        .chat(Some(TENANT), &json!({"message": unique("typing")}))
        .await?;
    let id = first.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let mut ws = open_socket(ctx, &id, format!("after=99&tenant={TENANT}")).await?;
    ws.send(Ws::text(r#"{"type":"message","text":"hi"}"#))
        .await?;
    loop {
        let v = next_json(&mut ws)
            .await
            .context("no answer to a frame the socket cannot take")?;
        if v["event"] == "error" {
            ensure!(v["data"]["error"]["code"] == "invalid_frame", "{v}");
            break;
        }
        ensure!(
            v["event"] != "message",
            "a socket frame became a message: {v}"
        );
    }
    ws.send(Ws::text(r#"{"type":"typing"}"#)).await?;
    loop {
        let v = next_json(&mut ws).await.context("no typing update")?;
        if v["event"] == "typing" {
            ensure!(
                v["data"]["who"] == "visitor" && v["data"]["until_ms"].as_u64().is_some(),
                "{v}"
            );
            break;
        }
    }
    ws.close(None).await.ok();
    Ok(())
}

/// Alex (already the assignee) writes in the conversation: a reply, or an internal note.
async fn alex_says(ctx: &Ctx, id: &str, text: &str, internal: bool) -> anyhow::Result<()> {
    ctx.action(
        None,
        Some(SDK_KEY),
        id,
        "messages",
        &json!({"agent": "alex", "text": text, "internal": internal}),
    )
    .await?
    .expect_status(200)?;
    Ok(())
}

/// Verified visitor identity: a site that requires it refuses anonymous and forged visitors,
/// and a verified visitor's conversation takes only that visitor — nothing refused is stored.
pub async fn verified_visitor_identity(ctx: &Ctx) -> anyhow::Result<()> {
    use kefu_engine::identity::visitor_hash;
    let as_user = |id: &str| json!({"id": id, "hash": visitor_hash(IDENTITY_SECRET, id)});

    ctx.chat(Some(VERIFIED_SITE), &json!({"message": "hi"}))
        .await?
        .expect_error(401, "identity_required")?;
    ctx.chat(
        Some(VERIFIED_SITE),
        &json!({"message": "hi", "visitor": {"id": "user-42", "hash": visitor_hash("not-the-secret-not-the-secret-xx", "user-42")}}),
    )
    .await?
    .expect_error(401, "invalid_identity")?;

    let first = ctx
        .chat(
            Some(VERIFIED_SITE),
            &json!({"message": "hello, I am user 42", "visitor": as_user("user-42")}),
        )
        .await?;
    ensure!(first.status == 200, "{}", first.text);
    let id = first.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    // Reading it takes the owner's proof too (headers here; the query for EventSource).
    let read_as = |user: Option<&'static str>| {
        let mut request = ctx.request(
            reqwest::Method::GET,
            &format!("/api/v1/conversations/{id}"),
            Some(VERIFIED_SITE),
        );
        if let Some(user) = user {
            request = request
                .header("x-kefu-visitor-id", user)
                .header("x-kefu-visitor-hash", visitor_hash(IDENTITY_SECRET, user));
        }
        async move { crate::scenarios::Answer::read(request.send().await?).await }
    };
    read_as(None)
        .await?
        .expect_error(403, "conversation_not_yours")?;
    read_as(Some("user-43"))
        .await?
        .expect_error(403, "conversation_not_yours")?;
    let count = async || -> anyhow::Result<usize> {
        let answer = read_as(Some("user-42")).await?;
        ensure!(answer.status == 200, "{}", answer.text);
        Ok(answer.json["messages"].as_array().map_or(0, Vec::len))
    };
    let before = count().await?;
    ensure!(before >= 2, "the owner reads {before} messages");
    let events = ctx
        .request(
            reqwest::Method::GET,
            &format!(
                "/api/v1/conversations/{id}/events?after=0&visitor_id=user-43&visitor_hash={}",
                visitor_hash(IDENTITY_SECRET, "user-43")
            ),
            Some(VERIFIED_SITE),
        )
        .send()
        .await?;
    ensure!(
        events.status() == 403,
        "another user's live stream: {}",
        events.status()
    );
    // Nor act in it as its visitor: typing, or asking for a person, without the proof.
    let typing = ctx
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{id}/typing"),
            Some(VERIFIED_SITE),
        )
        .json(&json!({"who": "visitor"}))
        .send()
        .await?;
    crate::scenarios::Answer::read(typing)
        .await?
        .expect_error(403, "conversation_not_yours")?;
    ctx.action(Some(VERIFIED_SITE), None, &id, "handoff", &json!({}))
        .await?
        .expect_error(403, "conversation_not_yours")?;

    // Another signed-in visitor who learns the id cannot write in it.
    ctx.chat(
        Some(VERIFIED_SITE),
        &json!({"message": "let me in", "conversation_id": id, "visitor": as_user("user-43")}),
    )
    .await?
    .expect_error(403, "conversation_not_yours")?;
    ensure!(count().await? == before, "a refused message was stored");

    let again = ctx
        .chat(
            Some(VERIFIED_SITE),
            &json!({"message": "still me", "conversation_id": id, "visitor": as_user("user-42")}),
        )
        .await?;
    ensure!(again.status == 200, "{}", again.text);
    ensure!(
        count().await? > before,
        "the owner's message was not stored"
    );

    // Agents see whose conversation it is: in the transcript and in the inbox.
    let seen = ctx.conversation_as_agent(VERIFIED_KEY, &id).await?;
    ensure!(
        seen.json["visitor"] == json!({"id": "user-42", "verified": true}),
        "{}",
        seen.text
    );
    let mut listed = Value::Null;
    // The inbox is updated after the visitor's answer, a moment later.
    for _ in 0..40 {
        let inbox = crate::scenarios::Answer::read(
            ctx.request(reqwest::Method::GET, "/api/v1/conversations", None)
                .bearer_auth(VERIFIED_KEY)
                .send()
                .await?,
        )
        .await?;
        inbox.expect_status(200)?;
        if let Some(entry) = inbox.json["conversations"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["id"] == id.as_str()))
            .filter(|c| !c["visitor"].is_null())
        {
            listed = entry.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ensure!(
        listed["visitor"]["id"] == "user-42",
        "the inbox names the verified visitor: {listed}"
    );
    Ok(())
}

/// A conversation's live-update socket, opened as a browser does (`query` carries the
/// cursor and the credentials).
pub(crate) async fn open_socket(
    ctx: &Ctx,
    id: &str,
    query: String,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = ctx
        .url(&format!("/api/v1/conversations/{id}/events?{query}"))
        .replacen("http://", "ws://", 1);
    let (ws, _) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.into_client_request()?),
    )
    .await
    .context("connecting the WebSocket")??;
    Ok(ws)
}

/// The socket's next text frame as JSON, within 10 s.
async fn next_json<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: futures::Stream<Item = Result<Ws, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use futures::StreamExt;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .context("no update within 10 s")?
            .context("the socket closed")??;
        if let Ws::Text(text) = frame {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}
