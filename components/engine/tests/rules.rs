//! Tenant rules as a tenant writes them: JSON in, the winning rule out.

use kefu_engine::rules::{Matched, RuleActions, RuleSet, RuleSpec};

fn compile(json: &str) -> RuleSet {
    let specs: Vec<RuleSpec> = serde_json::from_slice(json.as_bytes()).expect("valid rule JSON");
    RuleSet::compile(&specs).expect("valid rules")
}

fn error_field(json: &str) -> (String, String) {
    let specs: Vec<RuleSpec> = serde_json::from_slice(json.as_bytes()).expect("valid rule JSON");
    let e = RuleSet::compile(&specs).expect_err("invalid rules");
    (e.field, e.message)
}

fn winner(set: &RuleSet, text: &str) -> Option<String> {
    set.evaluate(text).map(|m| m.id)
}

#[test]
fn the_documented_example_parses_and_answers() {
    let set = compile(
        r#"[{"id": "refund", "priority": 10,
            "when": {"keywords": ["refund", "money back", "退款"], "all": false, "regex": null, "case_sensitive": false},
            "then": {"reply": "You can request a refund at https://example.com/refunds", "handoff": false, "queue": null, "tag": "billing", "collect_email": false, "close": false}}]"#,
    );
    let m = set.evaluate("Hi, I'd like my money back please").unwrap();
    assert_eq!(m.id, "refund");
    assert_eq!(m.priority, 10);
    assert_eq!(
        m.reply.as_deref(),
        Some("You can request a refund at https://example.com/refunds")
    );
    assert_eq!(
        m.actions,
        RuleActions {
            tag: Some("billing".into()),
            ..RuleActions::default()
        }
    );
    assert_eq!(m.matched, [Matched::Keyword("money back".into())]);
    assert!(set.evaluate("Where is my parcel?").is_none());
}

#[test]
fn higher_priority_wins_and_ties_go_to_the_earlier_rule() {
    let set = compile(
        r#"[{"id": "generic", "priority": 1, "when": {"keywords": ["order"]}, "then": {"reply": "generic"}},
            {"id": "cancel", "priority": 5, "when": {"keywords": ["cancel"]}, "then": {"reply": "cancel"}},
            {"id": "cancel-too", "priority": 5, "when": {"keywords": ["cancel"]}, "then": {"reply": "again"}},
            {"id": "default-priority", "when": {"keywords": ["order"]}, "then": {"reply": "zero"}}]"#,
    );
    assert_eq!(winner(&set, "cancel my order").as_deref(), Some("cancel"));
    assert_eq!(winner(&set, "my order").as_deref(), Some("generic"));
    assert_eq!(winner(&set, "nothing relevant"), None);
    assert_eq!(set.len(), 4);
}

