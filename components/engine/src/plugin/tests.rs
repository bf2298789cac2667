//! The plugin contract's unit tests: specs and grants, URL policy, hook calls, answers
//! and their checks, tools, records and events.

use serde_json::{Value, json};

use super::*;
use crate::vocab::Part;
use crate::wire::{PromptMessage, PromptRole};

fn spec(doc: Value) -> Vec<PluginSpec> {
    serde_json::from_value(doc).unwrap()
}

#[test]
fn plugin_config_is_checked_field_by_field() {
    let ok = spec(json!([
        {"id": "orders", "plugin": "order-status", "settings": {"api_base": "https://shop.example.com"},
         "grants": {"hosts": ["shop.example.com", "*.cdn.example.com", "localhost:8080"], "kv": true}, "budget_ms": 800},
        {"id": "pii", "plugin": "pii-redactor", "enabled": false}
    ]));
    validate_plugins(&ok).unwrap();
    assert!(ok[0].enabled && !ok[1].enabled);
    assert_eq!(ok[1].budget_ms(), DEFAULT_BUDGET_MS);
    assert_eq!(ok[1].max_output_bytes(), DEFAULT_MAX_OUTPUT_BYTES);
    let cases = [
        (json!([{"id": "Orders", "plugin": "x"}]), "plugins[0].id"),
        (
            json!([{"id": "a", "plugin": "x"}, {"id": "a", "plugin": "y"}]),
            "plugins[1].id",
        ),
        (
            json!([{"id": "a", "plugin": "x/../y"}]),
            "plugins[0].plugin",
        ),
        (
            json!([{"id": "a", "plugin": "x", "grants": {"hosts": ["https://x.com"]}}]),
            "plugins[0].grants.hosts[0]",
        ),
        (
            json!([{"id": "a", "plugin": "x", "grants": {"hosts": ["ok.com", "*"]}}]),
            "plugins[0].grants.hosts[1]",
        ),
        (
            json!([{"id": "a", "plugin": "x", "budget_ms": 0}]),
            "plugins[0].budget_ms",
        ),
        (
            json!([{"id": "a", "plugin": "x", "budget_ms": 60000}]),
            "plugins[0].budget_ms",
        ),
        (
            json!([{"id": "a", "plugin": "x", "max_output_bytes": 10}]),
            "plugins[0].max_output_bytes",
        ),
        (
            json!([{"id": "a", "plugin": "x", "settings": {"bad name": "v"}}]),
            "plugins[0].settings",
        ),
    ];
    for (doc, field) in cases {
        let err = validate_plugins(&spec(doc.clone())).unwrap_err();
        assert_eq!(err.field, field, "{doc}: {err}");
    }
    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"id": format!("p{i}"), "plugin": "x"}))
        .collect();
    assert_eq!(
        validate_plugins(&spec(Value::Array(nine)))
            .unwrap_err()
            .field,
        "plugins"
    );
    // Unknown fields are refused when parsing (a typo must not silently drop a grant).
    assert!(
        serde_json::from_value::<Vec<PluginSpec>>(json!([{"id": "a", "plugin": "x", "grant": {}}]))
            .is_err()
    );
}

fn granting(hosts: &[&str]) -> Grants {
    Grants {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        kv: false,
    }
}

#[test]
fn outbound_requests_only_to_granted_hosts() {
    let grants = granting(&["shop.example.com", "*.api.example.com", "127.0.0.1:9000"]);
    for (url, fetched) in [
        (
            "https://shop.example.com/orders/1",
            "https://shop.example.com/orders/1",
        ),
        ("https://SHOP.example.com", "https://shop.example.com/"),
        (
            "https://eu.api.example.com/x?y",
            "https://eu.api.example.com/x?y",
        ),
        (
            "http://127.0.0.1:9000/orders",
            "http://127.0.0.1:9000/orders",
        ),
        // The scheme's default port is the port a grant without one allows.
        (
            "https://shop.example.com:443/a",
            "https://shop.example.com/a",
        ),
        // A fragment is never sent.
        (
            "https://shop.example.com/a#frag",
            "https://shop.example.com/a",
        ),
        // `@` after the authority is part of the path, not credentials.
        (
            "https://shop.example.com/@evil.net",
            "https://shop.example.com/@evil.net",
        ),
    ] {
        let approved = check_url(url, &grants).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(approved.as_str(), fetched, "{url}");
    }
    for url in [
        "https://evil.example.com/",
        "https://api.example.com/", // the wildcard needs a subdomain
        "https://shop.example.com.evil.net/",
        "https://xapi.example.com/",
        "http://shop.example.com/",       // plain http off loopback
        "http://127.0.0.1:9001/",         // another port
        "http://127.0.0.1/",              // the grant names a port, not the default one
        "https://shop.example.com:8443/", // a grant without a port: the default only
        "https://user:pw@shop.example.com/",
        "https://user@shop.example.com/",
        "https://:pw@shop.example.com/",
        "ftp://shop.example.com/",
        "file:///etc/passwd",
        "data:text/plain,hi",
        "https://shop.example.com/ x",
        "shop.example.com/orders",
        "/orders",
        "",
    ] {
        assert!(check_url(url, &grants).is_err(), "{url} must be denied");
    }
    assert!(check_url("https://shop.example.com/", &Grants::default()).is_err());
    // A grant whose port no URL can have grants nothing, not the default port.
    assert!(
        check_url(
            "https://shop.example.com/",
            &granting(&["shop.example.com:99999"])
        )
        .is_err()
    );
    let long = format!("https://shop.example.com/{}", "a".repeat(MAX_URL_BYTES));
    assert!(check_url(&long, &grants).is_err());
}

