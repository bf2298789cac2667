//! What a hook call carries: the context, the event or the model request a plugin sees (in
//! the JSON both hosts hand their plugin runners), and which [`Hook`] is called.

use serde::{Deserialize, Serialize};

use crate::vocab::Part;
use crate::wire::{PromptMessage, PromptRole};

/// What every hook call knows about where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginContext {
    /// The tenant.
    pub tenant: String,
    /// The conversation.
    pub conversation_id: String,
    /// The plugin's id in the tenant's configuration.
    pub plugin_id: String,
    /// The visitor's language, when known.
    pub language: Option<String>,
}

/// Who wrote a transcript message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The visitor.
    Visitor,
    /// The bot.
    Bot,
    /// A human agent.
    Agent,
    /// Kefu itself.
    System,
}

/// One message of an event's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptMessage {
    /// Who wrote it.
    pub author: Author,
    /// Its text.
    pub text: String,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A visitor wrote.
    VisitorMessage,
    /// The bot answered.
    BotReply,
    /// An agent wrote to the visitor.
    AgentMessage,
    /// The conversation waits for a human.
    HandoffRequested,
    /// An agent took it.
    Claimed,
    /// An agent resolved it.
    Resolved,
}

/// An event and the conversation around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEvent {
    /// What happened.
    pub kind: EventKind,
    /// The message's text or the event's detail.
    pub text: Option<String>,
    /// The most recent messages, oldest first (at most [`EVENT_TRANSCRIPT`]).
    ///
    /// [`EVENT_TRANSCRIPT`]: super::EVENT_TRANSCRIPT
    pub transcript: Vec<TranscriptMessage>,
    /// The conversation's tags.
    pub tags: Vec<String>,
}

/// A prompt message's role, as plugins see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRole {
    /// Instructions.
    System,
    /// The visitor.
    User,
    /// The bot or an agent.
    Assistant,
    /// A tool's result.
    Tool,
}

impl From<PromptRole> for PluginRole {
    fn from(role: PromptRole) -> Self {
        match role {
            PromptRole::System => PluginRole::System,
            PromptRole::User => PluginRole::User,
            PromptRole::Assistant => PluginRole::Assistant,
            PromptRole::Tool => PluginRole::Tool,
        }
    }
}

/// A prompt message as its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMessage {
    /// Its role.
    pub role: PluginRole,
    /// Its text parts, joined by newlines.
    pub text: String,
}

/// The request about to reach a model, as plugins see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRequest {
    /// `provider/model` of the first target.
    pub target: String,
    /// The prompt.
    pub messages: Vec<PluginMessage>,
}

/// The plugins' view of a prompt: for each message, first the stand-ins of its files (a
/// PDF's text, a description of its images: [`PromptMessage::stand_ins`]), each as a message
/// of the same role, then the message's own text parts joined.
///
/// A stand-in is text that reaches a model as much as the message's own does, so it passes
/// the same hooks (a PII redactor must see a PDF's text too); it comes before its message so
/// the last user message plugins see is still the visitor's own words. A `rewrite` answers
/// one text per message of this view ([`apply_rewrite`](super::apply_rewrite) maps them
/// back).
pub fn plugin_view(target: &str, messages: &[PromptMessage]) -> PluginRequest {
    let mut view = Vec::with_capacity(messages.len());
    for m in messages {
        let role = PluginRole::from(m.role);
        view.extend(shown_stand_ins(m).map(|(_, text)| PluginMessage {
            role,
            text: text.clone(),
        }));
        view.push(PluginMessage {
            role,
            text: text_of(&m.parts),
        });
    }
    PluginRequest {
        target: target.to_owned(),
        messages: view,
    }
}

/// The stand-ins of `message` that plugins see, in file order: all but the empty ones (an
/// image whose description another image's stand-in carries says nothing of its own).
pub(super) fn shown_stand_ins(message: &PromptMessage) -> impl Iterator<Item = (usize, &String)> {
    message
        .stand_ins
        .iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(file, text)| (*file, text))
}

pub(super) fn text_of(parts: &[Part]) -> String {
    let mut out = String::new();
    for part in parts {
        if let Part::Text(t) = part {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t);
        }
    }
    out
}

/// A call of one hook, as hosts pass it to their plugin runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hook", rename_all = "snake_case")]
pub enum HookCall {
    /// `describe()`.
    Describe,
    /// `on-event(ctx, event)`.
    OnEvent {
        /// Where it runs.
        ctx: PluginContext,
        /// What happened.
        event: PluginEvent,
    },
    /// `before-model(ctx, request)`.
    BeforeModel {
        /// Where it runs.
        ctx: PluginContext,
        /// The request.
        request: PluginRequest,
    },
    /// `after-reply(ctx, question, reply)`.
    AfterReply {
        /// Where it runs.
        ctx: PluginContext,
        /// The visitor's message the reply answers.
        question: String,
        /// The model's reply.
        reply: String,
    },
    /// `call-tool(ctx, name, arguments)`.
    CallTool {
        /// Where it runs.
        ctx: PluginContext,
        /// The tool.
        name: String,
        /// The model's arguments, as JSON text.
        arguments: String,
    },
}

impl HookCall {
    /// The hook's name, for traces.
    pub fn hook(&self) -> Hook {
        match self {
            HookCall::Describe => Hook::Describe,
            HookCall::OnEvent { .. } => Hook::OnEvent,
            HookCall::BeforeModel { .. } => Hook::BeforeModel,
            HookCall::AfterReply { .. } => Hook::AfterReply,
            HookCall::CallTool { .. } => Hook::CallTool,
        }
    }
}

/// A hook, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// `describe`.
    Describe,
    /// `on-event`.
    OnEvent,
    /// `before-model`.
    BeforeModel,
    /// `after-reply`.
    AfterReply,
    /// `call-tool`.
    CallTool,
}
