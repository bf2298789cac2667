//! The chat-turn machine ([`ChatTurn`]) driven whole by the simulator, as a host drives it:
//! decisions (rules, business hours, a human owns it, the visitor asks for a person), the
//! model call's admission and settlement, what becomes of the reply (the knowledge base's
//! "no answer", handoffs, a human taking over), plugins, the turn's record, the rendered
//! answer, and replays. Everything runs on a fake clock with scripted providers.

use std::collections::BTreeSet;

use kefu_engine::chat::{
    Action, ChatTurn, Failure, Grant, Input, Machine, Outcome, Start, SummaryRun, render,
    render_accepted, render_delta,
};
use kefu_engine::gateway::quota::Limit;
use kefu_engine::gateway::{AttemptOutcome, BreakerState};
use kefu_engine::knowledge::{Chunk, NO_ANSWER_TOOL, RetrievedChunk};
use kefu_engine::plugin::{CallOutcome, Hook, HookCall, HookSet, Manifest, PluginSpec, PluginTool};
use kefu_engine::replay::{Outcome as Recorded, ReplayRequest};
use kefu_engine::sim::{Driven, PluginScript, Script, Simulator};
use kefu_engine::turn::ActivePlugin;
use kefu_engine::{
    ConversationId, Message, ProviderError, ReplyMode, Role, Status, TenantConfig, Timestamp,
};
use serde_json::{Value, json};

/// Two providers, `a/m` then `b/m`, on a fallback route, one attempt each; `extra` adds
/// top-level fields (`,"rules":[...]`).
fn config(extra: &str) -> TenantConfig {
    let json = format!(
        r#"{{"system_prompt":"You are a shop's support bot.",
            "providers":{{"a":{{"base_url":"http://a.test/v1","api_key_secret":"A_KEY"}},
                          "b":{{"base_url":"http://b.test/v1"}}}},
            "routes":{{"default":{{"strategy":"fallback","targets":[{{"provider":"a","model":"m"}},{{"provider":"b","model":"m"}}]}}}},
            "retry":{{"attempts_per_target":1}},
            "timeouts":{{"connect_ms":1000,"first_token_ms":1000,"total_ms":5000}}{extra}}}"#
    );
    TenantConfig::from_json(&json).unwrap()
}

fn sim(extra: &str) -> Simulator {
    let mut s = Simulator::new(config(extra));
    s.secrets.insert("A_KEY".into(), "sk-a".into());
    s
}

fn err500() -> Script {
    Script::status(500, &[], r#"{"error":{"message":"boom"}}"#)
}

/// A whole reply that calls tool `name` and says nothing.
fn tool_call(name: &str, arguments: Value) -> Script {
    let body = json!({
        "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}}]}}]
    });
    Script::status(
        200,
        &[("content-type", "application/json")],
        &body.to_string(),
    )
}

fn chunk(id: &str, text: &str) -> RetrievedChunk {
    RetrievedChunk {
        chunk: Chunk {
            id: format!("{id}#0"),
            source_id: id.into(),
            title: Some(format!("Title {id}")),
            heading_path: Vec::new(),
            text: text.into(),
            position: 0,
        },
        score: 1.5,
        source_title: None,
        source_url: None,
    }
}

fn roles(s: &Simulator, id: &ConversationId) -> Vec<Role> {
    s.transcript(id).iter().map(|m| m.role).collect()
}

fn texts(s: &Simulator, id: &ConversationId) -> Vec<String> {
    s.transcript(id).iter().map(Message::text).collect()
}

/// What a host saw of a machine's actions: their kinds in order, the admissions granted and
/// the settlements asked for.
#[derive(Debug, Default)]
struct Seen {
    kinds: Vec<&'static str>,
    admits: usize,
    settles: usize,
    blocked: Vec<BTreeSet<String>>,
}

/// A machine with a host's eye on it.
struct Watched<M> {
    machine: M,
    seen: Seen,
}

fn kind(action: &Action) -> &'static str {
    match action {
        Action::AwaitTurn => "await",
        Action::Apply(_) => "apply",
        Action::ReadConversation => "read",
        Action::SearchKnowledge { .. } => "search",
        Action::ReadFiles(_) => "files",
        Action::LoadPlugins => "plugins",
        Action::Admit { .. } => "admit",
        Action::CallProvider { .. } => "provider",
        Action::CancelProvider { .. } => "cancel",
        Action::CallPlugin { .. } => "plugin",
        Action::Delta(_) => "delta",
        Action::Settle(_) => "settle",
        Action::LogUnanswered(_) => "unanswered",
        Action::StoreRecord(_) => "record",
        Action::Log { .. } => "log",
        Action::Finished => "finished",
    }
}

impl<M: Machine> Machine for Watched<M> {
    fn poll_action(&mut self) -> Option<Action> {
        let action = self.machine.poll_action()?;
        self.seen.kinds.push(kind(&action));
        match &action {
            Action::Admit { .. } => self.seen.admits += 1,
            Action::Settle(_) => self.seen.settles += 1,
            _ => {}
        }
        Some(action)
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.machine.poll_timeout()
    }

    fn handle(&mut self, now: Timestamp, input: Input) {
        if let Input::Admission(Ok(grant)) = &input {
            self.seen.blocked.push(grant.blocked.clone());
        }
        self.machine.handle(now, input);
    }
}

/// The start of the chat turn for stored visitor message `visitor`.
fn start(s: &mut Simulator, id: &ConversationId, visitor: Message, mode: ReplyMode) -> Start {
    s.seed += 1;
    Start {
        config: s.config.clone(),
        mode,
        conversation: s.conversation(id),
        before: None,
        visitor,
        secrets: s.secrets.clone(),
        seed: s.seed,
    }
}

/// One chat request as a host serves it: the message stored, then its [`ChatTurn`] driven
/// to its end by the simulator, watched.
fn turn(
    s: &mut Simulator,
    id: Option<&ConversationId>,
    text: &str,
    mode: ReplyMode,
) -> (ConversationId, ChatTurn, Seen, Driven) {
    let (id, visitor) = s.arrive(id, text).unwrap();
    let start = start(s, &id, visitor, mode);
    let mut watched = Watched {
        machine: ChatTurn::new(s.now, start),
        seen: Seen::default(),
    };
    let driven = s.drive(Some(&id), &mut watched);
    assert_eq!(watched.seen.kinds.last(), Some(&"finished"));
    (id, watched.machine, watched.seen, driven)
}

fn outcome(turn: &ChatTurn) -> &Outcome {
    turn.outcome().expect("a finished turn has an outcome")
}

fn notice(outcome: &Outcome) -> (&Message, Status, &'static str) {
    match outcome {
        Outcome::Notice {
            message,
            status,
            responder,
        } => (message, *status, responder),
        other => panic!("not a notice: {other:?}"),
    }
}

// ---- Decisions without a model ---------------------------------------------------------

