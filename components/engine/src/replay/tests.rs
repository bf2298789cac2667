use super::*;
use crate::dialogue::decide_matched;
use crate::knowledge::Chunk;
use crate::provider::ProviderEvent;
use crate::sim::{Script, Simulator, Stored};
use crate::turn::{Action, ReplyMode, TurnOptions};
use crate::vocab::Part;

const ROUTED: &str = r#"{
    "system_prompt": "Be brief.",
    "providers": {"p1": {"base_url": "http://p1.test/v1"}, "p2": {"base_url": "http://p2.test/v1"}},
    "routes": {"default": {"targets": [{"provider": "p1", "model": "m1"}, {"provider": "p2", "model": "m2"}]}},
    "rules": [{"id": "refund", "when": {"keywords": ["refund"]}, "then": {"reply": "Refunds take 5 days.", "tag": "billing"}}],
    "business_hours": {"timezone": "UTC", "weekly": {"mon": [["09:00", "17:00"]]}}
}"#;

fn config() -> TenantConfig {
    TenantConfig::from_json(ROUTED).unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn ok_body(text: &str) -> Vec<u8> {
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})
    .to_string()
    .into_bytes()
}

/// Every (target, request body) a turn sent.
type Sent = Vec<(String, Vec<u8>)>;

/// Drives `turn` to its end, answering each call with `answer(target)`; returns the result
/// and every (target, request body) sent.
fn drive(
    turn: &mut Turn,
    answer: impl Fn(&str) -> (u16, Vec<u8>),
) -> (Result<TurnReply, ProviderError>, Sent) {
    let mut sent = Vec::new();
    let mut now = 10;
    loop {
        let mut call = None;
        while let Some(action) = turn.poll_action() {
            match action {
                Action::CallProvider {
                    attempt,
                    target,
                    request,
                } => {
                    sent.push((target.clone(), request.body));
                    call = Some((attempt, target));
                }
                Action::Finished(result) => return (result, sent),
                _ => {}
            }
        }
        match call {
            Some((attempt, target)) => {
                let (status, body) = answer(&target);
                now += 5;
                let headers = vec![("content-type".into(), "application/json".into())];
                turn.handle_provider_event(
                    at(now),
                    attempt,
                    ProviderEvent::Head { status, headers },
                );
                turn.handle_provider_event(at(now), attempt, ProviderEvent::Data(body));
                turn.handle_provider_event(at(now), attempt, ProviderEvent::End);
            }
            None => {
                // Backing off before a retry: let the clock reach the deadline.
                now = turn.poll_timeout().expect("a pending deadline").as_millis();
                turn.handle_timeout(at(now));
            }
        }
    }
}

/// The decision and the start of its record, as a chat turn makes them.
fn decide_recorded(
    c: &Conversation,
    config: &TenantConfig,
    rules: &RuleSet,
    schedule: Option<&Schedule>,
    now: Timestamp,
    text: &str,
    seq: u32,
) -> (Decision, TurnRecord) {
    let (decision, matched) = decide_matched(c, config, rules, schedule, now, text);
    let record = TurnRecord::decided(seq, &decision, matched.as_ref(), schedule, now);
    (decision, record)
}

fn conversation_with(config: &TenantConfig, text: &str) -> (Conversation, Message) {
    let mut c = Conversation::new(
        ConversationId::parse("c1").unwrap(),
        TenantId::default_tenant(),
        at(1),
    );
    let m = c
        .handle_visitor_message(at(2), vec![Part::Text(text.into())], config)
        .unwrap()
        .message;
    (c, m)
}

fn chunk(id: &str, score: f64) -> RetrievedChunk {
    RetrievedChunk {
        chunk: Chunk {
            id: format!("{id}#0"),
            source_id: id.into(),
            title: Some(format!("Title {id}")),
            heading_path: Vec::new(),
            text: format!("Text of {id}."),
            position: 0,
        },
        score,
        source_title: None,
        source_url: None,
    }
}

