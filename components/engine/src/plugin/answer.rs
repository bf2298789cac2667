//! What a hook answers: the decisions, actions and manifest a plugin may return, parsed
//! within its output limit ([`parse_answer`]) and checked before a turn acts on them; a
//! [`PluginFailure`] when it trapped, timed out, said too much or said something invalid.

use serde::{Deserialize, Serialize};

use super::hook::{Hook, shown_stand_ins, text_of};
use crate::vocab::Part;
use crate::wire::PromptMessage;

/// At most this many actions are taken from one `on-event` answer.
pub const MAX_ACTIONS: usize = 8;

/// An action a plugin asked for after an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginAction {
    /// Tag the conversation.
    Tag(String),
    /// Hand it to a human, for this reason.
    Handoff(String),
    /// Post this message to the visitor, as the bot.
    SendMessage(String),
}

/// What `before-model` decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelDecision {
    /// Send the request as it is.
    Keep,
    /// Send it with these texts, one per message.
    Rewrite(Vec<String>),
    /// Answer the visitor with this instead of calling the model.
    Answer(String),
    /// Hand the conversation to a human for this reason instead.
    Handoff(String),
}

/// What `after-reply` decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyDecision {
    /// Send the reply.
    Keep,
    /// Send this instead.
    Rewrite(String),
    /// Send nothing of it (the visitor gets a neutral sentence); the text is the reason.
    Block(String),
    /// Hand off for this reason instead.
    Handoff(String),
}

/// A tool a plugin offers, as its manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginTool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its parameters' JSON Schema, as JSON text.
    pub parameters: String,
}

/// The hooks a plugin implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookSet {
    /// `on-event`.
    pub on_event: bool,
    /// `before-model`.
    pub before_model: bool,
    /// `after-reply`.
    pub after_reply: bool,
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The hooks it implements.
    pub hooks: HookSet,
    /// Its tools.
    pub tools: Vec<PluginTool>,
}

/// A hook's answer, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `describe`'s.
    Manifest(Manifest),
    /// `on-event`'s.
    Actions(Vec<PluginAction>),
    /// `before-model`'s.
    Model(ModelDecision),
    /// `after-reply`'s.
    Reply(ReplyDecision),
    /// `call-tool`'s: the result for the model, or the tool's error.
    Tool(Result<String, String>),
}

/// How a hook call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The plugin trapped (a panic, an out-of-bounds access, `unreachable`).
    Trap,
    /// It ran past its time budget (or its CPU allowance).
    Timeout,
    /// Its answer was over its output limit.
    TooLarge,
    /// Its answer broke the contract (wrong shape, a rewrite of the wrong length, …).
    Invalid,
    /// The host could not run it (not installed, failed to load).
    Unavailable,
}

/// A failed hook call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct PluginFailure {
    /// How it failed.
    pub kind: FailureKind,
    /// What happened, for the trace.
    pub message: String,
}

impl PluginFailure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Parses the JSON a plugin runner returned for `hook`, enforcing the output limit. `json` is
/// the answer as the runner serialised it (the WIT value in this module's JSON shapes).
pub fn parse_answer(hook: Hook, json: &[u8], max_output: u32) -> Result<Answer, PluginFailure> {
    if json.len() > max_output as usize {
        return Err(PluginFailure::new(
            FailureKind::TooLarge,
            format!(
                "answered {} bytes, over the limit of {max_output}",
                json.len()
            ),
        ));
    }
    let invalid = |e: serde_json::Error| PluginFailure::new(FailureKind::Invalid, e.to_string());
    Ok(match hook {
        Hook::Describe => Answer::Manifest(serde_json::from_slice(json).map_err(invalid)?),
        Hook::OnEvent => Answer::Actions(serde_json::from_slice(json).map_err(invalid)?),
        Hook::BeforeModel => Answer::Model(serde_json::from_slice(json).map_err(invalid)?),
        Hook::AfterReply => Answer::Reply(serde_json::from_slice(json).map_err(invalid)?),
        Hook::CallTool => {
            #[derive(Deserialize)]
            #[serde(rename_all = "snake_case")]
            enum Outcome {
                Ok(String),
                Err(String),
            }
            match serde_json::from_slice(json).map_err(invalid)? {
                Outcome::Ok(s) => Answer::Tool(Ok(s)),
                Outcome::Err(s) => Answer::Tool(Err(s)),
            }
        }
    })
}

