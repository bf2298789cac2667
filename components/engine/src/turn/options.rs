//! How a turn is asked to run: [`TurnOptions`] (the reply mode, the reply's token budget,
//! the tools offered, the plugins) and the handoff tool offered to the model.

use std::collections::{BTreeMap, BTreeSet};

use super::ActivePlugin;
use crate::gateway::route::RouteContext;

/// The tool the model calls to hand the conversation to a person.
pub const HANDOFF_TOOL: &str = "handoff_to_human";

/// The handoff tool offered to the model on chat turns (when the tenant allows it).
pub fn handoff_tool() -> crate::wire::ToolSpec {
    crate::wire::ToolSpec {
        name: HANDOFF_TOOL.to_owned(),
        description:
            "Hand this conversation to a human support agent. Use it when the visitor asks \
            for a person, when the request needs account access or a decision you cannot make, or \
            when the visitor is upset. Do not use it for questions you can answer."
                .to_owned(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why a person is needed, in a few words."}},
            "required": ["reason"],
        }),
    }
}

/// How the visitor wants the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// Text deltas as they arrive, then the finished reply.
    Stream,
    /// Only the finished reply.
    Whole,
}

/// What a turn needs from its host besides the configuration and the prompt.
#[derive(Clone, Debug)]
pub struct TurnOptions {
    /// Streamed or whole reply.
    pub mode: ReplyMode,
    /// Secret values by name (only the ones the configuration names are used).
    pub secrets: BTreeMap<String, String>,
    /// Targets whose circuit breaker refused this turn (`provider/model` keys).
    pub blocked: BTreeSet<String>,
    /// Seeds the turn's randomness (weighted routes, jitter): the same seed replays the
    /// same turn.
    pub seed: u64,
    /// Use this route instead of the configured chat route.
    pub route: Option<String>,
    /// Call only this target (`provider/model`), with no fallback.
    pub target: Option<String>,
    /// Overrides the targets' temperature.
    pub temperature: Option<f64>,
    /// Overrides the targets' reply token limit.
    pub max_tokens: Option<u32>,
    /// Tools the model may call.
    pub tools: Vec<crate::wire::ToolSpec>,
    /// Knowledge-base chunks to ground the answer in (conversation turns only).
    pub knowledge: Vec<crate::knowledge::RetrievedChunk>,
    /// What conditional routes look at (language and images are filled in from the prompt
    /// when not given).
    pub context: RouteContext,
    /// What the host fetched for the stored attachments the prompt refers to, by id (see
    /// [`crate::Conversation::turn_attachments`]).
    pub attachments: BTreeMap<String, crate::attachment::Resolved>,
    /// The tenant's enabled plugins, in configuration order (see [`crate::plugin`]).
    pub plugins: Vec<ActivePlugin>,
    /// The tenant and conversation plugin calls run for.
    pub plugin_scope: Option<(String, String)>,
    /// A description of the newest user message's images, for the targets that do not
    /// read images (made by [`crate::chat::ModelCall`] on the tenant's `attachments.vision`
    /// route).
    pub image_description: Option<String>,
}

impl TurnOptions {
    /// Options for a turn in `mode` with no secrets, breakers or route override.
    pub fn new(mode: ReplyMode) -> Self {
        Self {
            mode,
            secrets: BTreeMap::new(),
            blocked: BTreeSet::new(),
            seed: 0,
            route: None,
            target: None,
            temperature: None,
            max_tokens: None,
            tools: Vec::new(),
            knowledge: Vec::new(),
            context: RouteContext::default(),
            attachments: BTreeMap::new(),
            plugins: Vec::new(),
            plugin_scope: None,
            image_description: None,
        }
    }
}

/// Reply tokens reserved for a target that sets no `max_tokens`.
pub const DEFAULT_REPLY_TOKENS: u32 = 1024;
