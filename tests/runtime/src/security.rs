//! The attack suite: each scenario performs an attack on a trust boundary over HTTP and
//! asserts it fails, beside the legitimate path still working (see `docs/security.md`).
//!
//! The deployment these scenarios expect is [`deployment_settings`]: the test provider key
//! shared with every tenant, one secret given to `sec-a` alone, and the tenants served
//! without a stored configuration. The mock provider is the catcher: every request that
//! reaches it is recorded with its headers, and no recorded request may carry a deployment
//! secret or another tenant's key.

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::mock::MOCK_MODEL;
use crate::scenarios::{Answer, Ctx, unique};

/// The secret given to tenant `sec-a` alone (`KEFU_TENANT_SECRETS`).
pub const SEC_A_SECRET: &str = "SEC_A_PROVIDER_KEY";
/// Its value, as the deployment holds it.
pub const SEC_A_SECRET_VALUE: &str = "sk-sec-a-only-0123456789abcdef";
/// The mock's fault profiles that tell the tenants' model calls apart (a seed changes
/// nothing but `fail_percent`'s sequence, which these profiles do not use).
const SEC_A_PROFILE: &str = "seed=101";
const SEC_B_PROFILE: &str = "seed=102";

/// Tenant `sec-a`'s key.
pub const SEC_A_KEY: &str = "kf-sec-a.Kefu0Security0Test0Key0001";
/// Tenant `sec-b`'s key.
pub const SEC_B_KEY: &str = "kf-sec-b.Kefu0Security0Test0Key0002";

/// The deployment settings the runner gives both runtimes (Workers names; Spin's variables
/// are the same in lower case): which secrets each tenant may name, and which tenants are
/// served without a stored configuration (the scenarios' `offline-demo` and `other`).
pub fn deployment_settings() -> Vec<(String, String)> {
    vec![
        (
            "KEFU_TENANT_SECRETS".into(),
            format!("*=TEST_PROVIDER_KEY; sec-a={SEC_A_SECRET}"),
        ),
        (
            "KEFU_OPEN_TENANTS".into(),
            "default, offline-demo, other".into(),
        ),
        (SEC_A_SECRET.into(), SEC_A_SECRET_VALUE.into()),
    ]
}

/// The tenants these scenarios need, for a mock at `mock_base` (`http://127.0.0.1:N/v1`).
/// `sec-legacy` is a document stored around the API (as one written before these rules
/// could be), naming deployment secrets: the Worker's runner seeds KV directly; Spin's
/// seeds through the API, which refuses it (so it is not in Spin's list).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let origin = mock_base.trim_end_matches('/').trim_end_matches("/v1");
    let profile = |p: &str| format!("{origin}/p/{p}/v1");
    let key = |k: &str| json!([{"id": "ops", "sha256": kefu_engine::auth::hash_key(k)}]);
    vec![
        (
            "sec-a".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": profile(SEC_A_PROFILE),
                             "model": MOCK_MODEL, "api_key_secret": SEC_A_SECRET},
                "api_keys": key(SEC_A_KEY),
            }),
        ),
        (
            "sec-b".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": profile(SEC_B_PROFILE), "model": MOCK_MODEL},
                "quotas": {"requests_per_minute": 3},
                "api_keys": key(SEC_B_KEY),
            }),
        ),
        (
            "sec-roster".into(),
            json!({
                "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": MOCK_MODEL},
                "agents": [{"id": "ana", "name": "Ana"}, {"id": "ben", "name": "Ben"}],
                "api_keys": key(SEC_ROSTER_KEY),
            }),
        ),
        (
            "sec-fail".into(),
            json!({"provider": {"kind": "openai_compatible", "base_url": profile("status=500"), "model": MOCK_MODEL}}),
        ),
        (
            "sec-legacy".into(),
            json!({
                "providers": {
                    "admin": {"kind": "openai_compatible", "base_url": profile("seed=103"), "api_key_secret": "KEFU_ADMIN_TOKEN"},
                    "signer": {"kind": "openai_compatible", "base_url": profile("seed=104"), "api_key_secret": "kefu_token_secret"},
                    "other": {"kind": "openai_compatible", "base_url": profile("seed=105"), "api_key_secret": SEC_A_SECRET},
                },
                "routes": {"default": {"targets": [
                    {"provider": "admin", "model": MOCK_MODEL},
                    {"provider": "signer", "model": MOCK_MODEL},
                    {"provider": "other", "model": MOCK_MODEL},
                ]}},
                "retry": {"attempts_per_target": 1},
            }),
        ),
    ]
}

