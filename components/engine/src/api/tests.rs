//! The API's unit tests: routes, body limits, request validation, error bodies and the
//! JSON and SSE shapes, beside one another as a host sees them through `api`.

use serde_json::{Value, json};

use super::*;
use crate::provider::ProviderError;
use crate::vocab::{ConversationId, Message, Part, TenantId};

#[test]
fn an_agent_session_follows_the_tenant_as_loaded() {
    let claims = crate::auth::AgentClaims {
        tenant: "default".into(),
        agent: "ana".into(),
        name: "Ana".into(),
        expires: 10_000,
        issued: 0,
    };
    let now = crate::Timestamp::from_millis(1);
    let roster = crate::TenantConfig::from_json(
        r#"{"agents": [{"id": "ana", "name": "Ana", "disabled": true}]}"#,
    );
    assert_eq!(
        session_on(
            roster.map_err(|e| ApiError::internal(e.to_string())),
            &claims,
            now
        ),
        Err(crate::auth::TokenError::AgentDisabled)
    );
    let gone: Result<crate::TenantConfig, _> = Err(ApiError::new(404, "tenant_not_found", "gone"));
    assert_eq!(
        session_on(gone, &claims, now),
        Err(crate::auth::TokenError::UnknownAgent)
    );
    // A storage hiccup does not cut an agent off.
    assert_eq!(
        session_on(
            Err::<crate::TenantConfig, _>(ApiError::internal("kv")),
            &claims,
            now
        ),
        Ok(())
    );
}

#[test]
fn a_visitor_never_reads_the_providers_own_error() {
    let e = ProviderError::Upstream {
        status: 500,
        message: "org-1234 over budget; key sk-live-abc".into(),
    };
    let id = ConversationId::parse("c1").unwrap();
    let visitor = Message {
        seq: 1,
        role: crate::Role::Visitor,
        parts: vec![Part::Text("hi".into())],
        created_at: crate::Timestamp::from_millis(0),
    };
    let (status, body) = chat_failure_json(&id, true, &visitor, &e);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("provider_error"))
    );
    assert!(!body.to_string().contains("org-1234"), "{body}");
    assert!(!sse_provider_error(&e).contains("sk-live"));
}

#[test]
fn an_agent_acts_under_the_name_and_id_its_token_carries() {
    let claims = crate::auth::AgentClaims {
        tenant: "default".into(),
        agent: "ana".into(),
        name: "Ana".into(),
        expires: u64::MAX,
        issued: 0,
    };
    let bound = bind_agent(ConversationAction::Claim, b"", &claims).unwrap();
    let v: Value = serde_json::from_slice(&bound).unwrap();
    assert_eq!(
        (v["agent"].as_str(), v["name"].as_str()),
        (Some("ana"), Some("Ana"))
    );
    let e = bind_agent(
        ConversationAction::Claim,
        br#"{"name": "Manager"}"#,
        &claims,
    )
    .unwrap_err();
    assert_eq!(
        (e.status, e.code, e.field.as_deref()),
        (403, "agent_mismatch", Some("name"))
    );
    let e = bind_agent(ConversationAction::Claim, br#"{"agent": "bob"}"#, &claims).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("agent"));
}

fn code(body: &[u8]) -> &'static str {
    parse_chat_request(body).unwrap_err().code
}

