//! What a turn asks its host to do ([`Action`]), and the ids that tie the host's answers to
//! the provider attempt or plugin call they belong to.

use super::TurnReply;
use crate::plugin::{HookCall, PluginSpec};
use crate::provider::ProviderError;

/// Identifies one provider call within a turn; events for another attempt are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttemptId(pub u32);

/// Identifies one plugin call within a turn; answers to another call are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PluginCallId(pub u32);

/// What the turn asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this request; feed back what happens with this attempt id.
    CallProvider {
        /// The attempt the events belong to.
        attempt: AttemptId,
        /// The target (`provider/model`) being called.
        target: String,
        /// The request to send.
        request: crate::provider::HttpRequest,
    },
    /// Abandon this attempt (abort the fetch); its later events are ignored anyway.
    CancelProvider {
        /// The attempt to abandon.
        attempt: AttemptId,
    },
    /// Call a plugin's hook within `spec`'s budget and grants; feed back its answer (the
    /// JSON the runner produced) or its failure with [`Turn::handle_plugin_answer`].
    ///
    /// [`Turn::handle_plugin_answer`]: super::Turn::handle_plugin_answer
    CallPlugin {
        /// The call the answer belongs to.
        call: PluginCallId,
        /// The plugin's configuration: settings, grants, budget, output limit.
        spec: PluginSpec,
        /// The hook and its arguments.
        hook: HookCall,
    },
    /// Show the visitor more text (streamed replies only).
    Delta(String),
    /// The turn is over: a finished reply, or why there is none. [`Turn::trace`] says what
    /// every attempt did.
    ///
    /// [`Turn::trace`]: super::Turn::trace
    Finished(Result<TurnReply, ProviderError>),
}
