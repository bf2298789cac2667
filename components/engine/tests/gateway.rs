//! Gateway simulator tests: routes, retries, fallback, timeouts, circuit breakers and quotas,
//! driven through whole turns with a fake clock and scripted providers.

use core::time::Duration;

use kefu_engine::gateway::quota::Limit;
use kefu_engine::gateway::{AttemptOutcome, BreakerState};
use kefu_engine::provider::{ProviderError, ProviderEvent};
use kefu_engine::sim::{Script, Simulator, Step};
use kefu_engine::{ReplyMode, TenantConfig};

/// Three providers a, b, c (one model each) and a fallback route over them.
fn config(extra: &str) -> TenantConfig {
    let json = format!(
        r#"{{"providers":{{"a":{{"base_url":"http://a.test/v1","api_key_secret":"A_KEY"}},
                          "b":{{"base_url":"http://b.test/v1"}},
                          "c":{{"base_url":"http://c.test/v1"}}}},
            "routes":{{"default":{{"strategy":"fallback","targets":[{{"provider":"a","model":"m"}},{{"provider":"b","model":"m"}},{{"provider":"c","model":"m"}}]}}}},
            "timeouts":{{"first_token_ms":1000,"total_ms":5000}}{extra}}}"#
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

fn outcomes(trace: &[kefu_engine::gateway::AttemptRecord]) -> Vec<String> {
    trace
        .iter()
        .map(|a| match &a.outcome {
            AttemptOutcome::Success => format!("{} ok", a.target),
            AttemptOutcome::Failure { code, next, .. } => format!("{} {code} {next}", a.target),
            AttemptOutcome::SkippedOpenBreaker => format!("{} skipped", a.target),
        })
        .collect()
}

#[test]
fn falls_back_in_order_after_retrying() {
    let mut s = sim("");
    s.script_for("a/m", err500())
        .script_for("a/m", err500())
        .script_for("b/m", Script::json("from b", 5));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    let (_, reply) = out.result.unwrap();
    assert_eq!(reply.text, "from b");
    assert_eq!(reply.target.as_deref(), Some("b/m"));
    assert_eq!(reply.attempts, 3);
    assert_eq!(
        outcomes(&out.trace),
        ["a/m upstream retry", "a/m upstream fallback", "b/m ok"]
    );
    assert_eq!(s.request_targets, ["a/m", "a/m", "b/m"]);
    // Only a's key went to a; b has no key configured.
    assert!(
        s.requests[0]
            .headers
            .iter()
            .any(|h| h.value == "Bearer sk-a")
    );
    assert!(
        s.requests[2]
            .headers
            .iter()
            .all(|h| h.name != "authorization")
    );
}