#[test]
fn body_limits_by_route() {
    let limit = |method: &str, path: &str| request_body_limit(method, path);
    let id = "c_0123456789abcdef0123456789abcdef";
    // Small JSON bodies: 64 KiB.
    for (method, path) in [
        ("POST", "/api/v1/chat".to_owned()),
        ("POST", format!("/api/v1/conversations/{id}/message")),
        ("POST", format!("/api/v1/conversations/{id}/handoff")),
        ("POST", format!("/api/v1/conversations/{id}/typing")),
        ("POST", "/api/v1/agents/tokens".to_owned()),
        ("POST", "/api/v1/config/rollback".to_owned()),
        // Routes that read no body, and requests no route takes, read no more.
        ("GET", "/api/v1/config".to_owned()),
        ("POST", "/no/such/route".to_owned()),
        ("DELETE", "/api/v1/chat".to_owned()),
    ] {
        assert_eq!(limit(method, &path), DEFAULT_BODY_LIMIT, "{method} {path}");
    }
    assert_eq!(DEFAULT_BODY_LIMIT.max_bytes, 64 * 1024);
    let larger = [
        ("PUT", "/api/v1/config".to_owned(), 256 * 1024),
        (
            "POST",
            format!("/api/v1/conversations/{id}/replay"),
            257 * 1024,
        ),
        ("POST", "/api/v1/plugins/pii/test".to_owned(), 256 * 1024),
        ("PUT", "/api/v1/knowledge/sources/faq".to_owned(), 12 << 20),
        ("POST", "/v1/chat/completions".to_owned(), 4 << 20),
    ];
    for (method, path, max) in larger {
        let l = limit(method, &path);
        assert_eq!((l.max_bytes, l.code), (max, "payload_too_large"), "{path}");
    }
    let upload = limit("POST", "/api/v1/attachments");
    assert_eq!(upload.max_bytes, 10 << 20);
    assert_eq!(upload.code, "attachment_too_large");
}

#[test]
fn body_limits_refuse_declared_and_read_lengths() {
    let l = body_limit(&Route::Chat);
    assert!(l.check_declared(None).is_ok());
    assert!(l.check_declared(Some(64 * 1024)).is_ok());
    let refused = l.check_declared(Some(64 * 1024 + 1)).unwrap_err();
    assert_eq!((refused.status, refused.code), (413, "payload_too_large"));
    assert_eq!(refused.body()["error"]["code"], "payload_too_large");
    assert!(refused.message.contains("65536"), "{}", refused.message);
    assert!(l.admits(64 * 1024) && !l.admits(64 * 1024 + 1));
    // The parsers refuse with the very same error as the readers.
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(parse_chat_request(&huge).unwrap_err(), l.refusal());
    let config = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert_eq!(
        parse_config_document(&config, &TenantId::default_tenant(), &Default::default())
            .unwrap_err(),
        body_limit(&Route::Config(ConfigRoute::Put)).refusal()
    );
    let openai = crate::openai_api::parse_request(&vec![b' '; (4 << 20) + 1]).unwrap_err();
    assert_eq!((openai.status, openai.code), (413, "payload_too_large"));
}