/// The values no request leaving the deployment may carry for another owner.
fn forbidden_values() -> [&'static str; 3] {
    [
        crate::config::ADMIN_TOKEN,
        crate::handoff::TOKEN_SECRET,
        SEC_A_SECRET_VALUE,
    ]
}

/// Fails when any request the mock recorded with one of `profiles` (all when empty) carries
/// a forbidden value in a header or its body.
fn assert_no_leak(ctx: &Ctx, profiles: &[&str], allowed: Option<&str>) -> anyhow::Result<()> {
    let mock = ctx.mock()?;
    for r in mock.requests() {
        let profile = r.profile.clone().unwrap_or_default();
        if !profiles.is_empty() && !profiles.contains(&profile.as_str()) {
            continue;
        }
        let text = format!(
            "{:?} {}",
            r.headers,
            r.body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        for secret in forbidden_values() {
            if Some(secret) == allowed {
                continue;
            }
            ensure!(
                !text.contains(secret),
                "a request to profile `{profile}` carried a secret that is not its tenant's: {}",
                r.path
            );
        }
    }
    Ok(())
}

async fn put_config(
    ctx: &Ctx,
    bearer: &str,
    tenant: Option<&str>,
    doc: &Value,
) -> anyhow::Result<Answer> {
    let mut req = ctx
        .http
        .put(ctx.url("/api/v1/config"))
        .bearer_auth(bearer)
        .json(doc);
    if let Some(t) = tenant {
        req = req.header(crate::scenarios::TENANT_HEADER, t);
    }
    Answer::read(req.send().await?).await
}

/// A tenant's configuration cannot name a deployment secret (`KEFU_*`, in any case) or a
/// secret the deployment gave another tenant: refused when written, with the field at
/// fault, and nothing stored; a document stored around the API that names them still never
/// sends them (the check at use). The tenant's own granted secret reaches its provider.
pub async fn secrets_stay_with_their_owner(ctx: &Ctx) -> anyhow::Result<()> {
    let mock_base = ctx.mock()?.base_url();
    let before = ctx.config_version(SEC_B_KEY).await?;
    let catcher = format!("{}/p/seed=109/v1", mock_base.trim_end_matches("/v1"));
    let attempts = [
        (
            json!({"provider": {"base_url": catcher, "model": "m", "api_key_secret": "KEFU_ADMIN_TOKEN"}}),
            "provider.api_key_secret",
        ),
        (
            json!({"provider": {"base_url": catcher, "model": "m", "api_key_secret": "KEFU_TOKEN_SECRET"}}),
            "provider.api_key_secret",
        ),
        (
            json!({"provider": {"base_url": catcher, "model": "m", "api_key_secret": "kefu_admin_token"}}),
            "provider.api_key_secret",
        ),
        (
            json!({"provider": {"base_url": catcher, "model": "m", "api_key_secret": SEC_A_SECRET}}),
            "provider.api_key_secret",
        ),
        (
            json!({"providers": {"p": {"kind": "openai", "base_url": catcher}},
                   "routes": {"default": {"targets": [{"provider": "p", "model": "m", "api_key_secret": "KEFU_PROVIDER_API_KEY"}]}}}),
            "routes.default.targets[0].api_key_secret",
        ),
        (
            // Embeddings and transcription use the named providers' secrets.
            json!({"providers": {"e": {"kind": "openai", "base_url": catcher, "api_key_secret": "KEFU_TOKEN_SECRET"},
                                 "p": {"kind": "openai", "base_url": catcher}},
                   "routes": {"default": {"targets": [{"provider": "p", "model": "m"}]}},
                   "knowledge": {"enabled": true, "embeddings": {"provider": "e", "model": "emb"}},
                   "attachments": {"transcription": {"provider": "e", "model": "whisper-1"}}}),
            "providers.e.api_key_secret",
        ),
    ];
    for (doc, field) in &attempts {
        let put = put_config(ctx, SEC_B_KEY, None, doc).await?;
        put.expect_error(400, "invalid_config")?;
        ensure!(
            put.json["error"]["field"] == *field,
            "expected the field {field}: {}",
            put.text
        );
    }
    ensure!(
        ctx.config_version(SEC_B_KEY).await? == before,
        "a refused configuration was stored"
    );
    // Through the admin token too: the deployment's own token does not lift the rule.
    put_config(
        ctx,
        crate::config::ADMIN_TOKEN,
        Some("sec-b"),
        &attempts[0].0,
    )
    .await?
    .expect_error(400, "invalid_config")?;

    // A stored document naming them (written around the API): the turn never sends them.
    let admin_view: Value = ctx
        .http
        .get(ctx.url("/api/v1/config"))
        .bearer_auth(crate::config::ADMIN_TOKEN)
        .header(crate::scenarios::TENANT_HEADER, "sec-legacy")
        .send()
        .await?
        .json()
        .await?;
    if admin_view["config"].is_object() {
        let a = ctx
            .chat(Some("sec-legacy"), &json!({"message": unique("legacy")}))
            .await?;
        ensure!(
            a.status.as_u16() != 200,
            "every target of sec-legacy names a secret it may not use, yet it answered: {}",
            a.text
        );
        for profile in ["seed=103", "seed=104", "seed=105"] {
            ensure!(
                ctx.mock()?
                    .requests_for(profile)
                    .iter()
                    .all(|r| !r.headers.contains_key("authorization")),
                "a request to {profile} carried an Authorization header"
            );
        }
    } else {
        // Spin seeds through the API, which refuses such a document: the check at write.
        let legacy = tenants(&mock_base)
            .into_iter()
            .find(|(t, _)| t == "sec-legacy")
            .context("sec-legacy")?
            .1;
        put_config(ctx, crate::config::ADMIN_TOKEN, Some("sec-legacy"), &legacy)
            .await?
            .expect_error(400, "invalid_config")?;
    }

    // The legitimate path: sec-a's own secret reaches sec-a's provider, and only there.
    let text = unique("sec-a-turn");
    ctx.chat(Some("sec-a"), &json!({"message": text}))
        .await?
        .expect_status(200)?;
    let sent = ctx
        .mock()?
        .requests_for(SEC_A_PROFILE)
        .into_iter()
        .rev()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&text)))
        .context("sec-a's model call")?;
    ensure!(
        sent.headers.get("authorization").map(String::as_str)
            == Some(&format!("Bearer {SEC_A_SECRET_VALUE}") as &str),
        "sec-a's provider did not get sec-a's key: {:?}",
        sent.headers.get("authorization")
    );
    assert_no_leak(ctx, &[], Some(SEC_A_SECRET_VALUE))?;
    // …and sec-a's key went to sec-a's profile alone.
    for r in ctx.mock()?.requests() {
        if r.profile.as_deref() != Some(SEC_A_PROFILE) {
            let text = format!("{:?}", r.headers);
            ensure!(
                !text.contains(SEC_A_SECRET_VALUE),
                "sec-a's key reached profile {:?}",
                r.profile
            );
        }
    }
    Ok(())
}