#[test]
fn a_model_turn_records_chunks_the_exact_prompt_and_every_attempt() {
    let config = config();
    let rules = RuleSet::compile(&config.rules).unwrap();
    let schedule = config.business_hours.as_ref().unwrap().compile().unwrap();
    let (c, visitor) = conversation_with(&config, "How long does shipping take?");
    let (decision, mut record) = decide_recorded(
        &c,
        &config,
        &rules,
        Some(&schedule),
        visitor.created_at,
        &visitor.text(),
        visitor.seq,
    );
    assert_eq!(decision, Decision::Model);
    assert_eq!(record.decision, "model");
    assert!(record.rules.is_empty());
    // 1970-01-01 was a Thursday: closed on a Monday-only schedule.
    let hours = record.hours.clone().unwrap();
    assert!(!hours.open);
    assert_eq!(hours.local_time, "1970-01-01 00:00");

    let mut options = TurnOptions::new(ReplyMode::Whole);
    options.knowledge = vec![chunk("shipping", 2.5), chunk("returns", 1.25)];
    let knowledge = options.knowledge.clone();
    let mut turn = c.start_turn(at(5), &config, &visitor, options).unwrap();
    let (result, sent) = drive(&mut turn, |target| {
        if target == "p1/m1" {
            (500, b"{\"error\":{\"message\":\"down\"}}".to_vec())
        } else {
            (200, ok_body("Three days."))
        }
    });
    assert_eq!(result.as_ref().unwrap().text, "Three days.");
    record.add_turn(&turn, &knowledge);
    record.set_outcome(TurnRecord::outcome_of(&result));

    // The chunks with their scores, in the prompt.
    assert_eq!(record.knowledge.len(), 2);
    assert_eq!(record.knowledge[0].chunk_id, "shipping#0");
    assert_eq!(record.knowledge[0].score, 2.5);
    assert_eq!(record.knowledge[0].title.as_deref(), Some("Title shipping"));
    assert!(record.knowledge.iter().all(|k| k.in_prompt));
    // The prompt is the answering request's body, byte for byte.
    let prompt = record.prompt.clone().unwrap();
    let (last_target, last_body) = sent.last().unwrap();
    assert_eq!(prompt.target, *last_target);
    assert_eq!(prompt.target, "p2/m2");
    assert_eq!(prompt.body.as_bytes(), last_body.as_slice());
    assert_eq!(prompt.bytes, last_body.len());
    assert!(!prompt.truncated);
    assert!(prompt.body.contains("Text of shipping."));
    // Every attempt: the primary's failure (with the fallback), then the answer.
    let targets: Vec<&str> = record.attempts.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets.first(), Some(&"p1/m1"));
    assert_eq!(targets.last(), Some(&"p2/m2"));
    assert!(record.attempts.iter().any(|a| matches!(&a.outcome,
        crate::gateway::trace::AttemptOutcome::Failure { next, .. } if next == "fallback")));
    assert!(record.plugins.is_empty());
    assert_eq!(
        record.outcome,
        Some(Outcome::Reply {
            responder: "provider".into(),
            target: Some("p2/m2".into())
        })
    );
    // It round-trips through storage.
    let stored = record.to_stored();
    assert_eq!(TurnRecord::from_stored(1, &stored), Some(record));
}

#[test]
fn a_rule_turn_records_the_rule_and_its_actions() {
    let config = config();
    let rules = RuleSet::compile(&config.rules).unwrap();
    let (c, visitor) = conversation_with(&config, "I want a refund please");
    let (decision, record) = decide_recorded(
        &c,
        &config,
        &rules,
        None,
        visitor.created_at,
        &visitor.text(),
        visitor.seq,
    );
    assert!(matches!(decision, Decision::Canned { .. }));
    assert_eq!(record.decision, "rule");
    assert_eq!(record.rules.len(), 1);
    assert_eq!(record.rules[0].id, "refund");
    assert_eq!(record.rules[0].matched, vec!["keyword:refund"]);
    assert_eq!(record.rules[0].actions, vec!["reply", "tag:billing"]);
    assert!(record.hours.is_none());
    assert!(record.prompt.is_none());
}