#[test]
fn messages_carry_attachments() {
    let a = crate::attachment::new_id([1; 16]);
    let b = crate::attachment::new_id([2; 16]);
    // Files alone are a message; text alone still is one.
    let only_files =
        parse_chat_request(format!(r#"{{"attachments": ["{a}"]}}"#).as_bytes()).unwrap();
    assert_eq!(
        (only_files.message.as_str(), only_files.attachments.len()),
        ("", 1)
    );
    assert!(only_files.parts().is_empty());
    assert_eq!(code(br#"{"attachments": []}"#), "missing_field");
    let five =
        format!(r#"{{"message": "x", "attachments": ["{a}", "{b}", "{a}1", "{b}2", "{a}3"]}}"#);
    assert_eq!(code(five.as_bytes()), "too_many_attachments");
    let twice = parse_chat_request(
        format!(r#"{{"message": "x", "attachments": ["{a}", "{a}"]}}"#).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        (twice.code, twice.field.as_deref()),
        ("invalid_field", Some("attachments[1]"))
    );
    assert_eq!(
        code(br#"{"message": "x", "attachments": "att_1"}"#),
        "invalid_field"
    );
    assert_eq!(
        code(br#"{"message": "x", "attachments": [7]}"#),
        "invalid_field"
    );
    // An agent may answer with a file and no text.
    let sent = parse_action(
        ConversationAction::Message,
        format!(r#"{{"agent": "ana", "attachments": ["{b}"]}}"#).as_bytes(),
    )
    .unwrap();
    assert!(
        matches!(sent, ActionRequest::Message { ref text, ref attachments, .. } if text.is_empty() && attachments == std::slice::from_ref(&b))
    );
    assert!(parse_action(ConversationAction::Message, br#"{"agent": "ana"}"#).is_err());
}

#[test]
fn attachment_routes() {
    let id = crate::attachment::new_id([3; 16]);
    assert_eq!(route("POST", "/api/v1/attachments").unwrap(), Route::Upload);
    assert_eq!(
        route("GET", &format!("/api/v1/attachments/{id}")).unwrap(),
        Route::GetAttachment(id)
    );
    assert_eq!(
        route("GET", "/api/v1/attachments/../x").unwrap_err().code,
        "attachment_not_found"
    );
    assert_eq!(
        route("GET", "/api/v1/attachments").unwrap_err().code,
        "method_not_allowed"
    );
}

#[test]
fn routes_and_methods() {
    assert_eq!(route("POST", "/api/v1/chat"), Ok(Route::Chat));
    assert_eq!(route("GET", "/healthz/"), Ok(Route::Healthz));
    let e = route("GET", "/api/v1/chat").unwrap_err();
    assert_eq!(
        (e.status, e.code, e.allow),
        (405, "method_not_allowed", Some("POST"))
    );
    assert_eq!(
        route("DELETE", "/api/v1/conversations/abc")
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        route("GET", "/api/v1/conversations/a%20b")
            .unwrap_err()
            .code,
        "conversation_not_found"
    );
    assert_eq!(
        route("GET", "/api/v1/conversations/a/b").unwrap_err().code,
        "not_found"
    );
    assert_eq!(route("GET", "/nope").unwrap_err().code, "not_found");
    assert!(matches!(
        route("GET", "/api/v1/conversations/abc"),
        Ok(Route::GetConversation(_))
    ));
}

#[test]
fn unanswered_group_routes() {
    let groups = route("GET", "/api/v1/knowledge/unanswered/groups").unwrap();
    assert_eq!(groups, Route::Knowledge(KnowledgeRoute::UnansweredGroups));
    let answer = route("POST", "/api/v1/knowledge/unanswered/groups/17/answer").unwrap();
    assert_eq!(
        answer,
        Route::Knowledge(KnowledgeRoute::AnswerGroup("17".into()))
    );
    for r in [&groups, &answer] {
        let Route::Knowledge(k) = r else { panic!() };
        assert!(k.operator_only(), "{k:?}");
    }
    assert!(!KnowledgeRoute::Unanswered.operator_only());
    assert!(!KnowledgeRoute::Search.operator_only());
    let e = route("GET", "/api/v1/knowledge/unanswered/groups/17/answer").unwrap_err();
    assert_eq!((e.status, e.allow), (405, Some("POST")));
    let e = route("POST", "/api/v1/knowledge/unanswered/groups/x7/answer").unwrap_err();
    assert_eq!((e.status, e.code), (404, "group_not_found"));
    let e = route("POST", "/api/v1/knowledge/unanswered/groups/17").unwrap_err();
    assert_eq!((e.status, e.code), (404, "not_found"));
}

#[test]
fn plugin_routes_and_tests() {
    use crate::plugin::{
        Answer, CallOutcome, FailureKind, HookCall, ModelDecision, PluginFailure, PluginSpec,
    };
    assert_eq!(route("GET", "/api/v1/plugins"), Ok(Route::Plugins));
    assert_eq!(
        route("POST", "/api/v1/plugins/pii/test"),
        Ok(Route::PluginTest("pii".into()))
    );
    assert_eq!(
        route("GET", "/api/v1/plugins/pii/test").unwrap_err().status,
        405
    );
    assert_eq!(
        route("POST", "/api/v1/plugins/PII/test").unwrap_err().code,
        "plugin_not_found"
    );
    assert_eq!(
        route("POST", "/api/v1/plugins/pii").unwrap_err().code,
        "not_found"
    );

    let config = crate::TenantConfig::from_json(
        r#"{"plugins": [{"id": "pii", "plugin": "pii-redactor", "enabled": false}]}"#,
    )
    .unwrap();
    assert_eq!(
        plugin_spec(&config, "other").unwrap_err().code,
        "plugin_not_found"
    );
    let spec: &PluginSpec = plugin_spec(&config, "pii").unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let body = br#"{"hook": "before_model", "language": "en",
        "request": {"target": "p/m", "messages": [{"role": "user", "text": "a@b.co"}]}}"#;
    let call = parse_plugin_test(body, &tenant, spec).unwrap();
    let HookCall::BeforeModel { ctx, request } = &call else {
        panic!("{call:?}")
    };
    assert_eq!(
        (
            ctx.tenant.as_str(),
            ctx.conversation_id.as_str(),
            ctx.plugin_id.as_str()
        ),
        ("acme", "test", "pii")
    );
    assert_eq!(ctx.language.as_deref(), Some("en"));
    assert_eq!(request.messages.len(), 1);
    for (bad, code) in [
        (&b"[1]"[..], "invalid_field"),
        (b"{", "invalid_json"),
        (br#"{"hook": "explode"}"#, "invalid_field"),
        (
            br#"{"hook": "after_reply", "question": "q"}"#,
            "invalid_field",
        ),
        (
            br#"{"hook": "after_reply", "question": "q", "reply": "r", "ctx": {}}"#,
            "invalid_field",
        ),
    ] {
        assert_eq!(
            parse_plugin_test(bad, &tenant, spec).unwrap_err().code,
            code,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let huge = vec![b' '; MAX_PLUGIN_TEST_BYTES + 1];
    assert_eq!(
        parse_plugin_test(&huge, &tenant, spec).unwrap_err().status,
        413
    );

    // What a turn would do with the answer, checked as a turn checks it.
    let rewrite = Ok(Answer::Model(ModelDecision::Rewrite(vec![
        "[email]".into(),
    ])));
    let record = plugin_call_record(spec, &call, 3, &rewrite);
    assert_eq!(
        record.outcome,
        CallOutcome::Ok {
            effect: "rewrote 1 of 1 messages".into()
        }
    );
    let wrong_length = Ok(Answer::Model(ModelDecision::Rewrite(vec![])));
    let record = plugin_call_record(spec, &call, 3, &wrong_length);
    assert!(matches!(
        record.outcome,
        CallOutcome::Failed {
            failure: FailureKind::Invalid,
            ..
        }
    ));
    let failed = Err(PluginFailure::new(FailureKind::Timeout, "ran out"));
    let record = plugin_call_record(spec, &call, 250, &failed);
    let v = plugin_test_json(&failed, &record);
    assert_eq!(v["answer"], Value::Null);
    assert_eq!(v["record"]["outcome"]["failure"], "timeout");
    assert_eq!(v["record"]["hook"], "before_model");
    assert_eq!(
        plugin_test_json(&rewrite, &record)["answer"],
        json!({"rewrite": ["[email]"]})
    );
}

#[test]
fn conversation_actions_route_and_validate() {
    let r = route("POST", "/api/v1/conversations/c1/claim").unwrap();
    assert!(matches!(
        r,
        Route::ConversationAction(_, ConversationAction::Claim)
    ));
    assert_eq!(
        route("GET", "/api/v1/conversations/c1/claim")
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        route("POST", "/api/v1/conversations/c1/fly")
            .unwrap_err()
            .code,
        "not_found"
    );
    assert_eq!(
        parse_action(
            ConversationAction::Claim,
            br#"{"agent":"alex","name":"Alex"}"#
        )
        .unwrap(),
        ActionRequest::Claim {
            agent: "alex".into(),
            name: "Alex".into()
        }
    );
    assert_eq!(
        parse_action(ConversationAction::Handoff, b"").unwrap(),
        ActionRequest::Handoff { queue: None }
    );
    let code = |a, b: &[u8]| parse_action(a, b).unwrap_err().code;
    assert_eq!(code(ConversationAction::Claim, b"{}"), "missing_field");
    assert_eq!(
        code(ConversationAction::Message, br#"{"agent":"a","text":"  "}"#),
        "invalid_field"
    );
    assert_eq!(
        code(
            ConversationAction::Message,
            br#"{"agent":"a","text":"x","internal":"yes"}"#
        ),
        "invalid_field"
    );
    assert_eq!(
        code(ConversationAction::Csat, br#"{"score":6}"#),
        "invalid_field"
    );
    assert_eq!(
        code(ConversationAction::Csat, br#"{"score":3,"comment":"x"}"#),
        "invalid_field"
    );
    assert_eq!(code(ConversationAction::Resolve, b"[1]"), "invalid_json");
}

#[test]
fn config_documents_are_validated_with_the_field() {
    assert!(matches!(
        route("PUT", "/api/v1/config"),
        Ok(Route::Config(ConfigRoute::Put))
    ));
    assert!(matches!(
        route("GET", "/api/v1/config"),
        Ok(Route::Config(ConfigRoute::Get))
    ));
    assert_eq!(route("DELETE", "/api/v1/config").unwrap_err().status, 405);
    let e = parse_config_document(
        br#"{"history_window": 1}"#,
        &TenantId::default_tenant(),
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        (e.status, e.code, e.field.as_deref()),
        (400, "invalid_config", Some("history_window"))
    );
    assert!(
        parse_config_document(
            br#"{"system_prompt": "Be brief."}"#,
            &TenantId::default_tenant(),
            &Default::default()
        )
        .is_ok()
    );
    assert_eq!(
        parse_rollback(br#"{"version": 0}"#).unwrap_err().code,
        "invalid_field"
    );
    assert_eq!(parse_rollback(br#"{"version": 3}"#).unwrap(), 3);
}

#[test]
fn validates_chat_bodies() {
    assert_eq!(code(b"{"), "invalid_json");
    assert_eq!(code(b"[]"), "invalid_json");
    assert_eq!(code(b"{}"), "missing_field");
    assert_eq!(code(br#"{"message":42}"#), "invalid_field");
    assert_eq!(code(br#"{"message":"hi","stream":"yes"}"#), "invalid_field");
    assert_eq!(code(br#"{"message":"hi","strem":true}"#), "invalid_field");
    assert_eq!(
        code(br#"{"message":"hi","conversation_id":7}"#),
        "invalid_field"
    );
    assert_eq!(
        code(br#"{"message":"hi","conversation_id":"no pe"}"#),
        "conversation_not_found"
    );
    assert_eq!(code(br#"{"message":" \n "}"#), "empty_message");
    let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(MAX_MESSAGE_CHARS + 1));
    assert_eq!(code(long.as_bytes()), "message_too_large");
    let huge = format!(r#"{{"message":"{}"}}"#, "x".repeat(1 << 20));
    assert_eq!(code(huge.as_bytes()), "payload_too_large");
    // Characters, not bytes: 16 000 Chinese characters are allowed (48 000 bytes).
    let zh = format!(r#"{{"message":"{}"}}"#, "你".repeat(MAX_MESSAGE_CHARS));
    assert!(parse_chat_request(zh.as_bytes()).is_ok());
    let ok =
        parse_chat_request(br#"{"message":"hi","stream":true,"conversation_id":"c_1"}"#).unwrap();
    assert!(ok.stream);
    assert_eq!(ok.conversation_id.unwrap().as_str(), "c_1");
}

#[test]
fn validates_the_visitor_identity_shape() {
    let hash = "ab".repeat(32);
    let ok = parse_chat_request(
        format!(r#"{{"message":"hi","visitor":{{"id":"user-42","hash":"{hash}"}}}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(ok.visitor.unwrap().id, "user-42");
    let field = |body: String| parse_chat_request(body.as_bytes()).unwrap_err().field;
    assert_eq!(
        field(r#"{"message":"hi","visitor":"user-42"}"#.into()).as_deref(),
        Some("visitor")
    );
    assert_eq!(
        field(format!(
            r#"{{"message":"hi","visitor":{{"id":"","hash":"{hash}"}}}}"#
        ))
        .as_deref(),
        Some("visitor.id")
    );
    assert_eq!(
        field(r#"{"message":"hi","visitor":{"id":"u","hash":"xyz"}}"#.into()).as_deref(),
        Some("visitor.hash")
    );
    assert_eq!(
        field(format!(
            r#"{{"message":"hi","visitor":{{"id":"u","hash":"{hash}","email":"a@b"}}}}"#
        ))
        .as_deref(),
        Some("visitor.email")
    );
}

#[test]
fn error_bodies_are_stable() {
    let e = parse_chat_request(b"{}").unwrap_err();
    assert_eq!(
        e.body(),
        json!({"error": {"code": "missing_field", "message": "`message` is required", "field": "message"}})
    );
    assert_eq!(
        tenant(Some("bad tenant!")).unwrap_err().code,
        "invalid_tenant"
    );
    assert_eq!(tenant(None).unwrap().as_str(), "default");
}

#[test]
fn sse_frames() {
    assert_eq!(
        sse_delta("Hi\n"),
        "event: delta\ndata: {\"text\":\"Hi\\n\"}\n\n"
    );
    assert!(sse_error("provider_timeout", "slow").starts_with("event: error\n"));
}

#[test]
fn minting_follows_the_roster() {
    let tenant = TenantId::parse("acme").unwrap();
    let now = crate::Timestamp::from_millis(1_000);
    let open = crate::TenantConfig::default();
    let c = mint_agent_claims(&open, &tenant, br#"{"agent":"anyone"}"#, now).unwrap();
    assert_eq!(
        (c.name.as_str(), c.issued, c.expires),
        ("anyone", 1_000, 1_000 + 8 * 3_600_000)
    );
    let listed = crate::TenantConfig::from_json(
        r#"{"agents":[{"id":"alex","name":"Alex"},{"id":"kim","name":"Kim","disabled":true}]}"#,
    )
    .unwrap();
    let c = mint_agent_claims(&listed, &tenant, br#"{"agent":"alex"}"#, now).unwrap();
    assert_eq!((c.tenant.as_str(), c.name.as_str()), ("acme", "Alex"));
    let c = mint_agent_claims(&listed, &tenant, br#"{"agent":"alex","name":"Al"}"#, now).unwrap();
    assert_eq!(c.name, "Al");
    let e = mint_agent_claims(&listed, &tenant, br#"{"agent":"anyone"}"#, now).unwrap_err();
    assert_eq!(
        (e.status, e.code, e.field.as_deref()),
        (400, "unknown_agent", Some("agent"))
    );
    let e = mint_agent_claims(&listed, &tenant, br#"{"agent":"kim"}"#, now).unwrap_err();
    assert_eq!((e.status, e.code), (403, "agent_disabled"));
    let e = agent_token_error(&crate::auth::TokenError::Revoked);
    assert_eq!((e.status, e.code), (401, "token_revoked"));
}

#[test]
fn agents_see_the_summary_visitors_do_not() {
    let cfg = crate::TenantConfig {
        history_window: 2,
        ..crate::TenantConfig::default()
    };
    let mut c = crate::Conversation::new(
        ConversationId::parse("c1").unwrap(),
        TenantId::default_tenant(),
        crate::Timestamp::from_millis(1),
    );
    let fresh = conversation_json(&c, &[], true, None);
    assert_eq!(fresh["summary"], json!({"text": null, "messages": 0}));
    for text in ["Order #48213 is late.", "second", "third"] {
        c.handle_visitor_message(
            crate::Timestamp::from_millis(2),
            vec![Part::Text(text.into())],
            &cfg,
        )
        .unwrap();
    }
    let agents = conversation_json(&c, &[], true, None);
    assert_eq!(
        agents["summary"],
        json!({"text": "Visitor: Order #48213 is late.", "messages": 1})
    );
    let visitors = conversation_json(&c, &[], false, None);
    assert!(visitors.get("summary").is_none(), "{visitors}");
}