/// A tenant name nobody configured is `404 tenant_not_found` for chat, uploads and the
/// demo, and costs no model call; a configured tenant the deployment does not list for the
/// demo, and that did not turn it on, gets `403 demo_disabled`; `default` still answers; the
/// admin token creates a tenant, which then answers (and serves the demo it turned on).
pub async fn unknown_tenants_are_not_found(ctx: &Ctx) -> anyhow::Result<()> {
    let calls = ctx.mock()?.requests().len();
    let invented = unique("invented");
    ctx.chat(Some(&invented), &json!({"message": "free model calls?"}))
        .await?
        .expect_error(404, "tenant_not_found")?;
    let stream = ctx
        .chat(
            Some(&invented),
            &json!({"message": "free model calls?", "stream": true}),
        )
        .await?;
    stream.expect_error(404, "tenant_not_found")?;
    let upload = ctx
        .request(
            reqwest::Method::POST,
            "/api/v1/attachments?name=note.txt",
            Some(&invented),
        )
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await?;
    Answer::read(upload)
        .await?
        .expect_error(404, "tenant_not_found")?;
    // The demo runs model turns: not for a tenant nobody configured, nor for a configured
    // one the deployment does not list and that did not turn it on.
    let demo = |tenant: String| async move {
        let resp = ctx
            .request(reqwest::Method::GET, "/demo", Some(&tenant))
            .send()
            .await?;
        Answer::read(resp).await
    };
    demo(invented.clone())
        .await?
        .expect_error(404, "tenant_not_found")?;
    demo("sec-b".into())
        .await?
        .expect_error(403, "demo_disabled")?;
    ensure!(
        ctx.mock()?.requests().len() == calls,
        "an invented tenant (or a demo it may not run) reached the provider"
    );
    // A made-up tenant key gets no hint whether the tenant exists.
    let models = ctx
        .http
        .get(ctx.url("/v1/models"))
        .bearer_auth(format!("kf-{invented}.Kefu0Made0Up0Key0000000001"))
        .send()
        .await?;
    ensure!(
        models.status().as_u16() == 401,
        "made-up key: {}",
        models.status()
    );

    ctx.chat(None, &json!({"message": "Hello"}))
        .await?
        .expect_status(200)?;
    ctx.chat(Some("offline-demo"), &json!({"message": "Hello"}))
        .await?
        .expect_status(200)?;

    // The admin token creates the tenant; then it exists.
    put_config(
        ctx,
        crate::config::ADMIN_TOKEN,
        Some(&invented),
        &json!({"system_prompt": "A new tenant.", "demo": true}),
    )
    .await?
    .expect_status(200)?;
    ctx.chat(Some(&invented), &json!({"message": "Hello"}))
        .await?
        .expect_status(200)?;
    // It turned the demo on: it serves it.
    demo(invented.clone()).await?.expect_status(200)?;
    Ok(())
}

