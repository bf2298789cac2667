//! The machines step by step, without a simulator: what each asks its host, in which order,
//! and what it makes of the answers. `tests/chat.rs` drives whole turns through the
//! simulator.

use core::time::Duration;
use std::collections::BTreeSet;
use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::config::TenantConfig;
use crate::dialogue::AfterReply;
use crate::gateway::QuotaError;
use crate::gateway::quota::{Limit, Reservation};
use crate::provider::FinishReason;
use crate::turn::{ReplyMode, Responder, TurnOptions};
use crate::vocab::{ConversationId, Part, Role, TenantId};
use crate::wire::{PromptMessage, PromptRole};

const TWO_TARGETS: &str = r#"{
    "providers": {"a": {"base_url": "http://a.test/v1"}, "b": {"base_url": "http://b.test/v1"}},
    "routes": {"default": {"strategy": "fallback", "targets": [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}]}},
    "retry": {"attempts_per_target": 1},
    "rules": [{"id": "refund", "when": {"keywords": ["refund"]}, "then": {"reply": "Refunds take 5 days."}}]
}"#;

fn config() -> TenantConfig {
    TenantConfig::from_json(TWO_TARGETS).unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn reservation() -> Reservation {
    Reservation {
        tokens: 100,
        day: 1,
    }
}

fn call() -> ModelCall {
    ModelCall::on_prompt(
        at(10),
        Rc::new(config()),
        vec![PromptMessage::text(PromptRole::User, "hi")],
        TurnOptions::new(ReplyMode::Whole),
    )
}

/// Answers attempt `attempt` with a whole reply of `text`.
fn answer(machine: &mut impl Machine, now: Timestamp, attempt: AttemptId, text: &str) {
    let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}});
    for event in [
        ProviderEvent::Head {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
        },
        ProviderEvent::Data(body.to_string().into_bytes()),
        ProviderEvent::End,
    ] {
        machine.handle(now, Input::Provider { attempt, event });
    }
}

fn provider_call(action: Option<Action>) -> (AttemptId, String) {
    match action {
        Some(Action::CallProvider {
            attempt, target, ..
        }) => (attempt, target),
        other => panic!("not a provider call: {other:?}"),
    }
}

#[test]
fn a_model_call_is_admitted_before_any_provider_call_and_settled_once() {
    let mut call = call();
    let Some(Action::Admit { tokens }) = call.poll_action() else {
        panic!("admission comes first");
    };
    assert!(tokens > 0);
    // Nothing goes out before the gateway answers.
    assert!(call.poll_action().is_none());
    call.handle(
        at(11),
        Input::Admission(Ok(Grant {
            blocked: BTreeSet::new(),
            reservation: Some(reservation()),
        })),
    );
    let (attempt, target) = provider_call(call.poll_action());
    assert_eq!(target, "a/m");
    answer(&mut call, at(20), attempt, "Hello!");
    let Some(Action::Settle(report)) = call.poll_action() else {
        panic!("settlement before the end");
    };
    assert_eq!(report.reservation, Some(reservation()));
    assert_eq!(report.signals, [("a/m".to_owned(), true)]);
    assert_eq!(report.used_tokens, 13);
    assert!(matches!(call.poll_action(), Some(Action::Finished)));
    assert!(call.poll_action().is_none());
    assert!(call.is_finished());
    assert_eq!(call.take_result().unwrap().unwrap().text, "Hello!");
}

#[test]
fn breakers_at_admission_replan_the_call_without_their_targets() {
    let mut call = call();
    assert!(matches!(call.poll_action(), Some(Action::Admit { .. })));
    call.handle(
        at(11),
        Input::Admission(Ok(Grant {
            blocked: BTreeSet::from(["a/m".to_owned()]),
            reservation: None,
        })),
    );
    let (attempt, target) = provider_call(call.poll_action());
    assert_eq!(target, "b/m");
    answer(&mut call, at(20), attempt, "from b");
    let Some(Action::Settle(report)) = call.poll_action() else {
        panic!("no settlement");
    };
    // The skipped target says nothing to its breaker.
    assert_eq!(report.signals, [("b/m".to_owned(), true)]);
    assert_eq!(
        call.turn().trace()[0].outcome,
        crate::gateway::AttemptOutcome::SkippedOpenBreaker
    );
    assert!(matches!(call.poll_action(), Some(Action::Finished)));
}

