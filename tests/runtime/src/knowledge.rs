//! Knowledge-base scenarios: ingest FAQ and Markdown sources through the operator API,
//! measure retrieval (recall@3 on questions whose right chunk is known), ground a chat turn
//! in what was found, replace and delete sources, resolve the reply's citations (the sources
//! it cites in the answer, the stream and the transcript; markers citing nothing removed),
//! and fall back when the knowledge base has no answer (the model's `kb_no_answer` tool),
//! ending in a handoff; the questions it could not answer, grouped, answered by the
//! operator and then found.

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::scenarios::{Answer, Ctx, message_text, unique};

/// The tenant key of `kb`.
pub const KB_KEY: &str = "kf-kb.Kefu0Knowledge0Test0Key01";
/// The tenant key of `kb-hybrid` (embeddings from the mock).
pub const KB_HYBRID_KEY: &str = "kf-kb-hybrid.Kefu0Hybrid0Test0Key0001";
/// The tenant key of `kb-hybrid-down` (its embedding model is unreachable).
pub const KB_HYBRID_DOWN_KEY: &str = "kf-kb-hybrid-down.Kefu0Down0Test0Key01";

/// The tenant key of `kb-cite`.
pub const KB_CITE_KEY: &str = "kf-kb-cite.Kefu0Citations0Test0Key1";

/// The tenant key of `kb-noanswer`.
pub const KB_NOANSWER_KEY: &str = "kf-kb-noanswer.Kefu0NoAnswer0Test0Key1";

/// The tenant key of `kb-unanswered` (its model never finds the answer).
pub const KB_UNANSWERED_KEY: &str = "kf-kb-unanswered.Kefu0Unanswered0Key01";

/// The tenants these scenarios need, for a mock at `mock_base` (`http://127.0.0.1:N/v1`).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let origin = mock_base.trim_end_matches("/v1");
    let model = crate::mock::MOCK_MODEL;
    let hybrid = |key: &str, embed_base: &str| {
        json!({
            "providers": {
                "mock": {"kind": "openai_compatible", "base_url": mock_base},
                "embedder": {"kind": "openai_compatible", "base_url": embed_base},
            },
            "routes": {"default": {"targets": [{"provider": "mock", "model": model}]}},
            "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(key)}],
            "knowledge": {"enabled": true, "top_k": 3,
                "embeddings": {"provider": "embedder", "model": "mock-embed"}},
        })
    };
    vec![
        ("kb-hybrid".into(), hybrid(KB_HYBRID_KEY, mock_base)),
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        (
            "kb-hybrid-down".into(),
            hybrid(KB_HYBRID_DOWN_KEY, "http://127.0.0.1:9/v1"),
        ),
        (
            "kb".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": model},
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(KB_KEY)}],
                "knowledge": {"enabled": true, "top_k": 3,
                    "synonyms": [{"term": "uni", "synonyms": ["university"]}]},
            }),
        ),
        (
            "kb-cite".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": model},
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(KB_CITE_KEY)}],
                "knowledge": {"enabled": true, "top_k": 3},
            }),
        ),
        (
            "kb-unanswered".into(),
            json!({
                "provider": {"kind": "openai_compatible", "model": model,
                    "base_url": format!("{origin}/p/tool=kb_no_answer,args=%7B%22reason%22:%22not_covered%22%7D/v1")},
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(KB_UNANSWERED_KEY)}],
                "knowledge": {"enabled": true, "top_k": 3},
            }),
        ),
        (
            "kb-noanswer".into(),
            json!({
                "provider": {"kind": "openai_compatible", "model": model,
                    "base_url": format!("{origin}/p/tool=kb_no_answer,args=%7B%22reason%22:%22not_covered%22%7D/v1")},
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(KB_NOANSWER_KEY)}],
                "knowledge": {"enabled": true},
                "handoff": {"no_answer_limit": 2},
            }),
        ),
    ]
}