async fn replay(ctx: &Ctx, id: &str, bearer: &str, body: &Value) -> anyhow::Result<Answer> {
    let resp = ctx
        .http
        .post(ctx.url(&format!("/api/v1/conversations/{id}/replay")))
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await?;
    Answer::read(resp).await
}

/// Replaying under another configuration is an operator's power: an agent's token replays
/// under the stored configuration only; an operator's replay configuration cannot reach a
/// provider or secret the stored one lacks; every replay is admitted by the stored quota.
pub async fn replay_is_an_operators_power(ctx: &Ctx) -> anyhow::Result<()> {
    let id = start_conversation(ctx, "sec-b", &unique("replayed")).await?;
    let agent = ctx
        .agent_token(SEC_B_KEY, &json!({"agent": "ana", "name": "Ana"}))
        .await?;
    let calls = ctx.mock()?.requests_for(SEC_B_PROFILE).len();
    let catcher = format!(
        "{}/p/seed=109/v1",
        ctx.mock()?.base_url().trim_end_matches("/v1")
    );
    let hostile = json!({"config": {"provider": {"kind": "openai_compatible", "base_url": catcher, "model": "m"},
                                    "quotas": {"requests_per_minute": 100000}}});
    replay(ctx, &id, &agent, &hostile)
        .await?
        .expect_error(403, "operator_only")?;
    // An operator cannot point a replay at a provider the stored configuration lacks.
    let refused = replay(ctx, &id, SEC_B_KEY, &hostile).await?;
    refused.expect_error(400, "invalid_config")?;
    // Nor name a deployment secret, even with the admin token.
    let resp = ctx
        .http
        .post(ctx.url(&format!("/api/v1/conversations/{id}/replay")))
        .bearer_auth(crate::config::ADMIN_TOKEN)
        .header(crate::scenarios::TENANT_HEADER, "sec-b")
        .json(&json!({"config": {"provider": {"kind": "openai_compatible", "base_url": ctx.mock()?.base_url(),
                                              "model": "m", "api_key_secret": "KEFU_ADMIN_TOKEN"}}}))
        .send()
        .await?;
    let a = Answer::read(resp).await?;
    a.expect_error(400, "invalid_config")?;
    ensure!(
        a.json["error"]["field"] == "config.provider.api_key_secret",
        "{}",
        a.text
    );
    ensure!(
        ctx.mock()?.requests_for("seed=109").is_empty(),
        "a replay reached the catcher"
    );
    ensure!(
        ctx.mock()?.requests_for(SEC_B_PROFILE).len() == calls,
        "a refused replay reached the provider"
    );

    // Another model of the stored provider is the agent's to try (its quota and prices).
    let other_model = replay(ctx, &id, &agent, &json!({"model": "default/bigger"})).await?;
    other_model.expect_status(200)?;
    ensure!(
        other_model.json["stopped"].is_null(),
        "{}",
        other_model.text
    );
    // The agent's replay under the stored configuration works, and is admitted by the
    // stored quota (3 a minute: the chat took one, the replays the others).
    let ok = replay(ctx, &id, &agent, &json!({})).await?;
    ok.expect_status(200)?;
    ensure!(
        ok.json["stopped"].is_null(),
        "the first replay was stopped: {}",
        ok.text
    );
    // The operator's replay that raises the quota is still held to the stored one.
    let raised = replay(
        ctx,
        &id,
        SEC_B_KEY,
        &json!({"config": {"provider": {"kind": "openai_compatible",
                                        "base_url": format!("{}/p/seed=102/v1", ctx.mock()?.base_url().trim_end_matches("/v1")),
                                        "model": MOCK_MODEL},
                           "quotas": {"requests_per_minute": 100000}}}),
    )
    .await?;
    raised.expect_status(200)?;
    ensure!(
        raised.json["stopped"]["error"]["code"].is_string(),
        "a replay raising its own quota was not held to the stored one: {}",
        raised.text
    );
    assert_no_leak(ctx, &[SEC_B_PROFILE, "seed=109"], None)?;
    Ok(())
}

