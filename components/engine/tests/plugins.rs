//! Plugins in whole chat turns: the simulator plays the host's plugin runner with scripted
//! answers (and failures), and a scripted provider plays the model.

use kefu_engine::config::{ProviderConfig, Timeouts};
use kefu_engine::gateway::RetryPolicy;

use kefu_engine::chat::Outcome;
use kefu_engine::plugin::{
    CallOutcome, FailureKind, Hook, HookCall, HookSet, Manifest, PluginFailure, PluginSpec,
    PluginTool,
};
use kefu_engine::sim::{PluginScript, Script, Simulator};
use kefu_engine::turn::ActivePlugin;
use kefu_engine::wire::ProviderKind;
use kefu_engine::{ReplyMode, Responder, Role, Status, TenantConfig};
use serde_json::{Value, json};

fn config() -> TenantConfig {
    TenantConfig {
        system_prompt: "You are a shop's support bot.".into(),
        provider: Some(ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "sim-model".into(),
            api_key_secret: Some("KEY".into()),
            temperature: None,
            max_tokens: None,
            vision: None,
        }),
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

fn plugin(id: &str, hooks: HookSet, tools: Vec<PluginTool>) -> ActivePlugin {
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
            tools,
        },
    }
}

fn before_model() -> HookSet {
    HookSet {
        before_model: true,
        ..HookSet::default()
    }
}

fn after_reply() -> HookSet {
    HookSet {
        after_reply: true,
        ..HookSet::default()
    }
}

/// A simulator whose tenant enables `plugins`: the configuration lists them (the chat turn
/// loads plugins only when it enables some) and the host loads them with their manifests.
fn sim(plugins: Vec<ActivePlugin>) -> Simulator {
    let mut config = config();
    config.plugins = plugins.iter().map(|p| p.spec.clone()).collect();
    let mut s = Simulator::new(config);
    s.secrets.insert("KEY".into(), "sk-test".into());
    s.plugins = plugins;
    s
}

fn request(sim: &Simulator, i: usize) -> Value {
    serde_json::from_slice(&sim.requests[i].body).unwrap()
}

fn tool_call_reply(id: &str, name: &str, arguments: Value) -> Script {
    let body = json!({
        "id": "x", "object": "chat.completion", "model": "sim-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": id, "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}}]}}]
    });
    Script::status(
        200,
        &[("content-type", "application/json")],
        &body.to_string(),
    )
}

#[test]
fn a_rewrite_reaches_the_model_and_the_trace() {
    let mut s = sim(vec![plugin("pii", before_model(), vec![])]);
    s.plugin_script(
        "pii",
        PluginScript::answer(
            json!({"rewrite": ["You are a shop's support bot.", "I am [email], where is my order?"]}),
        ),
    );
    s.script(Script::json("Let me check.", 5));
    let out = s.chat(
        None,
        "I am bob@example.org, where is my order?",
        ReplyMode::Whole,
    );
    assert_eq!(out.result.unwrap().1.text, "Let me check.");
    let messages = request(&s, 0)["messages"].clone();
    assert_eq!(messages[1]["content"], "I am [email], where is my order?");
    // The plugin saw the prompt as text, with its context.
    let (id, HookCall::BeforeModel { ctx, request }) = &s.hook_calls[0] else {
        panic!("{:?}", s.hook_calls[0]);
    };
    assert_eq!((id.as_str(), ctx.plugin_id.as_str()), ("pii", "pii"));
    assert_eq!(ctx.language.as_deref(), Some("en"));
    assert_eq!(request.target, "default/sim-model");
    assert_eq!(
        request.messages[1].text,
        "I am bob@example.org, where is my order?"
    );
    assert_eq!(out.plugin_calls.len(), 1);
    assert_eq!(out.plugin_calls[0].hook, Hook::BeforeModel);
    assert_eq!(
        out.plugin_calls[0].outcome,
        CallOutcome::Ok {
            effect: "rewrote 1 of 2 messages".into()
        }
    );
    // The stored transcript keeps the visitor's own words.
    let transcript = s.transcript(&out.conversation_id);
    assert_eq!(
        transcript[0].text(),
        "I am bob@example.org, where is my order?"
    );
}