/// (question, answer) pairs of the FAQ source; chunk `faq#<i>` is pair `i`.
const FAQ: &[(&str, &str)] = &[
    (
        "How long do refunds take?",
        "Refunds reach your original payment method within 5 to 7 business days after we receive the return.",
    ),
    (
        "Can I change my delivery address after ordering?",
        "You can change the shipping address until the parcel is dispatched, from the Orders page.",
    ),
    (
        "Which countries do you ship to?",
        "We ship to the EU, the UK, Switzerland, Norway, the US and Canada.",
    ),
    (
        "How do I reset my password?",
        "Use the Forgot password link on the sign-in page; the reset e-mail is valid for one hour.",
    ),
    (
        "Do you offer student discounts?",
        "Students get 15 percent off with a verified university e-mail address.",
    ),
    (
        "What payment methods do you accept?",
        "We accept Visa, Mastercard, American Express, PayPal, Apple Pay and bank transfer.",
    ),
    (
        "How can I cancel my subscription?",
        "Cancel anytime under Account, Subscription; you keep access until the end of the billing period.",
    ),
    (
        "Where is my invoice?",
        "Invoices are e-mailed after each payment and are also under Account, Billing history.",
    ),
    (
        "如何申请发票？",
        "付款成功后，发票会自动发送到你的邮箱，也可以在账户的账单记录中下载。",
    ),
    (
        "退货需要多长时间处理？",
        "我们收到退货后会在三个工作日内完成质检并处理退款。",
    ),
];

/// Visitor questions in other words, and the FAQ pair that answers each.
const PROBES: &[(&str, usize)] = &[
    ("when will I get my money back after returning an item", 0),
    ("I moved, can I update the shipping address for my order", 1),
    ("do you deliver to Canada", 2),
    ("forgot my password, how to reset it", 3),
    ("is there a discount for students", 4),
    ("can I pay with PayPal", 5),
    ("how do I cancel the subscription", 6),
    ("I need a copy of my invoice", 7),
    ("发票在哪里申请", 8),
    ("退货处理时间多久", 9),
];

async fn put_source(
    ctx: &Ctx,
    key: Option<&str>,
    source: &Value,
) -> anyhow::Result<reqwest::Response> {
    let id = source["id"].as_str().context("source id")?;
    let mut req = ctx
        .http
        .put(ctx.url(&format!("/api/v1/knowledge/sources/{id}")))
        .json(source);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    Ok(req.send().await?)
}

async fn search(ctx: &Ctx, key: &str, q: &str, k: u8) -> anyhow::Result<Vec<String>> {
    let resp = ctx
        .http
        .get(ctx.url("/api/v1/knowledge/search"))
        .query(&[("q", q), ("k", &k.to_string())])
        .bearer_auth(key)
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "search {q:?}: {}",
        resp.status()
    );
    let v: Value = resp.json().await?;
    Ok(v["results"]
        .as_array()
        .context("results")?
        .iter()
        .filter_map(|r| r["chunk"]["id"].as_str().map(str::to_owned))
        .collect())
}

fn faq_source(pairs: &[(&str, &str)]) -> Value {
    let body: Vec<Value> = pairs
        .iter()
        .map(|(q, a)| json!({"question": q, "answer": a}))
        .collect();
    json!({"id": "faq", "title": "Help center FAQ", "kind": "faq_json", "body": Value::Array(body).to_string()})
}

