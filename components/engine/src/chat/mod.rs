//! The chat-turn machine: everything that happens between a stored visitor message and the
//! answer, sequenced here once, for every host.
//!
//! Like `quinn-proto`'s connection, a machine does no I/O and reads no clock. The host
//! creates it, then loops: it takes each [`Action`] from [`Machine::poll_action`], carries
//! it out with its platform (storage, fetch, timers), and feeds what happened back with
//! [`Machine::handle`] — with the time. Between actions it waits for the provider or for
//! [`Machine::poll_timeout`], whichever comes first. When the machine says
//! [`Action::Finished`], its outcome is ready.
//!
//! Three machines share the actions:
//! - [`ChatTurn`]: a visitor's message — decide (rules, hours, a human owns it), canned
//!   reply or handoff, or the model's turn: knowledge, files, plugins, **admission**, the
//!   provider calls, **settlement**, what becomes of the reply (recorded, the knowledge
//!   base's "no answer", a handoff), the unanswered log and the turn's record.
//! - [`ModelCall`]: admission, one [`Turn`] and its settlement — the part of a chat turn the
//!   OpenAI-compatible API uses on its own. Admission and settlement are actions of the
//!   call itself, so no path can skip them.
//! - [`EventPass`]: a conversation's stored events played to the plugins that observe
//!   them, and what they ask for applied as a change.
//! - [`ReplayRun`]: a recorded conversation's visitor turns run again through [`ChatTurn`]
//!   on a scratch copy the machine keeps itself (nothing stored is changed), identical on
//!   every host.
//!
//! - [`SuiteRun`]: a tenant's test cases run against its draft configuration, each a
//!   scratch conversation through [`ChatTurn`], judged by [`crate::draft`].
//! - [`SummaryRun`]: a model rewrites a conversation's summary slot, after the answer of
//!   the turn that made it due ([`ChatTurn::summary_run`]).
//!
//! [`render`] makes the chat API's JSON answer or its stream's closing frames from an
//! [`Outcome`].

mod change;
mod events;
mod knowledge;
mod model;
mod render;
mod replay;
mod staged;
mod suite;
mod summarise;
mod unanswered;
mod visitor;

use std::collections::{BTreeMap, BTreeSet};

/// A plugin enabled for the tenant, as [`Input::Plugins`] hands it over.
pub use crate::turn::ActivePlugin;
pub use change::{Applied, Change, Effect, accept};
pub use events::EventPass;
pub use knowledge::{EMBEDDING_TIMEOUT_MS, Got, IndexPlan, Need, SearchPlan, invalid_source};
pub use model::ModelCall;
pub use render::{Rendered, render, render_accepted, render_delta};
pub use replay::ReplayRun;
pub use staged::{DraftSourcesPlan, staged_source_not_found};
pub use suite::SuiteRun;
pub use summarise::SummaryRun;
pub use unanswered::{
    GroupAnswer, MAX_GROUP_ANSWER_CHARS, MAX_GROUPS_LISTED, UnansweredPlan, answer_source,
    answer_source_id, group_json, parse_group_answer,
};
pub use visitor::{ChatTurn, Start};

use serde_json::Value;

use crate::api::ApiError;
use crate::attachment::Resolved;
use crate::conversation::Conversation;
use crate::gateway::{QuotaError, Report, Reservation};
use crate::knowledge::{RetrievedChunk, Unanswered};
use crate::plugin::{HookCall, PluginFailure, PluginSpec};
use crate::provider::{HttpRequest, ProviderError, ProviderEvent};
use crate::replay::TurnRecord;
use crate::time::Timestamp;
use crate::turn::{AttemptId, PluginCallId, TurnReply};
use crate::vocab::{Message, Status};

