//! A plugin's entry on Spin: Kefu's hook calls arrive over Spin's local service chaining as
//! `POST /` with `{"spec": PluginSpec, "call": HookCall, "deadline_ms": …}` (the engine's JSON,
//! see `kefu_engine::plugin`); the entry starts the call in the host adapter (settings,
//! grants, deadline), calls the plugin's hook, and answers `200` with the hook's answer in the
//! engine's JSON — exactly what `kefu_engine::plugin::parse_answer` reads.
//!
//! A plugin that traps takes this component instance down with it; Spin then answers `500`
//! and Kefu's request, in another instance, goes on.

use kefu_engine::plugin as engine;
use serde::Deserialize;
use spin_sdk::http::{Request, Response};

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "kefu:spin-plugin/entry",
        path: ["../../../wit", "../wit"],
        generate_all,
    });
}

use bindings::kefu::extension::hooks as wit;
use bindings::kefu::spin_plugin::call_context;

/// What Kefu sends.
#[derive(Deserialize)]
struct Envelope {
    spec: engine::PluginSpec,
    call: engine::HookCall,
    deadline_ms: u64,
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

// spin-sdk's export glue is unsafe code; it is allowed here only.
#[allow(unsafe_code)]
mod export {
    use spin_sdk::http::{Request, Response};
    use spin_sdk::http_component;

    #[http_component]
    fn entry(req: Request) -> Response {
        super::handle(req)
    }
}

fn handle(req: Request) -> Response {
    if req.method() != &spin_sdk::http::Method::Post {
        return error(405, "method_not_allowed", "POST a hook call");
    }
    let envelope: Envelope = match serde_json::from_slice(req.body()) {
        Ok(e) => e,
        Err(e) => return error(400, "invalid_json", &e.to_string()),
    };
    let (tenant, conversation) = match &envelope.call {
        engine::HookCall::Describe => (String::new(), String::new()),
        engine::HookCall::OnEvent { ctx, .. }
        | engine::HookCall::BeforeModel { ctx, .. }
        | engine::HookCall::AfterReply { ctx, .. }
        | engine::HookCall::CallTool { ctx, .. } => {
            (ctx.tenant.clone(), ctx.conversation_id.clone())
        }
    };
    let spec = serde_json::to_string(&envelope.spec).unwrap_or_default();
    call_context::begin(&spec, &tenant, &conversation, envelope.deadline_ms);
    let answer = call(envelope.call);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(answer.to_string())
        .build()
}

/// Calls the hook and returns its answer as the engine's JSON.
fn call(call: engine::HookCall) -> serde_json::Value {
    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
    }
    match call {
        engine::HookCall::Describe => json(&manifest(wit::describe())),
        engine::HookCall::OnEvent { ctx, event } => {
            let actions: Vec<engine::PluginAction> = wit::on_event(&context(ctx), &event_of(event))
                .into_iter()
                .map(|a| match a {
                    wit::Action::Tag(t) => engine::PluginAction::Tag(t),
                    wit::Action::Handoff(r) => engine::PluginAction::Handoff(r),
                    wit::Action::SendMessage(m) => engine::PluginAction::SendMessage(m),
                })
                .collect();
            json(&actions)
        }
        engine::HookCall::BeforeModel { ctx, request } => {
            let request = wit::ModelRequest {
                target: request.target,
                messages: request
                    .messages
                    .into_iter()
                    .map(|m| wit::PromptMessage {
                        role: match m.role {
                            engine::PluginRole::System => wit::PromptRole::System,
                            engine::PluginRole::User => wit::PromptRole::User,
                            engine::PluginRole::Assistant => wit::PromptRole::Assistant,
                            engine::PluginRole::Tool => wit::PromptRole::Tool,
                        },
                        text: m.text,
                    })
                    .collect(),
            };
            let decision = match wit::before_model(&context(ctx), &request) {
                wit::ModelDecision::Keep => engine::ModelDecision::Keep,
                wit::ModelDecision::Rewrite(t) => engine::ModelDecision::Rewrite(t),
                wit::ModelDecision::Answer(t) => engine::ModelDecision::Answer(t),
                wit::ModelDecision::Handoff(r) => engine::ModelDecision::Handoff(r),
            };
            json(&decision)
        }
        engine::HookCall::AfterReply {
            ctx,
            question,
            reply,
        } => {
            let decision = match wit::after_reply(&context(ctx), &question, &reply) {
                wit::ReplyDecision::Keep => engine::ReplyDecision::Keep,
                wit::ReplyDecision::Rewrite(t) => engine::ReplyDecision::Rewrite(t),
                wit::ReplyDecision::Block(r) => engine::ReplyDecision::Block(r),
                wit::ReplyDecision::Handoff(r) => engine::ReplyDecision::Handoff(r),
            };
            json(&decision)
        }
        engine::HookCall::CallTool {
            ctx,
            name,
            arguments,
        } => match wit::call_tool(&context(ctx), &name, &arguments) {
            Ok(result) => serde_json::json!({"ok": result}),
            Err(error) => serde_json::json!({"err": error}),
        },
    }
}

fn context(ctx: engine::PluginContext) -> wit::Context {
    wit::Context {
        tenant: ctx.tenant,
        conversation_id: ctx.conversation_id,
        plugin_id: ctx.plugin_id,
        language: ctx.language,
    }
}

fn event_of(event: engine::PluginEvent) -> wit::ConversationEvent {
    wit::ConversationEvent {
        kind: match event.kind {
            engine::EventKind::VisitorMessage => wit::EventKind::VisitorMessage,
            engine::EventKind::BotReply => wit::EventKind::BotReply,
            engine::EventKind::AgentMessage => wit::EventKind::AgentMessage,
            engine::EventKind::HandoffRequested => wit::EventKind::HandoffRequested,
            engine::EventKind::Claimed => wit::EventKind::Claimed,
            engine::EventKind::Resolved => wit::EventKind::Resolved,
        },
        text: event.text,
        transcript: event
            .transcript
            .into_iter()
            .map(|m| wit::Message {
                author: match m.author {
                    engine::Author::Visitor => wit::Author::Visitor,
                    engine::Author::Bot => wit::Author::Bot,
                    engine::Author::Agent => wit::Author::Agent,
                    engine::Author::System => wit::Author::System,
                },
                text: m.text,
            })
            .collect(),
        tags: event.tags,
    }
}

fn manifest(m: wit::Manifest) -> engine::Manifest {
    engine::Manifest {
        name: m.name,
        version: m.version,
        description: m.description,
        hooks: engine::HookSet {
            on_event: m.hooks.contains(wit::HookSet::ON_EVENT),
            before_model: m.hooks.contains(wit::HookSet::BEFORE_MODEL),
            after_reply: m.hooks.contains(wit::HookSet::AFTER_REPLY),
        },
        tools: m
            .tools
            .into_iter()
            .map(|t| engine::PluginTool {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect(),
    }
}
