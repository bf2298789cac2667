//! Kefu's dialogue engine.
//!
//! This crate does no I/O: it opens no socket, reads no clock and touches no storage or
//! platform API. Time comes in as an argument; work goes out as values the host carries out.
//! The Cloudflare Worker (`workers/`) and the Spin component are thin drivers around it, and
//! the [`sim`] module drives it with a fake clock, a scripted provider and an in-memory store.
//!
//! One chat turn, as every host runs it:
//!
//! 1. [`api::parse_chat_request`] validates the request; nothing is stored if it fails.
//! 2. [`Conversation::handle_visitor_message`] records the visitor's message; the host
//!    persists the [`Recorded`] message with [`Conversation::encode`] and emits its events.
//! 3. [`chat::ChatTurn`] takes it from there: the host polls it for [`chat::Action`]s (apply
//!    a change, search the knowledge base, read files, load plugins, admit, call the
//!    provider or a plugin, stream a delta, settle, log, store the turn's record) and feeds
//!    back [`chat::Input`]s, until [`chat::Action::Finished`]; [`chat::render`] makes the
//!    answer. The same loop drives [`chat::ModelCall`] (the OpenAI-compatible API) and
//!    [`chat::ReplayRun`] (a replay on a scratch copy).
//!
//! Each visitor turn leaves a [`replay::TurnRecord`] for the replay console: the decision,
//! the model turn, the state changes and the outcome.

pub mod api;
pub mod attachment;
pub mod auth;
pub mod chat;
pub mod config;
pub mod config_history;
pub mod conversation;
pub mod demo;
pub mod deployment;
pub mod destination;
pub mod dialogue;
pub mod draft;
pub mod error;
pub mod gateway;
pub mod handoff;
pub mod hours;
pub mod identity;
pub mod json;
pub mod knowledge;
pub mod models;
pub mod offline;
pub mod openai_api;
pub mod outbox;
pub mod plugin;
pub mod provider;
pub mod replay;
pub mod rules;
#[cfg(feature = "sim")]
pub mod sim;
pub(crate) mod sort;
pub mod sse;
pub mod summary;
pub mod time;
pub mod turn;
pub mod visitor_limit;
pub mod vocab;
pub mod webhook;
pub mod wire;
pub use wire::{anthropic, gemini, openai, workers_ai};

pub use config::TenantConfig;
pub use conversation::{
    Conversation, ConversationId, Message, Part, Recorded, Role, Status, TenantId,
};
pub use provider::{Header, HttpRequest, ProviderError, ProviderEvent};
pub use time::Timestamp;
pub use turn::{Action, AttemptId, ReplyMode, Responder, Turn, TurnOptions, TurnReply};

use serde_json::{Value, json};

/// This engine's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Something observers (webhooks, live chat, logs) may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A conversation received its first message.
    ConversationCreated {
        /// Which conversation.
        conversation: ConversationId,
    },
    /// A message was stored.
    MessageCreated {
        /// Which conversation.
        conversation: ConversationId,
        /// The message's sequence number.
        seq: u32,
        /// Who wrote it.
        role: Role,
    },
    /// The conversation changed hands.
    StatusChanged {
        /// Which conversation.
        conversation: ConversationId,
        /// The new status.
        status: Status,
    },
    /// An agent took the conversation (claimed, or received it by transfer).
    Assigned {
        /// Which conversation.
        conversation: ConversationId,
        /// The agent.
        agent: String,
    },
    /// The visitor rated the conversation.
    CsatSubmitted {
        /// Which conversation.
        conversation: ConversationId,
        /// 1 (bad) to 5 (great).
        score: u8,
    },
}

impl Event {
    /// The conversation the event happened in.
    pub fn conversation(&self) -> &ConversationId {
        match self {
            Event::ConversationCreated { conversation }
            | Event::MessageCreated { conversation, .. }
            | Event::StatusChanged { conversation, .. }
            | Event::Assigned { conversation, .. }
            | Event::CsatSubmitted { conversation, .. } => conversation,
        }
    }

    /// The event's type name (as webhooks will spell it).
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConversationCreated { .. } => "conversation.created",
            Event::MessageCreated { .. } => "message.created",
            Event::StatusChanged { .. } => "conversation.status_changed",
            Event::Assigned { .. } => "conversation.assigned",
            Event::CsatSubmitted { .. } => "csat.submitted",
        }
    }

    /// The event as a JSON object, for logs and (later) webhook payloads.
    pub fn to_json(&self) -> Value {
        match self {
            Event::ConversationCreated { conversation } => {
                json!({"type": self.name(), "conversation_id": conversation.as_str()})
            }
            Event::MessageCreated {
                conversation,
                seq,
                role,
            } => {
                json!({"type": self.name(), "conversation_id": conversation.as_str(), "seq": seq, "role": role.as_str()})
            }
            Event::StatusChanged {
                conversation,
                status,
            } => {
                json!({"type": self.name(), "conversation_id": conversation.as_str(), "status": status.as_str()})
            }
            Event::Assigned {
                conversation,
                agent,
            } => {
                json!({"type": self.name(), "conversation_id": conversation.as_str(), "agent": agent})
            }
            Event::CsatSubmitted {
                conversation,
                score,
            } => {
                json!({"type": self.name(), "conversation_id": conversation.as_str(), "score": score})
            }
        }
    }
}