#[test]
fn failing_plugins_are_skipped_and_the_turn_answers() {
    let mut s = sim(vec![
        plugin("trap", before_model(), vec![]),
        plugin("slow", before_model(), vec![]),
        plugin("huge", before_model(), vec![]),
        plugin("liar", before_model(), vec![]),
        plugin("short", before_model(), vec![]),
    ]);
    s.plugin_script(
        "trap",
        PluginScript::fail(PluginFailure::new(
            FailureKind::Trap,
            "wasm trap: unreachable",
        )),
    )
    .plugin_script("slow", PluginScript::hang())
    .plugin_script(
        "huge",
        PluginScript::answer(json!({"rewrite": ["x".repeat(70 * 1024), "y"]})),
    )
    .plugin_script("liar", PluginScript::answer(json!({"explode": true})))
    .plugin_script(
        "short",
        PluginScript::answer(json!({"rewrite": ["only one"]})),
    );
    s.script(Script::json("Still here.", 5));
    let start = s.now;
    let out = s.chat(None, "hello", ReplyMode::Whole);
    assert_eq!(out.result.unwrap().1.text, "Still here.");
    let kinds: Vec<_> = out
        .plugin_calls
        .iter()
        .map(|r| match &r.outcome {
            CallOutcome::Failed { failure, .. } => *failure,
            CallOutcome::Ok { effect } => panic!("{} answered: {effect}", r.plugin_id),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            FailureKind::Trap,
            FailureKind::Timeout,
            FailureKind::TooLarge,
            FailureKind::Invalid,
            FailureKind::Invalid
        ]
    );
    // The hanging plugin cost exactly its budget, no more.
    assert_eq!(out.plugin_calls[1].duration_ms, 300);
    assert!(s.now.since(start).as_millis() < 400);
    // Nothing any of them said reached the model.
    assert_eq!(request(&s, 0)["messages"][1]["content"], "hello");
}