/// Each way a URL's real host can differ from what a naive reading sees: the check must
/// decide on the host the WHATWG parse (and so the fetch) uses.
#[test]
fn url_tricks_are_judged_by_the_host_the_fetch_would_use() {
    let grants = granting(&["shop.example.com", "*.api.example.com", "127.0.0.1:9000"]);
    let denied = |url: &str| match check_url(url, &grants) {
        Ok(approved) => panic!("{url} must be denied, was approved as {approved}"),
        Err(Denied(why)) => why,
    };
    // `\` is `/` in special schemes: the host is evil.net, the rest is path.
    let why = denied(r"https://evil.net\.api.example.com/");
    assert!(why.starts_with("evil.net "), "{why}");
    denied(r"https://evil.net\@shop.example.com/");
    denied(r"https://evil.net\\shop.example.com/");
    // Userinfo: the host is what follows the last `@`.
    let why = denied("https://shop.example.com@evil.net/");
    assert!(why.contains("credentials"), "{why}");
    denied("https://a.api.example.com@evil.net/");
    denied("https://shop.example.com:443@evil.net/");
    denied("https://evil.net#@shop.example.com/");
    denied("https://evil.net?@shop.example.com/");
    denied("https://evil.net/shop.example.com");
    // Percent-encoded and upper-case host characters are decoded and folded first.
    let why = denied("https://%65vil.net/");
    assert!(why.starts_with("evil.net "), "{why}");
    denied("https://evil.net%2f.api.example.com/");
    denied("https://evil.net%5C.api.example.com/");
    denied("https://EVIL.NET/");
    // A trailing dot is refused, granted name or not.
    denied("https://shop.example.com./");
    denied("https://a.api.example.com./");
    // IPv4 in decimal, hex, octal and short forms is an address, not a name: only a
    // grant of that address (and port) matches, and a wildcard never does.
    for url in [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0x7f.1:9001/",
        "https://2130706433:9001/",
    ] {
        denied(url);
    }
    let ip_wildcard = Grants {
        hosts: vec!["*.0.0.1".into(), "*.1".into()],
        kv: false,
    };
    assert!(check_url("https://127.0.0.1/", &ip_wildcard).is_err());
    assert!(check_url("https://2130706433/", &ip_wildcard).is_err());
    // IPv6, loopback included, is refused.
    denied("http://[::1]:9000/");
    denied("https://[::ffff:127.0.0.1]:9000/");
    // Tabs and newlines (which WHATWG would drop) and other controls are refused.
    denied("https://evil.net\t.api.example.com/");
    denied("https://shop.example.com\n@evil.net/");
    denied(" https://shop.example.com/");
    denied("https://shop.example.com/\0");
    // No host, or an empty one. Special schemes skip extra slashes, so the host of
    // `https:///evil.net/` is evil.net.
    let why = denied("https:///evil.net/");
    assert!(why.starts_with("evil.net "), "{why}");
    denied("https://");
    denied("https://:9000/");
    denied("https://@/");
}

