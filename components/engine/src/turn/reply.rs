//! What a turn produces: the [`TurnReply`], who gave it ([`Responder`]), and the handoff a
//! plugin asked for along with it.

use core::time::Duration;

use crate::provider::{FinishReason, Usage};
use crate::wire::ToolCall;

/// Who produced a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Responder {
    /// A model, by name.
    Provider {
        /// The model that answered.
        model: String,
    },
    /// The built-in offline responder.
    Offline,
    /// A plugin's `before-model` hook answered instead of the model.
    Plugin {
        /// The plugin's id in the tenant.
        id: String,
    },
}

impl Responder {
    /// The API's spelling: `provider`, `offline` or `plugin`.
    pub fn kind(&self) -> &'static str {
        match self {
            Responder::Provider { .. } => "provider",
            Responder::Offline => "offline",
            Responder::Plugin { .. } => "plugin",
        }
    }

    /// The model name, for provider replies.
    pub fn model(&self) -> Option<&str> {
        match self {
            Responder::Provider { model } => Some(model),
            Responder::Offline | Responder::Plugin { .. } => None,
        }
    }
}

/// A finished reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnReply {
    /// The reply's text.
    pub text: String,
    /// Who produced it.
    pub responder: Responder,
    /// The target that answered (`provider/model`), for provider replies.
    pub target: Option<String>,
    /// The route that chose it.
    pub route: Option<String>,
    /// Provider calls the turn made, the answering one included.
    pub attempts: u32,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Tokens used by the answering attempt, when the provider reported them.
    pub usage: Option<Usage>,
    /// Cost of the whole turn in millionths of a dollar, when every model used has a price.
    pub cost_micros: Option<u64>,
    /// Tool calls the model made (carried for plugins; a chat reply needs text).
    pub tool_calls: Vec<ToolCall>,
    /// A plugin asked for a human instead of this reply (its text is then empty).
    pub plugin_handoff: Option<PluginHandoff>,
    /// From the start of the turn to the first token.
    pub time_to_first_token: Option<Duration>,
    /// From the start of the turn to its end.
    pub duration: Duration,
}

/// A plugin's request for a human, carried by the reply it replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginHandoff {
    /// The plugin's id in the tenant.
    pub plugin_id: String,
    /// Why, as the plugin said.
    pub reason: String,
}