#[test]
fn a_refused_call_sends_nothing_and_settles_nothing() {
    let mut call = call();
    assert!(matches!(call.poll_action(), Some(Action::Admit { .. })));
    let refusal = QuotaError {
        limit: Limit::RequestsPerMinute,
        retry_after: Duration::from_millis(1500),
    };
    call.handle(at(11), Input::Admission(Err(Refusal::Quota(refusal))));
    assert!(matches!(call.poll_action(), Some(Action::Finished)));
    assert!(call.poll_action().is_none());
    let Some(Err(Failure::Quota(q))) = call.take_result() else {
        panic!("not a quota failure");
    };
    assert_eq!(q.retry_after_secs(), 2);
    assert!(call.turn().trace().is_empty());
}

#[test]
fn a_stalled_call_ends_with_an_error_and_still_returns_its_reservation() {
    let mut call = call();
    assert!(matches!(call.poll_action(), Some(Action::Admit { .. })));
    call.handle(
        at(11),
        Input::Admission(Ok(Grant {
            blocked: BTreeSet::new(),
            reservation: Some(reservation()),
        })),
    );
    provider_call(call.poll_action());
    call.handle(at(12), Input::Stalled);
    let Some(Action::Settle(report)) = call.poll_action() else {
        panic!("no settlement");
    };
    assert_eq!(report.reservation, Some(reservation()));
    assert!(matches!(call.poll_action(), Some(Action::Finished)));
    assert!(matches!(
        call.take_result(),
        Some(Err(Failure::Provider(ProviderError::Malformed { .. })))
    ));
    // Late events for the abandoned call change nothing.
    call.handle(at(13), Input::Timeout);
    assert!(call.poll_action().is_none());
}

#[test]
fn without_a_model_nothing_is_admitted() {
    let mut call = ModelCall::on_prompt(
        at(10),
        Rc::new(TenantConfig::default()),
        vec![PromptMessage::text(
            PromptRole::User,
            "How do I deploy Kefu?",
        )],
        TurnOptions::new(ReplyMode::Whole),
    );
    let mut actions = Vec::new();
    while let Some(a) = call.poll_action() {
        actions.push(a);
    }
    assert!(
        matches!(actions.as_slice(), [Action::Finished]),
        "{actions:?}"
    );
    let reply = call.take_result().unwrap().unwrap();
    assert_eq!(reply.responder, Responder::Offline);
}

fn start(config: TenantConfig, text: &str) -> Start {
    let mut c = Conversation::new(
        ConversationId::parse("c1").unwrap(),
        TenantId::default_tenant(),
        at(1),
    );
    let before = c.clone();
    let visitor = c
        .handle_visitor_message(at(2), vec![Part::Text(text.into())], &config)
        .unwrap()
        .message;
    Start {
        config,
        mode: ReplyMode::Whole,
        conversation: c,
        before: Some(before),
        visitor,
        secrets: Default::default(),
        seed: 1,
    }
}