/// A provider or webhook URL must name a public host or loopback: internal names (Spin's
/// `*.spin.internal` components, cloud metadata), private addresses and spellings that
/// parsers read differently are refused when written.
pub async fn provider_urls_stay_public(ctx: &Ctx) -> anyhow::Result<()> {
    let before = ctx.config_version(SEC_B_KEY).await?;
    for url in [
        "http://plugin-pii-redactor.spin.internal/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/v1",
        "http://10.1.2.3/v1",
        "http://2130706433/v1",
        "https://evil.net\\.api.openai.com/v1",
        "https://api.openai.com@evil.net/v1",
    ] {
        let put = put_config(
            ctx,
            SEC_B_KEY,
            None,
            &json!({"provider": {"base_url": url, "model": "m"}}),
        )
        .await?;
        put.expect_error(400, "invalid_config")?;
        ensure!(
            put.json["error"]["field"] == "provider.base_url",
            "{url}: {}",
            put.text
        );
        let put = put_config(
            ctx,
            SEC_B_KEY,
            None,
            &json!({"providers": {"p": {"kind": "openai", "base_url": url}},
                    "routes": {"default": {"targets": [{"provider": "p", "model": "m"}]}}}),
        )
        .await?;
        put.expect_error(400, "invalid_config")?;
        ensure!(
            put.json["error"]["field"] == "providers.p.base_url",
            "{url}: {}",
            put.text
        );
    }
    // Webhook deliveries leave from inside the deployment too.
    for url in [
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest",
        "https://plugin-crm-forwarder.spin.internal/",
    ] {
        let put = put_config(
            ctx,
            SEC_B_KEY,
            None,
            &json!({"webhooks": [{"url": url, "secret": crate::webhooks::WEBHOOK_SECRET}]}),
        )
        .await?;
        put.expect_error(400, "invalid_config")?;
        ensure!(
            put.json["error"]["field"] == "webhooks[0].url",
            "{url}: {}",
            put.text
        );
    }
    ensure!(
        ctx.config_version(SEC_B_KEY).await? == before,
        "a refused configuration was stored"
    );
    Ok(())
}