#[test]
fn keywords_match_on_token_boundaries_with_light_stemming() {
    let set =
        compile(r#"[{"id": "r", "when": {"keywords": ["refund"]}, "then": {"tag": "billing"}}]"#);
    assert!(set.evaluate("REFUND!").is_some());
    assert!(set.evaluate("two refunds").is_some());
    assert!(set.evaluate("refunding it").is_some());
    // Inside another word is not a match.
    assert!(set.evaluate("nonrefundable").is_none());
    assert!(set.evaluate("refundable").is_none());
}

#[test]
fn phrases_need_consecutive_tokens() {
    let set =
        compile(r#"[{"id": "mb", "when": {"keywords": ["money back"]}, "then": {"reply": "ok"}}]"#);
    assert!(set.evaluate("can I get my Money-Back?").is_some());
    // Stop words are not tokens, so they do not break a phrase.
    assert!(set.evaluate("money is back").is_some());
    assert!(set.evaluate("back money").is_none());
    assert!(set.evaluate("money, then come back").is_none());
    assert!(set.evaluate("money").is_none());
}

#[test]
fn chinese_matches_by_ideograph_pairs() {
    let set = compile(
        r#"[{"id": "zh", "when": {"keywords": ["退款"]}, "then": {"reply": "退款请访问…"}},
            {"id": "human", "when": {"keywords": ["转人工"]}, "then": {"handoff": true, "queue": "zh-support"}}]"#,
    );
    assert_eq!(winner(&set, "我要退款").as_deref(), Some("zh"));
    assert_eq!(winner(&set, "请问怎么退款呢").as_deref(), Some("zh"));
    assert_eq!(winner(&set, "退货").as_deref(), None);
    let m = set.evaluate("帮我转人工客服").unwrap();
    assert_eq!(m.id, "human");
    assert!(m.actions.handoff);
    assert_eq!(m.actions.queue.as_deref(), Some("zh-support"));
    assert!(m.reply.is_none());
    // The pair 人工 alone is not the phrase 转人 人工.
    assert_eq!(winner(&set, "人工智能"), None);
}

#[test]
fn all_requires_every_keyword() {
    let set = compile(
        r#"[{"id": "both", "when": {"keywords": ["invoice", "wrong"], "all": true}, "then": {"reply": "sorry"}}]"#,
    );
    assert!(set.evaluate("my invoice").is_none());
    let m = set.evaluate("the invoice is wrong").unwrap();
    assert_eq!(
        m.matched,
        [
            Matched::Keyword("invoice".into()),
            Matched::Keyword("wrong".into())
        ]
    );
}

#[test]
fn case_sensitivity_is_opt_in() {
    let set = compile(
        r#"[{"id": "brand", "priority": 2, "when": {"keywords": ["Apple Pay"], "case_sensitive": true}, "then": {"reply": "We accept Apple Pay."}},
            {"id": "fruit", "when": {"keywords": ["apple"]}, "then": {"reply": "We sell apples."}}]"#,
    );
    assert_eq!(
        winner(&set, "do you take Apple Pay?").as_deref(),
        Some("brand")
    );
    assert_eq!(
        winner(&set, "do you take apple pay?").as_deref(),
        Some("fruit")
    );
    assert_eq!(winner(&set, "APPLE PAY").as_deref(), Some("fruit"));

    let re = compile(
        r#"[{"id": "exact", "when": {"regex": "SKU-[0-9]+", "case_sensitive": true}, "then": {"tag": "sku"}},
            {"id": "loose", "when": {"regex": "order #[0-9]+"}, "then": {"tag": "order"}}]"#,
    );
    assert_eq!(winner(&re, "SKU-123").as_deref(), Some("exact"));
    assert_eq!(winner(&re, "sku-123"), None);
    assert_eq!(winner(&re, "ORDER #42").as_deref(), Some("loose"));
}

#[test]
fn keywords_and_regex_must_both_match() {
    let set = compile(
        r#"[{"id": "track", "when": {"keywords": ["order"], "regex": "\\b[0-9]{6}\\b"}, "then": {"reply": "Let me look that up."}}]"#,
    );
    assert!(set.evaluate("where is my order?").is_none());
    assert!(set.evaluate("it is 123456").is_none());
    let text = "order 123456 has not arrived";
    let m = set.evaluate(text).unwrap();
    assert_eq!(
        m.matched,
        [
            Matched::Keyword("order".into()),
            Matched::Regex {
                start: 6,
                end: 12,
                text: "123456".into()
            }
        ]
    );
    assert_eq!(&text[6..12], "123456");
}

