use super::*;
use crate::config_history::{self, ConfigMeta};
use crate::replay::ChunkHit;
use crate::time::Timestamp;

fn err(body: &str) -> (u16, &'static str, Option<String>) {
    let e = parse_test_case(body.as_bytes()).unwrap_err();
    (e.status, e.code, e.field)
}

#[test]
fn test_cases_are_validated_with_the_field_at_fault() {
    let ok = parse_test_case(
        br#"{"messages": ["hi"], "expect": [{"kind": "answered_from", "source": "shipping"}, {"kind": "no_pii_to_model"}]}"#,
    )
    .unwrap();
    assert_eq!(ok.expect.len(), 2);
    assert_eq!(err("[]").1, "invalid_json");
    assert_eq!(err(r#"{"expect": []}"#).1, "missing_field");
    assert_eq!(
        err(r#"{"messages": [], "expect": [{"kind": "handoff"}]}"#).2,
        Some("messages".into())
    );
    assert_eq!(
        err(r#"{"messages": ["a", " "], "expect": [{"kind": "handoff"}]}"#).2,
        Some("messages[1]".into())
    );
    let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
    assert_eq!(
        err(&format!(
            r#"{{"messages": ["{long}"], "expect": [{{"kind": "handoff"}}]}}"#
        ))
        .2,
        Some("messages[0]".into())
    );
    assert_eq!(
        err(r#"{"messages": ["a"], "expect": [{"kind": "guess"}]}"#).2,
        Some("expect[0].kind".into())
    );
    assert_eq!(
        err(r#"{"messages": ["a"], "expect": [{"kind": "handoff"}, {"kind": "mentions"}]}"#).2,
        Some("expect[1].text".into())
    );
    assert_eq!(
        err(r#"{"messages": ["a"], "expect": [{"kind": "handoff", "text": "x"}]}"#).2,
        Some("expect[0].text".into())
    );
    assert_eq!(
        err(r#"{"messages": ["a"], "expect": [{"kind": "handoff"}], "name": "x"}"#).2,
        Some("name".into())
    );
    assert!(api::is_test_id("refund-1.b") && !api::is_test_id("a/b") && !api::is_test_id(""));
}

#[test]
fn a_tenant_keeps_a_bounded_number_of_cases() {
    let tenant = TenantId::parse("acme").unwrap();
    let body = br#"{"messages": ["hi"], "expect": [{"kind": "handoff"}]}"#;
    let mut stored: Option<String> = None;
    for n in 0..MAX_CASES {
        let (op, _) = put_test(&tenant, stored.as_deref(), &format!("c{n}"), body).unwrap();
        let KvOp::Put(key, value) = op else { panic!() };
        assert_eq!(key, "tenant:acme:tests");
        stored = Some(value);
    }
    let e = put_test(&tenant, stored.as_deref(), "one-more", body).unwrap_err();
    assert_eq!((e.status, e.code), (409, "too_many_tests"));
    // Replacing one is not adding one.
    assert!(put_test(&tenant, stored.as_deref(), "c3", body).is_ok());
    assert_eq!(
        list_tests(stored.as_deref())["tests"]
            .as_array()
            .unwrap()
            .len(),
        MAX_CASES
    );
    let KvOp::Put(_, after) = delete_test(&tenant, stored.as_deref(), "c0").unwrap() else {
        panic!()
    };
    assert_eq!(
        get_test(Some(&after), "c0").unwrap_err().code,
        "test_not_found"
    );
    assert_eq!(get_test(Some(&after), "c1").unwrap()["id"], "c1");
}

fn turn(responder: &str, reply: &str, record: TurnRecord) -> TurnSeen {
    TurnSeen {
        visitor: "q".into(),
        reply: Some(reply.into()),
        responder: responder.into(),
        record: Some(record),
        handed_off: false,
        error: None,
    }
}

fn chunk(source: &str, in_prompt: bool) -> ChunkHit {
    ChunkHit {
        source_id: source.into(),
        chunk_id: format!("{source}#0"),
        title: None,
        score: 1.0,
        in_prompt,
    }
}

#[test]
fn answered_from_needs_a_citation_or_a_grounded_model_reply() {
    let expect = Expectation::AnsweredFrom {
        source: "shipping".into(),
    };
    let grounded = TurnRecord {
        knowledge: vec![chunk("returns", true), chunk("shipping", true)],
        ..TurnRecord::default()
    };
    let seen = CaseSeen {
        turns: vec![turn("provider", "3 days", grounded.clone())],
        ..CaseSeen::default()
    };
    assert!(judge(&expect, &seen).0);
    // Retrieved but left out of the prompt, or a rule's reply: not answered from it.
    let retrieved_only = TurnRecord {
        knowledge: vec![chunk("shipping", false), chunk("returns", true)],
        ..TurnRecord::default()
    };
    let seen = CaseSeen {
        turns: vec![turn("provider", "3 days", retrieved_only)],
        ..CaseSeen::default()
    };
    let (passed, detail) = judge(&expect, &seen);
    assert!(!passed);
    assert!(detail.contains("returns"), "{detail}");
    let seen = CaseSeen {
        turns: vec![turn("rule", "3 days", grounded)],
        ..CaseSeen::default()
    };
    assert!(!judge(&expect, &seen).0);
    // A citation is enough.
    let cited = TurnRecord {
        citations: vec![crate::vocab::Citation {
            number: 1,
            chunk_id: "shipping#2".into(),
            source_id: "shipping".into(),
            title: None,
            url: None,
            heading: None,
        }],
        ..TurnRecord::default()
    };
    let seen = CaseSeen {
        turns: vec![turn("provider", "3 days [1]", cited)],
        ..CaseSeen::default()
    };
    assert!(judge(&expect, &seen).0);
    // No answer.
    let seen = CaseSeen {
        turns: vec![turn("no_answer", "I don't know", TurnRecord::default())],
        ..CaseSeen::default()
    };
    assert!(judge(&Expectation::NoAnswer, &seen).0);
    assert!(!judge(&expect, &seen).0);
}

#[test]
fn email_addresses_are_found_in_what_reaches_the_model() {
    for yes in [
        "ana@example.com",
        r#"{"content":"write to ana.b+x@mail.example.co.uk please"}"#,
        "AN@EXAMPLE.ORG.",
    ] {
        assert!(has_email_address(yes), "{yes}");
    }
    for no in [
        "@example.com",
        "ana@localhost",
        "price @ 5.00",
        "[email]",
        "a@b.c1",
        "no at sign",
    ] {
        assert!(!has_email_address(no), "{no}");
    }
}

fn suite(failing: &[&str], total: usize) -> Value {
    json!({"passed": failing.is_empty(), "total": total, "failed": failing.len(), "failing": failing, "cases": []})
}

#[test]
fn a_failing_suite_blocks_publishing_unless_overridden_with_a_reason() {
    let plain = parse_publish(b"").unwrap();
    assert_eq!(plain, PublishRequest::default());
    let refused = decide_publish(&suite(&["pii"], 3), &plain).unwrap_err();
    assert_eq!(
        (refused.error.status, refused.error.code),
        (409, "suite_failed")
    );
    assert_eq!(refused.body()["suite"]["failing"], json!(["pii"]));
    assert_eq!(refused.body()["error"]["code"], "suite_failed");

    let e = parse_publish(br#"{"override": true}"#).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        ("missing_field", Some("reason"))
    );
    assert_eq!(
        parse_publish(br#"{"override": "yes", "reason": "x"}"#)
            .unwrap_err()
            .field
            .as_deref(),
        Some("override")
    );
    assert_eq!(
        parse_publish(br#"{"force": true}"#).unwrap_err().code,
        "invalid_field"
    );
    let over =
        parse_publish(br#"{"override": true, "reason": "the PII plugin ships tomorrow"}"#).unwrap();
    let publication = decide_publish(&suite(&["pii"], 3), &over).unwrap();
    assert!(publication.overridden);
    assert_eq!((publication.passed, publication.failed), (2, 1));

    // The history keeps the override and its reason.
    let tenant = TenantId::parse("acme").unwrap();
    let (version, ops) = config_history::publish_version(
        &ConfigMeta::default(),
        &tenant,
        "{}",
        publication,
        Timestamp::from_millis(1),
    );
    assert_eq!(version, 1);
    let KvOp::Put(key, meta) = ops.last().unwrap() else {
        panic!()
    };
    assert_eq!(key, "tenant:acme:meta");
    let meta: Value = serde_json::from_slice(meta.as_bytes()).unwrap();
    let entry = &meta["history"][0];
    assert_eq!(entry["change"], "publish draft (override: 1 failing)");
    assert_eq!(entry["publication"]["override"], true);
    assert_eq!(
        entry["publication"]["reason"],
        "the PII plugin ships tomorrow"
    );
    assert_eq!(entry["publication"]["failing"], json!(["pii"]));

    // A passing suite publishes plainly (an override of nothing is not recorded as one).
    let publication = decide_publish(&suite(&[], 3), &over).unwrap();
    assert!(!publication.overridden && publication.reason.is_none());
    let (_, ops) = config_history::publish_version(
        &ConfigMeta::default(),
        &tenant,
        "{}",
        publication,
        Timestamp::from_millis(1),
    );
    let KvOp::Put(_, meta) = ops.last().unwrap() else {
        panic!()
    };
    assert!(meta.contains(r#""change":"publish draft""#), "{meta}");
    // Versions written before publications existed still read.
    let old = r#"{"version": 2, "history": [{"version": 2, "at": "x", "change": "put"}]}"#;
    assert_eq!(
        ConfigMeta::from_json(Some(old)).history[0].publication,
        None
    );
}

#[test]
fn a_draft_is_validated_like_a_configuration() {
    let tenant = TenantId::parse("acme").unwrap();
    let deployment = crate::deployment::Deployment::default();
    let e = put_draft(br#"{"routes": 3}"#, &tenant, &deployment).unwrap_err();
    assert_eq!(e.code, "invalid_config");
    let op = put_draft(br#"{"system_prompt": "Hi"}"#, &tenant, &deployment).unwrap();
    assert_eq!(
        op,
        KvOp::Put(
            "tenant:acme:draft".into(),
            r#"{"system_prompt": "Hi"}"#.into()
        )
    );
    assert_eq!(
        suite_to_run(&tenant, None, None, &deployment)
            .unwrap_err()
            .code,
        "draft_not_found"
    );
    let view = draft_json(&tenant, Some(r#"{"system_prompt": "Hi"}"#), 4);
    assert_eq!(view["draft"]["system_prompt"], "Hi");
    assert_eq!(view["live_version"], 4);
}