#[test]
fn a_live_rule_turn_applies_its_change_then_stores_its_record() {
    let mut turn = ChatTurn::new(at(5), start(config(), "I want a refund"));
    let Some(Action::Log { line, .. }) = turn.poll_action() else {
        panic!("the rule is logged");
    };
    assert_eq!(line["rule"], "refund");
    let Some(Action::Apply(change)) = turn.poll_action() else {
        panic!("the rule's change");
    };
    assert!(matches!(&change, Change::Rule { reply, .. } if reply == "Refunds take 5 days."));
    // Nothing more until the host applied it.
    assert!(turn.poll_action().is_none());
    // A stale answer is not what it waits for: ignored.
    turn.handle(at(6), Input::Knowledge(Ok(Vec::new())));
    assert!(turn.poll_action().is_none());
    let mut stored = start(config(), "I want a refund").conversation;
    let effect = change.apply(&mut stored, at(6), &config()).unwrap();
    assert_eq!(effect.messages.len(), 1);
    turn.handle(
        at(6),
        Input::Applied(Ok(Applied {
            conversation: stored,
            effect,
        })),
    );
    let Some(Action::StoreRecord(record)) = turn.poll_action() else {
        panic!("the record");
    };
    assert_eq!(record.decision, "rule");
    assert!(matches!(turn.poll_action(), Some(Action::Finished)));
    let Some(Outcome::Notice {
        message, responder, ..
    }) = turn.outcome()
    else {
        panic!("{:?}", turn.outcome());
    };
    assert_eq!(
        (message.text().as_str(), *responder),
        ("Refunds take 5 days.", "rule")
    );
}

#[test]
fn a_scratch_turn_asks_its_host_for_the_model_call_only() {
    // A rule: answered on the scratch copy, nothing asked of the host.
    let mut turn = ChatTurn::scratch(at(5), start(config(), "I want a refund"));
    assert!(matches!(turn.poll_action(), Some(Action::Finished)));
    assert_eq!(turn.said()[0].text(), "Refunds take 5 days.");
    assert_eq!(turn.record().decision, "rule");

    // A model turn: admission, the provider, settlement — no storage, no log, no record.
    let mut turn = ChatTurn::scratch(at(5), start(config(), "Where is my parcel?"));
    let mut kinds = Vec::new();
    loop {
        let action = turn.poll_action().expect("an action");
        match &action {
            Action::Admit { .. } => turn.handle(at(6), Input::Admission(Ok(Grant::default()))),
            Action::CallProvider { attempt, .. } => {
                answer(&mut turn, at(7), *attempt, "On its way.")
            }
            Action::Settle(_) => {}
            Action::Finished => break,
            other => panic!("a scratch turn asked for {other:?}"),
        }
        kinds.push(std::mem::discriminant(&action));
    }
    assert_eq!(kinds.len(), 3);
    assert_eq!(turn.said().len(), 1);
    assert_eq!(turn.said()[0].text(), "On its way.");
    assert_eq!(turn.said()[0].role, Role::Bot);
    assert!(matches!(turn.outcome(), Some(Outcome::Reply { .. })));
    assert_eq!(turn.record().attempts.len(), 1);
}

fn reply(text: &str) -> TurnReply {
    TurnReply {
        text: text.into(),
        responder: Responder::Provider { model: "m".into() },
        target: Some("a/m".into()),
        route: None,
        attempts: 1,
        finish_reason: FinishReason::Stop,
        usage: None,
        cost_micros: None,
        tool_calls: Vec::new(),
        plugin_handoff: None,
        time_to_first_token: None,
        duration: Duration::ZERO,
    }
}

#[test]
fn a_reply_applied_after_a_human_took_over_records_nothing() {
    let config = config();
    let mut c = start(config.clone(), "hello").conversation;
    c.assign(at(3), &config, "alex", "Alex").unwrap();
    let change = Change::Reply {
        reply: Box::new(reply("Hi!")),
        grounded: false,
        citations: Vec::new(),
    };
    let effect = change.apply(&mut c, at(4), &config).unwrap();
    assert!(effect.messages.is_empty());
    assert!(effect.events.is_empty());
    assert_eq!(effect.after_reply, Some(AfterReply::Drop));
    // The same change on the bot's conversation records the reply.
    let mut c = start(config.clone(), "hello").conversation;
    let effect = change.apply(&mut c, at(4), &config).unwrap();
    assert_eq!(effect.messages.len(), 1);
    assert_eq!(effect.messages[0].text(), "Hi!");
    assert!(matches!(
        effect.after_reply,
        Some(AfterReply::Keep {
            record: true,
            handoff: None
        })
    ));
}