#[test]
fn state_changes_name_each_changed_field() {
    let config = config();
    let (before, _) = conversation_with(&config, "hello");
    let mut after = before.clone();
    after
        .request_handoff(
            at(3),
            &config,
            &crate::handoff::HandoffReason::VisitorAsked,
            Some("sales"),
            None,
        )
        .unwrap();
    let mut record = TurnRecord::default();
    record.set_state(Some(&before), &after);
    assert_eq!(
        record.state,
        vec![
            StateChange {
                field: "status".into(),
                before: json!("bot"),
                after: json!("waiting_for_agent")
            },
            StateChange {
                field: "queue".into(),
                before: Value::Null,
                after: json!("sales")
            },
        ]
    );
    // A new conversation starts from nothing.
    record.set_state(None, &before);
    assert_eq!(record.state[0].field, "status");
    assert_eq!(record.state[0].before, Value::Null);
    // Nothing changed: nothing recorded.
    record.set_state(Some(&before), &before);
    assert!(record.state.is_empty());
}

#[test]
fn the_stored_prompt_is_cut_on_a_character_boundary_and_says_so() {
    let body = "é".repeat(MAX_PROMPT_BYTES); // two bytes each
    let p = PromptRecord::new("p/m", body.as_bytes());
    assert!(p.truncated);
    assert_eq!(p.bytes, body.len());
    assert!(p.body.len() <= MAX_PROMPT_BYTES);
    assert!(p.body.chars().all(|c| c == 'é'));
    let short = PromptRecord::new("p/m", b"{}");
    assert!(!short.truncated);
    assert_eq!(short.body, "{}");
}

#[test]
fn records_stored_before_turn_records_still_read() {
    let legacy = r#"[{"target":"p1/m1","route":"default","started_ms":0,"status":200,"latency_ms":3,
        "ttft_ms":3,"usage":null,"cost_micros":null,"outcome":{"kind":"success"}}]"#;
    let r = TurnRecord::from_stored(4, legacy).unwrap();
    assert_eq!(r.seq, 4);
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.decision, "");
    assert!(TurnRecord::from_stored(4, "not json").is_none());
}

fn operator() -> ReplayCaller<'static> {
    static DEPLOYMENT: std::sync::LazyLock<crate::deployment::Deployment> =
        std::sync::LazyLock::new(|| {
            crate::deployment::Deployment::from_settings(crate::deployment::Settings {
                tenant_secrets: Some("*=P_KEY"),
                ..Default::default()
            })
        });
    static TENANT: std::sync::LazyLock<TenantId> =
        std::sync::LazyLock::new(TenantId::default_tenant);
    ReplayCaller {
        tenant: &TENANT,
        operator: true,
        deployment: &DEPLOYMENT,
    }
}

