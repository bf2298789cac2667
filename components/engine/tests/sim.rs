//! Simulator tests: whole chat turns against a scripted provider with a fake clock.

use kefu_engine::config::{ProviderConfig, Timeouts};
use kefu_engine::gateway::RetryPolicy;
use kefu_engine::provider::{ProviderError, ProviderEvent, TimeoutPhase};
use kefu_engine::sim::{Script, Simulator, Step};
use kefu_engine::wire::ProviderKind;
use kefu_engine::{ReplyMode, Responder, Role, TenantConfig};

fn provider_config() -> TenantConfig {
    TenantConfig {
        system_prompt: "You are a test bot.".into(),
        provider: Some(ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "sim-model".into(),
            api_key_secret: Some("KEY".into()),
            temperature: None,
            max_tokens: None,
            vision: None,
        }),
        // One attempt per turn: these tests are about a single call (tests/gateway.rs covers
        // retries and fallback).
        retry: RetryPolicy {
            attempts_per_target: 1,
            ..RetryPolicy::default()
        },
        timeouts: Timeouts {
            connect_ms: 1_000,
            first_token_ms: 1_000,
            total_ms: 5_000,
        },
        ..TenantConfig::default()
    }
}

fn sim() -> Simulator {
    let mut s = Simulator::new(provider_config());
    s.secrets.insert("KEY".into(), "sk-test".into());
    s
}

fn request_messages(sim: &Simulator, i: usize) -> Vec<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_slice(&sim.requests[i].body).unwrap();
    body["messages"].as_array().unwrap().clone()
}

#[test]
fn whole_reply_is_recorded_after_the_visitor_message() {
    let mut s = sim();
    s.script(Script::json("Hello there!", 30));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    let (reply_msg, reply) = out.result.unwrap();
    assert_eq!(reply.text, "Hello there!");
    assert_eq!(
        reply.responder,
        Responder::Provider {
            model: "sim-model".into()
        }
    );
    assert_eq!(reply.usage.unwrap().total_tokens, 13);
    assert_eq!(reply.duration.as_millis(), 30);
    assert!(out.deltas.is_empty());
    let t = s.transcript(&out.conversation_id);
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].seq, t[0].role), (1, Role::Visitor));
    assert_eq!((t[1].seq, t[1].role), (2, Role::Bot));
    assert_eq!(t[1], reply_msg);
    let names: Vec<_> = s.events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["conversation.created", "message.created", "message.created"]
    );
    // The key went out in the request, and only there.
    let auth = s.requests[0]
        .headers
        .iter()
        .find(|h| h.name == "authorization")
        .unwrap();
    assert_eq!(auth.value, "Bearer sk-test");
}

#[test]
fn streamed_reply_delivers_deltas_in_order() {
    let mut s = sim();
    s.script(Script::stream(&["Hel", "lo ", "wor", "ld"], 10));
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.deltas, ["Hel", "lo ", "wor", "ld"]);
    let (_, reply) = out.result.unwrap();
    assert_eq!(reply.text, "Hello world");
    assert_eq!(reply.time_to_first_token.unwrap().as_millis(), 10);
    assert_eq!(reply.usage.unwrap().completion_tokens, 4);
    let body: serde_json::Value = serde_json::from_slice(&s.requests[0].body).unwrap();
    assert_eq!(body["stream"], true);
}

#[test]
fn history_reaches_the_model_on_later_turns() {
    let mut s = sim();
    s.script(Script::json("first answer", 5))
        .script(Script::json("second answer", 5));
    let first = s.chat(None, "first question", ReplyMode::Whole);
    let id = first.conversation_id.clone();
    s.chat(Some(&id), "second question", ReplyMode::Whole)
        .result
        .unwrap();
    let msgs = request_messages(&s, 1);
    let roles: Vec<_> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(msgs[1]["content"], "first question");
    assert_eq!(msgs[2]["content"], "first answer");
    assert_eq!(msgs[3]["content"], "second question");
    assert_eq!(s.transcript(&id).len(), 4);
}

#[test]
fn messages_arriving_together_are_all_kept_in_one_order() {
    let mut s = sim();
    let (id, first) = s.arrive(None, "m0").unwrap();
    // Four more arrive before any turn runs, as concurrent posts do.
    let mut queued = vec![first];
    for i in 1..5 {
        queued.push(s.arrive(Some(&id), &format!("m{i}")).unwrap().1);
    }
    for i in 0..5 {
        s.script(Script::json(&format!("answer {i}"), 3));
    }
    for (i, visitor) in queued.into_iter().enumerate() {
        let out = s.run_turn(&id, visitor, ReplyMode::Whole);
        assert_eq!(out.result.unwrap().1.text, format!("answer {i}"));
        // A turn sees the earlier messages and its own, never a later visitor message.
        let users: Vec<String> = request_messages(&s, i)
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(users.last().unwrap(), &format!("m{i}"));
        assert_eq!(users.len(), i + 1);
    }
    let t = s.transcript(&id);
    assert_eq!(t.len(), 10);
    let seqs: Vec<u32> = t.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(t.iter().filter(|m| m.role == Role::Visitor).count(), 5);
}