#[test]
fn retries_wait_with_backoff_or_retry_after() {
    let mut s =
        sim(r#","retry":{"base_delay_ms":100,"max_delay_ms":1000,"max_retry_after_ms":3000}"#);
    s.script_for(
        "a/m",
        Script::status(
            429,
            &[("retry-after", "2")],
            r#"{"error":{"message":"slow"}}"#,
        ),
    );
    s.script_for("a/m", Script::json("after the wait", 5));
    let start = s.now;
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.text, "after the wait");
    // 1 ms for the 429, the 2 s Retry-After, 5 ms for the answer.
    assert_eq!(s.now.since(start), Duration::from_millis(2_006));

    let mut s = sim(r#","retry":{"base_delay_ms":100,"max_delay_ms":1000}"#);
    s.script_for("a/m", err500())
        .script_for("a/m", Script::json("ok", 0));
    let start = s.now;
    s.chat(None, "hi", ReplyMode::Whole).result.unwrap();
    let waited = s.now.since(start).as_millis();
    // One backoff of 50–100 ms (equal jitter) after the 1 ms failure.
    assert!((51..=101).contains(&waited), "{waited}");
}

#[test]
fn a_long_retry_after_sends_the_turn_to_the_next_target() {
    let mut s = sim("");
    s.script_for("a/m", Script::status(429, &[("retry-after", "60")], "{}"));
    s.script_for("b/m", Script::json("b answers", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.target.as_deref(), Some("b/m"));
    assert_eq!(outcomes(&out.trace)[0], "a/m rate_limited fallback");
}

#[test]
fn a_timeout_before_the_first_token_falls_back_at_once() {
    let mut s = sim("");
    s.script_for("a/m", Script::hang());
    s.script_for("b/m", Script::stream(&["fast ", "b"], 10));
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.deltas.concat(), "fast b");
    assert_eq!(out.result.unwrap().1.target.as_deref(), Some("b/m"));
    assert_eq!(outcomes(&out.trace), ["a/m timeout fallback", "b/m ok"]);
    assert_eq!(s.cancelled, 1);
    assert_eq!(out.trace[1].started_ms, 1_000);
}

#[test]
fn after_text_was_streamed_a_failure_is_an_explicit_error() {
    let mut s = sim("");
    s.script_for("a/m", Script::cut_stream(&["Half an ", "answer"], 10));
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.deltas, ["Half an ", "answer"]);
    assert!(matches!(
        out.result,
        Err(ProviderError::StreamInterrupted { .. })
    ));
    assert_eq!(outcomes(&out.trace), ["a/m stream_interrupted stop"]);
    // The same failure in a whole reply was never shown: it falls back quietly.
    let mut s = sim("");
    s.script_for("a/m", Script::cut_stream(&["Half"], 10))
        .script_for("a/m", Script::cut_stream(&["Half"], 10));
    s.script_for("b/m", Script::json("whole from b", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.text, "whole from b");
}

#[test]
fn anthropic_style_overload_mid_stream_before_text_falls_back() {
    let mut s = sim("");
    s.script_for(
        "a/m",
        Script::steps(vec![
            Step {
                at_ms: 1,
                event: ProviderEvent::Head {
                    status: 200,
                    headers: vec![],
                },
            },
            Step {
                at_ms: 2,
                event: ProviderEvent::Data(
                    br#"data: {"error":{"type":"overloaded_error","message":"Overloaded"}}"#
                        .to_vec(),
                ),
            },
            Step {
                at_ms: 2,
                event: ProviderEvent::Data(b"\n\n".to_vec()),
            },
        ]),
    );
    s.script_for("a/m", err500());
    s.script_for("b/m", Script::stream(&["ok"], 1));
    let out = s.chat(None, "hi", ReplyMode::Stream);
    assert_eq!(out.result.unwrap().1.text, "ok");
    assert_eq!(outcomes(&out.trace)[0], "a/m overloaded retry");
    assert_eq!(s.cancelled, 1, "the open stream was abandoned");
}

#[test]
fn breaker_opens_skips_the_target_then_probes_and_recovers() {
    let mut s = sim(
        r#","breaker":{"consecutive_failures":2,"cooldown_ms":10000,"min_requests":2,"window":4},"retry":{"attempts_per_target":1}"#,
    );
    for _ in 0..2 {
        s.script_for("a/m", err500())
            .script_for("b/m", Script::json("b", 1));
        s.chat(None, "hi", ReplyMode::Whole).result.unwrap();
    }
    assert!(matches!(s.breakers.state("a/m"), BreakerState::Open { .. }));
    // While open, turns go straight to b: a is never called.
    let calls_to_a = s.request_targets.iter().filter(|t| *t == "a/m").count();
    s.script_for("b/m", Script::json("b", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(outcomes(&out.trace), ["a/m skipped", "b/m ok"]);
    assert_eq!(
        s.request_targets.iter().filter(|t| *t == "a/m").count(),
        calls_to_a
    );
    // After the cool-down one probe goes to a; it succeeds and the breaker closes.
    s.advance(Duration::from_secs(11));
    s.script_for("a/m", Script::json("a is back", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.target.as_deref(), Some("a/m"));
    assert_eq!(s.breakers.state("a/m"), BreakerState::Closed);
}

#[test]
fn with_every_breaker_open_the_first_target_is_probed() {
    let mut s = sim(
        r#","breaker":{"consecutive_failures":1,"min_requests":1,"window":1},"retry":{"attempts_per_target":1}"#,
    );
    s.script_for("a/m", err500())
        .script_for("b/m", err500())
        .script_for("c/m", err500());
    assert!(s.chat(None, "hi", ReplyMode::Whole).result.is_err());
    s.script_for("a/m", Script::json("probe ok", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.text, "probe ok");
}

#[test]
fn context_too_long_moves_to_a_larger_window_or_trims() {
    let json = r#"{"providers":{"p":{"base_url":"http://p.test/v1"}},
        "routes":{"default":{"targets":[{"provider":"p","model":"small","context_window":8000},{"provider":"p","model":"mid"},{"provider":"p","model":"large","context_window":128000}]}}}"#;
    let mut s = Simulator::new(TenantConfig::from_json(json).unwrap());
    let too_long = || {
        Script::status(
            400,
            &[],
            r#"{"error":{"message":"maximum context length exceeded","code":"context_length_exceeded"}}"#,
        )
    };
    s.script_for("p/small", too_long())
        .script_for("p/large", Script::json("large ok", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.target.as_deref(), Some("p/large"));
    assert_eq!(s.request_targets, ["p/small", "p/large"]);

    // One target only: the history is trimmed once and the call retried.
    let json = r#"{"providers":{"p":{"base_url":"http://p.test/v1"}},"routes":{"default":{"targets":[{"provider":"p","model":"only"}]}}}"#;
    let mut s = Simulator::new(TenantConfig::from_json(json).unwrap());
    let mut id = None;
    for i in 0..3 {
        s.script(Script::json(&format!("a{i}"), 1));
        id = Some(
            s.chat(id.as_ref(), &format!("q{i}"), ReplyMode::Whole)
                .conversation_id,
        );
    }
    s.script(too_long()).script(Script::json("fits now", 1));
    let out = s.chat(id.as_ref(), "q3", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.text, "fits now");
    let sizes: Vec<usize> = s.requests[3..]
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["messages"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert!(sizes[1] < sizes[0], "{sizes:?}");
}

#[test]
fn weighted_routes_spread_turns_by_weight() {
    let json = r#"{"providers":{"x":{"base_url":"http://x.test/v1"},"y":{"base_url":"http://y.test/v1"}},
        "routes":{"default":{"strategy":"weighted","targets":[{"provider":"x","model":"m","weight":4},{"provider":"y","model":"m","weight":1}]}}}"#;
    let mut s = Simulator::new(TenantConfig::from_json(json).unwrap());
    for _ in 0..500 {
        s.script(Script::json("ok", 1));
        s.chat(None, "hi", ReplyMode::Whole).result.unwrap();
    }
    let x = s.request_targets.iter().filter(|t| *t == "x/m").count();
    assert!((360..440).contains(&x), "{x} of 500 to the weight-4 target");
}

#[test]
fn conditional_routes_send_images_and_languages_their_way() {
    let json = r#"{"providers":{"p":{"base_url":"http://p.test/v1"}},"plan":"pro",
        "routes":{"default":{"strategy":"conditional",
            "rules":[{"when":{"language":"zh"},"then":{"provider":"p","model":"qwen"}},
                     {"when":{"plan":"pro"},"then":{"provider":"p","model":"big"}}],
            "default":{"provider":"p","model":"small"}}}}"#;
    let mut config = TenantConfig::from_json(json).unwrap();
    let mut s = Simulator::new(config.clone());
    s.script(Script::json("a", 1)).script(Script::json("b", 1));
    s.chat(None, "你好，请问怎么退货？", ReplyMode::Whole)
        .result
        .unwrap();
    s.chat(None, "How do returns work?", ReplyMode::Whole)
        .result
        .unwrap();
    assert_eq!(s.request_targets, ["p/qwen", "p/big"]);
    config.plan = None;
    let mut s = Simulator::new(config);
    s.script(Script::json("c", 1));
    s.chat(None, "How do returns work?", ReplyMode::Whole)
        .result
        .unwrap();
    assert_eq!(s.request_targets, ["p/small"]);
}

#[test]
fn quota_admits_exactly_the_budget() {
    let mut s = sim(r#","quotas":{"daily_requests":40}"#);
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..100 {
        let (id, visitor) = s.arrive(None, &format!("q{i}")).unwrap();
        s.script_for("a/m", Script::json("ok", 1));
        match s.try_run_turn(&id, visitor, ReplyMode::Whole) {
            Ok(out) => {
                out.result.unwrap();
                admitted += 1;
            }
            Err(e) => {
                assert_eq!(e.limit, Limit::DailyRequests);
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (40, 60));
}

#[test]
fn token_quota_reserves_then_settles_real_usage() {
    // 2000 tokens a minute; each turn reserves its prompt estimate plus 1024 reply tokens.
    let mut s = sim(r#","quotas":{"tokens_per_minute":2000}"#);
    s.script_for("a/m", Script::json("ok", 1));
    let (id, v) = s.arrive(None, "hi").unwrap();
    s.try_run_turn(&id, v, ReplyMode::Whole)
        .unwrap()
        .result
        .unwrap();
    // The call used 13 tokens, so the reservation came back: another turn fits at once.
    s.script_for("a/m", Script::json("ok", 1));
    let (id, v) = s.arrive(None, "hi").unwrap();
    assert!(s.try_run_turn(&id, v, ReplyMode::Whole).is_ok());
    let (_, tokens_today, _) = s.quota.today();
    assert_eq!(tokens_today, 26);
}

#[test]
fn costs_are_accounted_per_attempt() {
    let mut s = sim(
        r#","prices":{"a/m":{"input_per_mtok":1.0,"output_per_mtok":2.0},"m":{"input_per_mtok":0.5,"output_per_mtok":1.0}}"#,
    );
    s.script_for("a/m", Script::json("ok", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    // 10 prompt + 3 reply tokens at $1/$2 per million: 16 micro-dollars.
    assert_eq!(out.result.unwrap().1.cost_micros, Some(16));
    assert_eq!(out.trace[0].cost_micros, Some(16));
}

#[test]
fn every_turn_is_answered_when_the_primary_fails_a_third_of_the_time() {
    let mut s = sim(r#","retry":{"attempts_per_target":1}"#);
    let mut rng = 12345u64;
    let mut id = None;
    for i in 0..300 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Each turn, a fails a third of the time; b is healthy. (If a's breaker opens,
        // the turn goes straight to b and a's script is simply not used.)
        s.target_scripts.clear();
        if (rng >> 33).is_multiple_of(3) {
            s.script_for("a/m", err500());
        } else {
            s.script_for("a/m", Script::stream(&["from ", "a"], 1));
        }
        s.script_for("b/m", Script::stream(&["from ", "b"], 1));
        s.advance(Duration::from_secs(1));
        let out = s.chat(id.as_ref(), &format!("turn {i}"), ReplyMode::Stream);
        let (_, reply) = out
            .result
            .unwrap_or_else(|e| panic!("turn {i} unanswered: {e}"));
        assert!(reply.text.starts_with("from "));
        id = Some(out.conversation_id);
    }
    assert_eq!(s.transcript(id.as_ref().unwrap()).len(), 600);
}

#[test]
fn a_key_echoed_in_an_error_never_reaches_the_trace_or_the_answer() {
    let mut s = sim(r#","retry":{"attempts_per_target":1}"#);
    s.script_for(
        "a/m",
        Script::status(
            401,
            &[],
            r#"{"error":{"message":"Incorrect API key provided: sk-a"}}"#,
        ),
    );
    s.secrets
        .insert("A_KEY".into(), "sk-a-very-secret-key".into());
    s.target_scripts.clear();
    s.script_for(
        "a/m",
        Script::status(
            401,
            &[],
            r#"{"error":{"message":"Incorrect API key provided: sk-a-very-secret-key"}}"#,
        ),
    );
    s.script_for("b/m", err500()).script_for("c/m", err500());
    let out = s.chat(None, "hi", ReplyMode::Whole);
    let shown = format!("{:?} {:?}", out.result, out.trace);
    assert!(!shown.contains("sk-a-very-secret-key"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn a_provider_that_never_answers_the_connection_is_left_after_connect_ms() {
    let mut s = sim("");
    s.config.timeouts.connect_ms = 300;
    // a's head would come after 2 s; b answers at once.
    let mut slow = Script::json("too late", 0);
    for step in &mut slow.steps {
        step.at_ms = 2_000;
    }
    s.script_for("a/m", slow);
    s.script_for("b/m", Script::json("b in time", 1));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.text, "b in time");
    assert_eq!(outcomes(&out.trace)[0], "a/m timeout fallback");
    assert_eq!(out.trace[1].started_ms, 300);
}

#[test]
fn a_target_may_carry_its_own_key() {
    let json = r#"{"providers":{"p":{"base_url":"http://p.test/v1","api_key_secret":"TEAM_KEY"}},
        "routes":{"default":{"targets":[{"provider":"p","model":"m1","api_key_secret":"OTHER_ACCOUNT_KEY"},{"provider":"p","model":"m2"}]}},
        "retry":{"attempts_per_target":1}}"#;
    let mut s = Simulator::new(TenantConfig::from_json(json).unwrap());
    s.secrets
        .insert("TEAM_KEY".into(), "sk-team-0000000001".into());
    s.secrets
        .insert("OTHER_ACCOUNT_KEY".into(), "sk-other-000000002".into());
    s.script_for("p/m1", err500())
        .script_for("p/m2", Script::json("ok", 1));
    s.chat(None, "hi", ReplyMode::Whole).result.unwrap();
    let auth = |i: usize| {
        s.requests[i]
            .headers
            .iter()
            .find(|h| h.name == "authorization")
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(auth(0), "Bearer sk-other-000000002");
    assert_eq!(auth(1), "Bearer sk-team-0000000001");
    assert_eq!(s.config.secret_names(), ["OTHER_ACCOUNT_KEY", "TEAM_KEY"]);
    let bad = r#"{"providers":{"p":{"base_url":"http://p.test/v1"}},
        "routes":{"default":{"targets":[{"provider":"p","model":"m","api_key_secret":"sk-live key"}]}}}"#;
    assert_eq!(
        TenantConfig::from_json(bad).unwrap_err().field,
        "routes.default.targets[0].api_key_secret"
    );
}