#[test]
fn spellings_of_a_granted_host_are_fetched_normalized() {
    let grants = granting(&["shop.example.com", "*.api.example.com", "127.0.0.1:9000"]);
    for (url, fetched) in [
        // Decoded, folded and IDNA-mapped, the host is a granted one; the fetch uses the
        // normalized form, so no other parser ever reads the original.
        ("https://shop%2Eexample%2Ecom/", "https://shop.example.com/"),
        ("HTTPS://Shop.Example.COM/a", "https://shop.example.com/a"),
        (
            "https://shop\u{ff0e}example\u{ff0e}com/",
            "https://shop.example.com/",
        ),
        (
            r"https://eu.api.example.com\orders\1",
            "https://eu.api.example.com/orders/1",
        ),
        ("http://2130706433:9000/x", "http://127.0.0.1:9000/x"),
        ("http://0x7f.0.0.1:9000/x", "http://127.0.0.1:9000/x"),
        ("http://0177.0.0.01:9000/x", "http://127.0.0.1:9000/x"),
        (
            r"http://127.0.0.1:9000\shop\orders?a=b",
            "http://127.0.0.1:9000/shop/orders?a=b",
        ),
        ("https:shop.example.com/x", "https://shop.example.com/x"),
        (
            "https://shop.example.com/a/../b/./c",
            "https://shop.example.com/b/c",
        ),
        (
            "https://shop.example.com/\u{e9}?q=\u{e9}",
            "https://shop.example.com/%C3%A9?q=%C3%A9",
        ),
    ] {
        let approved = check_url(url, &grants).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(approved.as_str(), fetched, "{url}");
    }
    let approved = check_url(r"http://0x7f.1:9000\shop?q=1#f", &grants).unwrap();
    assert!(!approved.is_https());
    assert_eq!(approved.authority(), "127.0.0.1:9000");
    assert_eq!(approved.path_and_query(), "/shop?q=1");
    let approved = check_url("https://Shop.example.com:443", &grants).unwrap();
    assert!(approved.is_https());
    assert_eq!(approved.authority(), "shop.example.com");
    assert_eq!(approved.path_and_query(), "/");
}

#[test]
fn hook_calls_have_one_json_shape() {
    let ctx = PluginContext {
        tenant: "acme".into(),
        conversation_id: "c1".into(),
        plugin_id: "pii".into(),
        language: Some("zh-CN".into()),
    };
    let call = HookCall::AfterReply {
        ctx,
        question: "q".into(),
        reply: "r".into(),
    };
    let v = serde_json::to_value(&call).unwrap();
    assert_eq!(v["hook"], "after_reply");
    assert_eq!(v["ctx"]["plugin_id"], "pii");
    assert_eq!(serde_json::from_value::<HookCall>(v).unwrap(), call);
    assert_eq!(
        serde_json::to_value(HookCall::Describe).unwrap(),
        json!({"hook": "describe"})
    );
}

