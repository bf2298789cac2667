//! Plugins (issue 7), written once and run on both runtimes: the example plugins doing their
//! jobs in real chat turns against the mock provider (and the mock shop), and the hostile
//! test plugin (`tests/plugins/hostile`) contained — the turn answered whatever it does,
//! including the attempts to leave its box (a URL that shows the check one host and the
//! fetch another, a memory bomb).

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Ctx, message_text, unique};

/// The CRM forwarder's signing secret in the tests.
const CRM_SECRET: &str = "crm-signing-secret-for-the-runtime-tests";

/// A hostile tenant's key (for reading its turns' records): keys name their tenant.
pub fn plugin_key(tenant: &str) -> String {
    format!("kf-{tenant}.Kefu0Plugins0Test0Key0001")
}

/// The tenants the plugin scenarios use (`mock_base`: the mock's OpenAI base URL).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let provider = json!({"kind": "openai_compatible", "base_url": mock_base, "model": MOCK_MODEL});
    let root = mock_base.trim_end_matches("/v1");
    // The mock's `host:port`, the only host a plugin is granted here.
    let mock_host = root.trim_start_matches("http://").to_owned();
    let mock_host = &mock_host;
    // The hostile plugin in tenant `plug-{name}`, with `settings` beside its mode and hooks.
    let hostile_with = |name: &str, mode: &str, settings: Value, grants: Value| {
        let mut all = json!({"mode": mode, "hooks": "before_model,after_reply,call_tool"});
        if let (Some(all), Some(extra)) = (all.as_object_mut(), settings.as_object()) {
            all.extend(extra.clone());
        }
        json!({
            "provider": provider,
            "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(&plugin_key(&format!("plug-{name}")))}],
            "plugins": [{"id": "hostile", "plugin": "hostile", "budget_ms": 1500,
                         "settings": all, "grants": grants}],
        })
    };
    let hostile = |mode: &str| hostile_with(mode, mode, json!({}), json!({}));
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
        (
            "plug-crm".into(),
            json!({"provider": provider,
                   "api_keys": [{"id": "ops", "sha256": kefu_engine::auth::hash_key(&plugin_key("plug-crm"))}],
                   "plugins": [{"id": "crm", "plugin": "crm-forwarder", "budget_ms": 3000,
                                "settings": {"endpoint": format!("{root}/crm/summaries"), "secret": CRM_SECRET},
                                "grants": {"hosts": [mock_host], "kv": true}}]}),
        ),
        ("plug-trap".into(), hostile("trap")),
        ("plug-huge".into(), hostile("huge")),
        ("plug-fetch".into(), hostile("fetch")),
        ("plug-loop".into(), hostile("loop")),
        // A memory bomb: far over the memory maximum, then under it but filling for ever.
        ("plug-memory".into(), hostile("memory")),
        (
            "plug-fill".into(),
            hostile_with("fill", "memory", json!({"memory_mib": "16"}), json!({})),
        ),
        // `\` is `/` to a WHATWG parser: the host is evil.net, whatever a grant of
        // `*.api.example.com` seems to match.
        (
            "plug-escape".into(),
            hostile_with(
                "escape",
                "fetch",
                json!({"fetch_url": ESCAPE_URL}),
                json!({"hosts": ["*.api.example.com"]}),
            ),
        ),
        // The legitimate path beside it: a granted host, spelled with backslashes, which
        // the hosts must fetch as the check normalized it.
        (
            "plug-reach".into(),
            hostile_with(
                "reach",
                "fetch",
                json!({"fetch_url": format!("http://{mock_host}\\shop\\orders\\{REACH_ORDER}")}),
                json!({"hosts": [mock_host]}),
            ),
        ),
    ]
}

/// The escape attempt: a grant of `*.api.example.com` and a URL whose real host is evil.net.
const ESCAPE_URL: &str = r"https://evil.net\.api.example.com/shop/orders/KF-ESCAPE";
/// The order id the legitimate fetch asks the mock shop for (unknown: it answers 401 first,
/// for want of a token, which is all the scenario needs).
const REACH_ORDER: &str = "KF-REACH";

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