/// Ingest, recall@3, grounding, replace, delete.
pub async fn knowledge_ingest_search_and_ground(ctx: &Ctx) -> anyhow::Result<()> {
    let faq = faq_source(FAQ);
    ensure!(
        put_source(ctx, None, &faq).await?.status() == StatusCode::UNAUTHORIZED,
        "ingest without a key"
    );
    // Agents may search the knowledge base but not change it.
    let agent_token = ctx
        .agent_token(KB_KEY, &json!({"agent": "kim", "name": "Kim"}))
        .await?;
    let as_agent = put_source(ctx, Some(&agent_token), &faq).await?;
    ensure!(
        as_agent.status() == StatusCode::FORBIDDEN,
        "an agent token changed the knowledge base: {}",
        as_agent.status()
    );
    let bad = json!({"id": "faq", "kind": "faq_json", "body": "not json"});
    let resp = put_source(ctx, Some(KB_KEY), &bad).await?;
    ensure!(
        resp.status() == StatusCode::BAD_REQUEST,
        "a broken FAQ: {}",
        resp.status()
    );
    let resp = put_source(ctx, Some(KB_KEY), &faq).await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "ingest: {} {}",
        resp.status(),
        resp.text().await?
    );
    let guide = json!({"id": "shipping-guide", "title": "Shipping guide", "kind": "markdown",
        "body": "# Shipping\n\n## Parcel tracking\n\nEvery parcel gets a tracking number by e-mail within 24 hours of dispatch.\n\n## Customs\n\nOrders to Switzerland and Norway may incur import duties, paid by the recipient."});
    ensure!(
        put_source(ctx, Some(KB_KEY), &guide).await?.status() == StatusCode::OK,
        "markdown ingest"
    );

    // Retrieval quality on questions whose right chunk is known.
    let mut hits = 0;
    let mut misses = Vec::new();
    for (question, pair) in PROBES {
        let top = search(ctx, KB_KEY, question, 3).await?;
        if top.iter().any(|id| id == &format!("faq#{pair}")) {
            hits += 1;
        } else {
            misses.push(format!("{question:?} → {top:?}"));
        }
    }
    let recall = f64::from(hits) / PROBES.len() as f64;
    println!(
        "    knowledge recall@3: {hits}/{} = {recall:.2}",
        PROBES.len()
    );
    ensure!(recall >= 0.8, "recall@3 {recall:.2}; misses: {misses:?}");
    // What the analyzer adds, each on its own: the tenant's synonym ("uni" is in no
    // chunk), a misspelled question, and a one-character Chinese word inside `退货`.
    for (question, pair) in [
        ("uni email money off", 4),
        ("pasword resett", 3),
        ("能退吗", 9),
    ] {
        let top = search(ctx, KB_KEY, question, 3).await?;
        ensure!(
            top.iter().any(|id| id == &format!("faq#{pair}")),
            "{question:?} → {top:?}"
        );
    }

    // A chat turn is grounded in what the search found, clearly delimited.
    let question = format!("How long do refunds take? ({})", unique("kb"));
    let a = ctx.chat(Some("kb"), &json!({"message": question})).await?;
    a.expect_status(200)?;
    let sent = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&question)))
        .context("the model call")?;
    let system = sent
        .messages()
        .first()
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    ensure!(
        system.contains("<kb_chunk") && system.contains("5 to 7 business days"),
        "system prompt: {system}"
    );

    // Re-ingesting replaces; deleting removes.
    let replaced = faq_source(&[(
        "How long do refunds take?",
        "Refunds now take 3 business days via the zebracorn gateway.",
    )]);
    ensure!(
        put_source(ctx, Some(KB_KEY), &replaced).await?.status() == StatusCode::OK,
        "re-ingest"
    );
    ensure!(
        search(ctx, KB_KEY, "student discount", 3)
            .await?
            .iter()
            .all(|id| !id.starts_with("faq#")),
        "old FAQ chunks survived"
    );
    ensure!(
        !search(ctx, KB_KEY, "zebracorn", 3).await?.is_empty(),
        "the new FAQ is not searchable"
    );
    let del = |id: &str| {
        ctx.http
            .delete(ctx.url(&format!("/api/v1/knowledge/sources/{id}")))
            .bearer_auth(KB_KEY)
            .send()
    };
    ensure!(
        del("shipping-guide").await?.status() == StatusCode::OK,
        "delete"
    );
    ensure!(
        del("shipping-guide").await?.status() == StatusCode::NOT_FOUND,
        "deleting twice"
    );
    let list: Value = ctx
        .http
        .get(ctx.url("/api/v1/knowledge/sources"))
        .bearer_auth(KB_KEY)
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = list["sources"]
        .as_array()
        .context("sources")?
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    ensure!(ids == ["faq"], "sources after delete: {ids:?}");
    Ok(())
}

