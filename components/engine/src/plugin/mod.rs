//! Plugins: the engine's side of the `kefu:extension@0.1.0` contract (`wit/extension.wit`).
//!
//! A plugin is a WebAssembly component the host runs (transpiled with jco on Workers, a
//! component of the Spin application on Spin). The engine never runs one: it says which
//! plugins a tenant enabled and with what settings and grants ([`PluginSpec`]), what each hook
//! call carries ([`HookCall`], the same JSON on both hosts), and what a hook's answer may do
//! ([`parse_answer`], [`apply_model_decision`], [`accept_actions`], [`ToolRegistry`]). Every
//! call ends in a [`PluginCallRecord`] for the conversation's trace, whether the plugin
//! answered, trapped, ran out of time, said too much or said something invalid; a failed
//! plugin is skipped and the turn goes on.
//!
//! The JSON shapes here are the hosts' wire format between the engine and their plugin
//! runners; they mirror the WIT names in snake case (`before_model`, `send_message`).
//!
//! The parts, by concern:
//! - `spec`: a plugin as a tenant configures it, and the rules its configuration follows;
//! - `grants`: what it may reach (outbound URLs, its key-value space, its log lines);
//! - `hook`: what a hook call carries;
//! - `answer`: what a hook answers, parsed and checked;
//! - `tools`: the tools plugins offer a model;
//! - `record`: the trace of each call;
//! - `events`: conversation events as `on-event` sees them.

mod answer;
mod events;
mod grants;
mod hook;
mod record;
mod spec;
mod tools;

pub use answer::{
    Answer, FailureKind, HookSet, MAX_ACTIONS, Manifest, ModelDecision, PluginAction,
    PluginFailure, PluginTool, ReplyDecision, accept_actions, apply_rewrite, check_model_decision,
    check_reply_decision, is_tag, parse_answer,
};
pub use events::{EVENT_TRANSCRIPT, event, event_calls, event_kind};
pub use grants::{
    ApprovedUrl, Denied, Grants, MAX_HTTP_BODY_BYTES, MAX_KV_KEY_BYTES, MAX_KV_VALUE_BYTES,
    MAX_LOG_LINE_BYTES, MAX_LOG_LINES, MAX_URL_BYTES, check_url, kv_key, log_line,
};
pub use hook::{
    Author, EventKind, Hook, HookCall, PluginContext, PluginEvent, PluginMessage, PluginRequest,
    PluginRole, TranscriptMessage, plugin_view,
};
pub use record::{CallOutcome, PluginCallRecord, finish_call};
pub use spec::{
    ActivePlugin, DEFAULT_BUDGET_MS, DEFAULT_MAX_OUTPUT_BYTES, MAX_BUDGET_MS, MAX_OUTPUT_BYTES,
    MAX_PLUGINS, PluginSpec, validate_plugins,
};
pub use tools::{MAX_TOOL_ROUNDS, MAX_TOOLS_PER_PLUGIN, ToolRegistry, is_tool_name};

#[cfg(test)]
mod tests;
