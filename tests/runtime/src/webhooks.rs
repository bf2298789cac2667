//! Webhook scenarios: a chat turn's events reach the tenant's endpoints signed in the
//! Standard Webhooks format, checked by the official `standardwebhooks` Python library (an
//! implementation independent of Kefu's); a failing endpoint gets its deliveries by retry,
//! one answering `410 Gone` is disabled, and none of it slows the visitor.
//!
//! The receiver (`tests/runtime/python/webhook_receiver.py`) runs on a loopback port
//! reserved before the Worker starts ([`receiver_port`]), because tenant configurations are
//! seeded into KV at start-up ([`tenants`]). Tenant `wh` has three endpoints on it:
//! `/ok` (every event), `/fail-twice` (only `message.created`; the receiver answers its first
//! two POSTs 503, each after [`FAIL_DELAY_MS`], then 200) and `/gone` (always 410).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::scenarios::{Ctx, unique};

/// The tenant with webhook endpoints.
pub const TENANT: &str = "wh";
/// Tenant `wh`'s API key (operators read the delivery log with it).
pub const WEBHOOK_KEY: &str = "kf-wh.Kefu0Webhooks0Test0Key0001";
/// The endpoints' signing secret: `whsec_` + base64 of 32 bytes.
pub const WEBHOOK_SECRET: &str = "whsec_a2VmdS1ydW50aW1lLXRlc3RzLXdlYmhvb2sta2V5ISE=";
/// How long the receiver takes to answer on `/fail-twice` (its 503s included): longer than
/// a turn may take, so a turn that waited for a receiver would show.
pub const FAIL_DELAY_MS: u64 = 3_000;
/// How long the scenario waits for the deliveries (retries included) in all.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

/// The loopback port the receiver will listen on: reserved once per process (a free port at
/// the time), so the tenant configuration can name it before the Worker starts.
pub fn receiver_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    })
}

/// The webhook tenants' configurations, for a mock provider at `mock_base` and the receiver
/// on [`receiver_port`].
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    tenants_on(mock_base, receiver_port())
}

/// The webhook tenants' configurations, for a mock provider at `mock_base` and a receiver on
/// `receiver_port`.
pub fn tenants_on(mock_base: &str, receiver_port: u16) -> Vec<(String, Value)> {
    let url = |path: &str| format!("http://127.0.0.1:{receiver_port}{path}");
    vec![(
        TENANT.into(),
        json!({
            "provider": {"kind": "openai_compatible", "base_url": mock_base, "model": crate::mock::MOCK_MODEL},
            "api_keys": [{"id": "runtime-tests", "sha256": kefu_engine::auth::hash_key(WEBHOOK_KEY)}],
            "webhooks": [
                {"url": url("/ok"), "secret": WEBHOOK_SECRET},
                {"url": url(&format!("/fail-twice?delay_ms={FAIL_DELAY_MS}")), "secret": WEBHOOK_SECRET,
                 "events": ["message.created"]},
                {"url": url("/gone"), "secret": WEBHOOK_SECRET},
            ],
        }),
    )]
}

fn python() -> PathBuf {
    crate::worker::repo_root().join(".tools/venv/bin/python")
}

/// The receiver process; killed when dropped.
struct Receiver {
    _child: Child,
    base: String,
}