/// A PDF whose text holds a visitor's e-mail address, `ann.lee@example.com`.
const CONTACT_PDF: &[u8] = include_bytes!("../../../components/engine/tests/fixtures/contact.pdf");

/// A PDF's text reaches a model that does not read PDFs (the mock speaks OpenAI's shape)
/// through the PII redactor, as the visitor's own words do: the e-mail address inside the
/// PDF never reaches the model.
pub async fn plugins_redactor_redacts_a_pdfs_text(ctx: &Ctx) -> anyhow::Result<()> {
    let up = crate::attachments::upload(
        ctx,
        Some("plug-pii"),
        None,
        "application/pdf",
        "contact.pdf",
        CONTACT_PDF.to_vec(),
    )
    .await?;
    let pdf = crate::attachments::id_of(&up)?;
    let marker = unique("pii-pdf");
    ctx.chat(
        Some("plug-pii"),
        &json!({"message": format!("{marker}: my details are attached"), "attachments": [pdf]}),
    )
    .await?
    .expect_status(200)?;
    let request = model_request_with(ctx, &marker)?;
    let sent = Value::Array(request.messages().to_vec()).to_string();
    ensure!(
        sent.contains("please write to [email]"),
        "the PDF's text, redacted, reaches the model: {sent}"
    );
    ensure!(
        !sent.contains("ann.lee@example.com"),
        "an e-mail address inside a PDF reached the model: {sent}"
    );
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
    // A plain answer, no handoff.
    ensure!(
        b.json.get("status").is_none() && message_text(&b.json["reply"]).starts_with("Echo:"),
        "{}",
        b.text
    );
    Ok(())
}

/// What Spin says of a trapped plugin (`components/spin/src/plugins.rs`): it answers a
/// plain `500`, so Kefu records a trap whose kind it does not know.
pub(crate) const SPIN_TRAP_UNSAID: &str = "which does not say how";

/// A plugin that traps, loops for ever, answers megabytes or reaches for a host it was not
/// granted is cut off (or refused) and every turn is still answered by the model.
///
/// The loop is ended by its CPU allowance (the build's meter) on both runtimes. Workers
/// names the meter's trap, so the record says `timeout`; Spin answers every trap with a
/// plain `500`, so there the record says `trap`, that Spin did not say how — and the call
/// ended long before its wall-clock budget, which only the meter can do.
pub async fn plugins_hostile_contained(ctx: &Ctx) -> anyhow::Result<()> {
    for tenant in ["plug-trap", "plug-loop", "plug-huge", "plug-fetch"] {
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
        // The turn's record says what became of each call.
        let id = a.json["conversation_id"].as_str().context("no id")?;
        let calls = turn_outcomes(ctx, tenant, id).await?;
        let expected = match tenant {
            "plug-trap" => ["trap", "trap"],
            // An endless loop is ended by its CPU allowance (the build's meter).
            "plug-loop" if ctx.spin => ["trap", "trap"],
            "plug-loop" => ["timeout", "timeout"],
            "plug-huge" => ["too_large", "too_large"],
            _ => ["ok", "ok"],
        };
        let expected = [
            ("before_model".to_owned(), expected[0].to_owned()),
            ("after_reply".to_owned(), expected[1].to_owned()),
        ];
        ensure!(
            calls == expected,
            "{tenant}: the turn's plugin calls: {calls:?}"
        );
        if ctx.spin && matches!(tenant, "plug-trap" | "plug-loop") {
            for record in turn_records(ctx, tenant, id).await? {
                let message = record["outcome"]["message"].as_str().unwrap_or_default();
                ensure!(
                    message.contains(SPIN_TRAP_UNSAID),
                    "{tenant}: a trap on Spin is recorded without a guessed kind: {record}"
                );
                // The hostile plugin's budget is 1500 ms: a loop ended well before it was
                // ended by the meter, not by Kefu's clock.
                let took = record["duration_ms"].as_u64().unwrap_or(u64::MAX);
                ensure!(
                    tenant != "plug-loop" || took < 1000,
                    "{tenant}: the loop was not ended by its CPU allowance: {record}"
                );
            }
        }
        // Nothing the failed plugin said reached the model (the fetching one's rewrite, the
        // host's denial, did: it replaced the visitor's words).
        if tenant != "plug-fetch" {
            let sent = model_request_with(ctx, &marker)?
                .last_user_text()
                .unwrap_or_default();
            ensure!(sent.ends_with("hello"), "{tenant}: the model got {sent:?}");
        }
    }
    Ok(())
}