/// Applies a `rewrite` to a prompt, one text per message of the plugins' view of it
/// ([`plugin_view`](super::plugin_view)): a stand-in's text replaces that stand-in; a
/// message's text replaces its text parts (as one text part where the first one was, or at
/// the start when it had none), its other parts kept. Refused, changing nothing, when the
/// count differs from the view's. Returns how many of the texts changed.
pub fn apply_rewrite(
    messages: &mut [PromptMessage],
    texts: Vec<String>,
) -> Result<usize, PluginFailure> {
    let shown: usize = messages
        .iter()
        .map(|m| shown_stand_ins(m).count() + 1)
        .sum();
    if texts.len() != shown {
        return Err(PluginFailure::new(
            FailureKind::Invalid,
            format!("rewrite has {} texts for {shown} messages", texts.len()),
        ));
    }
    let mut texts = texts.into_iter();
    let mut changed = 0;
    for message in messages.iter_mut() {
        let files: Vec<usize> = shown_stand_ins(message).map(|(file, _)| file).collect();
        for file in files {
            let text = texts.next().unwrap_or_default();
            if let Some(stand_in) = message.stand_ins.get_mut(&file)
                && *stand_in != text
            {
                *stand_in = text;
                changed += 1;
            }
        }
        let text = texts.next().unwrap_or_default();
        if text_of(&message.parts) == text {
            continue;
        }
        changed += 1;
        let first = message
            .parts
            .iter()
            .position(|p| matches!(p, Part::Text(_)))
            .unwrap_or(0);
        let mut parts = Vec::with_capacity(message.parts.len());
        let mut placed = false;
        for (i, part) in message.parts.drain(..).enumerate() {
            if i == first && !placed {
                parts.push(Part::Text(text.clone()));
                placed = true;
            }
            if !matches!(part, Part::Text(_)) {
                parts.push(part);
            }
        }
        if !placed {
            parts.push(Part::Text(text));
        }
        message.parts = parts;
    }
    Ok(changed)
}

/// Whether `tag` is a tag a plugin may add.
pub fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.chars().count() <= 40
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

/// Sorts an `on-event` answer into the actions Kefu takes and the ones it refuses (each with
/// why, for the trace): at most [`MAX_ACTIONS`], tags well formed, texts non-empty and at most
/// 2000 characters (a handoff reason 500).
pub fn accept_actions(actions: Vec<PluginAction>) -> (Vec<PluginAction>, Vec<String>) {
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    for (i, action) in actions.into_iter().enumerate() {
        if i >= MAX_ACTIONS {
            refused.push(format!(
                "action {i}: over the limit of {MAX_ACTIONS} per event"
            ));
            continue;
        }
        let problem = match &action {
            PluginAction::Tag(t) if !is_tag(t) => {
                Some("a tag is 1 to 40 letters, digits, `-` or `_`")
            }
            PluginAction::Handoff(r) if r.trim().is_empty() || r.chars().count() > 500 => {
                Some("a handoff reason is 1 to 500 characters")
            }
            PluginAction::SendMessage(m) if m.trim().is_empty() || m.chars().count() > 2000 => {
                Some("a message is 1 to 2000 characters")
            }
            _ => None,
        };
        match problem {
            Some(p) => refused.push(format!("action {i}: {p}")),
            None => taken.push(action),
        }
    }
    (taken, refused)
}

/// Checks a reply decision's texts (a rewrite must say something; a reason is short).
pub fn check_reply_decision(decision: &ReplyDecision) -> Result<(), PluginFailure> {
    let bad = |m: &str| Err(PluginFailure::new(FailureKind::Invalid, m));
    match decision {
        ReplyDecision::Rewrite(t) if t.trim().is_empty() => bad("a rewrite must not be empty"),
        ReplyDecision::Block(r) | ReplyDecision::Handoff(r) if r.chars().count() > 500 => {
            bad("a reason is at most 500 characters")
        }
        _ => Ok(()),
    }
}

/// Checks a model decision's texts.
pub fn check_model_decision(decision: &ModelDecision) -> Result<(), PluginFailure> {
    let bad = |m: &str| Err(PluginFailure::new(FailureKind::Invalid, m));
    match decision {
        ModelDecision::Answer(t) if t.trim().is_empty() => bad("an answer must not be empty"),
        ModelDecision::Handoff(r) if r.chars().count() > 500 => {
            bad("a reason is at most 500 characters")
        }
        _ => Ok(()),
    }
}