#[test]
fn outcomes_are_recorded_as_the_replay_console_reads_them() {
    use crate::replay::Outcome as R;
    let message = start(config(), "hi").visitor;
    let notice = Outcome::Notice {
        message: message.clone(),
        status: Status::WaitingForAgent,
        responder: "handoff",
    };
    assert_eq!(
        notice.recorded(),
        R::Reply {
            responder: "handoff".into(),
            target: None
        }
    );
    let replied = Outcome::Reply {
        message,
        reply: reply("Hi!"),
    };
    assert_eq!(
        replied.recorded(),
        R::Reply {
            responder: "provider".into(),
            target: Some("a/m".into())
        }
    );
    assert_eq!(
        Outcome::Silent {
            status: Status::WithAgent
        }
        .recorded(),
        R::Silent
    );
    let quota = Outcome::Failed(Failure::Quota(QuotaError {
        limit: Limit::DailyRequests,
        retry_after: Duration::from_secs(60),
    }));
    assert!(matches!(quota.recorded(), R::Error { code, .. } if code == "quota_exceeded"));
}

/// Drives a [`SuiteRun`] as a host would, every model call answered by `model(body)`;
/// `refuse_after` admissions are granted, later ones refused by the quota.
fn run_suite(
    suite: &[(&str, &str)],
    refuse_after: usize,
    model: impl Fn(&str) -> String,
) -> serde_json::Value {
    let cases = suite
        .iter()
        .map(|(id, body)| {
            (
                (*id).to_owned(),
                crate::draft::parse_test_case(body.as_bytes()).unwrap(),
            )
        })
        .collect();
    let tenant = TenantId::parse("acme").unwrap();
    let mut run = SuiteRun::new(at(5), tenant, config(), cases, Default::default(), 1);
    let mut admitted = 0;
    loop {
        let action = run.poll_action().expect("an action");
        match action {
            Action::Admit { .. } => {
                admitted += 1;
                let input = if admitted > refuse_after {
                    Err(Refusal::Quota(QuotaError {
                        limit: Limit::RequestsPerMinute,
                        retry_after: Duration::from_millis(1500),
                    }))
                } else {
                    Ok(Grant::default())
                };
                run.handle(at(6), Input::Admission(input));
            }
            Action::CallProvider {
                attempt, request, ..
            } => {
                let text = model(&String::from_utf8_lossy(&request.body));
                answer(&mut run, at(7), attempt, &text);
            }
            Action::Settle(_) => {}
            Action::Finished => break,
            other => panic!("a test run asked for {other:?}"),
        }
    }
    assert!(run.poll_action().is_none());
    run.result()
}