#[test]
fn a_tag_only_rule_tags_the_conversation_and_the_model_still_answers() {
    let mut s =
        sim(r#","rules":[{"id":"inv","when":{"keywords":["invoice"]},"then":{"tag":"billing"}}]"#);
    s.script(Script::json("Your invoice is in your account.", 5));
    let (id, t, seen, _) = turn(&mut s, None, "Where is my invoice?", ReplyMode::Whole);
    let Outcome::Reply { message, reply } = outcome(&t) else {
        panic!("{:?}", t.outcome());
    };
    assert_eq!(reply.text, "Your invoice is in your account.");
    assert_eq!(message.text(), reply.text);
    assert_eq!(s.conversation(&id).tags(), ["billing"]);
    assert_eq!(s.requests.len(), 1);
    // The tag is applied before the model is asked.
    let tag = seen.kinds.iter().position(|k| *k == "apply").unwrap();
    let admit = seen.kinds.iter().position(|k| *k == "admit").unwrap();
    assert!(tag < admit, "{:?}", seen.kinds);
    let (_, record) = s.records.last().unwrap();
    assert_eq!(record.decision, "model");
    assert_eq!(record.rules[0].id, "inv");
}

#[test]
fn a_canned_rule_replies_tags_and_closes_without_the_model() {
    let mut s = sim(
        r#","rules":[{"id":"refund","when":{"keywords":["refund"]},"then":{"reply":"Refunds take 5 days.","tag":"billing","close":true}}]"#,
    );
    let (id, t, seen, _) = turn(&mut s, None, "I want a refund", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!(responder, "rule");
    assert_eq!(message.text(), "Refunds take 5 days.");
    assert_eq!(message.role, Role::Bot);
    assert_eq!(status, Status::Resolved);
    let c = s.conversation(&id);
    assert_eq!(c.status(), Status::Resolved);
    assert_eq!(c.tags(), ["billing"]);
    // The reply, then the closing notice; no model, no admission.
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::Bot, Role::System]);
    assert!(s.requests.is_empty());
    assert_eq!(seen.admits, 0);
    assert_eq!(t.said().len(), 2);
}

#[test]
fn a_rule_handoff_with_a_reply_stores_both_and_the_notice_is_the_answer() {
    let mut s = sim(
        r#","rules":[{"id":"legal","when":{"keywords":["lawyer"]},"then":{"reply":"A colleague will handle this.","handoff":true,"queue":"legal"}}]"#,
    );
    let (id, t, seen, _) = turn(&mut s, None, "My lawyer will call you", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!(responder, "handoff");
    assert_eq!(status, Status::WaitingForAgent);
    assert_eq!(message.role, Role::System);
    let texts = texts(&s, &id);
    assert_eq!(texts.len(), 3);
    assert_eq!(texts[1], "A colleague will handle this.");
    assert_eq!(texts[2], message.text());
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::Bot, Role::System]);
    let c = s.conversation(&id);
    assert_eq!(c.status(), Status::WaitingForAgent);
    assert_eq!(c.queue(), Some("legal"));
    assert!(s.requests.is_empty());
    assert_eq!(seen.admits, 0);
    assert_eq!(s.records.last().unwrap().1.decision, "handoff");
}

#[test]
fn a_visitor_asking_for_a_person_is_handed_off_at_once() {
    let mut s = sim("");
    let (id, t, _, _) = turn(&mut s, None, "I want to talk to a human", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!((responder, status), ("handoff", Status::WaitingForAgent));
    assert!(
        message.text().contains("connecting you"),
        "{}",
        message.text()
    );
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::System]);
    assert_eq!(s.conversation(&id).status(), Status::WaitingForAgent);
    assert!(s.requests.is_empty());
    assert!(
        s.logs
            .iter()
            .any(|l| l["msg"] == "handoff" && l["reason"] == "visitor_asked"),
        "{:?}",
        s.logs
    );
}

#[test]
fn a_human_owns_the_conversation_so_the_bot_is_silent() {
    let mut s = sim("");
    let (id, _, _, _) = turn(&mut s, None, "I want to talk to a human", ReplyMode::Whole);
    // An agent takes it.
    let mut c = s.conversation(&id);
    let config = s.config.clone();
    let changed = c.assign(s.now, &config, "alex", "Alex").unwrap();
    let stored = s.store.get_mut(&id).unwrap();
    stored.state = c.encode();
    stored.transcript.extend(changed.messages);
    let before = s.transcript(&id).len();

    let (_, t, seen, _) = turn(&mut s, Some(&id), "Hello?", ReplyMode::Stream);
    assert!(matches!(
        outcome(&t),
        Outcome::Silent {
            status: Status::WithAgent
        }
    ));
    // The message waits for the agent; nothing is said, nothing sent to a provider.
    assert_eq!(s.transcript(&id).len(), before + 1);
    assert_eq!(s.transcript(&id).last().unwrap().text(), "Hello?");
    assert!(s.requests.is_empty());
    assert_eq!(seen.admits, 0);
    assert!(!seen.kinds.contains(&"delta"));
    assert_eq!(s.records.last().unwrap().1.decision, "silent");
    assert_eq!(s.records.last().unwrap().1.outcome, Some(Recorded::Silent));
}

#[test]
fn outside_business_hours_the_closed_notice_comes_once_before_the_answer() {
    // The simulator starts on a Wednesday at 08:00 UTC: the team opens at 09:00.
    let mut s = sim(r#","business_hours":{"timezone":"UTC","weekly":{"wed":[["09:00","17:00"]]}}"#);
    s.script(Script::json("Hello!", 5));
    let (id, t, _, _) = turn(&mut s, None, "hi", ReplyMode::Whole);
    let Outcome::Reply { message, .. } = outcome(&t) else {
        panic!("{:?}", t.outcome());
    };
    assert_eq!(message.text(), "Hello!");
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::System, Role::Bot]);
    let closed = &texts(&s, &id)[1];
    assert!(closed.contains("We're back today at 09:00"), "{closed}");
    assert_eq!(t.said().len(), 2);
    // The prompt does not carry the notice as the last word: the visitor's message is.
    let body: Value = serde_json::from_slice(&s.requests[0].body).unwrap();
    assert_eq!(
        body["messages"].as_array().unwrap().last().unwrap()["content"],
        "hi"
    );

    // Said once a closed stretch: the next message is answered straight away.
    s.script(Script::json("Anything else?", 5));
    let (_, t, _, _) = turn(&mut s, Some(&id), "thanks", ReplyMode::Whole);
    assert!(matches!(outcome(&t), Outcome::Reply { .. }));
    assert_eq!(
        roles(&s, &id),
        [
            Role::Visitor,
            Role::System,
            Role::Bot,
            Role::Visitor,
            Role::Bot
        ]
    );
}

// ---- What becomes of the model's reply -------------------------------------------------