#[test]
fn regex_only_rules_and_unicode_text() {
    let set = compile(
        r#"[{"id": "email", "when": {"regex": "[a-z0-9._-]+@[a-z0-9.-]+"}, "then": {"collect_email": false, "tag": "has-email"}},
            {"id": "zh-order", "when": {"regex": "订单号?[0-9]+"}, "then": {"reply": "正在查询"}}]"#,
    );
    let m = set.evaluate("Contact me at Ann@Example.com").unwrap();
    assert_eq!(m.id, "email");
    assert_eq!(
        m.matched,
        [Matched::Regex {
            start: 14,
            end: 29,
            text: "Ann@Example.com".into()
        }]
    );
    let text = "我的订单号12345";
    let m = set.evaluate(text).unwrap();
    assert_eq!(m.id, "zh-order");
    let Matched::Regex { start, end, .. } = m.matched[0] else {
        panic!("regex match expected")
    };
    assert_eq!(&text[start..end], "订单号12345");
}

#[test]
fn actions_come_back_as_written() {
    let set = compile(
        r#"[{"id": "angry", "when": {"keywords": ["lawyer"]}, "then": {"reply": "Connecting you.", "handoff": true, "queue": "escalations", "tag": "legal"}},
            {"id": "bye", "when": {"keywords": ["bye"]}, "then": {"reply": "Bye!", "close": true}},
            {"id": "lead", "when": {"keywords": ["quote"]}, "then": {"collect_email": true}}]"#,
    );
    let m = set.evaluate("I will call my lawyer").unwrap();
    assert_eq!(
        m.actions,
        RuleActions {
            handoff: true,
            queue: Some("escalations".into()),
            tag: Some("legal".into()),
            collect_email: false,
            close: false,
        }
    );
    assert!(set.evaluate("ok bye").unwrap().actions.close);
    let lead = set.evaluate("can I get a quote").unwrap();
    assert!(lead.actions.collect_email && lead.reply.is_none());
    // The match serialises for the trace.
    let trace = serde_json::to_value(&m).unwrap();
    assert_eq!(trace["matched"][0]["keyword"], "lawyer");
}

#[test]
fn an_empty_rule_set_never_matches() {
    let set = RuleSet::compile(&[]).unwrap();
    assert!(set.is_empty());
    assert!(set.evaluate("anything").is_none());
}

#[test]
fn validation_names_the_field() {
    let long_regex = format!(
        r#"[{{"id": "r", "when": {{"regex": "{}"}}, "then": {{"reply": "x"}}}}]"#,
        "a".repeat(1025)
    );
    let cases: Vec<(String, &str, &str)> = vec![
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"reply": "1"}},
                {"id": "a", "when": {"keywords": ["y"]}, "then": {"reply": "2"}}]"#
                .into(),
            "rules[1].id",
            "already",
        ),
        (
            r#"[{"id": "has space", "when": {"keywords": ["x"]}, "then": {"reply": "1"}}]"#.into(),
            "rules[0].id",
            "characters",
        ),
        (
            r#"[{"id": "a", "when": {}, "then": {"reply": "1"}}]"#.into(),
            "rules[0].when",
            "keywords",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {}}]"#.into(),
            "rules[0].then",
            "reply",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"reply": "ok"}},
                {"id": "b", "when": {"keywords": ["x"]}, "then": {"reply": "ok"}},
                {"id": "c", "when": {"regex": "(unclosed"}, "then": {"reply": "ok"}}]"#
                .into(),
            "rules[2].when.regex",
            "not a valid regex",
        ),
        (long_regex, "rules[0].when.regex", "1024 bytes"),
        (
            r#"[{"id": "a", "when": {"regex": ""}, "then": {"reply": "1"}}]"#.into(),
            "rules[0].when.regex",
            "empty",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["ok", "the"]}, "then": {"reply": "1"}}]"#.into(),
            "rules[0].when.keywords[1]",
            "no word",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": [" "]}, "then": {"reply": "1"}}]"#.into(),
            "rules[0].when.keywords[0]",
            "no word",
        ),
        (
            r#"[{"id": "a", "when": {"regex": "x", "all": true}, "then": {"reply": "1"}}]"#.into(),
            "rules[0].when.all",
            "keywords",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"queue": "billing"}}]"#.into(),
            "rules[0].then.queue",
            "handoff",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"reply": "  "}}]"#.into(),
            "rules[0].then.reply",
            "empty",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"handoff": true, "close": true}}]"#
                .into(),
            "rules[0].then.close",
            "both",
        ),
        (
            r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"tag": ""}}]"#.into(),
            "rules[0].then.tag",
            "characters",
        ),
    ];
    for (json, field, words) in cases {
        let (f, message) = error_field(&json);
        assert_eq!(f, field, "{json}: {message}");
        assert!(message.contains(words), "{field}: {message}");
    }
}