#[test]
fn a_suite_runs_each_case_through_the_chat_turn_and_judges_it() {
    let result = run_suite(
        &[
            (
                "refund",
                r#"{"messages": ["I want a refund"], "expect": [{"kind": "rule", "rule": "refund"}, {"kind": "mentions", "text": "5 DAYS"}]}"#,
            ),
            (
                "parcel",
                r#"{"messages": ["Where is my parcel?", "And the invoice?"], "expect": [{"kind": "mentions", "text": "on its way"}, {"kind": "never_mentions", "text": "refund"}, {"kind": "no_pii_to_model"}]}"#,
            ),
            (
                "person",
                r#"{"messages": ["hello", "talk to a human please"], "expect": [{"kind": "handoff"}]}"#,
            ),
            (
                "email",
                r#"{"messages": ["my address is ana@example.com"], "expect": [{"kind": "no_pii_to_model"}, {"kind": "no_answer"}]}"#,
            ),
        ],
        usize::MAX,
        |_| "It is on its way.".into(),
    );
    let case = |id: &str| {
        result["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(result["total"], 4, "{result}");
    assert_eq!(case("refund")["passed"], true, "{result}");
    assert_eq!(case("refund")["turns"][0]["responder"], "rule");
    // Two messages, two model turns; the second sees the first's reply in its history.
    let parcel = case("parcel");
    assert_eq!(parcel["passed"], true, "{parcel}");
    assert_eq!(parcel["turns"].as_array().unwrap().len(), 2);
    assert_eq!(parcel["turns"][1]["responder"], "provider");
    assert_eq!(case("person")["passed"], true, "{result}");
    assert_eq!(case("person")["turns"][1]["handoff"], true);
    // The e-mail address reached the model, and the model answered: both fail, with why.
    let email = case("email");
    assert_eq!(email["passed"], false);
    assert_eq!(email["expect"][0]["passed"], false);
    assert!(
        email["expect"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("e-mail address"),
        "{email}"
    );
    assert_eq!(email["expect"][1]["passed"], false);
    assert_eq!(result["passed"], false);
    assert_eq!(result["failing"], json!(["email"]));
}

#[test]
fn a_quota_refusal_stops_the_suite_and_fails_what_did_not_run() {
    let result = run_suite(
        &[
            (
                "a",
                r#"{"messages": ["Where is my parcel?"], "expect": [{"kind": "mentions", "text": "way"}]}"#,
            ),
            (
                "b",
                // Holds, but the visitor got no answer: the case fails all the same.
                r#"{"messages": ["And my invoice?"], "expect": [{"kind": "never_mentions", "text": "refund"}]}"#,
            ),
            (
                "c",
                r#"{"messages": ["Hello?"], "expect": [{"kind": "mentions", "text": "way"}]}"#,
            ),
        ],
        1,
        |_| "On its way.".into(),
    );
    assert_eq!(result["cases"][0]["passed"], true, "{result}");
    assert_eq!(result["cases"][1]["passed"], false);
    assert_eq!(result["cases"][1]["expect"][0]["passed"], true);
    assert_eq!(result["cases"][1]["turns"][0]["error"], "quota_exceeded");
    assert_eq!(result["cases"][2]["passed"], false);
    assert!(result["cases"][2]["stopped"].is_string(), "{result}");
    assert_eq!(result["failing"], json!(["b", "c"]));
}

#[test]
fn a_suite_searches_the_draft_overlay_and_a_visitors_turn_the_live_knowledge_base() {
    use crate::knowledge::{Chunk, RetrievedChunk, Scope};
    let mut config = config();
    config.knowledge.enabled = true;
    let mut turn = ChatTurn::scratch(at(5), start(config.clone(), "Where is my parcel?"));
    let Some(Action::SearchKnowledge { scope, .. }) = turn.poll_action() else {
        panic!("a turn with a knowledge base searches it first");
    };
    assert_eq!(scope, Scope::Live);

    let case = r#"{"messages": ["Where is my parcel?"], "expect": [{"kind": "answered_from", "source": "shipping"}]}"#;
    let cases = [(
        "staged".to_owned(),
        crate::draft::parse_test_case(case.as_bytes()).unwrap(),
    )]
    .into_iter()
    .collect();
    let tenant = TenantId::parse("acme").unwrap();
    let mut run = SuiteRun::new(at(5), tenant, config, cases, Default::default(), 1);
    let mut searches = Vec::new();
    loop {
        match run.poll_action().expect("an action") {
            Action::SearchKnowledge { scope, query, .. } => {
                searches.push((scope, query));
                let found = RetrievedChunk {
                    chunk: Chunk {
                        id: "shipping#0".into(),
                        source_id: "shipping".into(),
                        title: Some("Shipping".into()),
                        heading_path: Vec::new(),
                        text: "Parcels ship in 3 days.".into(),
                        position: 0,
                    },
                    score: -1.0,
                    source_title: Some("Shipping".into()),
                    source_url: None,
                };
                run.handle(at(6), Input::Knowledge(Ok(vec![found])));
            }
            Action::Admit { .. } => run.handle(at(6), Input::Admission(Ok(Grant::default()))),
            Action::CallProvider { attempt, .. } => {
                answer(&mut run, at(7), attempt, "It ships in 3 days [1].")
            }
            Action::Settle(_) => {}
            Action::Finished => break,
            other => panic!("a test run asked for {other:?}"),
        }
    }
    // Every search of a test run is the draft's overlay.
    assert_eq!(searches, [(Scope::Draft, "Where is my parcel?".to_owned())]);
    let result = run.result();
    assert_eq!(result["passed"], true, "{result}");
}