impl Receiver {
    async fn start(port: u16) -> anyhow::Result<Self> {
        let python = python();
        ensure!(
            python.exists(),
            "{} is missing: run `make setup` (it installs standardwebhooks)",
            python.display()
        );
        let root = crate::worker::repo_root();
        let log_dir = root.join("target/runtime-tests");
        std::fs::create_dir_all(&log_dir)?;
        let log = std::fs::File::create(log_dir.join("webhook-receiver.log"))?;
        let mut child = Command::new(&python)
            .arg(root.join("tests/runtime/python/webhook_receiver.py"))
            .arg(port.to_string())
            .arg(WEBHOOK_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the webhook receiver")?;
        let stdout = child.stdout.take().context("the receiver's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .context("the webhook receiver did not start within 15 s")??;
        let base = match first.as_deref().and_then(|l| l.strip_prefix("listening ")) {
            Some(base) => base.to_owned(),
            None => bail!(
                "the webhook receiver did not start on 127.0.0.1:{port} (is the port taken?); \
                 see target/runtime-tests/webhook-receiver.log"
            ),
        };
        Ok(Self {
            _child: child,
            base,
        })
    }

    /// Every POST the receiver recorded, oldest first.
    async fn received(&self, ctx: &Ctx) -> anyhow::Result<Vec<Received>> {
        let body: Vec<Value> = ctx
            .http
            .get(format!("{}/received", self.base))
            .send()
            .await
            .context("GET /received")?
            .json()
            .await
            .context("GET /received: not JSON")?;
        Ok(body.iter().map(Received::from_json).collect())
    }
}

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    webhook_id: String,
    webhook_timestamp: u64,
    verified: bool,
    error: Option<String>,
    answered: u16,
    payload: Value,
    received_at_ms: u64,
}

impl Received {
    fn from_json(v: &Value) -> Self {
        Self {
            path: v["path"].as_str().unwrap_or_default().to_owned(),
            webhook_id: v["webhook_id"].as_str().unwrap_or_default().to_owned(),
            webhook_timestamp: v["webhook_timestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            verified: v["verified"].as_bool().unwrap_or(false),
            error: v["error"].as_str().map(str::to_owned),
            answered: v["answered"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            payload: v["payload"].clone(),
            received_at_ms: v["received_at_ms"].as_u64().unwrap_or(0),
        }
    }

    fn event_type(&self) -> &str {
        self.payload["type"].as_str().unwrap_or_default()
    }

    fn conversation(&self) -> &str {
        self.payload["data"]["conversation_id"]
            .as_str()
            .unwrap_or_default()
    }

    fn seq(&self) -> Option<u64> {
        self.payload["data"]["seq"].as_u64()
    }
}

/// What one endpoint got for one conversation: `message.created` by seq (the POSTs of each,
/// oldest first), and how many distinct `conversation.created` messages.
#[derive(Debug, Default)]
struct Seen {
    messages: BTreeMap<u64, Vec<Received>>,
    created: Vec<Received>,
}

fn seen(all: &[Received], path: &str, conversation: &str) -> Seen {
    let mut out = Seen::default();
    for r in all
        .iter()
        .filter(|r| r.path == path && r.conversation() == conversation)
    {
        match (r.event_type(), r.seq()) {
            ("message.created", Some(seq)) => out.messages.entry(seq).or_default().push(r.clone()),
            ("conversation.created", _) => out.created.push(r.clone()),
            _ => {}
        }
    }
    out
}

/// Whether every message `1..=n` was finally answered 2xx.
fn delivered(seen: &Seen, n: u64) -> bool {
    (1..=n).all(|seq| {
        seen.messages
            .get(&seq)
            .is_some_and(|posts| posts.iter().any(|r| (200..300).contains(&r.answered)))
    })
}

async fn operator_log(ctx: &Ctx, query: &str, key: Option<&str>) -> anyhow::Result<Answer> {
    let mut req = ctx.request(
        Method::GET,
        &format!("/api/v1/webhooks/deliveries{query}"),
        None,
    );
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .context("GET /api/v1/webhooks/deliveries")?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok(Answer {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    })
}

struct Answer {
    status: u16,
    json: Value,
    text: String,
}

fn endpoint_state<'a>(log: &'a Value, path: &str) -> Option<&'a Value> {
    log["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str().is_some_and(|u| u.contains(path)))
}

/// A chat turn's events reach the endpoints signed (verified by `standardwebhooks`), with
/// the right payloads; `/fail-twice` gets its deliveries after retries (re-signed, same
/// id); `/gone` is disabled after its 410 and gets nothing more; the delivery log shows it
/// all; the visitor's turns answer at once while a receiver is slow and failing; and a
/// handoff and an agent's claim are sent as status and assignment events.
pub async fn webhooks_signed_and_retried(ctx: &Ctx) -> anyhow::Result<()> {
    let receiver = Receiver::start(receiver_port()).await?;
    let started = Instant::now();

    // Turn 1. The turn must not wait for any receiver (`/fail-twice` takes 3 s to answer).
    let first = ctx
        .chat(Some(TENANT), &json!({"message": unique("hello webhooks")}))
        .await?;
    let latency = started.elapsed();
    first.expect_status(200)?;
    ensure!(
        first.json["responder"] == "provider",
        "the model should answer: {}",
        first.text
    );
    let id = first.json["conversation_id"]
        .as_str()
        .context("conversation id")?
        .to_owned();
    ensure!(
        latency < Duration::from_millis(FAIL_DELAY_MS - 500),
        "the turn took {latency:?}: it waited for a webhook receiver"
    );

    // Wait until /fail-twice is failing and /gone has been disabled.
    let deadline = started + DELIVERY_WAIT;
    loop {
        let all = receiver.received(ctx).await?;
        let failing = all
            .iter()
            .any(|r| r.path == "/fail-twice" && r.answered == 503);
        let log = operator_log(ctx, "", Some(WEBHOOK_KEY)).await?;
        let gone_disabled =
            endpoint_state(&log.json, "/gone").is_some_and(|e| e["state"] == "disabled");
        // An attempt already on its way when the endpoint was disabled may still land
        // (under load, a moment later): count /gone's POSTs only once none is in flight.
        let gone_settled = log.json["deliveries"].as_array().is_some_and(|ds| {
            ds.iter()
                .filter(|d| {
                    d["payload"]["data"]["conversation_id"] == id.as_str()
                        && d["endpoint"].as_str().is_some_and(|u| u.contains("/gone"))
                })
                .all(|d| d["status"] == "failed")
        });
        if failing && gone_disabled && gone_settled {
            break;
        }
        if Instant::now() > deadline {
            let hint = if all.is_empty() {
                " (nothing reached the receiver: does the conversation object call \
                 `webhooks::emit`?)"
            } else {
                ""
            };
            bail!(
                "after {DELIVERY_WAIT:?}: /fail-twice failing: {failing}, /gone disabled: \
                 {gone_disabled}{hint}; received {all:?}; log {}",
                log.text
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone_before = receiver
        .received(ctx)
        .await?
        .iter()
        .filter(|r| r.path == "/gone")
        .count();

    // Turn 2, while /fail-twice's retries are pending: answered at once all the same.
    let second_started = Instant::now();
    let second = ctx
        .chat(
            Some(TENANT),
            &json!({"message": unique("still there?"), "conversation_id": id}),
        )
        .await?;
    let latency = second_started.elapsed();
    second.expect_status(200)?;
    ensure!(
        latency < Duration::from_millis(FAIL_DELAY_MS - 500),
        "the second turn took {latency:?} while an endpoint was failing"
    );

    // Every delivery arrives: four messages on /ok and (after retries) on /fail-twice, and
    // the sender has recorded the answers (none of this conversation's deliveries pending).
    let all = loop {
        let all = receiver.received(ctx).await?;
        let ok = seen(&all, "/ok", &id);
        let retried = seen(&all, "/fail-twice", &id);
        let log = operator_log(ctx, "", Some(WEBHOOK_KEY)).await?;
        let pending = log.json["deliveries"].as_array().map_or(1, |ds| {
            ds.iter()
                .filter(|d| d["payload"]["data"]["conversation_id"] == id.as_str())
                .filter(|d| d["status"] == "pending")
                .count()
        });
        if !ok.created.is_empty() && delivered(&ok, 4) && delivered(&retried, 4) && pending == 0 {
            break all;
        }
        if Instant::now() > deadline {
            bail!(
                "not everything was delivered within {DELIVERY_WAIT:?} (the engine retries 5 s \
                 after a first failure): /ok {ok:?}; /fail-twice {retried:?}; log {}",
                log.text
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Signatures: every POST verified by the independent implementation.
    let unverified: Vec<_> = all.iter().filter(|r| !r.verified).collect();
    ensure!(
        unverified.is_empty(),
        "standardwebhooks rejected Kefu's signatures: {unverified:?}"
    );

    // Payloads: type, timestamp and data.
    let ok = seen(&all, "/ok", &id);
    ensure!(
        ok.created
            .iter()
            .map(|r| &r.webhook_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 1,
        "one conversation.created on /ok: {:?}",
        ok.created
    );
    let created = &ok.created[0];
    ensure!(
        created.payload["data"] == json!({"conversation_id": id}),
        "conversation.created data: {}",
        created.payload
    );
    for (seq, role) in [(1, "visitor"), (2, "bot"), (3, "visitor"), (4, "bot")] {
        let posts = &ok.messages[&seq];
        let r = &posts[0];
        ensure!(
            r.payload["data"] == json!({"conversation_id": id, "seq": seq, "role": role}),
            "message.created #{seq} data: {}",
            r.payload
        );
        let ts = r.payload["timestamp"].as_str().unwrap_or_default();
        ensure!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "payload timestamp {ts:?}"
        );
        ensure!(
            r.webhook_id.starts_with("msg_") && r.webhook_id.len() > 20,
            "webhook id {:?}",
            r.webhook_id
        );
        ensure!(
            posts.iter().all(|p| p.webhook_id == r.webhook_id),
            "/ok got message #{seq} under different ids: {posts:?}"
        );
        // The same event has the same id on every endpoint (the receivers' idempotency key).
        let retried = seen(&all, "/fail-twice", &id);
        let other = &retried.messages[&seq];
        ensure!(
            other.iter().all(|p| p.webhook_id == r.webhook_id),
            "message #{seq} has another id on /fail-twice: {other:?} vs {}",
            r.webhook_id
        );
    }
    ensure!(
        !all.iter()
            .any(|r| r.path == "/fail-twice" && r.event_type() != "message.created"),
        "/fail-twice only wants message.created"
    );

    // Retries: the two failed POSTs were tried again with the same id, signed afresh (a
    // new timestamp), about 5 s after the failure was recorded.
    let fail_twice: Vec<&Received> = all.iter().filter(|r| r.path == "/fail-twice").collect();
    let failed: Vec<&&Received> = fail_twice.iter().filter(|r| r.answered == 503).collect();
    ensure!(failed.len() == 2, "two 503s on /fail-twice: {fail_twice:?}");
    let mut retried_at = Vec::new();
    for f in &failed {
        let retry = fail_twice
            .iter()
            .find(|r| r.webhook_id == f.webhook_id && r.answered == 200)
            .with_context(|| format!("{} was never retried: {fail_twice:?}", f.webhook_id))?;
        let gap = retry.received_at_ms.saturating_sub(f.received_at_ms);
        ensure!(
            gap >= FAIL_DELAY_MS + 4_000,
            "{} was retried after {gap} ms: the retry comes 5 s (±10 %) after the failed \
             attempt's answer",
            f.webhook_id
        );
        ensure!(
            retry.webhook_timestamp > f.webhook_timestamp,
            "the retry of {} was not signed afresh (timestamps {} and {})",
            f.webhook_id,
            f.webhook_timestamp,
            retry.webhook_timestamp
        );
        retried_at.push(retry.received_at_ms);
    }
    // Each retry waits 3 s for its answer; both come due within about a second of each
    // other, so they must overlap: one slow attempt holds up no other delivery.
    let spread = retried_at.iter().max().unwrap_or(&0) - retried_at.iter().min().unwrap_or(&0);
    ensure!(
        spread < FAIL_DELAY_MS - 500,
        "the retries went out {spread} ms apart: one waited for the other's slow answer"
    );

    // /gone: answered 410, then nothing more (turn 2's events were not sent there).
    let gone: Vec<&Received> = all.iter().filter(|r| r.path == "/gone").collect();
    ensure!(
        !gone.is_empty() && gone.iter().all(|r| r.answered == 410),
        "/gone: {gone:?}"
    );
    ensure!(
        gone.len() == gone_before,
        "/gone got {} POSTs after it was disabled: {gone:?}",
        gone.len() - gone_before
    );
    ensure!(
        !gone
            .iter()
            .any(|r| r.seq() == Some(3) || r.seq() == Some(4)),
        "turn 2's events reached the disabled endpoint: {gone:?}"
    );
    ensure!(
        all.iter().all(|r| r.error.is_none()),
        "receiver errors: {all:?}"
    );

    // The operators' delivery log.
    let anonymous = operator_log(ctx, "", None).await?;
    ensure!(
        anonymous.status == 401 && anonymous.json["error"]["code"] == "unauthorized",
        "the delivery log needs the tenant key: {} {}",
        anonymous.status,
        anonymous.text
    );
    let log = operator_log(ctx, "", Some(WEBHOOK_KEY)).await?;
    ensure!(
        log.status == 200,
        "delivery log: {} {}",
        log.status,
        log.text
    );
    ensure!(
        !log.text
            .contains(WEBHOOK_SECRET.trim_start_matches("whsec_")),
        "the delivery log shows the signing secret"
    );
    let gone_state = endpoint_state(&log.json, "/gone").context("/gone in the log")?;
    ensure!(
        gone_state["state"] == "disabled"
            && gone_state["reason"]
                .as_str()
                .is_some_and(|r| r.contains("410"))
            && gone_state["disabled_at"].is_string(),
        "/gone: {gone_state}"
    );
    for path in ["/ok", "/fail-twice"] {
        let state =
            endpoint_state(&log.json, path).with_context(|| format!("{path} in the log"))?;
        ensure!(state["state"] == "active", "{path}: {state}");
    }
    let deliveries = log.json["deliveries"].as_array().context("deliveries")?;
    let created_at: Vec<&str> = deliveries
        .iter()
        .filter_map(|d| d["created_at"].as_str())
        .collect();
    ensure!(
        created_at.len() == deliveries.len() && created_at.windows(2).all(|w| w[0] >= w[1]),
        "the log is not newest first: {created_at:?}"
    );
    let mine: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["payload"]["data"]["conversation_id"] == id.as_str())
        .collect();
    let retried: Vec<&&Value> = mine
        .iter()
        .filter(|d| {
            d["endpoint"]
                .as_str()
                .is_some_and(|u| u.contains("/fail-twice"))
        })
        .filter(|d| d["attempts"].as_u64() >= Some(2))
        .collect();
    ensure!(
        retried.len() == 2,
        "two retried deliveries in the log: {}",
        log.text
    );
    for d in &retried {
        let attempts = d["attempt_log"].as_array().context("attempt_log")?;
        let (first, last) = (&attempts[0], &attempts[attempts.len() - 1]);
        ensure!(
            d["status"] == "succeeded"
                && first["status_code"] == 503
                && first["duration_ms"].as_u64() >= Some(FAIL_DELAY_MS - 200)
                && last["status_code"] == 200
                && d["next_attempt_at"].is_null(),
            "a retried delivery: {d}"
        );
    }
    let gone_logged = mine
        .iter()
        .filter(|d| d["endpoint"].as_str().is_some_and(|u| u.contains("/gone")))
        .collect::<Vec<_>>();
    ensure!(
        !gone_logged.is_empty() && gone_logged.iter().all(|d| d["status"] == "failed"),
        "/gone's deliveries in the log: {gone_logged:?}"
    );
    ensure!(
        gone_logged
            .iter()
            .any(|d| d["attempt_log"][0]["status_code"] == 410),
        "the 410 is in the log: {gone_logged:?}"
    );

    // The log is bounded and refuses what it must.
    let two = operator_log(ctx, "?limit=2", Some(WEBHOOK_KEY)).await?;
    ensure!(
        two.status == 200 && two.json["deliveries"].as_array().map(Vec::len) == Some(2),
        "limit=2: {}",
        two.text
    );
    let bad = operator_log(ctx, "?limit=0", Some(WEBHOOK_KEY)).await?;
    ensure!(
        bad.status == 400 && bad.json["error"]["code"] == "invalid_field",
        "limit=0: {} {}",
        bad.status,
        bad.text
    );
    let post = ctx
        .request(Method::POST, "/api/v1/webhooks/deliveries", None)
        .bearer_auth(WEBHOOK_KEY)
        .send()
        .await?;
    ensure!(post.status().as_u16() == 405, "POST: {}", post.status());

    // The conversation's actions are events too: the visitor's handoff and an agent's claim
    // reach /ok as a status change and an assignment.
    let handoff = ctx
        .request(
            Method::POST,
            &format!("/api/v1/conversations/{id}/handoff"),
            Some(TENANT),
        )
        .json(&json!({}))
        .send()
        .await?;
    ensure!(handoff.status() == 200, "handoff: {}", handoff.status());
    let claim = ctx
        .request(
            Method::POST,
            &format!("/api/v1/conversations/{id}/claim"),
            None,
        )
        .bearer_auth(WEBHOOK_KEY)
        .json(&json!({"agent": "alex"}))
        .send()
        .await?;
    ensure!(claim.status() == 200, "claim: {}", claim.status());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = receiver.received(ctx).await?;
        let on_ok: Vec<&Received> = all
            .iter()
            .filter(|r| r.path == "/ok" && r.conversation() == id && r.verified)
            .collect();
        let waiting = on_ok.iter().any(|r| {
            r.event_type() == "conversation.status_changed"
                && r.payload["data"]["status"] == "waiting_for_agent"
        });
        let assigned = on_ok.iter().any(|r| {
            r.event_type() == "conversation.assigned" && r.payload["data"]["agent"] == "alex"
        });
        if waiting && assigned {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the handoff's events did not reach /ok (status change: {waiting}, \
                 assignment: {assigned}): {on_ok:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(receiver);
    Ok(())
}