#[test]
fn an_agent_replays_under_the_stored_configuration_only() {
    let current = config();
    let agent = ReplayCaller {
        operator: false,
        ..operator()
    };
    assert!(parse_replay_request(b"", &current, agent).is_ok());
    assert!(parse_replay_request(br#"{"max_turns": 2}"#, &current, agent).is_ok());
    // Another model of the stored providers: the same endpoints, keys, quota and prices.
    assert!(parse_replay_request(br#"{"model": "p2/bigger"}"#, &current, agent).is_ok());
    let e = parse_replay_request(br#"{"config": {"system_prompt": "x"}}"#, &current, agent)
        .unwrap_err();
    assert_eq!((e.status, e.code), (403, "operator_only"));
}

#[test]
fn a_replay_config_reaches_nothing_the_stored_one_does_not() {
    let current = config();
    let doc = serde_json::to_value(&current).unwrap();
    let replay = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut d = doc.clone();
        f(&mut d);
        parse_replay_request(
            serde_json::json!({ "config": d }).to_string().as_bytes(),
            &current,
            operator(),
        )
    };
    // The stored configuration as a document replays.
    assert!(replay(&|_| {}).is_ok());
    // A provider the stored configuration does not have: refused.
    let e = replay(&|d| d["providers"]["p1"]["base_url"] = "https://catcher.example/v1".into())
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        ("invalid_config", Some("config.providers"))
    );
    // A deployment secret, or one not granted: refused before anything else.
    let e = replay(&|d| d["providers"]["p1"]["api_key_secret"] = "KEFU_TOKEN_SECRET".into())
        .unwrap_err();
    assert_eq!(
        e.field.as_deref(),
        Some("config.providers.p1.api_key_secret")
    );
    // Quotas and prices are the stored ones, whatever the replay says.
    let r = replay(&|d| {
        d["quotas"] = serde_json::json!({"requests_per_minute": 100000});
        d["prices"] = serde_json::json!({});
    })
    .unwrap();
    assert_eq!(r.config.quotas, current.quotas);
    assert_eq!(r.config.prices, current.prices);
    // A plugin the stored configuration does not enable: refused.
    let e = replay(&|d| {
        d["plugins"] = serde_json::json!([{"id": "x", "plugin": "pii-redactor"}]);
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("config.plugins[0]"));
}

#[test]
fn replay_requests_are_validated() {
    let current = config();
    let code = |body: &str| {
        parse_replay_request(body.as_bytes(), &current, operator())
            .map(|_| ())
            .map_err(|e| (e.status, e.code, e.field))
    };
    assert_eq!(code("{"), Err((400, "invalid_json", None)));
    assert_eq!(code("[]"), Err((400, "invalid_json", None)));
    assert_eq!(
        code(r#"{"modle":"p1/x"}"#),
        Err((400, "invalid_field", Some("modle".into())))
    );
    assert_eq!(
        code(r#"{"model":"p9/x"}"#),
        Err((400, "invalid_field", Some("model".into())))
    );
    assert_eq!(
        code(r#"{"model":"no-slash"}"#),
        Err((400, "invalid_field", Some("model".into())))
    );
    assert_eq!(
        code(r#"{"model":7}"#),
        Err((400, "invalid_field", Some("model".into())))
    );
    assert_eq!(
        code(r#"{"max_turns":0}"#),
        Err((400, "invalid_field", Some("max_turns".into())))
    );
    assert_eq!(
        code(r#"{"max_turns":21}"#),
        Err((400, "invalid_field", Some("max_turns".into())))
    );
    let (status, c, field) = code(r#"{"config":{"history_window":0}}"#).unwrap_err();
    assert_eq!((status, c), (400, "invalid_config"));
    assert_eq!(field.as_deref(), Some("config.history_window"));

    // An empty body replays under the current configuration.
    let r = parse_replay_request(b"", &current, operator()).unwrap();
    assert_eq!(r.config, current);
    assert_eq!(r.max_turns, MAX_REPLAY_TURNS);
    // A model override: one route to that model.
    let r = parse_replay_request(
        br#"{"model":"p2/bigger","max_turns":3}"#,
        &current,
        operator(),
    )
    .unwrap();
    assert_eq!(r.max_turns, 3);
    let targets = r
        .config
        .plan(None, &Default::default(), &mut crate::gateway::Rng::new(1));
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].key, "p2/bigger");
    // A single-provider configuration changes its model.
    let single =
        TenantConfig::from_json(r#"{"provider":{"base_url":"http://x.test/v1","model":"small"}}"#)
            .unwrap();
    let r = parse_replay_request(br#"{"model":"default/large"}"#, &single, operator()).unwrap();
    assert_eq!(r.config.provider.unwrap().model, "large");
}

/// A recorded conversation: a model turn, a rule turn, then a turn a human owned.
fn recorded(config: &TenantConfig) -> (Vec<Message>, Vec<TurnRecord>) {
    let msg = |seq, role, text: &str| Message {
        seq,
        role,
        parts: vec![Part::Text(text.into())],
        created_at: at(u64::from(seq) * 1000),
    };
    let transcript = vec![
        msg(1, Role::Visitor, "Where is my parcel?"),
        msg(2, Role::Bot, "It left yesterday."),
        msg(3, Role::Visitor, "I want a refund"),
        msg(4, Role::Bot, "Refunds take 5 days."),
        msg(5, Role::System, "Alex joined the conversation."),
        msg(6, Role::Visitor, "Thanks Alex"),
        msg(7, Role::Agent, "You're welcome."),
    ];
    let _ = config;
    let mut silent = TurnRecord {
        seq: 6,
        decision: "silent".into(),
        ..TurnRecord::default()
    };
    silent.set_outcome(Outcome::Silent);
    (transcript, vec![silent])
}

/// A simulator whose store holds `transcript` as conversation `c1`, with its turns'
/// `records`: what a replay reads.
fn stored(transcript: Vec<Message>, records: Vec<TurnRecord>) -> (Simulator, ConversationId) {
    let id = ConversationId::parse("c1").unwrap();
    let mut sim = Simulator::new(config());
    let state = Conversation::new(id.clone(), TenantId::default_tenant(), at(1)).encode();
    sim.store.insert(id.clone(), Stored { state, transcript });
    sim.records = records.into_iter().map(|r| (id.clone(), r)).collect();
    (sim, id)
}

/// The closed notice a live turn says first at `now` (a Thursday in 1970: closed on the
/// Monday-only schedule), in English.
fn closed_notice(config: &TenantConfig, now: Timestamp) -> String {
    let schedule = config.business_hours.as_ref().unwrap().compile().unwrap();
    let (mut live, _) = conversation_with(config, "hello");
    let changed = live
        .record_closed_notice(now, config, Some(&schedule))
        .unwrap();
    changed.messages[0].text()
}

#[test]
fn a_replay_plans_each_turn_again_under_another_model_and_changes_nothing() {
    let config = config();
    let (transcript, records) = recorded(&config);
    let request = parse_replay_request(br#"{"model":"p1/m-next"}"#, &config, operator()).unwrap();
    let (mut sim, id) = stored(transcript, records);
    let kept = sim.store[&id].clone();
    let kept_records = sim.records.clone();
    sim.script_for("p1/m-next", Script::json("On its way.", 5));
    let out = sim.replay(&id, request).unwrap();
    assert_eq!(out["conversation_id"], "c1");
    assert_eq!(out["model"], "p1/m-next");
    assert_eq!(out["total_turns"], 3);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["stopped"], Value::Null);
    let turns = out["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);

    // Turn 1: the model, now the override, with the history as recorded. Outside business
    // hours at the message's own time, the closed notice comes first, as live.
    let entry = &turns[0];
    assert_eq!(entry["seq"], 1);
    assert_eq!(entry["visitor"], "Where is my parcel?");
    assert_eq!(entry["old"]["reply"], "It left yesterday.");
    assert_eq!(sim.request_targets, ["p1/m-next"]);
    let sent = &sim.requests[0].body;
    let body: Value = serde_json::from_slice(sent).unwrap();
    assert_eq!(body["model"], "m-next");
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], "Where is my parcel?");
    assert_eq!(
        entry["new"]["reply"],
        format!("{}\n\nOn its way.", closed_notice(&config, at(1000)))
    );
    assert_eq!(entry["new"]["responder"], "provider");
    assert_eq!(entry["new"]["record"]["decision"], "model");
    assert_eq!(entry["new"]["record"]["attempts"][0]["target"], "p1/m-next");
    assert_eq!(
        entry["new"]["record"]["prompt"]["body"]
            .as_str()
            .unwrap()
            .as_bytes(),
        sent.as_slice()
    );
    assert_eq!(entry["new"]["record"]["outcome"]["target"], "p1/m-next");

    // Turn 2: the rule answers again; the model is not asked again; the earlier reply (the
    // recorded one) is in its history.
    let entry = &turns[1];
    assert_eq!(entry["seq"], 3);
    assert_eq!(entry["new"]["responder"], "rule");
    assert!(
        entry["new"]["reply"]
            .as_str()
            .unwrap()
            .ends_with("Refunds take 5 days."),
        "{}",
        entry["new"]["reply"]
    );
    assert_eq!(entry["new"]["record"]["decision"], "rule");
    assert_eq!(entry["new"]["record"]["rules"][0]["id"], "refund");
    assert_eq!(
        entry["old"]["reply"],
        "Refunds take 5 days.\n\nAlex joined the conversation."
    );
    assert_eq!(sim.requests.len(), 1);

    // Turn 3: a human owned it, so the bot stays silent again.
    let entry = &turns[2];
    assert_eq!(entry["seq"], 6);
    assert_eq!(entry["new"]["reply"], Value::Null);
    assert_eq!(entry["new"]["responder"], "none");
    assert_eq!(entry["new"]["record"]["decision"], "silent");
    assert_eq!(entry["new"]["record"]["outcome"]["kind"], "silent");

    // The recorded conversation is untouched (the replay owned only scratch copies):
    // nothing stored, recorded, logged or published.
    assert_eq!(sim.store[&id].transcript, kept.transcript);
    assert_eq!(sim.store[&id].state, kept.state);
    assert_eq!(sim.records, kept_records);
    assert!(sim.events.is_empty());
    assert!(sim.unanswered.is_empty());
    assert!(sim.logs.is_empty());
}

#[test]
fn a_replay_stops_at_its_cap_and_says_so() {
    let config = config();
    let (transcript, records) = recorded(&config);
    let mut replay = Replay::new(
        ConversationId::parse("c1").unwrap(),
        TenantId::default_tenant(),
        config.clone(),
        transcript.clone(),
        &records,
        2,
    )
    .unwrap();
    assert!(replay.truncated());
    assert!(replay.next_turn().is_some());
    assert!(replay.next_turn().is_some());
    assert!(replay.next_turn().is_none());

    // The run replays two turns of three and says it was cut.
    let (mut sim, id) = stored(transcript, records);
    sim.script(Script::json("On its way.", 5));
    let request = ReplayRequest {
        config,
        max_turns: 2,
        model: None,
    };
    let out = sim.replay(&id, request).unwrap();
    assert_eq!(out["total_turns"], 3);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["stopped"], Value::Null);
    let seqs: Vec<&Value> = out["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["seq"])
        .collect();
    assert_eq!(seqs, [1, 3]);
}

#[test]
fn a_handoff_replayed_gets_the_notice_a_live_turn_gives() {
    let config = config();
    let msg = Message {
        seq: 1,
        role: Role::Visitor,
        parts: vec![Part::Text("I want to talk to a human".into())],
        created_at: at(1000),
    };
    let (mut sim, id) = stored(vec![msg], Vec::new());
    let request = ReplayRequest {
        config: config.clone(),
        max_turns: 5,
        model: None,
    };
    let out = sim.replay(&id, request).unwrap();
    let entry = &out["turns"][0];
    assert_eq!(entry["new"]["responder"], "handoff");
    // The words are the live ones: the same call a live handoff makes, honest about the
    // hours at the message's own time (closed: a Thursday on a Monday-only schedule).
    let schedule = config.business_hours.as_ref().unwrap().compile().unwrap();
    let notice =
        crate::dialogue::after_hours_notice(Some(&schedule), at(1000), crate::offline::Lang::En);
    assert!(notice.as_deref().unwrap().contains("Monday"));
    let (mut live, _) = conversation_with(&config, "I want to talk to a human");
    let changed = live
        .request_handoff(
            at(1000),
            &config,
            &crate::handoff::HandoffReason::VisitorAsked,
            None,
            notice,
        )
        .unwrap();
    assert_eq!(entry["new"]["reply"], changed.messages[0].text());
    assert_eq!(entry["old"]["reply"], Value::Null);
    // The record says so: the decision, the new status, no model.
    let record = &entry["new"]["record"];
    assert_eq!(record["decision"], "handoff");
    assert_eq!(record["outcome"]["responder"], "handoff");
    assert!(
        record["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "status" && c["after"] == "waiting_for_agent"),
        "{record}"
    );
    assert!(sim.requests.is_empty());
    // Nothing stored changed.
    assert_eq!(sim.store[&id].transcript.len(), 1);
    assert!(sim.events.is_empty());
}

#[test]
fn a_replayed_no_answer_is_said_as_a_live_turn_says_it() {
    let mut config = config();
    config.knowledge.enabled = true;
    let (transcript, records) = recorded(&config);
    let (mut sim, id) = stored(transcript, records);
    sim.knowledge = Ok(vec![chunk("returns", 0.5)]);
    let body = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": crate::knowledge::NO_ANSWER_TOOL, "arguments": "{\"reason\":\"not covered\"}"}}]}}]});
    sim.script(Script::status(
        200,
        &[("content-type", "application/json")],
        &body.to_string(),
    ));
    let request = ReplayRequest {
        config,
        max_turns: 1,
        model: None,
    };
    let out = sim.replay(&id, request).unwrap();
    let entry = &out["turns"][0];
    assert_eq!(entry["new"]["responder"], "no_answer");
    assert!(
        entry["new"]["reply"]
            .as_str()
            .unwrap()
            .ends_with("I'm sorry, I couldn't find the answer to that in our help center. Would you like me to connect you with a member of our team?"),
        "{}",
        entry["new"]["reply"]
    );
    assert_eq!(
        entry["new"]["record"]["knowledge"][0]["chunk_id"],
        "returns#0"
    );
    assert_eq!(entry["new"]["record"]["outcome"]["responder"], "no_answer");
    // The knowledge base was searched as live; the miss is not logged (a replay stores
    // nothing).
    assert_eq!(sim.searches, ["Where is my parcel?"]);
    assert!(sim.unanswered.is_empty());
}

#[test]
fn a_record_stays_small_however_long_the_prompt() {
    let config = config();
    let mut c = Conversation::new(
        ConversationId::parse("c1").unwrap(),
        TenantId::default_tenant(),
        at(1),
    );
    // A window full of long messages: a prompt of well over 100 KB.
    let long = "x".repeat(15_000);
    let mut visitor = None;
    for i in 0..10 {
        let role = if i % 2 == 0 { Role::Visitor } else { Role::Bot };
        let m = c
            .append(at(2 + i), role, vec![Part::Text(long.clone())], &config)
            .unwrap();
        if role == Role::Visitor {
            visitor = Some(m);
        }
    }
    let visitor = visitor.unwrap();
    let mut turn = c
        .start_turn(
            at(20),
            &config,
            &visitor,
            TurnOptions::new(ReplyMode::Whole),
        )
        .unwrap();
    let (result, sent) = drive(&mut turn, |_| (200, ok_body("ok")));
    assert!(result.is_ok());
    assert!(sent.last().unwrap().1.len() > 100_000);
    let mut record = TurnRecord {
        seq: visitor.seq,
        ..TurnRecord::default()
    };
    record.add_turn(&turn, &[]);
    let prompt = record.prompt.as_ref().unwrap();
    assert!(prompt.truncated);
    assert!(prompt.bytes > 100_000);
    assert!(record.to_stored().len() < MAX_PROMPT_BYTES + 4096);
}

#[test]
fn a_recorded_prompt_never_holds_the_key() {
    const KEY: &str = "sk-live-Very0Secret0Key0123456789";
    for kind in ["openai", "anthropic", "gemini", "workers_ai", "mistral"] {
        let config = TenantConfig::from_json(&format!(
            r#"{{"providers": {{"p": {{"kind": "{kind}", "base_url": "http://p.test/v1", "api_key_secret": "P_KEY"}}}},
                "routes": {{"default": {{"targets": [{{"provider": "p", "model": "m"}}]}}}}}}"#
        ))
        .unwrap();
        let (c, visitor) = conversation_with(&config, "hello");
        let mut options = TurnOptions::new(ReplyMode::Whole);
        options.secrets.insert("P_KEY".into(), KEY.into());
        let mut turn = c.start_turn(at(5), &config, &visitor, options).unwrap();
        // The key does go out, in a header of the request.
        let Some(Action::CallProvider { request, .. }) = turn.poll_action() else {
            panic!("{kind}: no call");
        };
        assert!(
            request.headers.iter().any(|h| h.value.contains(KEY)),
            "{kind}: the key is sent"
        );
        let mut record = TurnRecord::default();
        record.add_turn(&turn, &[]);
        let stored = record.to_stored();
        assert!(record.prompt.is_some(), "{kind}: a prompt is recorded");
        assert!(!stored.contains(KEY), "{kind}: the key is in the record");
    }
}