#[test]
fn regex_errors_stay_on_one_line_and_huge_expansions_are_refused() {
    let (field, message) =
        error_field(r#"[{"id": "a", "when": {"regex": "a{1000}{1000}"}, "then": {"reply": "1"}}]"#);
    assert_eq!(field, "rules[0].when.regex");
    assert!(message.contains("compiles too large"), "{message}");
    let (_, message) =
        error_field(r#"[{"id": "a", "when": {"regex": "x)"}, "then": {"reply": "1"}}]"#);
    assert!(!message.contains('\n'), "{message}");
    // The compiled-size budget is shared: one regex may be larger than each of many.
    let wide = r#"{"id": "ID", "when": {"regex": "[a-z ]{1,30}x"}, "then": {"reply": "1"}}"#;
    let one = format!("[{}]", wide.replace("ID", "r0"));
    assert!(
        RuleSet::compile(&serde_json::from_slice::<Vec<RuleSpec>>(one.as_bytes()).unwrap()).is_ok()
    );
    let many: Vec<String> = (0..100)
        .map(|i| wide.replace("ID", &format!("r{i}")))
        .collect();
    let (field, message) = error_field(&format!("[{}]", many.join(",")));
    assert_eq!(field, "rules[0].when.regex");
    assert!(message.contains("with 100 regex rule(s)"), "{message}");
    // Small regexes fit even in a rule set with a hundred of them.
    let small: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"id": "r{i}", "when": {{"regex": "order #[0-9]+"}}, "then": {{"reply": "1"}}}}"#))
        .collect();
    let set = compile(&format!("[{}]", small.join(",")));
    assert_eq!(winner(&set, "ORDER #7").as_deref(), Some("r0"));
}

#[test]
fn unknown_fields_are_rejected_by_serde() {
    for json in [
        r#"[{"id": "a", "when": {"keyword": ["x"]}, "then": {"reply": "1"}}]"#,
        r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"reply": "1", "escalate": true}}]"#,
        r#"[{"id": "a", "when": {"keywords": ["x"]}, "then": {"reply": "1"}, "enabled": true}]"#,
    ] {
        assert!(
            serde_json::from_slice::<Vec<RuleSpec>>(json.as_bytes()).is_err(),
            "{json}"
        );
    }
}

#[test]
fn a_one_megabyte_message_just_completes() {
    let set = compile(
        r#"[{"id": "k", "priority": 3, "when": {"keywords": ["refund policy", "money back", "退款", "nope nope"], "all": true}, "then": {"reply": "a"}},
            {"id": "re", "priority": 2, "when": {"regex": "(a|aa)+b"}, "then": {"reply": "b"}},
            {"id": "both", "priority": 1, "when": {"keywords": ["zzz"], "regex": "(x+x+)+y"}, "then": {"reply": "c"}}]"#,
    );
    // Classic backtracking killers, with no match anywhere: a backtracking engine would
    // never finish; regex-lite is linear in the text.
    let mut text = "a".repeat(512 * 1024);
    text.push_str(&"money refund policy 退款 退 nope ".repeat(512 * 1024 / 40));
    text.push_str(&"x".repeat(1024 * 1024 - text.len()));
    assert!(text.len() >= 1024 * 1024);
    assert_eq!(set.evaluate(&text), None);
    text.push_str(" zzz xxxy");
    assert_eq!(winner(&set, &text).as_deref(), Some("both"));
}