/// The chat reply's citations: a grounded reply citing block 1, a block 9 it was never
/// shown (the marker split across two stream deltas) and a year; the answer, the SSE `done`
/// event and the transcript carry the one real source (title, URL, heading), the unknown
/// marker is gone from the stored reply and never reached a delta, and a reply citing only
/// blocks it was never shown cites nothing.
pub async fn knowledge_citations_resolved(ctx: &Ctx) -> anyhow::Result<()> {
    let returns = json!({"id": "returns", "title": "Returns policy", "kind": "markdown",
        "url": "https://shop.example/help/returns",
        "body": "# Returns\n\n## Refund times\n\nRefunds reach your card 5 to 7 business days after the return arrives."});
    let resp = put_source(ctx, Some(KB_CITE_KEY), &returns).await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "ingest: {} {}",
        resp.status(),
        resp.text().await?
    );
    // The mock says this; `[ 9]` streams as two deltas, `[ ` and `9]. `.
    let said =
        "Refunds take 5 to 7 business days [1]. Ask us anytime [ 9]. Since [2024] 【1， 9】.";
    let kept = "Refunds take 5 to 7 business days [1]. Ask us anytime. Since [2024] 【1】.";
    let ask = |id: &str| {
        format!(
            "How long do refunds take? ({id}) [mock reply={}]",
            said.replace(' ', "_")
        )
    };
    let expect_cited = |citations: &Value, what: &str| -> anyhow::Result<()> {
        let list = citations
            .as_array()
            .with_context(|| format!("{what}: no citations"))?;
        ensure!(list.len() == 1, "{what}: {citations}");
        let c = &list[0];
        ensure!(
            c["number"] == 1
                && c["source_id"] == "returns"
                && c["title"] == "Returns policy"
                && c["url"] == "https://shop.example/help/returns"
                && c["heading"] == "Returns › Refund times"
                && c["chunk_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("returns#")),
            "{what}: {c}"
        );
        Ok(())
    };

    // The whole answer.
    let a = ctx
        .chat(Some("kb-cite"), &json!({"message": ask(&unique("cite"))}))
        .await?;
    a.expect_status(200)?;
    ensure!(message_text(&a.json["reply"]) == kept, "reply: {}", a.text);
    expect_cited(&a.json["citations"], "the answer")?;
    ensure!(
        a.json["reply"]["citations"] == a.json["citations"],
        "reply.citations: {}",
        a.text
    );
    // The transcript keeps them with the bot's message, as agents and the replay console
    // read it.
    let id = a.json["conversation_id"].as_str().context("id")?.to_owned();
    let messages = ctx.messages(Some("kb-cite"), &id).await?;
    let bot = messages
        .iter()
        .find(|m| m["role"] == "bot")
        .context("bot message")?;
    ensure!(message_text(bot) == kept, "stored: {bot}");
    expect_cited(&bot["citations"], "the transcript")?;
    let agent = ctx
        .agent_token(KB_CITE_KEY, &json!({"agent": "cit", "name": "Cit"}))
        .await?;
    let seen: Value = ctx
        .http
        .get(ctx.url(&format!("/api/v1/conversations/{id}")))
        .bearer_auth(&agent)
        .send()
        .await?
        .json()
        .await?;
    let bot = seen["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "bot"))
        .with_context(|| format!("agent's view: {seen}"))?;
    expect_cited(&bot["citations"], "the agent's view")?;

    // The stream: no delta shows the unknown marker; `done` carries the source.
    let t = ctx
        .chat_stream(Some("kb-cite"), &json!({"message": ask(&unique("cite"))}))
        .await?;
    ensure!(t.names().last() == Some(&"done"), "events: {:?}", t.names());
    let mut streamed = String::new();
    for event in t.named("delta") {
        let text = event.json()?["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        ensure!(
            !text.contains('9') || text.contains("2024"),
            "a delta showed {text:?}"
        );
        streamed.push_str(&text);
    }
    ensure!(streamed == kept, "deltas concatenate to {streamed:?}");
    let done = t.events.last().context("done")?.json()?;
    ensure!(message_text(&done["reply"]) == kept, "done: {done}");
    expect_cited(&done["citations"], "the done event")?;

    // A reply citing only blocks it was never shown cites nothing, and loses the markers.
    let hostile = ctx
        .chat(
            Some("kb-cite"),
            &json!({"message": format!("Refunds? ({}) [mock reply=Instant_refunds_[99]._Trust_me_[0,42].]", unique("cite"))}),
        )
        .await?;
    hostile.expect_status(200)?;
    ensure!(
        message_text(&hostile.json["reply"]) == "Instant refunds. Trust me.",
        "hostile reply: {}",
        hostile.text
    );
    ensure!(hostile.json["citations"] == json!([]), "{}", hostile.text);
    ensure!(
        hostile.json["reply"].get("citations").is_none(),
        "{}",
        hostile.text
    );
    Ok(())
}

/// The model says the knowledge base has no answer: the visitor is told so (and the question
/// is logged for the operator); the second time in a row the conversation goes to a human.
pub async fn knowledge_no_answer_falls_back(ctx: &Ctx) -> anyhow::Result<()> {
    let faq = faq_source(FAQ);
    ensure!(
        put_source(ctx, Some(KB_NOANSWER_KEY), &faq).await?.status() == StatusCode::OK,
        "ingest"
    );
    let first = ctx
        .chat(
            Some("kb-noanswer"),
            &json!({"message": "What is the airspeed of a laden swallow?"}),
        )
        .await?;
    first.expect_status(200)?;
    ensure!(first.json["responder"] == "no_answer", "{}", first.text);
    ensure!(
        message_text(&first.json["reply"]).contains("couldn't find"),
        "{}",
        first.text
    );
    let id = first.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let second = ctx
        .chat(
            Some("kb-noanswer"),
            &json!({"message": "And the unladen one?", "conversation_id": id}),
        )
        .await?;
    second.expect_status(200)?;
    ensure!(
        second.json["responder"] == "handoff" && second.json["status"] == "waiting_for_agent",
        "{}",
        second.text
    );
    let log: Value = ctx
        .http
        .get(ctx.url("/api/v1/knowledge/unanswered"))
        .bearer_auth(KB_NOANSWER_KEY)
        .send()
        .await?
        .json()
        .await?;
    let entries = log["unanswered"].as_array().context("unanswered")?;
    ensure!(
        entries.len() >= 2 && entries.iter().any(|e| e["reason"] == "not_covered"),
        "log: {log}"
    );
    Ok(())
}

/// A small help center whose refund answer shares no word with "Could I be recompensed?"
/// (nor does Kefu's thesaurus link them: it links "reimbursed" and "refund", so that
/// question is found by full text).
const HYBRID_FAQ: &[(&str, &str)] = &[
    (
        "How long do refunds take?",
        "Refunds reach your original payment method within 14 days.",
    ),
    (
        "Which countries do you ship to?",
        "We ship to the EU, the UK, Switzerland and Norway.",
    ),
    (
        "How do I reset my password?",
        "Use the Forgot password link on the sign-in page.",
    ),
    (
        "What payment methods do you accept?",
        "Visa, Mastercard, PayPal and bank transfer.",
    ),
    (
        "Where is my invoice?",
        "Invoices are e-mailed after each payment.",
    ),
];

/// Vector search beside full-text search: a question with no word in common with its
/// answer is found through the embeddings (the mock's model folds "recompensed" and
/// "refunds" into one concept) and grounds the chat turn; with the embedding model down,
/// ingestion still indexes the text and says why nothing was embedded, and search falls
/// back to full text.
pub async fn knowledge_hybrid_vector_search(ctx: &Ctx) -> anyhow::Result<()> {
    let mut source = faq_source(HYBRID_FAQ);
    source["id"] = json!("hybrid");
    let up = put_source(ctx, Some(KB_HYBRID_KEY), &source).await?;
    ensure!(up.status() == StatusCode::OK, "ingest: {}", up.status());
    let up: Value = up.json().await?;
    ensure!(
        up["chunks"].as_u64().is_some_and(|n| n >= 5) && up["embedded"] == up["chunks"],
        "every chunk is embedded: {up}"
    );
    let down = put_source(ctx, Some(KB_HYBRID_DOWN_KEY), &source).await?;
    ensure!(
        down.status() == StatusCode::OK,
        "ingest without embeddings: {}",
        down.status()
    );
    let down: Value = down.json().await?;
    ensure!(
        down["embedded"] == 0
            && down["embedding_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
        "a failed embedding is reported, the text still indexed: {down}"
    );

    let question = "Could I be recompensed?";
    let refund = "hybrid#0";
    let fulltext_only = search(ctx, KB_HYBRID_DOWN_KEY, question, 3).await?;
    ensure!(
        !fulltext_only.iter().any(|id| id == refund),
        "full text alone has no word to match: {fulltext_only:?}"
    );
    let hybrid = search(ctx, KB_HYBRID_KEY, question, 3).await?;
    ensure!(
        hybrid.first().map(String::as_str) == Some(refund),
        "the embeddings find the refund answer: {hybrid:?}"
    );
    // Full text still counts: a lexical question finds its chunk first.
    let lexical = search(ctx, KB_HYBRID_KEY, "reset password", 3).await?;
    ensure!(
        lexical.first().map(String::as_str) == Some("hybrid#2"),
        "{lexical:?}"
    );

    // The chat turn is grounded in the chunk only the vectors found.
    let asked = format!("{question} ({})", unique("hybrid"));
    ctx.chat(Some("kb-hybrid"), &json!({"message": asked}))
        .await?
        .expect_status(200)?;
    let sent = ctx
        .mock()?
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&asked)))
        .context("the model call")?;
    let prompt = serde_json::to_string(&sent.body).unwrap_or_default();
    ensure!(
        prompt.contains("within 14 days"),
        "the refund answer grounds the turn"
    );

    // Deleting the source removes its vectors too.
    let deleted = ctx
        .http
        .delete(ctx.url("/api/v1/knowledge/sources/hybrid"))
        .bearer_auth(KB_HYBRID_KEY)
        .send()
        .await?;
    ensure!(
        deleted.status() == StatusCode::OK,
        "delete: {}",
        deleted.status()
    );
    let gone = search(ctx, KB_HYBRID_KEY, question, 3).await?;
    ensure!(gone.is_empty(), "nothing is left to find: {gone:?}");
    Ok(())
}