#[test]
fn a_burst_longer_than_the_window_is_answered_message_by_message() {
    let mut s = sim();
    s.config.history_window = 4;
    let (id, first) = s.arrive(None, "b0").unwrap();
    let mut queued = vec![first];
    for i in 1..10 {
        queued.push(s.arrive(Some(&id), &format!("b{i}")).unwrap().1);
    }
    for (i, visitor) in queued.into_iter().enumerate() {
        s.script(Script::json(&format!("reply {i}"), 2));
        let out = s.run_turn(&id, visitor, ReplyMode::Whole);
        assert_eq!(out.result.unwrap().1.text, format!("reply {i}"));
        let msgs = request_messages(&s, i);
        assert_eq!(msgs.last().unwrap()["content"], format!("b{i}"));
        // Never a later visitor message in the prompt.
        for m in &msgs {
            if let Some(n) = m["content"].as_str().and_then(|c| c.strip_prefix('b')) {
                assert!(n.parse::<usize>().unwrap() <= i, "turn {i} saw b{n}");
            }
        }
    }
    assert_eq!(s.transcript(&id).len(), 20);
    assert!(s.conversation(&id).window().len() <= 4);
}

#[test]
fn first_token_timeout_is_an_error_and_the_call_is_cancelled() {
    let mut s = sim();
    // The provider answers the connection at once, then sends nothing.
    s.script(Script::steps(vec![Step {
        at_ms: 1,
        event: ProviderEvent::Head {
            status: 200,
            headers: vec![],
        },
    }]));
    let out = s.chat(None, "hello?", ReplyMode::Stream);
    assert_eq!(
        out.result.unwrap_err(),
        ProviderError::Timeout {
            phase: TimeoutPhase::FirstToken
        }
    );
    assert_eq!(s.cancelled, 1);
    assert_eq!(s.now.since(out.visitor.created_at).as_millis(), 1_000);
    // The visitor's message is stored; no reply is.
    let t = s.transcript(&out.conversation_id);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::Visitor);
}

#[test]
fn no_response_head_is_a_connect_timeout() {
    let mut s = sim();
    s.config.timeouts.connect_ms = 400;
    s.script(Script::hang());
    let out = s.chat(None, "hello?", ReplyMode::Stream);
    assert_eq!(
        out.result.unwrap_err(),
        ProviderError::Timeout {
            phase: TimeoutPhase::Connect
        }
    );
    assert_eq!(s.now.since(out.visitor.created_at).as_millis(), 400);
    assert_eq!(s.cancelled, 1);
}

#[test]
fn a_stall_after_the_first_token_hits_the_total_limit() {
    let mut s = sim();
    let mut script = Script::stream(&["Hel", "lo"], 10);
    // Stall for a minute after the first piece.
    for step in script.steps.iter_mut().skip(2) {
        step.at_ms += 60_000;
    }
    s.script(script);
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.deltas, ["Hel"]);
    assert_eq!(
        out.result.unwrap_err(),
        ProviderError::Timeout {
            phase: TimeoutPhase::Total
        }
    );
    assert_eq!(s.transcript(&out.conversation_id).len(), 1);
}

#[test]
fn a_cut_stream_is_never_a_finished_reply() {
    let mut s = sim();
    s.script(Script::cut_stream(&["Partial ", "answer"], 10));
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.deltas, ["Partial ", "answer"]);
    assert_eq!(
        out.result.unwrap_err(),
        ProviderError::StreamInterrupted { received_chars: 14 }
    );
    assert_eq!(s.transcript(&out.conversation_id).len(), 1);
}

#[test]
fn a_stream_that_ends_cleanly_without_finishing_is_interrupted() {
    let mut s = sim();
    let mut script = Script::stream(&["Half"], 10);
    // Keep the head and the piece, then a clean end with no finish reason and no [DONE].
    script.steps.truncate(2);
    script.steps.push(Step {
        at_ms: 30,
        event: ProviderEvent::End,
    });
    s.script(script);
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert!(matches!(
        out.result,
        Err(ProviderError::StreamInterrupted { received_chars: 4 })
    ));
}