#[test]
fn the_model_calls_a_plugin_tool_and_answers_with_its_result() {
    let tool = PluginTool {
        name: "order_status".into(),
        description: "Looks up an order".into(),
        parameters: r#"{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}"#.into(),
    };
    let mut s = sim(vec![plugin("orders", HookSet::default(), vec![tool])]);
    s.script(tool_call_reply(
        "call_1",
        "order_status",
        json!({"order_id": "KF-1042"}),
    ));
    s.plugin_script(
        "orders",
        PluginScript::answer(json!({"ok": "{\"order_id\":\"KF-1042\",\"status\":\"shipped\"}"})),
    );
    s.script(Script::stream(&["Your order KF-1042 ", "has shipped."], 5));
    let out = s.chat(None, "Where is order KF-1042?", ReplyMode::Stream);
    let (_, reply) = out.result.unwrap();
    assert_eq!(reply.text, "Your order KF-1042 has shipped.");
    assert_eq!(out.deltas.concat(), reply.text);
    // The first request offered the tool; the second carried the call and its result.
    let first = request(&s, 0);
    assert!(
        first["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "order_status")
    );
    let second = request(&s, 1)["messages"].clone();
    let n = second.as_array().unwrap().len();
    assert_eq!(second[n - 2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(second[n - 1]["role"], "tool");
    assert_eq!(second[n - 1]["tool_call_id"], "call_1");
    assert_eq!(
        second[n - 1]["content"],
        "{\"order_id\":\"KF-1042\",\"status\":\"shipped\"}"
    );
    let (
        _,
        HookCall::CallTool {
            name, arguments, ..
        },
    ) = &s.hook_calls[0]
    else {
        panic!();
    };
    assert_eq!(name, "order_status");
    assert_eq!(
        serde_json::from_slice::<Value>(arguments.as_bytes()).unwrap()["order_id"],
        "KF-1042"
    );
    assert_eq!(out.plugin_calls[0].tool.as_deref(), Some("order_status"));
}

#[test]
fn a_tool_that_fails_tells_the_model_so() {
    let tool = PluginTool {
        name: "order_status".into(),
        description: String::new(),
        parameters: r#"{"type":"object"}"#.into(),
    };
    let mut s = sim(vec![plugin("orders", HookSet::default(), vec![tool])]);
    s.script(tool_call_reply("c", "order_status", json!({})));
    s.plugin_script("orders", PluginScript::hang());
    s.script(Script::json("I can't look that up right now.", 5));
    let out = s.chat(None, "order?", ReplyMode::Whole);
    assert_eq!(
        out.result.unwrap().1.text,
        "I can't look that up right now."
    );
    let second = request(&s, 1)["messages"].clone();
    let last = second.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], "error: the tool is unavailable right now");
}

#[test]
fn a_guard_hands_off_and_nothing_of_the_reply_is_streamed() {
    let mut s = sim(vec![plugin("guard", after_reply(), vec![])]);
    s.script(Script::stream(
        &["Sure, I'll refund ", "you right away."],
        5,
    ));
    s.plugin_script(
        "guard",
        PluginScript::answer(json!({"handoff": "topic: refund"})),
    );
    let out = s.chat(None, "I want a refund", ReplyMode::Stream);
    let (_, reply) = out.result.unwrap();
    assert!(out.deltas.is_empty(), "streamed {:?}", out.deltas);
    assert_eq!(reply.text, "");
    let h = reply.plugin_handoff.unwrap();
    assert_eq!(
        (h.plugin_id.as_str(), h.reason.as_str()),
        ("guard", "topic: refund")
    );
    assert_eq!(
        s.conversation(&out.conversation_id).status(),
        Status::WaitingForAgent
    );
    // The handoff is the chat turn's own: its notice is the answer, and nothing of the
    // guarded reply is stored.
    let Outcome::Notice {
        message,
        status,
        responder,
    } = &out.outcome
    else {
        panic!("{:?}", out.outcome);
    };
    assert_eq!((*responder, *status), ("handoff", Status::WaitingForAgent));
    let roles: Vec<Role> = s
        .transcript(&out.conversation_id)
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(roles, [Role::Visitor, Role::System]);
    assert_eq!(s.transcript(&out.conversation_id)[1].text(), message.text());
    let (
        _,
        HookCall::AfterReply {
            question, reply, ..
        },
    ) = &s.hook_calls[0]
    else {
        panic!();
    };
    assert_eq!(question, "I want a refund");
    assert_eq!(reply, "Sure, I'll refund you right away.");
}

#[test]
fn a_block_replaces_the_reply_in_the_visitors_language_and_a_keep_streams_it() {
    let mut s = sim(vec![plugin("guard", after_reply(), vec![])]);
    s.script(Script::stream(&["退款", "马上办理"], 5));
    s.plugin_script("guard", PluginScript::answer(json!({"block": "refunds"})));
    let out = s.chat(None, "我要退款", ReplyMode::Stream);
    let (_, reply) = out.result.unwrap();
    assert!(reply.text.starts_with("抱歉"), "{}", reply.text);
    assert_eq!(out.deltas.concat(), reply.text);

    s.script(Script::stream(&["Our hours ", "are 9 to 5."], 5));
    s.plugin_script("guard", PluginScript::answer(json!("keep")));
    let out = s.chat(None, "When are you open?", ReplyMode::Stream);
    assert_eq!(out.deltas.concat(), "Our hours are 9 to 5.");
}

#[test]
fn a_plugin_may_answer_instead_of_the_model() {
    let mut s = sim(vec![plugin("faq", before_model(), vec![])]);
    s.plugin_script(
        "faq",
        PluginScript::answer(json!({"answer": "We open at 9."})),
    );
    let out = s.chat(None, "When do you open?", ReplyMode::Whole);
    let (message, reply) = out.result.unwrap();
    assert!(s.requests.is_empty(), "the model was called");
    assert_eq!(reply.responder, Responder::Plugin { id: "faq".into() });
    assert_eq!(message.text(), "We open at 9.");
}

#[test]
fn disabled_plugins_are_not_called() {
    let mut p = plugin("pii", before_model(), vec![]);
    p.spec.enabled = false;
    let mut s = sim(vec![p]);
    s.script(Script::json("ok", 5));
    let out = s.chat(None, "hi", ReplyMode::Whole);
    assert!(out.result.is_ok());
    assert!(s.hook_calls.is_empty());
}

fn on_event() -> HookSet {
    HookSet {
        on_event: true,
        ..HookSet::default()
    }
}

#[test]
fn events_reach_observing_plugins_and_their_actions_apply_once() {
    let mut s = sim(vec![plugin("crm", on_event(), vec![])]);
    s.script(Script::json("Hello there", 5));
    let out = s.chat(None, "I need help with my order", ReplyMode::Whole);
    let id = out.conversation_id.clone();
    let events = s.events.clone();
    assert!(events.len() >= 2, "the turn stored events: {events:?}");
    // The plugin answers each event; on the visitor's message it tags and says something.
    s.plugin_script(
        "crm",
        PluginScript::answer(json!([{"tag": "crm-seen"}, {"send_message": "Your ticket is #42."}])),
    );
    for _ in 1..events.len() {
        s.plugin_script("crm", PluginScript::answer(json!([])));
    }
    let stored_before = s.transcript(&id).len();
    let events_before = s.events.len();
    let records = s.play_events(&id, events.clone());
    assert_eq!(
        records.len(),
        s.hook_calls.len(),
        "one record per call: {records:?}"
    );
    assert!(
        s.hook_calls
            .iter()
            .all(|(plugin, call)| plugin == "crm"
                && call.hook() == kefu_engine::plugin::Hook::OnEvent),
        "{:?}",
        s.hook_calls
    );
    let c = s.conversation(&id);
    assert_eq!(c.tags(), ["crm-seen"]);
    let transcript = s.transcript(&id);
    assert_eq!(transcript.len(), stored_before + 1);
    assert_eq!(transcript.last().unwrap().text(), "Your ticket is #42.");
    assert_eq!(transcript.last().unwrap().role, Role::Bot);
    // What the actions did is in the call's record, and in the log.
    let first = serde_json::to_value(&records[0]).unwrap();
    assert!(
        first["outcome"]["effect"]
            .as_str()
            .unwrap_or("")
            .contains("crm-seen"),
        "{first}"
    );
    assert!(
        s.logs
            .iter()
            .any(|l| l["msg"] == "plugin event" && l["conversation_id"] == id.as_str()),
        "the calls are logged"
    );
    // The plugin's own message produced events; a pass over them is the host's to skip
    // (`Change::heard_by_plugins`), and the simulator stored them like any change.
    assert!(s.events.len() > events_before);
}

#[test]
fn no_observing_plugin_means_no_call() {
    let mut s = sim(vec![plugin("rewriter", before_model(), vec![])]);
    s.plugin_script(
        "rewriter",
        PluginScript::answer(json!({"decision": "keep"})),
    );
    s.script(Script::json("Hello there", 5));
    let out = s.chat(None, "hello", ReplyMode::Whole);
    let calls = s.hook_calls.len();
    let records = s.play_events(&out.conversation_id, s.events.clone());
    assert!(records.is_empty());
    assert_eq!(s.hook_calls.len(), calls, "no on-event call was made");
}