/// The plugin outcomes of the first turn of conversation `id` in `tenant`, in call order,
/// as `(hook, outcome)`: `ok`, or a failure kind (`trap`, `timeout`, `too_large`, …).
async fn turn_outcomes(ctx: &Ctx, tenant: &str, id: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(turn_records(ctx, tenant, id)
        .await?
        .iter()
        .map(|c| {
            let outcome = match c["outcome"]["kind"].as_str() {
                Some("failed") => c["outcome"]["failure"].as_str().unwrap_or("?"),
                other => other.unwrap_or("?"),
            };
            (
                c["hook"].as_str().unwrap_or("?").to_owned(),
                outcome.to_owned(),
            )
        })
        .collect())
}

/// The plugin call records of the first turn of conversation `id` in `tenant`, in call
/// order, from its trace.
async fn turn_records(ctx: &Ctx, tenant: &str, id: &str) -> anyhow::Result<Vec<Value>> {
    let traces = ctx
        .http
        .get(ctx.url(&format!("/api/v1/conversations/{id}/traces")))
        .bearer_auth(plugin_key(tenant))
        .send()
        .await?;
    ensure!(
        traces.status().is_success(),
        "{tenant}: traces: {}",
        traces.status()
    );
    let traces: Value = traces.json().await?;
    Ok(traces["turns"][0]["plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// A plugin cannot leave its box: a memory bomb is stopped at the memory maximum (a trap),
/// filling memory under it for ever spends its CPU allowance (a timeout on Workers, bulk
/// memory operations being charged by the byte; on Spin the meter's trap is a plain 500,
/// so a trap of unsaid kind), and a URL whose real host is not the one a naive
/// reading sees (`https://evil.net\.api.example.com/` under a grant of `*.api.example.com`)
/// is refused, naming the real host. Every turn is still answered, the failures are in its
/// record, and the refused request never left; beside them, a granted host spelled with
/// backslashes is fetched, as normalized, and reaches the mock shop.
pub async fn plugins_stay_in_their_box(ctx: &Ctx) -> anyhow::Result<()> {
    let escapes_before = shop_requests(ctx, "KF-ESCAPE")?;
    let reaches_before = shop_requests(ctx, REACH_ORDER)?;
    for tenant in ["plug-memory", "plug-fill", "plug-escape", "plug-reach"] {
        let marker = unique(tenant);
        let a = ctx
            .chat(Some(tenant), &json!({"message": format!("{marker} hello")}))
            .await?;
        a.expect_status(200)
            .with_context(|| format!("{tenant}: the turn was not answered"))?;
        let reply = message_text(&a.json["reply"]);
        let id = a.json["conversation_id"].as_str().context("no id")?;
        let outcomes = turn_outcomes(ctx, tenant, id).await?;
        let hooks: Vec<&str> = outcomes.iter().map(|(h, _)| h.as_str()).collect();
        ensure!(
            hooks == ["before_model", "after_reply"],
            "{tenant}: the turn's plugin calls: {outcomes:?}"
        );
        let expected = match tenant {
            "plug-memory" => "trap",
            // The meter's trap: named on Workers (a timeout), a plain 500 on Spin.
            "plug-fill" if ctx.spin => "trap",
            "plug-fill" => "timeout",
            _ => "ok",
        };
        ensure!(
            outcomes.iter().all(|(_, o)| o == expected),
            "{tenant}: expected every call to end {expected:?}: {outcomes:?}"
        );
        if ctx.spin && expected == "trap" {
            for record in turn_records(ctx, tenant, id).await? {
                let message = record["outcome"]["message"].as_str().unwrap_or_default();
                ensure!(
                    message.contains(SPIN_TRAP_UNSAID),
                    "{tenant}: a trap on Spin is recorded without a guessed kind: {record}"
                );
            }
        }
        match tenant {
            // The rewrites are the host's denial, naming the host the fetch would have used.
            "plug-escape" => ensure!(
                reply.contains("denied")
                    && reply.contains("evil.net is not a host this plugin was granted"),
                "{tenant}: {reply}"
            ),
            // The fetch went out, normalized, and the mock shop answered (401: no token).
            "plug-reach" => ensure!(reply.contains(": HTTP 401"), "{tenant}: {reply}"),
            _ => {
                ensure!(
                    reply.starts_with("Echo:") && reply.contains(&marker),
                    "{tenant}: the model's answer did not come through untouched: {reply}"
                );
                let sent = model_request_with(ctx, &marker)?
                    .last_user_text()
                    .unwrap_or_default();
                ensure!(sent.ends_with("hello"), "{tenant}: the model got {sent:?}");
            }
        }
    }
    // The escape never reached anything on loopback either (its path names the mock's
    // shop); the legitimate fetch did, once per hook call, at the normalized path.
    ensure!(
        shop_requests(ctx, "KF-ESCAPE")? == escapes_before,
        "the refused URL reached the mock"
    );
    let reached = shop_requests(ctx, REACH_ORDER)? - reaches_before;
    ensure!(
        reached == 2,
        "the granted fetch reached the mock shop {reached} times, not twice"
    );
    Ok(())
}

/// How many requests the mock shop got for order `id`, at its normalized path.
fn shop_requests(ctx: &Ctx, id: &str) -> anyhow::Result<usize> {
    let path = format!("/shop/orders/{id}");
    Ok(ctx
        .mock()?
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .count())
}

/// The CRM forwarder observes events: when an agent resolves a conversation it posts a signed
/// summary to the (mock) CRM, once, and tags the conversation `crm-synced` — after the
/// agent's answer, never in its way.
pub async fn plugins_crm_forwarder_on_resolve(ctx: &Ctx) -> anyhow::Result<()> {
    let tenant = "plug-crm";
    let key = plugin_key(tenant);
    let opening = format!("{} my parcel is late", unique("crm"));
    let first = ctx.chat(Some(tenant), &json!({"message": opening})).await?;
    first.expect_status(200)?;
    let id = first.json["conversation_id"]
        .as_str()
        .context("conversation id")?
        .to_owned();
    ctx.chat(
        Some(tenant),
        &json!({"message": "Can I talk to a human please?", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    ctx.action(
        None,
        Some(&key),
        &id,
        "claim",
        &json!({"agent": "alex", "name": "Alex"}),
    )
    .await?
    .expect_status(200)?;
    ctx.action(
        None,
        Some(&key),
        &id,
        "messages",
        &json!({"agent": "alex", "text": "It ships today."}),
    )
    .await?
    .expect_status(200)?;
    ctx.action(None, Some(&key), &id, "resolve", &json!({"agent": "alex"}))
        .await?
        .expect_status(200)?;
    // The plugin runs after the answer: wait (bounded) for its post and its tag.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let post = loop {
        let found = ctx.mock()?.requests().into_iter().find(|r| {
            r.path == "/crm/summaries"
                && r.body.as_ref().is_some_and(|b| b.to_string().contains(&id))
        });
        if let Some(post) = found {
            break post;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no summary reached the CRM for {id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let body = post.body.clone().unwrap_or_default();
    let text = body.to_string();
    ensure!(
        text.contains(&opening) && text.contains("It ships today."),
        "the summary misses the conversation: {text}"
    );
    let signature = post
        .headers
        .get("x-kefu-signature")
        .cloned()
        .unwrap_or_default();
    ensure!(
        signature.starts_with("sha256=") && signature.len() == 7 + 64,
        "unsigned summary: {:?}",
        post.headers
    );
    let tagged = loop {
        let c = ctx.conversation_as_agent(&key, &id).await?;
        if c.json.to_string().contains("crm-synced") {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    ensure!(tagged, "the conversation was not tagged crm-synced");
    let posts = ctx
        .mock()?
        .requests()
        .into_iter()
        .filter(|r| {
            r.path == "/crm/summaries"
                && r.body.as_ref().is_some_and(|b| b.to_string().contains(&id))
        })
        .count();
    ensure!(posts == 1, "{posts} summaries posted for one resolve");
    Ok(())
}
