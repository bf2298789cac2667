//! The trace of a plugin call: how it ended ([`CallOutcome`]) and its [`PluginCallRecord`],
//! and the record of a call made outside a turn ([`finish_call`]).

use serde::{Deserialize, Serialize};

use super::answer::{Answer, FailureKind, PluginFailure, parse_answer};
use super::hook::{Hook, HookCall};
use super::spec::PluginSpec;

/// How a hook call ended, for the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CallOutcome {
    /// It answered; `effect` says what Kefu did with the answer (`kept`, `rewrote 2
    /// messages`, `handoff: …`, `tag vip`, …).
    Ok {
        /// What the answer changed.
        effect: String,
    },
    /// It failed and was skipped.
    Failed {
        /// How.
        failure: FailureKind,
        /// What happened.
        message: String,
    },
}

/// One plugin call, in a conversation's trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCallRecord {
    /// The plugin's id in the tenant.
    pub plugin_id: String,
    /// The installed plugin's name.
    pub plugin: String,
    /// The hook called.
    pub hook: Hook,
    /// The tool, for `call_tool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Milliseconds the call took.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: CallOutcome,
}

/// A finished call outside a turn (an event's): its answer, parsed within the spec's output
/// limit, and its trace record (`effect` filled in by whoever applies the answer).
pub fn finish_call(
    spec: &PluginSpec,
    plugin: &str,
    call: &HookCall,
    duration_ms: u64,
    answer: Result<Vec<u8>, PluginFailure>,
) -> (Result<Answer, PluginFailure>, PluginCallRecord) {
    let hook = call.hook();
    let parsed = answer.and_then(|json| parse_answer(hook, &json, spec.max_output_bytes()));
    let outcome = match &parsed {
        Ok(_) => CallOutcome::Ok {
            effect: String::new(),
        },
        Err(e) => CallOutcome::Failed {
            failure: e.kind,
            message: e.message.clone(),
        },
    };
    let record = PluginCallRecord {
        plugin_id: spec.id.clone(),
        plugin: plugin.to_owned(),
        hook,
        tool: None,
        duration_ms,
        outcome,
    };
    (parsed, record)
}
