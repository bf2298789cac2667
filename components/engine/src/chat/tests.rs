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