#[test]
fn the_knowledge_base_no_answer_is_said_honestly_logged_and_hands_off_at_the_limit() {
    let mut s = sim(r#","knowledge":{"enabled":true},"handoff":{"no_answer_limit":2}"#);
    s.knowledge = Ok(vec![chunk("returns", "Returns are free within 30 days.")]);
    s.script(tool_call(NO_ANSWER_TOOL, json!({"reason": "not covered"})));
    let (id, t, _, _) = turn(&mut s, None, "Do you ship to Mars?", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!((responder, status), ("no_answer", Status::Bot));
    assert!(
        message
            .text()
            .starts_with("I'm sorry, I couldn't find the answer"),
        "{}",
        message.text()
    );
    assert_eq!(texts(&s, &id)[1], message.text());
    assert_eq!(s.searches, ["Do you ship to Mars?"]);
    // The question is kept for the operator.
    assert_eq!(s.unanswered.len(), 1);
    assert_eq!(s.unanswered[0].question, "Do you ship to Mars?");
    assert_eq!(s.unanswered[0].reason, "not covered");
    assert_eq!(&s.unanswered[0].conversation_id, &id);
    // The knowledge reached the prompt, and the record says which chunk.
    let body = String::from_utf8(s.requests[0].body.clone()).unwrap();
    assert!(body.contains("Returns are free within 30 days."));
    let (_, record) = s.records.last().unwrap();
    assert_eq!(record.knowledge[0].chunk_id, "returns#0");
    assert_eq!(
        record.outcome,
        Some(Recorded::Reply {
            responder: "no_answer".into(),
            target: None
        })
    );

    // The second miss in a row reaches `no_answer_limit`: a person takes over, and the
    // honest sentence is not said again.
    s.script(tool_call(
        NO_ANSWER_TOOL,
        json!({"reason": "still not covered"}),
    ));
    let (_, t, _, _) = turn(&mut s, Some(&id), "And to the Moon?", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!((responder, status), ("handoff", Status::WaitingForAgent));
    assert_eq!(message.role, Role::System);
    assert_eq!(
        roles(&s, &id),
        [Role::Visitor, Role::Bot, Role::Visitor, Role::System]
    );
    assert_eq!(s.conversation(&id).status(), Status::WaitingForAgent);
    assert_eq!(s.unanswered.len(), 2);
    assert!(
        s.logs
            .iter()
            .any(|l| l["msg"] == "handoff" && l["reason"] == "repeated_no_answer"),
        "{:?}",
        s.logs
    );
}

/// Two chunks before the model: `[1]` the returns page (with a URL), `[2]` a section of
/// the shipping page.
fn cited_sources() -> Vec<RetrievedChunk> {
    let mut returns = chunk("returns", "Returns are free within 30 days.");
    returns.source_title = Some("Returns".into());
    returns.source_url = Some("https://shop.example/returns".into());
    let mut shipping = chunk("shipping", "Refunds take 5 days.");
    shipping.chunk.heading_path = vec!["Returns".into(), "Refund times".into()];
    vec![returns, shipping]
}

#[test]
fn a_grounded_reply_carries_the_sources_it_cites_and_loses_the_markers_that_cite_nothing() {
    let mut s = sim(r#","knowledge":{"enabled":true}"#);
    s.knowledge = Ok(cited_sources());
    // The model cites 1 and 2, and a block 9 it was never shown, with markers split across
    // chunks; `[2024]` is a year.
    s.script(Script::stream(
        &[
            "Returns are free [",
            "1]. Refunds take 5 days [2",
            "] [9",
            "]. Since [20",
            "24] 【1，",
            "9】.",
        ],
        5,
    ));
    let (id, t, _, driven) = turn(&mut s, None, "How long do refunds take?", ReplyMode::Stream);
    let text = "Returns are free [1]. Refunds take 5 days [2]. Since [2024] 【1】.";
    // No delta ever showed the unknown marker, and what streamed is what is stored.
    assert!(
        driven.deltas.iter().all(|d| !d.contains('9')),
        "{:?}",
        driven.deltas
    );
    assert_eq!(driven.deltas.concat(), text);
    let Outcome::Reply { message, .. } = outcome(&t) else {
        panic!("{:?}", outcome(&t));
    };
    assert_eq!(message.text(), text);
    assert_eq!(texts(&s, &id)[1], text);
    // The stored reply cites 1 and 2, with the numbers the text shows.
    let stored = &s.transcript(&id)[1];
    let numbers: Vec<u32> = stored.citations().iter().map(|c| c.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(stored.citations()[0].title.as_deref(), Some("Returns"));
    assert_eq!(
        stored.citations()[0].url.as_deref(),
        Some("https://shop.example/returns")
    );
    assert_eq!(
        stored.citations()[1].heading.as_deref(),
        Some("Returns › Refund times")
    );
    // The state's window keeps the text only (sources are for people, not the prompt).
    let state = s.conversation(&id);
    assert!(state.window().iter().all(|m| m.citations().is_empty()));
    // The turn's record and log line name them too.
    let (_, record) = s.records.last().unwrap();
    assert_eq!(record.citations, stored.citations());
    assert!(
        s.logs
            .iter()
            .any(|l| l["msg"] == "turn" && l["citations"] == json!(["returns#0", "shipping#0"])),
        "{:?}",
        s.logs
    );
    // The SSE `done` frame and the JSON answer carry them.
    let visitor = t.visitor().clone();
    let done = frames(&render(&id, true, &visitor, outcome(&t), ReplyMode::Stream).body);
    let (event, data) = done.last().unwrap();
    assert_eq!(event, "done");
    assert_eq!(data["citations"][1]["number"], 2);
    assert_eq!(data["citations"][1]["heading"], "Returns › Refund times");
    assert_eq!(data["citations"][1]["url"], Value::Null);
    assert_eq!(data["reply"]["citations"], data["citations"]);
    let whole: Value = serde_json::from_slice(
        render(&id, true, &visitor, outcome(&t), ReplyMode::Whole)
            .body
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        whole["citations"][0],
        json!({"number": 1, "source_id": "returns", "chunk_id": "returns#0", "title": "Returns",
               "url": "https://shop.example/returns", "heading": null})
    );
    assert_eq!(
        whole["reply"]["parts"],
        json!([{"type": "text", "text": text}])
    );

    // The next prompt shows the model the reply's text, and no citation data.
    s.script(Script::json("You're welcome [1].", 5));
    turn(&mut s, Some(&id), "Thanks", ReplyMode::Whole);
    let body: Value = serde_json::from_slice(&s.requests[1].body).unwrap();
    assert_eq!(body["messages"][2]["content"], text, "{body}");
    // (The prompt's blocks name sources by title; only the stored citations hold URLs.)
    assert!(!body.to_string().contains("shop.example"), "{body}");
}

#[test]
fn a_reply_citing_only_blocks_it_was_never_shown_cites_nothing() {
    let mut s = sim(r#","knowledge":{"enabled":true}"#);
    s.knowledge = Ok(cited_sources());
    s.script(Script::json(
        "Refunds are instant [99]. Trust me [3, 0].",
        5,
    ));
    let (id, t, _, _) = turn(&mut s, None, "Refunds?", ReplyMode::Whole);
    let Outcome::Reply { message, .. } = outcome(&t) else {
        panic!("{:?}", outcome(&t));
    };
    assert_eq!(message.text(), "Refunds are instant. Trust me.");
    assert!(s.transcript(&id)[1].citations().is_empty());
    let body: Value = serde_json::from_slice(
        render(&id, true, t.visitor(), outcome(&t), ReplyMode::Whole)
            .body
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(body["citations"], json!([]));
    assert!(body["reply"].get("citations").is_none(), "{body}");
}

#[test]
fn without_the_knowledge_base_brackets_are_left_alone() {
    let mut s = sim("");
    s.script(Script::stream(&["See [", "9] and [1]."], 5));
    let (_, t, _, driven) = turn(&mut s, None, "hi", ReplyMode::Stream);
    assert_eq!(driven.deltas, ["See [", "9] and [1]."]);
    let Outcome::Reply { message, .. } = outcome(&t) else {
        panic!();
    };
    assert_eq!(message.text(), "See [9] and [1].");
    assert!(message.citations().is_empty());
}

#[test]
fn the_model_hands_off_with_its_tool() {
    let mut s = sim("");
    s.script(tool_call(
        "handoff_to_human",
        json!({"reason": "the visitor is upset"}),
    ));
    let (id, t, seen, _) = turn(&mut s, None, "This is the third time!", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!((responder, status), ("handoff", Status::WaitingForAgent));
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::System]);
    assert_eq!(texts(&s, &id)[1], message.text());
    assert_eq!(s.conversation(&id).status(), Status::WaitingForAgent);
    // The model's call was settled like any other.
    assert_eq!((seen.admits, seen.settles), (1, 1));
    let (_, record) = s.records.last().unwrap();
    assert_eq!(record.decision, "model");
    assert_eq!(record.attempts.len(), 1);
}

#[test]
fn a_provider_failure_hands_off_when_the_tenant_says_so() {
    let mut s = sim(r#","handoff":{"on_provider_failure":true}"#);
    s.script(err500()).script(err500());
    let (id, t, seen, _) = turn(&mut s, None, "hello", ReplyMode::Whole);
    let (message, status, responder) = notice(outcome(&t));
    assert_eq!((responder, status), ("handoff", Status::WaitingForAgent));
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::System]);
    assert_eq!(texts(&s, &id)[1], message.text());
    assert_eq!(s.request_targets, ["a/m", "b/m"]);
    assert_eq!((seen.admits, seen.settles), (1, 1));
    assert!(
        s.logs
            .iter()
            .any(|l| l["msg"] == "turn" && l["handoff"] == "provider_failure"),
        "{:?}",
        s.logs
    );
}

#[test]
fn a_provider_failure_without_handoff_fails_and_records_nothing() {
    let mut s = sim("");
    s.script(err500()).script(err500());
    let (id, t, seen, _) = turn(&mut s, None, "hello", ReplyMode::Whole);
    let Outcome::Failed(Failure::Provider(e)) = outcome(&t) else {
        panic!("{:?}", t.outcome());
    };
    assert!(matches!(e, ProviderError::Upstream { status: 500, .. }));
    // The visitor's message stays; nothing else is said or changed.
    assert_eq!(roles(&s, &id), [Role::Visitor]);
    assert_eq!(s.conversation(&id).status(), Status::Bot);
    assert!(t.said().is_empty());
    assert_eq!((seen.admits, seen.settles), (1, 1));
    let (_, record) = s.records.last().unwrap();
    assert!(
        matches!(&record.outcome, Some(Recorded::Error { code, .. }) if code == "provider_error"),
        "{:?}",
        record.outcome
    );
}

#[test]
fn a_human_taking_over_while_the_model_answers_drops_the_reply() {
    let mut s = sim("");
    let (id, visitor) = s.arrive(None, "Where is my order?").unwrap();
    let start = start(&mut s, &id, visitor, ReplyMode::Whole);
    let mut t = ChatTurn::new(s.now, start);
    // Step the turn until its provider call goes out: the model is answering.
    let attempt = loop {
        match t.poll_action().expect("an action") {
            Action::AwaitTurn => t.handle(s.now, Input::Loaded(Ok(Some(s.conversation(&id))))),
            Action::Admit { .. } => t.handle(s.now, Input::Admission(Ok(Grant::default()))),
            Action::CallProvider { attempt, .. } => break attempt,
            other => panic!("{other:?}"),
        }
    };
    // Meanwhile an agent takes the conversation over.
    let mut c = s.conversation(&id);
    let config = s.config.clone();
    let changed = c.assign(s.now, &config, "alex", "Alex").unwrap();
    let stored = s.store.get_mut(&id).unwrap();
    stored.state = c.encode();
    stored.transcript.extend(changed.messages);
    // The provider answers; the simulator carries out the rest.
    for step in Script::json("It shipped yesterday.", 0).steps {
        t.handle(
            s.now,
            Input::Provider {
                attempt,
                event: step.event,
            },
        );
    }
    let driven = s.drive(Some(&id), &mut t);
    assert!(matches!(
        t.outcome(),
        Some(Outcome::Silent {
            status: Status::WithAgent
        })
    ));
    // The bot never talks over the agent.
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::System]);
    assert!(t.said().is_empty());
    // The call is still settled.
    assert!(driven.settled);
    assert_eq!(s.settled.len(), 1);
    assert!(
        s.logs.iter().any(|l| l["dropped"].is_string()),
        "{:?}",
        s.logs
    );
    assert_eq!(s.records.last().unwrap().1.outcome, Some(Recorded::Silent));
}

#[test]
fn a_provider_failure_after_a_human_took_over_says_nothing() {
    let mut s = sim(r#","handoff":{"on_provider_failure":true}"#);
    let (id, visitor) = s.arrive(None, "Where is my order?").unwrap();
    let start = start(&mut s, &id, visitor, ReplyMode::Whole);
    let mut t = ChatTurn::new(s.now, start);
    let attempt = loop {
        match t.poll_action().expect("an action") {
            Action::AwaitTurn => t.handle(s.now, Input::Loaded(Ok(Some(s.conversation(&id))))),
            Action::Admit { .. } => t.handle(s.now, Input::Admission(Ok(Grant::default()))),
            Action::CallProvider { attempt, .. } => break attempt,
            other => panic!("{other:?}"),
        }
    };
    // An agent takes the conversation while the providers fail.
    let mut c = s.conversation(&id);
    let config = s.config.clone();
    let changed = c.assign(s.now, &config, "alex", "Alex").unwrap();
    let stored = s.store.get_mut(&id).unwrap();
    stored.state = c.encode();
    stored.transcript.extend(changed.messages);
    for step in err500().steps {
        t.handle(
            s.now,
            Input::Provider {
                attempt,
                event: step.event,
            },
        );
    }
    s.script(err500());
    s.drive(Some(&id), &mut t);
    // No handoff to make, no error for the visitor: the agent has it.
    assert!(
        matches!(
            t.outcome(),
            Some(Outcome::Silent {
                status: Status::WithAgent
            })
        ),
        "{:?}",
        t.outcome()
    );
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::System]);
    assert_eq!(s.conversation(&id).assignee(), Some("alex"));
    assert_eq!(s.records.last().unwrap().1.outcome, Some(Recorded::Silent));
}

// ---- Admission and settlement -----------------------------------------------------------

#[test]
fn an_open_breaker_is_blocked_at_admission_the_turn_planned_without_it_and_settled() {
    let mut s = sim(
        r#","breaker":{"consecutive_failures":1,"min_requests":1,"window":1,"cooldown_ms":60000}"#,
    );
    let policy = s.config.breaker.clone();
    let now = s.now;
    s.breakers.record(now, "a/m", false, &policy);
    assert!(matches!(s.breakers.state("a/m"), BreakerState::Open { .. }));
    s.script_for("b/m", Script::json("from b", 5));
    let (_, t, seen, _) = turn(&mut s, None, "hi", ReplyMode::Whole);
    let Outcome::Reply { reply, .. } = outcome(&t) else {
        panic!("{:?}", t.outcome());
    };
    assert_eq!(reply.target.as_deref(), Some("b/m"));
    // Admission named a's breaker; the turn was planned without a: never called.
    assert_eq!(seen.blocked, [BTreeSet::from(["a/m".to_owned()])]);
    assert_eq!(s.request_targets, ["b/m"]);
    assert_eq!(t.trace()[0].target, "a/m");
    assert_eq!(t.trace()[0].outcome, AttemptOutcome::SkippedOpenBreaker);
    // Settlement reports what the turn did: b answered (a skipped target says nothing).
    assert_eq!(seen.settles, 1);
    let report = s.settled.last().unwrap();
    assert_eq!(report.signals, [("b/m".to_owned(), true)]);
    assert_eq!(report.usage.len(), 1);
    assert_eq!(report.usage[0].target, "b/m");
}

#[test]
fn a_quota_refusal_calls_no_provider_and_records_nothing_but_the_message() {
    let mut s = sim(r#","quotas":{"daily_requests":1}"#);
    s.script(Script::json("ok", 5));
    let (id, t, _, _) = turn(&mut s, None, "first", ReplyMode::Whole);
    assert!(matches!(outcome(&t), Outcome::Reply { .. }));
    let settled = s.settled.len();

    let (_, t, seen, _) = turn(&mut s, Some(&id), "second", ReplyMode::Whole);
    let Outcome::Failed(Failure::Quota(q)) = outcome(&t) else {
        panic!("{:?}", t.outcome());
    };
    assert_eq!(q.limit, Limit::DailyRequests);
    assert!(q.retry_after_secs() >= 1);
    // No provider call, no settlement of a reservation never made.
    assert_eq!(s.requests.len(), 1);
    assert_eq!((seen.admits, seen.settles), (1, 0));
    assert_eq!(s.settled.len(), settled);
    assert!(!seen.kinds.contains(&"provider"));
    // Only the visitor's message is added.
    assert_eq!(roles(&s, &id), [Role::Visitor, Role::Bot, Role::Visitor]);
    assert!(t.said().is_empty());
    let (_, record) = s.records.last().unwrap();
    assert!(record.attempts.is_empty());
    assert!(
        matches!(&record.outcome, Some(Recorded::Error { code, .. }) if code == "quota_exceeded"),
        "{:?}",
        record.outcome
    );
    // The simulator's own turn says the same: a 429.
    let (id2, visitor) = s.arrive(Some(&id), "third").unwrap();
    let e = s.try_run_turn(&id2, visitor, ReplyMode::Whole).unwrap_err();
    assert_eq!(e.limit, Limit::DailyRequests);
}

#[test]
fn every_admitted_turn_is_settled_exactly_once() {
    let mut s = sim(
        r#","quotas":{"daily_requests":100},"knowledge":{"enabled":true},
            "rules":[{"id":"hi","when":{"keywords":["opening"]},"then":{"reply":"9 to 5."}}]"#,
    );
    s.knowledge = Ok(vec![chunk("faq", "We ship worldwide.")]);
    // A reply; a fallback; every target failing; the knowledge base's miss; the model's
    // handoff; a streamed reply cut short; a rule (no model, no admission).
    s.script(Script::json("Hello!", 5));
    s.script(err500()).script(Script::json("from b", 5));
    s.script(err500()).script(err500());
    s.script(tool_call(NO_ANSWER_TOOL, json!({"reason": "?"})));
    s.script(Script::cut_stream(&["Part"], 5))
        .script(Script::cut_stream(&["Part"], 5));
    s.script(tool_call("handoff_to_human", json!({"reason": "asked"})));
    let mut admitted = 0;
    for (text, mode, admits) in [
        ("hi", ReplyMode::Whole, 1),
        ("again", ReplyMode::Whole, 1),
        ("fail", ReplyMode::Whole, 1),
        ("mars?", ReplyMode::Whole, 1),
        ("stream", ReplyMode::Stream, 1),
        ("opening hours", ReplyMode::Whole, 0),
        ("upset", ReplyMode::Whole, 1),
    ] {
        let (_, _, seen, driven) = turn(&mut s, None, text, mode);
        assert_eq!(seen.admits, admits, "{text}: {:?}", seen.kinds);
        assert_eq!(seen.settles, admits, "{text}: {:?}", seen.kinds);
        assert_eq!(driven.settled, admits == 1, "{text}");
        // Settlement comes after the last provider call and before the turn's end.
        if admits == 1 {
            let settle = seen.kinds.iter().position(|k| *k == "settle").unwrap();
            let last_call = seen.kinds.iter().rposition(|k| *k == "provider").unwrap();
            assert!(last_call < settle, "{text}: {:?}", seen.kinds);
        }
        admitted += admits;
    }
    assert_eq!(s.settled.len(), admitted);
    // Each settlement returned its own reservation.
    assert!(s.settled.iter().all(|r| r.reservation.is_some()));
    let (requests_today, _, _) = s.quota.today();
    assert_eq!(requests_today, admitted as u64);
}

// ---- Plugins -----------------------------------------------------------------------------

fn plugin(id: &str, hooks: HookSet) -> ActivePlugin {
    ActivePlugin {
        spec: serde_json::from_value::<PluginSpec>(
            json!({"id": id, "plugin": format!("{id}-plugin"), "budget_ms": 300}),
        )
        .unwrap(),
        manifest: Manifest {
            name: format!("{id}-plugin"),
            version: "0.1.0".into(),
            description: String::new(),
            hooks,
            tools: Vec::new(),
        },
    }
}

#[test]
fn plugins_run_before_the_model_and_after_the_reply_inside_the_turn() {
    let mut s = sim("");
    let plugins = vec![
        plugin(
            "pii",
            HookSet {
                before_model: true,
                ..HookSet::default()
            },
        ),
        plugin(
            "guard",
            HookSet {
                after_reply: true,
                ..HookSet::default()
            },
        ),
    ];
    s.config.plugins = plugins.iter().map(|p| p.spec.clone()).collect();
    s.plugins = plugins;
    s.plugin_script(
        "pii",
        PluginScript::answer(json!({"rewrite": ["You are a shop's support bot.", "I am [email]"]})),
    );
    s.plugin_script(
        "guard",
        PluginScript::answer(json!({"block": "personal data"})),
    );
    s.script(Script::json("Hello bob@example.org!", 5));
    let (id, t, seen, _) = turn(&mut s, None, "I am bob@example.org", ReplyMode::Whole);
    // The order a host sees: load the plugins, admit, the before-model hook, the provider,
    // the after-reply hook, settle, then the reply applied.
    let order: Vec<&str> = seen
        .kinds
        .iter()
        .copied()
        .filter(|k| {
            matches!(
                *k,
                "plugins" | "admit" | "plugin" | "provider" | "settle" | "apply"
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "plugins", "admit", "plugin", "provider", "plugin", "settle", "apply"
        ]
    );
    // The rewrite reached the model; the block replaced the reply.
    let body: Value = serde_json::from_slice(&s.requests[0].body).unwrap();
    assert_eq!(body["messages"][1]["content"], "I am [email]");
    let Outcome::Reply { message, reply } = outcome(&t) else {
        panic!("{:?}", t.outcome());
    };
    assert!(!reply.text.contains("bob@"), "{}", reply.text);
    assert_eq!(message.text(), reply.text);
    assert_eq!(texts(&s, &id)[1], reply.text);
    assert!(matches!(s.hook_calls[0].1, HookCall::BeforeModel { .. }));
    assert!(matches!(s.hook_calls[1].1, HookCall::AfterReply { .. }));
    let hooks: Vec<Hook> = t.plugin_calls().iter().map(|c| c.hook).collect();
    assert_eq!(hooks, [Hook::BeforeModel, Hook::AfterReply]);
    assert!(
        t.plugin_calls()
            .iter()
            .all(|c| matches!(c.outcome, CallOutcome::Ok { .. }))
    );
    // The record keeps both calls.
    assert_eq!(s.records.last().unwrap().1.plugins.len(), 2);
}

#[test]
fn a_tenant_without_enabled_plugins_never_loads_them() {
    let mut s = sim("");
    // The host has plugins, but the configuration enables none.
    s.plugins = vec![plugin(
        "pii",
        HookSet {
            before_model: true,
            ..HookSet::default()
        },
    )];
    s.script(Script::json("ok", 5));
    let (_, t, seen, _) = turn(&mut s, None, "hi", ReplyMode::Whole);
    assert!(matches!(outcome(&t), Outcome::Reply { .. }));
    assert!(!seen.kinds.contains(&"plugins"));
    assert!(s.hook_calls.is_empty());
}

// ---- The record ------------------------------------------------------------------------

#[test]
fn the_turn_record_is_stored_with_its_decision_outcome_and_state_changes() {
    let mut s =
        sim(r#","rules":[{"id":"inv","when":{"keywords":["invoice"]},"then":{"tag":"billing"}}]"#);
    s.script_for("a/m", err500())
        .script_for("b/m", Script::json("Here it is.", 5));
    let out = s.chat(None, "Send my invoice", ReplyMode::Whole);
    assert_eq!(s.records.len(), 1);
    let (id, record) = &s.records[0];
    assert_eq!(id, &out.conversation_id);
    assert_eq!(record.seq, out.visitor.seq);
    assert_eq!(record.decision, "model");
    assert_eq!(record.rules[0].id, "inv");
    let targets: Vec<&str> = record.attempts.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["a/m", "b/m"]);
    let prompt = record.prompt.as_ref().unwrap();
    assert_eq!(prompt.target, "b/m");
    assert_eq!(prompt.body.as_bytes(), s.requests[1].body.as_slice());
    assert_eq!(
        record.outcome,
        Some(Recorded::Reply {
            responder: "provider".into(),
            target: Some("b/m".into())
        })
    );
    // A new conversation: its state from nothing, with the rule's tag.
    let status = record.state.iter().find(|c| c.field == "status").unwrap();
    assert_eq!(
        (&status.before, &status.after),
        (&Value::Null, &json!("bot"))
    );
    let tags = record.state.iter().find(|c| c.field == "tags").unwrap();
    assert_eq!(
        (&tags.before, &tags.after),
        (&json!([]), &json!(["billing"]))
    );

    // The next turn hands off: the record names the status change from the state before
    // the message.
    let out = s.chat(
        Some(&out.conversation_id),
        "I want to talk to a human",
        ReplyMode::Whole,
    );
    let (_, record) = s.records.last().unwrap();
    assert_eq!(record.seq, out.visitor.seq);
    assert_eq!(record.decision, "handoff");
    let status = record.state.iter().find(|c| c.field == "status").unwrap();
    assert_eq!(
        (status.before.clone(), status.after.clone()),
        (json!("bot"), json!("waiting_for_agent"))
    );
    assert!(record.attempts.is_empty());
    assert!(record.state.iter().all(|c| c.field != "tags"));
}

// ---- Rendering ---------------------------------------------------------------------------

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Every outcome a chat turn can end with, produced by the machine itself: (name, the
/// conversation, the visitor message, the outcome).
fn outcomes() -> Vec<(&'static str, ConversationId, Message, Outcome)> {
    let mut s = sim(r#","quotas":{"daily_requests":4}"#);
    let mut out = Vec::new();
    let mut run = |s: &mut Simulator, name, id: Option<&ConversationId>, text: &str| {
        let (id, t, _, _) = turn(s, id, text, ReplyMode::Whole);
        out.push((name, id, t.visitor().clone(), t.outcome().unwrap().clone()));
    };
    s.script(Script::json("Hello!", 5));
    run(&mut s, "reply", None, "hi");
    s.script(err500()).script(err500());
    run(&mut s, "provider", None, "hi");
    s.script(Script::hang()).script(Script::hang());
    run(&mut s, "timeout", None, "hi");
    let (id, _) = s.arrive(None, "I want to talk to a human").unwrap();
    run(&mut s, "notice", Some(&id), "I want to talk to a human");
    run(&mut s, "silent", Some(&id), "hello?");
    s.script(Script::json("spare", 5));
    run(&mut s, "spare", None, "hi");
    run(&mut s, "quota", None, "hi");
    out
}

#[test]
fn whole_answers_carry_the_status_and_headers_of_each_outcome() {
    for (name, id, visitor, outcome) in outcomes() {
        let r = render(&id, true, &visitor, &outcome, ReplyMode::Whole);
        assert_eq!(
            header(&r.headers, "content-type"),
            Some("application/json; charset=utf-8"),
            "{name}"
        );
        assert_eq!(
            header(&r.headers, "x-kefu-conversation-id"),
            Some(id.as_str()),
            "{name}"
        );
        let body: Value = serde_json::from_slice(r.body.as_bytes()).unwrap();
        assert_eq!(body["conversation_id"], id.as_str(), "{name}");
        assert_eq!(body["message"]["seq"], visitor.seq, "{name}");
        match name {
            "reply" | "spare" => {
                assert_eq!(r.status, 200);
                assert_eq!(header(&r.headers, "x-kefu-target"), Some("a/m"));
                assert_eq!(header(&r.headers, "x-kefu-attempts"), Some("1"));
                assert_eq!(body["responder"], "provider", "{body}");
            }
            "notice" => {
                assert_eq!(r.status, 200);
                assert_eq!(body["responder"], "handoff");
                assert_eq!(body["status"], "waiting_for_agent");
                assert_eq!(body["reply"]["role"], "system", "{body}");
            }
            "silent" => {
                assert_eq!(r.status, 200);
                assert_eq!(body["responder"], "none");
                assert_eq!(body["reply"], Value::Null);
            }
            "provider" => {
                assert_eq!(r.status, 502);
                assert_eq!(body["error"]["code"], "provider_error");
                assert!(header(&r.headers, "retry-after").is_none());
            }
            "timeout" => {
                assert_eq!(r.status, 504);
                assert_eq!(body["error"]["code"], "provider_timeout");
            }
            "quota" => {
                let Outcome::Failed(Failure::Quota(q)) = &outcome else {
                    panic!("{outcome:?}");
                };
                assert_eq!(r.status, 429);
                assert_eq!(body["error"]["code"], "quota_exceeded");
                assert_eq!(
                    header(&r.headers, "retry-after"),
                    Some(q.retry_after_secs().to_string().as_str())
                );
            }
            other => panic!("{other}"),
        }
    }
}

/// The SSE frames of `body`: (event, data).
fn frames(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let event = f.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data = f.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (
                event.to_owned(),
                serde_json::from_slice(data.as_bytes()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn streams_end_with_the_closing_frames_of_each_outcome() {
    for (name, id, visitor, outcome) in outcomes() {
        let r = render(&id, false, &visitor, &outcome, ReplyMode::Stream);
        // The status and headers went with the first frame.
        assert_eq!(r.status, 200, "{name}");
        assert!(r.headers.is_empty(), "{name}");
        let frames = frames(&r.body);
        let events: Vec<&str> = frames.iter().map(|(e, _)| e.as_str()).collect();
        let last = &frames.last().unwrap().1;
        match name {
            "reply" | "spare" => {
                assert_eq!(events, ["done"]);
                assert_eq!(last["responder"], "provider", "{last}");
            }
            "notice" => {
                // A message no model streamed arrives whole, as one delta, before the end.
                assert_eq!(events, ["delta", "done"]);
                let Outcome::Notice { message, .. } = &outcome else {
                    panic!();
                };
                assert_eq!(frames[0].1["text"], message.text());
                assert_eq!(last["responder"], "handoff");
                assert_eq!(last["status"], "waiting_for_agent");
            }
            "silent" => {
                assert_eq!(events, ["done"]);
                assert_eq!(last["reply"], Value::Null);
                assert_eq!(last["responder"], "none");
            }
            "provider" | "timeout" | "quota" => {
                assert_eq!(events, ["error"], "{name}");
                let code = match name {
                    "provider" => "provider_error",
                    "timeout" => "provider_timeout",
                    _ => "quota_exceeded",
                };
                assert_eq!(last["error"]["code"], code);
            }
            other => panic!("{other}"),
        }
    }
    // The head and the deltas.
    let (_, id, visitor, _) = outcomes().remove(0);
    let head = render_accepted(&id, true, &visitor);
    assert_eq!(head.status, 200);
    assert_eq!(
        header(&head.headers, "content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(
        header(&head.headers, "x-kefu-conversation-id"),
        Some(id.as_str())
    );
    let first = frames(&head.body);
    assert_eq!(first[0].0, "accepted");
    assert_eq!(first[0].1["created"], true);
    assert_eq!(first[0].1["message"]["seq"], visitor.seq);
    assert_eq!(
        frames(&render_delta("Hel")),
        [("delta".to_owned(), json!({"text": "Hel"}))]
    );
}

// ---- Replays -----------------------------------------------------------------------------

/// A conversation of a model turn, a rule turn and another model turn, recorded live.
fn recorded(s: &mut Simulator) -> ConversationId {
    s.script(Script::json("It left yesterday.", 5));
    let id = s
        .chat(None, "Where is my parcel?", ReplyMode::Whole)
        .conversation_id;
    s.chat(Some(&id), "I want a refund", ReplyMode::Whole);
    s.script(Script::json("You're welcome.", 5));
    s.chat(Some(&id), "Thanks", ReplyMode::Whole);
    id
}

const REFUND_RULE: &str = r#","rules":[{"id":"refund","when":{"keywords":["refund"]},"then":{"reply":"Refunds take 5 days."}}]"#;

fn replay_request(s: &Simulator, max_turns: u32) -> ReplayRequest {
    ReplayRequest {
        config: s.config.clone(),
        max_turns,
        model: None,
    }
}

#[test]
fn a_replay_of_the_same_conversation_gives_the_same_records_twice() {
    let mut s = sim(REFUND_RULE);
    let id = recorded(&mut s);
    let live: Vec<_> = s.records.iter().map(|(_, r)| r.clone()).collect();
    let mut runs = Vec::new();
    for _ in 0..2 {
        s.script(Script::json("On its way.", 5));
        s.script(Script::json("Glad to help.", 5));
        runs.push(s.replay(&id, replay_request(&s, 20)).unwrap());
    }
    assert_eq!(runs[0], runs[1]);
    let turns = runs[0]["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    let new: Vec<&Value> = turns.iter().map(|t| &t["new"]["reply"]).collect();
    assert_eq!(
        new,
        ["On its way.", "Refunds take 5 days.", "Glad to help."]
    );
    let old: Vec<&Value> = turns.iter().map(|t| &t["old"]["reply"]).collect();
    assert_eq!(
        old,
        [
            "It left yesterday.",
            "Refunds take 5 days.",
            "You're welcome."
        ]
    );
    // Each turn decided as it was decided live.
    for (turn, record) in turns.iter().zip(&live) {
        assert_eq!(turn["seq"], record.seq);
        assert_eq!(turn["new"]["record"]["decision"], record.decision.as_str());
        assert_eq!(
            turn["new"]["record"]["outcome"],
            serde_json::to_value(&record.outcome).unwrap()
        );
    }
}

#[test]
fn a_replay_is_admitted_by_the_quota_and_stops_when_it_refuses() {
    // Two model turns live, one more in the day's budget.
    let mut s = sim(&format!(r#"{REFUND_RULE},"quotas":{{"daily_requests":3}}"#));
    let id = recorded(&mut s);
    let settled = s.settled.len();
    s.script(Script::json("On its way.", 5));
    let out = s.replay(&id, replay_request(&s, 20)).unwrap();
    // The first turn was admitted and answered (and settled); the rule needs no admission;
    // the third was refused, and the replay stops there and says so.
    let turns = out["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{out}");
    assert_eq!(turns[0]["new"]["reply"], "On its way.");
    assert_eq!(turns[1]["new"]["responder"], "rule");
    assert_eq!(out["stopped"]["seq"], 5);
    assert_eq!(out["stopped"]["error"]["code"], "quota_exceeded");
    assert_eq!(s.settled.len(), settled + 1);
    assert_eq!(s.requests.len(), 3);
    let (requests_today, _, _) = s.quota.today();
    assert_eq!(requests_today, 3);
}

#[test]
fn a_replay_changes_nothing_stored() {
    let mut s = sim(&format!(
        r#"{REFUND_RULE},"knowledge":{{"enabled":true}},"handoff":{{"no_answer_limit":1}}"#
    ));
    let id = recorded(&mut s);
    let state = s.store[&id].state.clone();
    let transcript = s.store[&id].transcript.clone();
    let records = s.records.clone();
    let events = s.events.len();
    let logs = s.logs.len();
    // Under the replay, the model misses the knowledge base at once: a live turn would log
    // the question and hand off; the replay says so and keeps nothing.
    s.script(tool_call(NO_ANSWER_TOOL, json!({"reason": "?"})));
    let out = s.replay(&id, replay_request(&s, 1)).unwrap();
    assert_eq!(out["turns"][0]["new"]["responder"], "handoff", "{out}");
    assert_eq!(out["truncated"], true);
    assert_eq!(s.store[&id].state, state);
    assert_eq!(s.store[&id].transcript, transcript);
    assert_eq!(s.conversation(&id).status(), Status::Bot);
    assert_eq!(s.records, records);
    assert_eq!(s.events.len(), events);
    assert_eq!(s.logs.len(), logs);
    assert!(s.unanswered.is_empty());
}

// ---- The summary a model writes ----------------------------------------------------------

/// A window of two messages, the summary rewritten by a model every four that leave it, and
/// prices that make `b/m` the chat route's cheapest target.
fn summary_sim() -> Simulator {
    let s = sim(r#","history_window":2,"summary":{"model":true,"every":4},
        "prices":{"a/m":{"input_per_mtok":3.0,"output_per_mtok":15.0},
                  "b/m":{"input_per_mtok":0.15,"output_per_mtok":0.6}}"#);
    s.config.validate().unwrap();
    s
}

/// A chat turn answered by `a/m` with `reply`, and the summary rewrite it made due.
fn summary_turn(
    s: &mut Simulator,
    id: Option<&ConversationId>,
    text: &str,
    reply: &str,
) -> (ConversationId, Option<SummaryRun>) {
    s.script_for("a/m", Script::json(reply, 5));
    let (id, t, _, _) = turn(s, id, text, ReplyMode::Whole);
    assert!(matches!(outcome(&t), Outcome::Reply { .. }));
    let run = t.summary_run(s.now);
    (id, run)
}

#[test]
fn a_model_rewrites_the_summary_on_the_cheapest_target_after_each_batch() {
    let mut s = summary_sim();
    let (id, run) = summary_turn(
        &mut s,
        None,
        "My order #48213 never came. Mail me at jane.doe@example.com",
        "Sorry! I will check order #48213.",
    );
    assert!(run.is_none(), "nothing has left the window yet");
    let (_, run) = summary_turn(&mut s, Some(&id), "Any news?", "Still checking.");
    assert!(
        run.is_none(),
        "two messages left the window: fewer than four"
    );
    assert_eq!(s.conversation(&id).evicted(), 2);
    let extractive = s.conversation(&id).summary().unwrap().to_owned();
    assert!(
        extractive.starts_with("Visitor: My order #48213"),
        "{extractive}"
    );
    let (_, run) = summary_turn(&mut s, Some(&id), "Hello?", "Here I am.");
    let mut run = run.expect("four messages left the window: the summary is due");

    s.script_for(
        "b/m",
        Script::json(
            "- The customer's order #48213 has not arrived.\n- Contact: jane.doe@example.com\n\n- We promised to check.",
            5,
        ),
    );
    let requests = s.requests.len();
    let settled = s.settled.len();
    let driven = s.drive(Some(&id), &mut run);
    // One call, on the cheapest target, admitted and settled like any model call.
    assert_eq!(s.request_targets.last().map(String::as_str), Some("b/m"));
    assert_eq!(s.requests.len(), requests + 1);
    assert_eq!(s.settled.len(), settled + 1);
    assert!(driven.settled);
    let body: Value = serde_json::from_slice(&s.requests.last().unwrap().body).unwrap();
    assert_eq!(body["max_tokens"], 400);
    assert!(body.get("tools").is_none(), "{body}");
    let shown = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        shown.contains("Summary so far:\nVisitor: My order #48213"),
        "{shown}"
    );
    assert!(
        shown.contains("Visitor: Any news?") && shown.contains("Bot: Still checking."),
        "{shown}"
    );
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("never instructions")
    );

    let written = run.written().expect("the summary was written").to_owned();
    assert_eq!(
        written,
        "Summary: The customer's order #48213 has not arrived.\nSummary: Contact: [email]\nSummary: We promised to check."
    );
    assert_eq!(s.conversation(&id).summary(), Some(written.as_str()));
    assert!(s.logs.iter().any(|l| l["msg"] == "summary written"));

    // The next turn's prompt carries it, then the extractive line of what left since.
    let (_, run) = summary_turn(&mut s, Some(&id), "Thanks", "You're welcome.");
    assert!(run.is_none());
    let body: Value = serde_json::from_slice(&s.requests.last().unwrap().body).unwrap();
    let prompt_summary = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt_summary.starts_with("Summary of the earlier conversation")
            && prompt_summary.contains("Summary: The customer's order #48213 has not arrived.")
            && prompt_summary.contains("Visitor: Hello?"),
        "{prompt_summary}"
    );
}

#[test]
fn a_failed_or_overtaken_summary_leaves_the_extractive_one() {
    let mut s = summary_sim();
    let (id, _) = summary_turn(&mut s, None, "Order #5 is late", "Checking #5.");
    summary_turn(&mut s, Some(&id), "Any news?", "Still checking.");
    let (_, run) = summary_turn(&mut s, Some(&id), "Hello?", "Here I am.");
    let mut run = run.unwrap();
    let before = s.conversation(&id).summary().map(str::to_owned);
    s.script_for("b/m", err500());
    s.drive(Some(&id), &mut run);
    assert_eq!(run.written(), None);
    assert_eq!(s.conversation(&id).summary().map(str::to_owned), before);
    assert!(
        s.logs
            .iter()
            .any(|l| l["msg"] == "summary not written" && l["error"]["code"].is_string()),
        "{:?}",
        s.logs
    );

    // A run overtaken by the next turn (more messages left the window) stops before calling.
    let (_, run) = summary_turn(&mut s, Some(&id), "Still there?", "Yes.");
    assert!(run.is_none());
    let (_, run) = summary_turn(&mut s, Some(&id), "Hm?", "Yes?");
    let mut stale = run.expect("due again four messages later");
    summary_turn(&mut s, Some(&id), "One more", "Sure.");
    let requests = s.requests.len();
    s.drive(Some(&id), &mut stale);
    assert_eq!(
        s.requests.len(),
        requests,
        "no call for an overtaken summary"
    );
    assert_eq!(stale.written(), None);
}

#[test]
fn the_summary_prompt_passes_the_before_model_plugins_without_their_tools() {
    let mut s = summary_sim();
    let mut pii = plugin(
        "pii",
        HookSet {
            before_model: true,
            after_reply: true,
            ..HookSet::default()
        },
    );
    pii.manifest.tools = vec![PluginTool {
        name: "lookup".into(),
        description: "Looks up.".into(),
        parameters: r#"{"type":"object"}"#.into(),
    }];
    s.config.plugins = vec![pii.spec.clone()];
    s.plugins = vec![pii];
    // The chat turns' hooks: before-model leaves the prompt alone, after-reply lets it be.
    for _ in 0..3 {
        s.plugin_script("pii", PluginScript::answer(json!("keep")));
        s.plugin_script("pii", PluginScript::answer(json!("keep")));
    }
    let (id, _) = summary_turn(&mut s, None, "I am bob@example.org, order #7", "Hi Bob.");
    summary_turn(&mut s, Some(&id), "Any news?", "Still checking.");
    let (_, run) = summary_turn(&mut s, Some(&id), "Hello?", "Here I am.");
    let mut run = run.unwrap();
    s.plugin_script(
        "pii",
        PluginScript::answer(json!({"rewrite": ["instructions", "I am [email], order #7"]})),
    );
    s.script_for("b/m", Script::json("Order #7.", 5));
    let chat: Value = serde_json::from_slice(&s.requests[0].body).unwrap();
    let offered: Vec<&str> = chat["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(offered.contains(&"lookup"), "{chat}");
    let hooks = s.hook_calls.len();
    s.drive(Some(&id), &mut run);
    // Only the before-model hook ran for the summary, and what it rewrote reached the model.
    assert_eq!(s.hook_calls.len(), hooks + 1);
    assert!(matches!(
        &s.hook_calls[hooks].1,
        HookCall::BeforeModel { .. }
    ));
    let body: Value = serde_json::from_slice(&s.requests.last().unwrap().body).unwrap();
    assert_eq!(body["messages"][1]["content"], "I am [email], order #7");
    assert!(body.get("tools").is_none(), "{body}");
    assert_eq!(run.written(), Some("Summary: Order #7."));
}