/// What a machine asks its host to do. Actions that say "feed back" wait for the matching
/// [`Input`]; the others need no answer.
#[derive(Clone, Debug)]
pub enum Action {
    /// Wait until this conversation's earlier turns are over (a host that runs one turn at a
    /// time per conversation holds the slot until [`Action::Finished`]), then feed back the
    /// conversation as stored now: [`Input::Loaded`].
    AwaitTurn,
    /// Apply `change` to the stored conversation as one atomic step — on the state as it is
    /// then, again if another writer won a race ([`Change::apply`]) — persist the messages it
    /// recorded with the new state, and publish its events (webhooks, plugins' `on-event`,
    /// live updates); feed back [`Input::Applied`].
    Apply(Change),
    /// Read the conversation as stored now with every message; feed back
    /// [`Input::Conversation`].
    ReadConversation,
    /// Search the tenant's knowledge base; feed back [`Input::Knowledge`].
    SearchKnowledge {
        /// The visitor's question.
        query: String,
        /// How many chunks.
        top_k: u8,
        /// Which knowledge base: the live one, or (a draft's test suite) the live one
        /// overlaid with the draft's staged sources ([`crate::chat::SearchPlan::in_scope`]).
        scope: crate::knowledge::Scope,
    },
    /// Read these stored files of the tenant (id, and whether the model wants the bytes
    /// rather than the extracted text); feed back [`Input::Files`].
    ReadFiles(Vec<(String, bool)>),
    /// Load the tenant's enabled plugins with their manifests; feed back [`Input::Plugins`].
    LoadPlugins,
    /// Ask the tenant's gateway to admit a turn estimated at `tokens`: reserve quota and
    /// say which targets the breakers refuse; feed back [`Input::Admission`].
    Admit {
        /// The turn's token estimate (prompt and reply).
        tokens: u64,
    },
    /// Send this provider request; feed back its events with [`Input::Provider`].
    CallProvider {
        /// The attempt the events belong to.
        attempt: AttemptId,
        /// The target (`provider/model`) being called.
        target: String,
        /// The request.
        request: HttpRequest,
    },
    /// Abandon this attempt (abort the fetch).
    CancelProvider {
        /// The attempt.
        attempt: AttemptId,
    },
    /// Run a plugin's hook within `spec`'s budget and grants; feed back
    /// [`Input::PluginAnswer`].
    CallPlugin {
        /// The call the answer belongs to.
        call: PluginCallId,
        /// The plugin's configuration.
        spec: PluginSpec,
        /// The hook and its arguments.
        hook: HookCall,
    },
    /// Show the client more reply text (streamed turns only).
    Delta(Delta),
    /// Report the turn's provider calls to the tenant's gateway (breakers, quota, usage).
    /// It need not delay the answer.
    Settle(Report),
    /// Keep this question the knowledge base could not answer, for the operator.
    LogUnanswered(Unanswered),
    /// Store the turn's record for the replay console.
    StoreRecord(TurnRecord),
    /// Write this structured line to the log.
    Log {
        /// `info`, `warn` or `error`.
        level: &'static str,
        /// The line's fields.
        line: Value,
    },
    /// The machine is done; take its outcome.
    Finished,
}

/// A piece of streamed reply text, and who is answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// The text.
    pub text: String,
    /// The target answering, when a provider is.
    pub target: Option<String>,
    /// The route that chose it.
    pub route: Option<String>,
    /// Provider calls so far.
    pub attempts: u32,
}