#[test]
fn error_statuses_are_typed() {
    let mut s = sim();
    s.script(Script::status(
        500,
        &[],
        r#"{"error":{"message":"boom","type":"server_error"}}"#,
    ));
    s.script(Script::status(
        429,
        &[("retry-after", "3")],
        r#"{"error":{"message":"slow down"}}"#,
    ));
    s.script(Script::unreachable());
    s.script(Script::steps(vec![
        Step {
            at_ms: 1,
            event: ProviderEvent::Head {
                status: 200,
                headers: vec![],
            },
        },
        Step {
            at_ms: 1,
            event: ProviderEvent::Data(b"{\"choices\": [oops".to_vec()),
        },
        Step {
            at_ms: 1,
            event: ProviderEvent::End,
        },
    ]));
    let e = s.chat(None, "a", ReplyMode::Whole).result.unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("provider_error", 502));
    assert!(matches!(e, ProviderError::Upstream { status: 500, .. }));
    let e = s.chat(None, "b", ReplyMode::Whole).result.unwrap_err();
    assert!(
        matches!(e, ProviderError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3)
    );
    let e = s.chat(None, "c", ReplyMode::Stream).result.unwrap_err();
    assert_eq!(e.code(), "provider_unreachable");
    let e = s.chat(None, "d", ReplyMode::Whole).result.unwrap_err();
    assert_eq!(e.code(), "provider_malformed_response");
}

#[test]
fn a_json_answer_to_a_stream_request_is_still_read() {
    let mut s = sim();
    s.script(Script::json("plain JSON", 5));
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.result.unwrap().1.text, "plain JSON");
    assert_eq!(out.deltas, ["plain JSON"]);
}

#[test]
fn offline_responder_answers_without_a_provider() {
    let mut s = Simulator::new(TenantConfig::default());
    let out = s.chat(None, "How do I deploy Kefu?", ReplyMode::Stream);
    let (_, reply) = out.result.unwrap();
    assert_eq!(reply.responder, Responder::Offline);
    assert!(reply.text.contains("wrangler deploy"));
    assert!(reply.text.contains("offline responder"));
    assert_eq!(out.deltas.concat(), reply.text);
    assert!(s.requests.is_empty());
}

#[test]
fn a_long_conversation_keeps_early_facts_in_a_bounded_state() {
    let mut s = sim();
    let window = usize::from(s.config.history_window);
    let mut id = None;
    // 250 turns: 500 messages, 25 times the default window of 20.
    for i in 0..250 {
        s.script(Script::json(
            &format!("Answer number {i}: here is what you asked, with some detail to it."),
            5,
        ));
        let question = if i == 0 {
            "My parcel never came: order #48213, mail me at jane@example.com.".to_owned()
        } else {
            format!("Follow-up question number {i}: what happens next with my case?")
        };
        let out = s.chat(id.as_ref(), &question, ReplyMode::Whole);
        out.result.unwrap();
        id = Some(out.conversation_id);
    }
    let c = s.conversation(id.as_ref().unwrap());
    assert_eq!(c.message_count(), 500);
    assert_eq!(c.window().len(), window);
    let summary = c.summary().expect("a summary of what left the window");
    assert!(summary.chars().count() <= kefu_engine::summary::MAX_SUMMARY_CHARS);
    // The early fact survives condensing; the address never reaches the summary.
    assert!(summary.contains("#48213"), "{summary}");
    assert!(!summary.contains("jane@"), "{summary}");
    // The last turn's prompt carries it.
    let body = String::from_utf8(s.requests.last().unwrap().body.clone()).unwrap();
    assert!(
        body.contains("Summary of the earlier conversation"),
        "{body}"
    );
    assert!(body.contains("#48213"), "{body}");
    let encoded = c.encode();
    println!(
        "500-message conversation: {} bytes serialized, summary {} chars",
        encoded.len(),
        summary.chars().count()
    );
    // The window (20 messages of ~70 bytes plus bookkeeping) and the bounded summary.
    assert!(encoded.len() < 4_096, "state {} bytes", encoded.len());
}

#[test]
fn ten_turn_state_stays_small() {
    let mut s = sim();
    let mut id = None;
    for i in 0..10 {
        s.script(Script::json(
            &format!("Answer number {i}, with a little detail."),
            5,
        ));
        let out = s.chat(
            id.as_ref(),
            &format!("Question number {i}: how does this work?"),
            ReplyMode::Whole,
        );
        out.result.unwrap();
        id = Some(out.conversation_id);
    }
    let c = s.conversation(id.as_ref().unwrap());
    let encoded = c.encode();
    let overhead = c.overhead_len();
    println!(
        "10-turn conversation: {} bytes serialized, {} bytes beyond message text",
        encoded.len(),
        overhead
    );
    assert_eq!(c.message_count(), 20);
    // Bookkeeping per message is a few bytes (seq, role, timestamp varints).
    assert!(overhead < 300, "overhead {overhead} bytes");
}

#[test]
fn bench_turns_runs_every_turn_in_both_modes() {
    // 1,001 turns: the first conversation's 1,000, then one in a fresh conversation.
    for mode in [ReplyMode::Whole, ReplyMode::Stream] {
        assert_eq!(
            kefu_engine::sim::bench_turns(1_001, mode),
            1_001,
            "{mode:?}"
        );
    }
    assert_eq!(kefu_engine::sim::bench_turns(0, ReplyMode::Whole), 0);
}