/// Tenant `sec-roster`'s key.
pub const SEC_ROSTER_KEY: &str = "kf-sec-roster.Kefu0Security0Test0Key03";

/// A new conversation of `tenant` with the visitor's `message` answered; its id.
async fn start_conversation(ctx: &Ctx, tenant: &str, message: &str) -> anyhow::Result<String> {
    let first = ctx.chat(Some(tenant), &json!({"message": message})).await?;
    first.expect_status(200)?;
    Ok(first.json["conversation_id"]
        .as_str()
        .context("conversation_id")?
        .to_owned())
}

/// Disables agent `ana` on `sec-roster`'s roster (`doc` as seeded).
async fn disable_ana(ctx: &Ctx, doc: &Value) -> anyhow::Result<()> {
    let mut disabled = doc.clone();
    disabled["agents"][0]["disabled"] = json!(true);
    put_config(ctx, SEC_ROSTER_KEY, None, &disabled)
        .await?
        .expect_status(200)?;
    Ok(())
}

/// `sec-roster`'s document as seeded, stored again (so a scenario that stopped halfway
/// leaves no agent disabled for the next).
async fn roster_document(ctx: &Ctx) -> anyhow::Result<Value> {
    let doc = tenants(&ctx.mock()?.base_url())
        .into_iter()
        .find(|(t, _)| t == "sec-roster")
        .context("sec-roster")?
        .1;
    put_config(ctx, SEC_ROSTER_KEY, None, &doc)
        .await?
        .expect_status(200)?;
    Ok(doc)
}

/// Reads the next event other than heartbeats from an SSE body, within `secs`; `None` when
/// the stream ended.
async fn next_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    parser: &mut crate::sse::SseParser,
    pending: &mut std::collections::VecDeque<crate::sse::SseEvent>,
    secs: u64,
) -> anyhow::Result<Option<crate::sse::SseEvent>> {
    use futures::StreamExt;
    loop {
        if let Some(e) = pending.pop_front() {
            return Ok(Some(e));
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(secs), body.next())
            .await
            .with_context(|| format!("no live update within {secs} s"))?;
        match chunk {
            None => return Ok(None),
            Some(chunk) => pending.extend(parser.push(&chunk?)),
        }
    }
}