/// What the host feeds back: the answer to an action, a provider's event, or the time.
#[derive(Debug)]
pub enum Input {
    /// After [`Action::AwaitTurn`]: the conversation as stored now (`None`: it is gone).
    Loaded(Result<Option<Conversation>, ApiError>),
    /// After [`Action::Apply`].
    Applied(Result<Applied, ApiError>),
    /// After [`Action::ReadConversation`]: the conversation and its transcript (`None`: it
    /// is gone).
    Conversation(Result<Option<(Conversation, Vec<Message>)>, ApiError>),
    /// After [`Action::SearchKnowledge`]: the chunks, or why the search failed (the model
    /// then answers without them).
    Knowledge(Result<Vec<RetrievedChunk>, String>),
    /// After [`Action::ReadFiles`]: what could be read, by id (a missing file is left out).
    Files(BTreeMap<String, Resolved>),
    /// After [`Action::LoadPlugins`].
    Plugins(Vec<ActivePlugin>),
    /// After [`Action::Admit`].
    Admission(Result<Grant, Refusal>),
    /// Something happened to a provider call.
    Provider {
        /// The call.
        attempt: AttemptId,
        /// What happened.
        event: ProviderEvent,
    },
    /// After [`Action::CallPlugin`]: the runner's JSON, or how the call failed.
    PluginAnswer {
        /// The call.
        call: PluginCallId,
        /// The answer.
        answer: Result<Vec<u8>, PluginFailure>,
    },
    /// [`Machine::poll_timeout`]'s deadline passed.
    Timeout,
    /// The host has nothing in flight and no deadline to wait for: the machine cannot go
    /// on, and ends its model call with an error rather than wait forever.
    Stalled,
}

/// A machine the host drives: the same loop for every machine in this module.
pub trait Machine {
    /// The next thing to do, if any.
    fn poll_action(&mut self) -> Option<Action>;
    /// When to feed back [`Input::Timeout`] if nothing else happens first.
    fn poll_timeout(&self) -> Option<Timestamp>;
    /// Feeds back what happened, at `now`.
    fn handle(&mut self, now: Timestamp, input: Input);
}

/// What the tenant's gateway granted a turn at admission ([`Action::Admit`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The targets the breakers refuse: the turn is planned without them.
    pub blocked: BTreeSet<String>,
    /// The quota reserved for the turn, settled with its [`Report`].
    pub reservation: Option<Reservation>,
}

/// Why the tenant's gateway did not admit a turn.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// A quota or budget is used up: `429` with `Retry-After`.
    Quota(QuotaError),
    /// The gateway's shared state could not be read or changed.
    Host(ApiError),
}

/// Why a visitor's message got no reply (it is stored all the same).
#[derive(Clone, Debug)]
pub enum Failure {
    /// Every target failed (or the only one did): the typed provider error.
    Provider(ProviderError),
    /// A quota or budget refused the turn.
    Quota(QuotaError),
    /// Storage or another part of the host failed.
    Host(ApiError),
}

impl Failure {
    /// The stable code and the message the record keeps.
    pub fn code_and_message(&self) -> (&str, String) {
        match self {
            Failure::Provider(e) => (e.code(), e.to_string()),
            Failure::Quota(q) => ("quota_exceeded", q.to_string()),
            Failure::Host(e) => (e.code, e.message.clone()),
        }
    }
}

/// How a visitor's message was answered.
// One per turn, made once and read in place: boxing the reply would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The bot replied, and the reply is stored.
    Reply {
        /// The stored reply.
        message: Message,
        /// How it was produced.
        reply: TurnReply,
    },
    /// A message no model wrote: a rule's reply, a handoff notice, the knowledge base's
    /// honest "no answer".
    Notice {
        /// The stored message.
        message: Message,
        /// The conversation's status after it.
        status: Status,
        /// The API's responder: `rule`, `handoff` or `no_answer`.
        responder: &'static str,
    },
    /// Nothing is said: a human owns the conversation (or took it meanwhile).
    Silent {
        /// The conversation's status.
        status: Status,
    },
    /// No reply.
    Failed(Failure),
}

impl Outcome {
    /// How the turn's record says it ended.
    pub fn recorded(&self) -> crate::replay::Outcome {
        use crate::replay::Outcome as R;
        match self {
            Outcome::Reply { reply, .. } => R::Reply {
                responder: reply.responder.kind().to_owned(),
                target: reply.target.clone(),
            },
            Outcome::Notice { responder, .. } => R::Reply {
                responder: (*responder).to_owned(),
                target: None,
            },
            Outcome::Silent { .. } => R::Silent,
            Outcome::Failed(f) => {
                let (code, message) = f.code_and_message();
                R::Error {
                    code: code.to_owned(),
                    message,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