#[test]
fn answers_are_parsed_and_bounded() {
    let a = parse_answer(Hook::BeforeModel, br#"{"rewrite": ["a", "b"]}"#, 1024).unwrap();
    assert_eq!(
        a,
        Answer::Model(ModelDecision::Rewrite(vec!["a".into(), "b".into()]))
    );
    assert_eq!(
        parse_answer(Hook::AfterReply, br#""keep""#, 1024).unwrap(),
        Answer::Reply(ReplyDecision::Keep)
    );
    assert_eq!(
        parse_answer(Hook::CallTool, br#"{"err": "no such order"}"#, 1024).unwrap(),
        Answer::Tool(Err("no such order".into()))
    );
    let actions = parse_answer(
        Hook::OnEvent,
        br#"[{"tag": "vip"}, {"send_message": "hi"}]"#,
        1024,
    )
    .unwrap();
    assert_eq!(
        actions,
        Answer::Actions(vec![
            PluginAction::Tag("vip".into()),
            PluginAction::SendMessage("hi".into())
        ])
    );
    let big = format!("{{\"rewrite\": \"{}\"}}", "x".repeat(2000));
    assert_eq!(
        parse_answer(Hook::AfterReply, big.as_bytes(), 1024)
            .unwrap_err()
            .kind,
        FailureKind::TooLarge
    );
    assert_eq!(
        parse_answer(Hook::AfterReply, br#"{"explode": 1}"#, 1024)
            .unwrap_err()
            .kind,
        FailureKind::Invalid
    );
    let manifest = br#"{"name": "g", "version": "0.1.0", "description": "d", "hooks": {"after_reply": true}, "tools": []}"#;
    let Answer::Manifest(m) = parse_answer(Hook::Describe, manifest, 4096).unwrap() else {
        panic!()
    };
    assert!(m.hooks.after_reply && !m.hooks.before_model);
}

#[test]
fn rewrites_change_text_and_keep_files() {
    let mut prompt = vec![
        PromptMessage::text(PromptRole::System, "be kind"),
        PromptMessage::new(
            PromptRole::User,
            vec![
                Part::Text("my card".into()),
                Part::Image {
                    url: "data:image/png;base64,AA".into(),
                    mime: None,
                },
                Part::Text("4111 1111 1111 1111".into()),
            ],
        ),
    ];
    assert_eq!(
        plugin_view("p/m", &prompt).messages[1].text,
        "my card\n4111 1111 1111 1111"
    );
    let e = apply_rewrite(&mut prompt, vec!["only one".into()]).unwrap_err();
    assert_eq!(e.kind, FailureKind::Invalid);
    apply_rewrite(
        &mut prompt,
        vec!["be kind".into(), "my card\n[card]".into()],
    )
    .unwrap();
    assert_eq!(
        prompt[0],
        PromptMessage::text(PromptRole::System, "be kind")
    );
    assert_eq!(
        prompt[1].parts,
        vec![
            Part::Text("my card\n[card]".into()),
            Part::Image {
                url: "data:image/png;base64,AA".into(),
                mime: None
            },
        ]
    );
}

#[test]
fn stand_ins_pass_the_hook_before_their_message() {
    // A PDF's text and an image's description reach models that cannot read the files:
    // plugins see and rewrite them like the message's own words.
    let pdf = Part::Document {
        url: "data:application/pdf;base64,AA".into(),
        name: "invoice.pdf".into(),
        mime: Some("application/pdf".into()),
    };
    let image = Part::Image {
        url: "data:image/png;base64,AA".into(),
        mime: None,
    };
    let mut user = PromptMessage::new(
        PromptRole::User,
        vec![Part::Text("see attached".into()), pdf, image.clone(), image],
    );
    user.stand_ins.insert(0, "write to ann@example.com".into());
    user.stand_ins.insert(1, "a photo of a receipt".into());
    // The second image's description is the first's: nothing of its own to show.
    user.stand_ins.insert(2, String::new());
    let mut prompt = vec![PromptMessage::text(PromptRole::System, "be kind"), user];
    let view = plugin_view("p/m", &prompt);
    let seen: Vec<(PluginRole, &str)> = view
        .messages
        .iter()
        .map(|m| (m.role, m.text.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (PluginRole::System, "be kind"),
            (PluginRole::User, "write to ann@example.com"),
            (PluginRole::User, "a photo of a receipt"),
            (PluginRole::User, "see attached"),
        ]
    );
    // One text per message of the prompt is no longer enough: nothing changes.
    let before = prompt.clone();
    let e = apply_rewrite(&mut prompt, vec!["be kind".into(), "see attached".into()]).unwrap_err();
    assert_eq!(e.kind, FailureKind::Invalid);
    assert_eq!(prompt, before);
    let changed = apply_rewrite(
        &mut prompt,
        vec![
            "be kind".into(),
            "write to [email]".into(),
            "a photo of a receipt".into(),
            "see attached".into(),
        ],
    )
    .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(prompt[1].stand_ins[&0], "write to [email]");
    assert_eq!(prompt[1].stand_ins[&1], "a photo of a receipt");
    assert_eq!(prompt[1].stand_ins[&2], "");
    assert_eq!(prompt[1].parts, before[1].parts);
}

#[test]
fn actions_are_sorted_into_taken_and_refused() {
    let mut actions = vec![
        PluginAction::Tag("vip".into()),
        PluginAction::Tag("has space".into()),
        PluginAction::Handoff("   ".into()),
        PluginAction::SendMessage("Your order shipped.".into()),
    ];
    actions.extend((0..6).map(|i| PluginAction::Tag(format!("t{i}"))));
    let (taken, refused) = accept_actions(actions);
    assert_eq!(taken.len(), 6);
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused[0].starts_with("action 1:"));
    assert!(refused[2].contains("over the limit"));
}

#[test]
fn tools_are_registered_once_and_checked() {
    let tool = |name: &str, parameters: &str| PluginTool {
        name: name.into(),
        description: "d".into(),
        parameters: parameters.into(),
    };
    let manifest = |tools| Manifest {
        name: "p".into(),
        version: "1.0.0".into(),
        description: String::new(),
        hooks: HookSet::default(),
        tools,
    };
    let schema = r#"{"type": "object", "properties": {"order_id": {"type": "string"}}}"#;
    let a = manifest(vec![
        tool("order_status", schema),
        tool("Bad-Name", schema),
        tool("handoff", schema),
    ]);
    let b = manifest(vec![
        tool("order_status", schema),
        tool("refund", "[]"),
        tool("track", r#"{"type": "string"}"#),
    ]);
    let registry = ToolRegistry::new([("orders", &a), ("other", &b)]);
    assert_eq!(registry.specs().len(), 1);
    assert_eq!(registry.owner("order_status"), Some("orders"));
    assert_eq!(registry.owner("refund"), None);
    assert_eq!(registry.refused.len(), 5, "{:?}", registry.refused);
}

#[test]
fn events_and_their_actions() {
    use crate::conversation::Conversation;
    use crate::time::Timestamp;
    use crate::vocab::{ConversationId, Part, Role, TenantId};
    let config = crate::config::TenantConfig::default();
    let now = Timestamp::from_millis(1_795_593_600_000);
    let mut c = Conversation::new(
        ConversationId::parse("c-1").unwrap(),
        TenantId::default_tenant(),
        now,
    );
    let m = c
        .handle_visitor_message(now, vec![Part::Text("where is KF-1?".into())], &config)
        .unwrap()
        .message;
    let note = crate::vocab::Message {
        seq: 2,
        role: Role::Note,
        parts: vec![Part::Text("vip".into())],
        created_at: now,
    };
    let e = event(EventKind::Resolved, None, &[m, note], &["vip".into()]);
    assert_eq!(e.transcript.len(), 1, "notes stay with the agents");
    assert_eq!(e.transcript[0].author, Author::Visitor);
    let active = |id: &str, on_event| crate::turn::ActivePlugin {
        spec: serde_json::from_value(json!({"id": id, "plugin": "p"})).unwrap(),
        manifest: Manifest {
            name: "p".into(),
            version: "1".into(),
            description: String::new(),
            hooks: HookSet {
                on_event,
                ..HookSet::default()
            },
            tools: vec![],
        },
    };
    let calls = event_calls(
        &[active("a", true), active("b", false)],
        "acme",
        "c-1",
        Some("en"),
        &e,
    );
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1.hook(), Hook::OnEvent);

    let (answer, record) = finish_call(
        &calls[0].0,
        "p",
        &calls[0].1,
        3,
        Ok(br#"[{"tag": "crm-synced"}]"#.to_vec()),
    );
    let Ok(Answer::Actions(actions)) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(record.duration_ms, 3);
    let mut actions = actions;
    actions.push(PluginAction::SendMessage("Thanks for waiting!".into()));
    actions.push(PluginAction::Tag("bad tag!".into()));
    let (changed, said) = c.apply_plugin_actions(now, &config, "a", actions);
    assert_eq!(c.tags(), ["crm-synced"]);
    assert_eq!(changed.messages.len(), 1);
    assert_eq!(changed.messages[0].role, Role::Bot);
    assert_eq!(said.len(), 3, "{said:?}");
    // While a human owns the conversation, a plugin does not talk to the visitor.
    c.request_handoff(
        now,
        &config,
        &crate::handoff::HandoffReason::VisitorAsked,
        None,
        None,
    )
    .unwrap();
    let (changed, said) = c.apply_plugin_actions(
        now,
        &config,
        "a",
        vec![PluginAction::SendMessage("hi".into())],
    );
    assert!(changed.messages.is_empty());
    assert!(said[0].starts_with("refused:"), "{said:?}");
}

#[test]
fn engine_events_map_to_plugin_events() {
    use crate::Event;
    use crate::vocab::{ConversationId, Role, Status};
    let c = ConversationId::parse("c-1").unwrap();
    let kind = |e: Event| event_kind(&e).map(|(_, k, seq, detail)| (k, seq, detail));
    assert_eq!(
        kind(Event::MessageCreated {
            conversation: c.clone(),
            seq: 3,
            role: Role::Agent
        }),
        Some((EventKind::AgentMessage, Some(3), None))
    );
    assert_eq!(
        kind(Event::MessageCreated {
            conversation: c.clone(),
            seq: 4,
            role: Role::Note
        }),
        None
    );
    assert_eq!(
        kind(Event::StatusChanged {
            conversation: c.clone(),
            status: Status::Resolved
        }),
        Some((EventKind::Resolved, None, None))
    );
    assert_eq!(
        kind(Event::StatusChanged {
            conversation: c.clone(),
            status: Status::WithAgent
        }),
        None
    );
    assert_eq!(
        kind(Event::Assigned {
            conversation: c.clone(),
            agent: "ana".into()
        }),
        Some((EventKind::Claimed, None, Some("ana".into())))
    );
    assert_eq!(kind(Event::ConversationCreated { conversation: c }), None);
}

#[test]
fn kv_keys_are_scoped_and_bounded() {
    assert_eq!(
        kv_key("acme", "crm", "sent/c1").unwrap(),
        "plugin/acme/crm/sent/c1"
    );
    assert!(kv_key("acme", "crm", "").is_err());
    assert!(kv_key("acme", "crm", &"k".repeat(257)).is_err());
    assert_eq!(log_line(&"é".repeat(2000)).len(), 2048);
}
