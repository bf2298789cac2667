//! Standard Webhooks: the spec's published vectors, verification, payloads, endpoints and
//! the retry schedule.

use core::time::Duration;

use kefu_engine::webhook::{
    self, AttemptOutcome, AttemptResult, DEFAULT_TOLERANCE, Delivery, DeliveryStatus, EventPayload,
    MAX_ATTEMPTS, Next, RETRY_DELAYS, WebhookEndpoint, WebhookError, WebhookSecret, sign,
    validate_endpoints, verify,
};
use kefu_engine::{ConversationId, Event, Role, Status, Timestamp};
use serde_json::json;

/// The vector every Standard Webhooks reference library tests `sign` against (JavaScript,
/// PHP, Python, …: `libraries/*` in github.com/standard-webhooks/standard-webhooks).
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: u64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// The Rust reference library's own `test_sign` vector.
const RUST_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const RUST_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const RUST_TIMESTAMP: u64 = 1_649_367_553;
const RUST_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const RUST_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

fn secret(s: &str) -> WebhookSecret {
    WebhookSecret::parse(s).expect("valid secret")
}

fn at_secs(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

fn conversation() -> ConversationId {
    ConversationId::parse("conv_1").unwrap()
}

#[test]
fn signatures_match_the_published_vectors() {
    assert_eq!(
        sign(&secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
        SPEC_SIGNATURE
    );
    assert_eq!(
        sign(&secret(RUST_SECRET), RUST_ID, RUST_TIMESTAMP, RUST_BODY),
        RUST_SIGNATURE
    );
}

#[test]
fn the_published_vector_verifies() {
    let headers = [
        ("webhook-id", SPEC_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SPEC_SIGNATURE),
    ];
    let now = at_secs(SPEC_TIMESTAMP + 10);
    assert_eq!(
        verify(
            &[secret(SPEC_SECRET)],
            &headers,
            SPEC_BODY,
            now,
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );
    // Header names are case-insensitive, as HTTP's are.
    let shouting = [
        ("Webhook-Id", SPEC_ID),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("Webhook-Signature", SPEC_SIGNATURE),
    ];
    assert!(
        verify(
            &[secret(SPEC_SECRET)],
            &shouting,
            SPEC_BODY,
            now,
            DEFAULT_TOLERANCE
        )
        .is_ok()
    );
}

#[test]
fn headers_carry_id_timestamp_and_one_signature_per_secret() {
    let old = secret(RUST_SECRET);
    let new = secret(SPEC_SECRET);
    let h = webhook::headers(
        &[new.clone(), old.clone()],
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_BODY,
    );
    assert_eq!(h[0], ("webhook-id", SPEC_ID.to_owned()));
    assert_eq!(h[1], ("webhook-timestamp", "1614265330".to_owned()));
    let sigs: Vec<&str> = h[2].1.split(' ').collect();
    assert_eq!(h[2].0, "webhook-signature");
    assert_eq!(sigs.len(), 2);
    assert_eq!(sigs[0], SPEC_SIGNATURE);
    // Either secret alone verifies: rotation without downtime.
    let now = at_secs(SPEC_TIMESTAMP);
    for s in [new, old] {
        assert!(verify(&[s], &h, SPEC_BODY, now, DEFAULT_TOLERANCE).is_ok());
    }
}

#[test]
fn verification_rejects_tampering_wrong_secrets_and_stale_timestamps() {
    let key = secret(SPEC_SECRET);
    let ts = 1_700_000_000;
    let body = br#"{"type":"message.created"}"#;
    let h = webhook::headers(std::slice::from_ref(&key), "msg_abc", ts, body);
    let now = at_secs(ts);
    let check = |headers: &[(&str, String)], body: &[u8], now, keys: &[WebhookSecret]| {
        verify(keys, headers, body, now, DEFAULT_TOLERANCE)
    };
    let keys = [key.clone()];
    assert_eq!(check(&h, body, now, &keys), Ok(()));

    // A changed body, id or timestamp breaks the signature.
    let tampered = br#"{"type":"message.created" }"#;
    assert_eq!(
        check(&h, tampered, now, &keys),
        Err(WebhookError::NoMatchingSignature)
    );
    let mut other_id = h.clone();
    other_id[0].1 = "msg_abd".into();
    assert_eq!(
        check(&other_id, body, now, &keys),
        Err(WebhookError::NoMatchingSignature)
    );
    let mut other_ts = h.clone();
    other_ts[1].1 = (ts + 1).to_string();
    assert_eq!(
        check(&other_ts, body, now, &keys),
        Err(WebhookError::NoMatchingSignature)
    );

    // The wrong secret, or none at all.
    assert_eq!(
        check(&h, body, now, &[secret(RUST_SECRET)]),
        Err(WebhookError::NoMatchingSignature)
    );
    assert_eq!(
        check(&h, body, now, &[]),
        Err(WebhookError::NoMatchingSignature)
    );
    // The right one among several.
    assert_eq!(check(&h, body, now, &[secret(RUST_SECRET), key]), Ok(()));

    // Five minutes either way is fine; beyond is a replay or a broken clock.
    let tol = DEFAULT_TOLERANCE.as_secs();
    assert_eq!(check(&h, body, at_secs(ts + tol), &keys), Ok(()));
    assert_eq!(check(&h, body, at_secs(ts - tol), &keys), Ok(()));
    assert_eq!(
        check(&h, body, at_secs(ts + tol + 1), &keys),
        Err(WebhookError::TimestampTooOld)
    );
    assert_eq!(
        check(&h, body, at_secs(ts - tol - 1), &keys),
        Err(WebhookError::TimestampInFuture)
    );
}

#[test]
fn verification_handles_multiple_and_malformed_signatures() {
    let key = secret(SPEC_SECRET);
    let now = at_secs(SPEC_TIMESTAMP);
    let with_signatures = |sigs: &str| {
        vec![
            ("webhook-id", SPEC_ID.to_owned()),
            ("webhook-timestamp", SPEC_TIMESTAMP.to_string()),
            ("webhook-signature", sigs.to_owned()),
        ]
    };
    let run = |sigs: &str| {
        verify(
            std::slice::from_ref(&key),
            &with_signatures(sigs),
            SPEC_BODY,
            now,
            DEFAULT_TOLERANCE,
        )
    };
    // From the reference libraries' "multi sig payload is valid".
    let multi = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SPEC_SIGNATURE} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    );
    assert_eq!(run(&multi), Ok(()));
    // The right bytes under another version (v1a is ed25519) do not count.
    let v1a = SPEC_SIGNATURE.replace("v1,", "v1a,");
    for bad in [
        "v1,dawfeoifkpqwoekfpqoekf",
        &SPEC_SIGNATURE[..8],
        "v1,",
        "",
        v1a.as_str(),
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ] {
        assert_eq!(run(bad), Err(WebhookError::NoMatchingSignature), "{bad}");
    }
    let huge = format!("{} {SPEC_SIGNATURE}", "v1,AAAA ".repeat(1000));
    assert_eq!(
        run(&huge),
        Err(WebhookError::InvalidHeader("webhook-signature"))
    );

    // Missing and malformed headers.
    let full = with_signatures(SPEC_SIGNATURE);
    for (i, name) in ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .enumerate()
    {
        let mut h = full.clone();
        h.remove(i);
        assert_eq!(
            verify(
                std::slice::from_ref(&key),
                &h,
                SPEC_BODY,
                now,
                DEFAULT_TOLERANCE
            ),
            Err(WebhookError::MissingHeader(name))
        );
    }
    for ts in [
        "hello",
        "-1614265330",
        "1614265330.5",
        "",
        "99999999999999999999999",
    ] {
        let mut h = full.clone();
        h[1].1 = ts.into();
        assert_eq!(
            verify(
                std::slice::from_ref(&key),
                &h,
                SPEC_BODY,
                now,
                DEFAULT_TOLERANCE
            ),
            Err(WebhookError::InvalidHeader("webhook-timestamp")),
            "{ts}"
        );
    }
}

#[test]
fn payloads_have_type_timestamp_and_data() {
    let at = Timestamp::from_millis(1_795_593_600_123);
    let c = conversation();
    let cases = [
        (
            EventPayload::from_event(
                &Event::ConversationCreated {
                    conversation: c.clone(),
                },
                at,
            ),
            json!({"type": "conversation.created", "timestamp": "2026-11-25T08:00:00.123Z",
                   "data": {"conversation_id": "conv_1"}}),
        ),
        (
            EventPayload::from_event(
                &Event::MessageCreated {
                    conversation: c.clone(),
                    seq: 3,
                    role: Role::Visitor,
                },
                at,
            ),
            json!({"type": "message.created", "timestamp": "2026-11-25T08:00:00.123Z",
                   "data": {"conversation_id": "conv_1", "seq": 3, "role": "visitor"}}),
        ),
        (
            EventPayload::from_event(
                &Event::StatusChanged {
                    conversation: c.clone(),
                    status: Status::WaitingForAgent,
                },
                at,
            ),
            json!({"type": "conversation.status_changed", "timestamp": "2026-11-25T08:00:00.123Z",
                   "data": {"conversation_id": "conv_1", "status": "waiting_for_agent"}}),
        ),
        (
            EventPayload::conversation_assigned(&c, "agent_7", at),
            json!({"type": "conversation.assigned", "timestamp": "2026-11-25T08:00:00.123Z",
                   "data": {"conversation_id": "conv_1", "agent": "agent_7"}}),
        ),
        (
            EventPayload::csat_submitted(&c, 4, at),
            json!({"type": "csat.submitted", "timestamp": "2026-11-25T08:00:00.123Z",
                   "data": {"conversation_id": "conv_1", "score": 4}}),
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(payload.json(), &expected);
        assert_eq!(payload.event_type(), expected["type"]);
        assert!(webhook::EVENT_TYPES.contains(&payload.event_type()));
        // The body is minified JSON of the same value.
        let body = payload.to_body();
        assert!(!body.contains(": "), "{body}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap(),
            expected
        );
    }
}

#[test]
fn plain_builders_agree_with_the_engine_events() {
    let at = Timestamp::from_millis(5);
    let c = conversation();
    assert_eq!(
        EventPayload::conversation_assigned(&c, "a1", at),
        EventPayload::from_event(
            &Event::Assigned {
                conversation: c.clone(),
                agent: "a1".into()
            },
            at
        )
    );
    assert_eq!(
        EventPayload::csat_submitted(&c, 5, at),
        EventPayload::from_event(
            &Event::CsatSubmitted {
                conversation: c.clone(),
                score: 5
            },
            at
        )
    );
}

fn endpoint(json: serde_json::Value) -> WebhookEndpoint {
    serde_json::from_value(json).expect("endpoint JSON")
}

#[test]
fn endpoints_validate_and_filter_events() {
    let e = endpoint(
        json!({"url": "https://hooks.example.com/kefu", "secret": SPEC_SECRET,
                            "events": ["message.created", "csat.submitted"]}),
    );
    assert!(e.enabled, "enabled by default");
    validate_endpoints(std::slice::from_ref(&e)).unwrap();
    assert!(e.wants("message.created"));
    assert!(!e.wants("conversation.created"));
    let all = endpoint(json!({"url": "http://localhost:8787/h", "secret": SPEC_SECRET}));
    assert!(all.wants("conversation.assigned"));
    let off =
        endpoint(json!({"url": "http://127.0.0.1:9/h", "secret": SPEC_SECRET, "enabled": false}));
    assert!(!off.wants("message.created"));
    validate_endpoints(&[all, off]).unwrap();
    // The secret never shows in debug output.
    assert!(!format!("{e:?}").contains("MfKQ"));
    assert_eq!(e.signing_secret().unwrap(), secret(SPEC_SECRET));

    let cases = [
        (
            json!({"url": "http://hooks.example.com/", "secret": SPEC_SECRET}),
            "webhooks[1].url",
        ),
        (
            json!({"url": "https://x.example/", "secret": "hunter2"}),
            "webhooks[1].secret",
        ),
        (
            json!({"url": "https://x.example/", "secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
            "webhooks[1].secret",
        ),
        // Too short: 3 bytes.
        (
            json!({"url": "https://x.example/", "secret": "whsec_AAAA"}),
            "webhooks[1].secret",
        ),
        (
            json!({"url": "https://x.example/", "secret": SPEC_SECRET, "events": ["message.created", "message.deleted"]}),
            "webhooks[1].events[1]",
        ),
    ];
    let good = endpoint(json!({"url": "https://ok.example/", "secret": RUST_SECRET}));
    for (bad, field) in cases {
        let err = validate_endpoints(&[good.clone(), endpoint(bad.clone())]).unwrap_err();
        assert_eq!(err.field, field, "{bad}: {err}");
        assert!(!err.message.contains("MfKQ"), "{err}");
    }
    assert!(
        serde_json::from_value::<WebhookEndpoint>(
            json!({"url": "https://x.example/", "secret": SPEC_SECRET, "event": []})
        )
        .is_err()
    );
}

fn delivery(seed: u64) -> Delivery {
    let payload = EventPayload::from_event(
        &Event::ConversationCreated {
            conversation: conversation(),
        },
        Timestamp::from_millis(1_000),
    );
    Delivery::new(
        "evt_1",
        "https://hooks.example.com/kefu",
        &payload,
        Timestamp::from_millis(1_000),
        seed,
    )
    .unwrap()
}

const MS: Duration = Duration::from_millis(120);

#[test]
fn a_new_delivery_is_due_at_once_and_signs_each_attempt() {
    let d = delivery(1);
    assert_eq!(d.id, "msg_evt_1");
    assert_eq!(d.event_type, "conversation.created");
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert!(d.is_due(Timestamp::from_millis(1_000)));
    assert!(!d.is_due(Timestamp::from_millis(999)));

    let now = at_secs(1_700_000_000);
    let req = d.request(&[secret(SPEC_SECRET)], now);
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "https://hooks.example.com/kefu");
    assert_eq!(req.body, d.payload.as_bytes());
    let headers: Vec<(&str, String)> = req
        .headers
        .iter()
        .map(|h| (h.name, h.value.clone()))
        .collect();
    assert!(headers.contains(&("content-type", "application/json".into())));
    assert!(headers.contains(&("webhook-timestamp", "1700000000".into())));
    assert_eq!(
        verify(
            &[secret(SPEC_SECRET)],
            &headers,
            &req.body,
            now,
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );

    for bad in ["", "a.b", "x y", &"x".repeat(129)] {
        let payload = EventPayload::csat_submitted(&conversation(), 1, now);
        assert_eq!(
            Delivery::new(bad, "https://x.example", &payload, now, 0).unwrap_err(),
            WebhookError::InvalidEventId
        );
    }
}

#[test]
fn retries_follow_the_schedule_with_jitter_then_give_up() {
    let mut d = delivery(42);
    let mut now = Timestamp::from_millis(1_000);
    for (i, base) in RETRY_DELAYS.iter().enumerate() {
        let outcome = match i % 3 {
            0 => AttemptOutcome::status(503, MS),
            1 => AttemptOutcome::timeout(webhook::REQUEST_TIMEOUT),
            _ => AttemptOutcome::network("connection reset by peer", MS),
        };
        let Next::RetryAt(next) = d.record(now, outcome) else {
            panic!("attempt {} should be retried", i + 1)
        };
        let wait = next.since(now).as_millis() as f64;
        let base = base.as_millis() as f64;
        assert!(
            (base * 0.9..=base * 1.1).contains(&wait),
            "attempt {}: waited {wait} ms for {base}",
            i + 1
        );
        assert_eq!(d.next_at, Some(next));
        assert!(!d.is_due(now) && d.is_due(next));
        now = next;
    }
    assert_eq!(d.attempts, MAX_ATTEMPTS - 1);
    assert_eq!(d.record(now, AttemptOutcome::status(500, MS)), Next::GaveUp);
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.attempts, MAX_ATTEMPTS);
    assert_eq!(d.next_at, None);
    assert_eq!(d.log.len(), MAX_ATTEMPTS as usize);
    assert_eq!(d.log[0].result, AttemptResult::Status { code: 503 });
    assert_eq!(d.log[1].result, AttemptResult::Timeout);
    assert_eq!(
        d.log[2].result,
        AttemptResult::Network {
            error: "connection reset by peer".into()
        }
    );
    assert_eq!(d.log[0].duration_ms, 120);
    assert_eq!(d.log[0].at, Timestamp::from_millis(880));
    // Roughly 27.5 hours from the first attempt to giving up.
    let total = now.since(Timestamp::from_millis(1_000)).as_secs();
    assert!((89_000..=109_000).contains(&total), "{total}");
    // Over is over.
    assert_eq!(d.record(now, AttemptOutcome::status(200, MS)), Next::GaveUp);
    assert_eq!(d.attempts, MAX_ATTEMPTS);
}

#[test]
fn the_schedule_is_replayable_from_the_seed() {
    let run = |seed| {
        let mut d = delivery(seed);
        let mut now = Timestamp::from_millis(1_000);
        let mut times = Vec::new();
        while let Next::RetryAt(t) = d.record(now, AttemptOutcome::status(500, MS)) {
            times.push(t);
            now = t;
        }
        times
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn success_ends_the_delivery() {
    let mut d = delivery(1);
    let now = Timestamp::from_millis(2_000);
    assert!(matches!(
        d.record(now, AttemptOutcome::status(429, MS)),
        Next::RetryAt(_)
    ));
    assert_eq!(
        d.record(now, AttemptOutcome::status(204, MS)),
        Next::Delivered
    );
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.next_at, None);
    assert!(!d.is_due(now));
    assert_eq!(
        d.record(now, AttemptOutcome::status(500, MS)),
        Next::Delivered
    );
    assert_eq!(d.log.len(), 2);
}

#[test]
fn gone_disables_the_endpoint() {
    let mut d = delivery(1);
    let now = Timestamp::from_millis(2_000);
    assert_eq!(
        d.record(now, AttemptOutcome::status(410, MS)),
        Next::DisableEndpoint
    );
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.next_at, None);
    assert_eq!(
        d.record(now, AttemptOutcome::status(200, MS)),
        Next::DisableEndpoint
    );
}

#[test]
fn other_failures_are_retried() {
    for code in [301, 400, 401, 403, 404, 413, 429, 500, 502, 504, 100, 600] {
        let mut d = delivery(1);
        assert!(
            matches!(
                d.record(
                    Timestamp::from_millis(2_000),
                    AttemptOutcome::status(code, MS)
                ),
                Next::RetryAt(_)
            ),
            "{code}"
        );
    }
}

#[test]
fn retry_after_can_delay_but_not_hasten() {
    let now = Timestamp::from_millis(10_000);
    let mut d = delivery(3);
    let next = d.record(
        now,
        AttemptOutcome::status(429, MS).with_retry_after(Duration::from_secs(60)),
    );
    assert_eq!(next, Next::RetryAt(now + Duration::from_secs(60)));
    let mut d = delivery(3);
    let Next::RetryAt(t) = d.record(
        now,
        AttemptOutcome::status(503, MS).with_retry_after(Duration::from_secs(1)),
    ) else {
        panic!("retry expected")
    };
    assert!(t.since(now) >= Duration::from_millis(4_500));
    let mut d = delivery(3);
    let next = d.record(
        now,
        AttemptOutcome::status(503, MS).with_retry_after(Duration::from_secs(7 * 86_400)),
    );
    assert_eq!(next, Next::RetryAt(now + webhook::MAX_RETRY_AFTER));
}

#[test]
fn deliveries_persist_as_json() {
    let mut d = delivery(9);
    d.record(
        Timestamp::from_millis(2_000),
        AttemptOutcome::network("dns: no such host", MS),
    );
    let stored = serde_json::to_string(&d).unwrap();
    let back: Delivery = serde_json::from_slice(stored.as_bytes()).unwrap();
    assert_eq!(back, d);
    let v: serde_json::Value = serde_json::from_slice(stored.as_bytes()).unwrap();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["log"][0]["result"]["kind"], "network");
    let long = "x".repeat(10_000);
    let o = AttemptOutcome::network(&long, MS);
    let AttemptResult::Network { error } = o.result else {
        panic!()
    };
    assert_eq!(error.len(), 200);
}
