//! The visitor limits, on each runtime in a host of its own with a limit of 3 messages a
//! minute per site and 5 per address over every site, so the rest of the suite's traffic
//! from the same loopback address cannot interfere: on workerd Cloudflare's Rate Limiting
//! binding (emulated by Miniflare), on the Spin component (on real Spin where a CLI is found,
//! else on the test host; `KEFU_SPIN=off` leaves it out, saying so) its key-value token
//! buckets. The sites are opened by the deployment (`KEFU_OPEN_TENANTS=site-*`).

use anyhow::{Context, ensure};
use kefu_runtime_tests::scenarios::Ctx;
use kefu_runtime_tests::spin::{KefuSpin, SpinRuntime};
use kefu_runtime_tests::worker::{KefuWorker, WorkerOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_messages_beyond_the_limit_are_refused_and_not_stored() -> anyhow::Result<()> {
    let kefu = KefuWorker::start(WorkerOptions {
        visitor_limit: 3,
        address_limit: 5,
        bindings: vec![("KEFU_OPEN_TENANTS".into(), "site-*".into())],
        ..WorkerOptions::default()
    })
    .await?;
    let ctx = Ctx::new(kefu.base_url(), None)?;
    limits_hold(&ctx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_visitor_messages_beyond_the_limit_are_refused_and_not_stored() -> anyhow::Result<()> {
    if SpinRuntime::switched_off() {
        println!("WARNING: KEFU_SPIN=off: the Spin visitor limits were NOT tested");
        return Ok(());
    }
    let kefu = KefuSpin::start_with(
        "http://127.0.0.1:9",
        &[],
        &[
            ("kefu_visitor_limit", "3"),
            ("kefu_address_limit", "5"),
            ("kefu_open_tenants", "site-*"),
        ],
    )
    .await?;
    println!("Spin runtime: {}", kefu.runtime());
    let ctx = Ctx::new(kefu.base_url(), None)?.on_spin();
    limits_hold(&ctx).await
}

/// 3 messages a site, 5 an address: the fourth to one site is refused and not stored,
/// another site still answers until the address's own limit, which no new site name resets.
async fn limits_hold(ctx: &Ctx) -> anyhow::Result<()> {
    let first = ctx
        .chat(Some("site-a"), &json!({"message": "hello"}))
        .await?;
    ensure!(first.status == 200, "{}", first.text);
    let id = first.json["conversation_id"]
        .as_str()
        .context("conversation_id")?
        .to_owned();
    for n in 2..=3 {
        let answer = ctx
            .chat(
                Some("site-a"),
                &json!({"message": format!("message {n}"), "conversation_id": id}),
            )
            .await?;
        ensure!(answer.status == 200, "message {n}: {}", answer.text);
    }

    let refused = ctx
        .chat(
            Some("site-a"),
            &json!({"message": "one too many", "conversation_id": id}),
        )
        .await?;
    ensure!(
        refused.status == 429 && refused.json["error"]["code"] == "rate_limited",
        "{} {}",
        refused.status,
        refused.text
    );
    ensure!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s > 0)),
        "no Retry-After: {:?}",
        refused.headers
    );
    // The refused message was not stored: three visitor messages, none of them the fourth.
    let messages = ctx.messages(Some("site-a"), &id).await?;
    let visitor: Vec<_> = messages.iter().filter(|m| m["role"] == "visitor").collect();
    ensure!(visitor.len() == 3, "{messages:?}");
    ensure!(
        !messages
            .iter()
            .any(|m| m.to_string().contains("one too many")),
        "the refused message was stored: {messages:?}"
    );

    // The site's limit is per site: the same address still reaches another site's bot…
    for n in 1..=2 {
        let other = ctx
            .chat(Some("site-b"), &json!({"message": format!("hello {n}")}))
            .await?;
        ensure!(other.status == 200, "site-b {n}: {}", other.text);
    }
    // …until the address's own limit over every site (5): inventing another site name does
    // not reset it.
    for site in ["site-b", "site-c", "site-d"] {
        let refused = ctx
            .chat(Some(site), &json!({"message": "past the address limit"}))
            .await?;
        ensure!(
            refused.status == 429 && refused.json["error"]["code"] == "rate_limited",
            "{site}: {} {}",
            refused.status,
            refused.text
        );
    }
    // A name nobody opened is not a site at all.
    let unknown = ctx
        .chat(Some("elsewhere"), &json!({"message": "hello"}))
        .await?;
    ensure!(unknown.status == 404, "{} {}", unknown.status, unknown.text);
    Ok(())
}