/// An agent's live-update stream is closed, with the reason, when the tenant disables the
/// agent on its roster while the stream is open; the agent's token then opens nothing; a
/// colleague's stream goes on and still gets the conversation's updates.
pub async fn sessions_end_when_access_ends(ctx: &Ctx) -> anyhow::Result<()> {
    let doc = roster_document(ctx).await?;
    let id = start_conversation(ctx, "sec-roster", &unique("watched")).await?;
    let ana = ctx
        .agent_token(SEC_ROSTER_KEY, &json!({"agent": "ana"}))
        .await?;
    let ben = ctx
        .agent_token(SEC_ROSTER_KEY, &json!({"agent": "ben"}))
        .await?;
    let open = |token: String| {
        let url = ctx.url(&format!(
            "/api/v1/conversations/{id}/events?after=0&access_token={token}"
        ));
        ctx.http.get(url).send()
    };
    let (a, b) = (open(ana.clone()).await?, open(ben.clone()).await?);
    ensure!(
        a.status().is_success() && b.status().is_success(),
        "{} {}",
        a.status(),
        b.status()
    );
    let (mut a, mut b) = (a.bytes_stream(), b.bytes_stream());
    let (mut pa, mut pb) = (
        crate::sse::SseParser::default(),
        crate::sse::SseParser::default(),
    );
    let (mut qa, mut qb) = (Default::default(), Default::default());
    // Catch-up: up to the status.
    for (body, parser, pending) in [(&mut a, &mut pa, &mut qa), (&mut b, &mut pb, &mut qb)] {
        loop {
            let e = next_event(body, parser, pending, 10)
                .await?
                .context("ended early")?;
            if e.event == "status" {
                break;
            }
        }
    }
    // The operator disables Ana while her stream is open.
    disable_ana(ctx, &doc).await?;
    // Within the re-check period (15 s) her stream says why and ends.
    let mut reason = None;
    while let Some(e) = next_event(&mut a, &mut pa, &mut qa, 30).await? {
        if e.event == "error" {
            reason = Some(
                e.json()?["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            break;
        }
    }
    ensure!(
        reason.as_deref() == Some("agent_disabled"),
        "Ana's stream did not end for her disabled account: {reason:?}"
    );
    ensure!(
        next_event(&mut a, &mut pa, &mut qa, 10).await?.is_none(),
        "Ana's stream went on after its error"
    );
    // Her token opens nothing now.
    let again = open(ana).await?;
    ensure!(
        again.status().as_u16() == 401,
        "reopened: {}",
        again.status()
    );
    // Ben's stream goes on: the visitor's next message reaches it.
    ctx.chat(
        Some("sec-roster"),
        &json!({"message": "still there?", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    let mut seen = false;
    while let Some(e) = next_event(&mut b, &mut pb, &mut qb, 20).await? {
        if e.event == "message" && e.json()?.to_string().contains("still there?") {
            seen = true;
            break;
        }
    }
    ensure!(seen, "Ben's stream missed the visitor's message");
    // Put the roster back for a rerun.
    put_config(ctx, SEC_ROSTER_KEY, None, &doc)
        .await?
        .expect_status(200)?;
    Ok(())
}

/// Least privilege: the webhook delivery log is the operator's; an agent acts under the
/// name its token carries; a visitor whose turn failed reads a generic message, never the
/// provider's own words.
pub async fn least_privilege_holds(ctx: &Ctx) -> anyhow::Result<()> {
    let ben = ctx
        .agent_token(SEC_ROSTER_KEY, &json!({"agent": "ben"}))
        .await?;
    let log = |bearer: String| {
        ctx.http
            .get(ctx.url("/api/v1/webhooks/deliveries"))
            .bearer_auth(bearer)
            .send()
    };
    Answer::read(log(ben.clone()).await?)
        .await?
        .expect_error(403, "operator_only")?;
    Answer::read(log(SEC_ROSTER_KEY.to_owned()).await?)
        .await?
        .expect_status(200)?;

    // A conversation that waits for a person; Ben may not claim it as "Manager".
    let id = start_conversation(ctx, "sec-roster", "a person please").await?;
    ctx.action(None, Some(&ben), &id, "claim", &json!({"name": "Manager"}))
        .await?
        .expect_error(403, "agent_mismatch")?;
    ctx.action(None, Some(&ben), &id, "claim", &json!({}))
        .await?
        .expect_status(200)?;
    let transcript = ctx.conversation_as_agent(SEC_ROSTER_KEY, &id).await?;
    ensure!(
        transcript.text.contains("Ben") && !transcript.text.contains("Manager"),
        "{}",
        transcript.text
    );

    // The provider fails: the visitor reads the stable code and a generic message.
    let whole = ctx
        .chat(Some("sec-fail"), &json!({"message": "hello"}))
        .await?;
    whole.expect_error(502, "provider_error")?;
    ensure!(!whole.text.contains("mock error"), "{}", whole.text);
    let streamed = ctx
        .chat(
            Some("sec-fail"),
            &json!({"message": "hello", "stream": true}),
        )
        .await?;
    ensure!(
        streamed.text.contains("provider_error") && !streamed.text.contains("mock error"),
        "{}",
        streamed.text
    );
    Ok(())
}

/// An agent's live-update WebSocket (Workers) is closed (`4401`, with the reason) when the
/// tenant disables the agent while the socket is open: the conversation's object re-checks
/// its agents' sockets by alarm.
pub async fn sockets_end_when_access_ends(ctx: &Ctx) -> anyhow::Result<()> {
    let doc = roster_document(ctx).await?;
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let id = start_conversation(ctx, "sec-roster", &unique("socket")).await?;
    let ana = ctx
        .agent_token(SEC_ROSTER_KEY, &json!({"agent": "ana"}))
        .await?;
    let mut ws =
        crate::handoff::open_socket(ctx, &id, format!("after=0&access_token={ana}")).await?;
    disable_ana(ctx, &doc).await?;
    let (mut reason, mut close) = (None, None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    while close.is_none() {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("the socket stayed open 40 s after the agent was disabled")?;
        match frame {
            Some(Ok(Ws::Text(text))) => {
                let v: Value = serde_json::from_str(text.as_str())?;
                if v["event"] == "error" {
                    reason = v["data"]["error"]["code"].as_str().map(str::to_owned);
                }
            }
            Some(Ok(Ws::Close(frame))) => {
                close = Some(frame.map(|f| u16::from(f.code)).unwrap_or(0));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => close = Some(0),
        }
    }
    put_config(ctx, SEC_ROSTER_KEY, None, &doc)
        .await?
        .expect_status(200)?;
    ensure!(
        reason.as_deref() == Some("agent_disabled") && close == Some(4401),
        "the socket ended with {reason:?}, close code {close:?}"
    );
    Ok(())
}

/// A conversation takes a bounded number of live-update connections (Workers keeps each
/// open stream in the conversation's object): one past the bound is `429
/// too_many_subscribers`, and the admitted ones still get the conversation's updates.
pub async fn live_subscribers_are_bounded(ctx: &Ctx) -> anyhow::Result<()> {
    let id = start_conversation(ctx, "sec-roster", &unique("crowded")).await?;
    let open = || {
        ctx.request(
            reqwest::Method::GET,
            &format!("/api/v1/conversations/{id}/events?after=0"),
            Some("sec-roster"),
        )
        .send()
    };
    let mut streams = Vec::new();
    for n in 0..kefu_engine::api::MAX_LIVE_SUBSCRIBERS {
        let resp = open().await?;
        ensure!(resp.status().is_success(), "stream {n}: {}", resp.status());
        streams.push(resp);
    }
    Answer::read(open().await?)
        .await?
        .expect_error(429, "too_many_subscribers")?;
    // The connections it holds still work: the visitor's next message reaches them.
    ctx.chat(
        Some("sec-roster"),
        &json!({"message": "anyone there?", "conversation_id": id}),
    )
    .await?
    .expect_status(200)?;
    let mut body = streams.swap_remove(0).bytes_stream();
    let (mut parser, mut pending) = (crate::sse::SseParser::default(), Default::default());
    let mut seen = false;
    while let Some(e) = next_event(&mut body, &mut parser, &mut pending, 20).await? {
        if e.event == "message" && e.json()?.to_string().contains("anyone there?") {
            seen = true;
            break;
        }
    }
    ensure!(seen, "an admitted stream missed the visitor's message");
    Ok(())
}