/// Tenant A's key never reaches tenant B: not B's conversations (transcript, inbox,
/// actions), knowledge base, configuration or files, whatever tenant header it sends.
pub async fn tenant_keys_see_only_their_own(ctx: &Ctx) -> anyhow::Result<()> {
    const A: &str = KB_KEY; // tenant `kb`
    const B: &str = KB_HYBRID_KEY; // tenant `kb-hybrid`
    let word = unique("zanzibarquux").replace('-', "");
    let secret = json!({"id": "iso-secret", "kind": "text",
        "body": format!("The staff discount code is {word}.")});
    let put = put_source(ctx, Some(B), &secret).await?;
    ensure!(
        put.status() == StatusCode::OK,
        "B ingests: {}",
        put.status()
    );
    ensure!(
        search(ctx, B, &word, 3).await? == ["iso-secret#0"],
        "B finds its own chunk"
    );
    ensure!(
        search(ctx, A, &word, 3).await?.is_empty(),
        "A searched B's knowledge base"
    );
    let listed = ctx
        .http
        .get(ctx.url("/api/v1/knowledge/sources"))
        .bearer_auth(A)
        .header(crate::scenarios::TENANT_HEADER, "kb-hybrid")
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        !listed.contains("iso-secret"),
        "A listed B's sources: {listed}"
    );

    // Configuration: the key decides the tenant, not the header.
    let config = Answer::read(
        ctx.http
            .get(ctx.url("/api/v1/config"))
            .bearer_auth(A)
            .header(crate::scenarios::TENANT_HEADER, "kb-hybrid")
            .send()
            .await?,
    )
    .await?;
    config.expect_status(200)?;
    ensure!(
        config.json["tenant"] == "kb" && !config.text.contains("embedder"),
        "A's key read another configuration: {}",
        config.text
    );

    // Conversations: B's is invisible to A, in the transcript, the inbox and actions.
    let chat = ctx
        .chat(Some("kb-hybrid"), &json!({"message": unique("b-private")}))
        .await?;
    chat.expect_status(200)?;
    let id = chat.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    ctx.conversation_as_agent(A, &id)
        .await?
        .expect_error(404, "conversation_not_found")?;
    ctx.action(None, Some(A), &id, "claim", &json!({"agent": "mallory"}))
        .await?
        .expect_error(404, "conversation_not_found")?;
    let inbox = |key: &'static str| async move {
        anyhow::Ok(
            ctx.http
                .get(ctx.url("/api/v1/conversations?limit=200"))
                .bearer_auth(key)
                .send()
                .await?
                .text()
                .await?,
        )
    };
    // The inbox hears of a change shortly after the answer: once B's lists it, A's must not.
    let mut listed = false;
    for _ in 0..50 {
        if inbox(B).await?.contains(&id) {
            listed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(listed, "B's inbox never listed B's conversation");
    ensure!(
        !inbox(A).await?.contains(&id),
        "A's inbox lists B's conversation"
    );
    ensure!(
        ctx.conversation_as_agent(B, &id).await?.status == StatusCode::OK,
        "B reads its own conversation"
    );

    // Files: B's upload is not A's.
    let up = ctx
        .http
        .post(ctx.url("/api/v1/attachments?name=b.txt"))
        .bearer_auth(B)
        .header("content-type", "text/plain")
        .body("B's file")
        .send()
        .await?;
    let up = Answer::read(up).await?;
    up.expect_status(201)?;
    let url = up.json["url"].as_str().context("url")?;
    Answer::read(ctx.http.get(ctx.url(url)).bearer_auth(A).send().await?)
        .await?
        .expect_error(404, "attachment_not_found")?;
    ensure!(
        ctx.http
            .get(ctx.url(url))
            .bearer_auth(B)
            .send()
            .await?
            .status()
            == StatusCode::OK,
        "B reads its own file"
    );

    let deleted = ctx
        .http
        .delete(ctx.url("/api/v1/knowledge/sources/iso-secret"))
        .bearer_auth(B)
        .send()
        .await?;
    ensure!(
        deleted.status() == StatusCode::OK,
        "cleanup: {}",
        deleted.status()
    );
    Ok(())
}

/// `GET /api/v1/knowledge/unanswered/groups` with `token`.
async fn unanswered_groups(ctx: &Ctx, token: &str) -> anyhow::Result<Answer> {
    Answer::read(
        ctx.http
            .get(ctx.url("/api/v1/knowledge/unanswered/groups"))
            .bearer_auth(token)
            .send()
            .await?,
    )
    .await
}

/// `POST /api/v1/knowledge/unanswered/groups/{key}/answer` with `token`.
async fn answer_group(ctx: &Ctx, token: &str, key: &str, body: &Value) -> anyhow::Result<Answer> {
    Answer::read(
        ctx.http
            .post(ctx.url(&format!("/api/v1/knowledge/unanswered/groups/{key}/answer")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?,
    )
    .await
}

/// The unanswered loop: three visitors ask one question in other words (and one asks
/// something else); the knowledge base has no answer, so the operator sees one group asked
/// three times this week beside the other question; an agent's token or another tenant's
/// key can neither read nor answer it; the operator's answer becomes a FAQ source, the
/// group leaves the list, and a search for each of its questions finds the new entry
/// first. Bad answers are refused with nothing changed.
pub async fn knowledge_unanswered_groups_answered_then_found(ctx: &Ctx) -> anyhow::Result<()> {
    // A word of this run's own, so a host that runs the scenario again sees new groups.
    let thing = unique("zorb").replace('-', "");
    let other = unique("quux").replace('-', "");
    let asked = [
        format!("Do you ship {thing} parcels to Mars?"),
        format!("can you ship {thing} parcels to mars please"),
        format!("Do you deliver {thing} parcel to Mars"),
    ];
    let unrelated = format!("How do I change the colour of my {other} avatar?");
    for question in asked.iter().chain([&unrelated]) {
        let turn = ctx
            .chat(Some("kb-unanswered"), &json!({"message": question}))
            .await?;
        turn.expect_status(200)?;
        ensure!(turn.json["responder"] == "no_answer", "{}", turn.text);
    }

    let listed = unanswered_groups(ctx, KB_UNANSWERED_KEY).await?;
    listed.expect_status(200)?;
    let groups = listed.json["groups"].as_array().context("groups")?;
    let ours: Vec<&Value> = groups
        .iter()
        .filter(|g| g["question"].as_str().is_some_and(|q| q.contains(&thing)))
        .collect();
    ensure!(
        ours.len() == 1,
        "one group for the three wordings: {}",
        listed.text
    );
    let group = ours[0];
    ensure!(
        group["count"] == 3 && group["last_7_days"] == 3,
        "asked three times this week: {group}"
    );
    ensure!(
        group["examples"].as_array().is_some_and(|e| e.len() == 3)
            && group["conversations"]
                .as_array()
                .is_some_and(|c| c.len() == 3),
        "its wordings and conversations: {group}"
    );
    let key = group["key"].as_str().context("key")?.to_owned();
    let apart = groups
        .iter()
        .find(|g| g["question"].as_str().is_some_and(|q| q.contains(&other)))
        .with_context(|| format!("the other question is a group of its own: {}", listed.text))?;
    ensure!(
        apart["count"] == 1 && apart["key"] != key.as_str(),
        "{apart}"
    );

    // Only the operator: an agent's token is refused, another tenant's key sees its own log.
    let agent = ctx
        .agent_token(KB_UNANSWERED_KEY, &json!({"agent": "kim", "name": "Kim"}))
        .await?;
    unanswered_groups(ctx, &agent)
        .await?
        .expect_error(403, "operator_only")?;
    let answer = json!({"answer": format!("Yes: {thing} parcels reach Mars in nine days.")});
    answer_group(ctx, &agent, &key, &answer)
        .await?
        .expect_error(403, "operator_only")?;
    let foreign = Answer::read(
        ctx.http
            .get(ctx.url("/api/v1/knowledge/unanswered/groups"))
            .bearer_auth(KB_KEY)
            .header(crate::scenarios::TENANT_HEADER, "kb-unanswered")
            .send()
            .await?,
    )
    .await?;
    foreign.expect_status(200)?;
    ensure!(
        !foreign.text.contains(&thing),
        "another tenant's key read the groups: {}",
        foreign.text
    );
    answer_group(ctx, KB_KEY, &key, &answer)
        .await?
        .expect_error(404, "group_not_found")?;

    // Bad answers change nothing.
    answer_group(ctx, KB_UNANSWERED_KEY, &key, &json!({}))
        .await?
        .expect_error(400, "missing_field")?;
    answer_group(ctx, KB_UNANSWERED_KEY, &key, &json!({"answer": "  "}))
        .await?
        .expect_error(400, "invalid_field")?;
    answer_group(ctx, KB_UNANSWERED_KEY, "999999999", &answer)
        .await?
        .expect_error(404, "group_not_found")?;
    let still = unanswered_groups(ctx, KB_UNANSWERED_KEY).await?;
    ensure!(
        still.json["groups"].as_array().is_some_and(|g| g
            .iter()
            .any(|g| g["key"] == key.as_str() && g["count"] == 3)),
        "the group is still open after the refusals: {}",
        still.text
    );

    // The operator answers: a FAQ source of its own, indexed, the group closed.
    let answered = answer_group(ctx, KB_UNANSWERED_KEY, &key, &answer).await?;
    answered.expect_status(200)?;
    let source = format!("unanswered-{key}");
    ensure!(
        answered.json["source"] == source.as_str()
            && answered.json["answered"] == 3
            && answered.json["chunks"] == 1,
        "{}",
        answered.text
    );
    let after = unanswered_groups(ctx, KB_UNANSWERED_KEY).await?;
    after.expect_status(200)?;
    ensure!(
        !after.text.contains(&thing) && after.text.contains(&other),
        "the answered group left the list, the other stays: {}",
        after.text
    );
    answer_group(ctx, KB_UNANSWERED_KEY, &key, &answer)
        .await?
        .expect_error(404, "group_not_found")?;
    for question in &asked {
        let found = search(ctx, KB_UNANSWERED_KEY, question, 3).await?;
        ensure!(
            found.first() == Some(&format!("{source}#0")),
            "{question:?} finds the answer first: {found:?}"
        );
    }
    Ok(())
}
