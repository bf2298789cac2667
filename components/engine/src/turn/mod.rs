//! One bot turn: the sans-IO state machine that turns a prompt into a reply.
//!
//! A [`Turn`] owns no socket and reads no clock. The host drives it like this:
//!
//! ```text
//! let mut turn = conversation.start_turn(now, &config, &message, options)?;
//! loop {
//!     while let Some(action) = turn.poll_action() { /* call, cancel, stream, finish */ }
//!     // wait for the provider or for turn.poll_timeout(), whichever comes first, then
//!     turn.handle_provider_event(now, attempt, event); // or turn.handle_timeout(now)
//! }
//! ```
//!
//! A turn is the gateway at work: it plans the route's targets, calls the first, and on a
//! failure before the first token retries (backoff with jitter, or the provider's
//! `Retry-After`) or falls back to the next target, skipping targets whose circuit breaker
//! is open. The rule that matters most lives here too: a reply is finished only when the
//! provider said so (`[DONE]`, a finish reason or the format's terminal event for a stream,
//! a complete JSON body otherwise). A stream that breaks, stalls past its deadline or
//! carries an error event *after text reached the visitor* ends the turn with a typed
//! [`ProviderError`] (an explicit error event), never with the partial text passed off as a
//! reply; before any text was shown, the turn quietly moves on to the next attempt.
//!
//! This module holds the [`Turn`] and its state; its behaviour, by concern:
//! - `machine`: starting a turn, what it tells of itself, its actions and deadline;
//! - `attempt`: provider attempts — timeouts, decoding, retries and fallbacks;
//! - `plugins`: the plugin pipeline inside a turn (`before-model`, tools, `after-reply`);
//! - `prompt`: building the prompt, and text helpers;
//! - `options`, `reply`, `action`: the public types ([`TurnOptions`], [`ReplyMode`],
//!   [`TurnReply`], [`Responder`], [`Action`]).

use std::collections::{BTreeMap, VecDeque};

use crate::config::Timeouts;
use crate::gateway::route::Target;
use crate::gateway::trace::AttemptRecord;
use crate::gateway::{Price, RetryPolicy, Rng};
use crate::plugin::{Hook, PluginCallRecord, PluginContext, ToolRegistry};
use crate::provider::{FinishReason, ProviderError, Usage};
use crate::sse::SseParser;
use crate::time::Timestamp;
use crate::wire::{PromptMessage, StreamDecoder, ToolCall};

mod action;
mod attempt;
mod machine;
mod options;
mod plugins;
mod prompt;
mod reply;

pub use action::{Action, AttemptId, PluginCallId};
pub use options::{DEFAULT_REPLY_TOKENS, HANDOFF_TOOL, ReplyMode, TurnOptions, handoff_tool};
pub(crate) use prompt::build_prompt;
pub use reply::{PluginHandoff, Responder, TurnReply};

/// A plugin enabled for the turn's tenant (defined beside the plugins' specs).
pub use crate::plugin::ActivePlugin;

/// The most body bytes buffered for a whole reply or an error body.
const MAX_BODY: usize = 8 << 20;

#[derive(Debug)]
struct Call {
    attempt: AttemptId,
    target: usize,
    started: Timestamp,
    model: String,
    /// Pending until the first token (stream) or the head (whole) arrives.
    first_token_deadline: Option<Timestamp>,
    /// Pending until the response head arrives.
    connect_deadline: Option<Timestamp>,
    total_deadline: Timestamp,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    /// The server answered a stream request with a whole JSON body.
    buffer_whole: bool,
    body: Vec<u8>,
    sse: SseParser,
    decoder: StreamDecoder,
    tool_calls: Vec<ToolCall>,
    text: String,
    first_token_at: Option<Timestamp>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Debug)]
enum State {
    Calling(Box<Call>),
    /// Backing off before the next attempt on the current target.
    Waiting {
        until: Timestamp,
    },
    /// Waiting for a plugin's answer.
    Plugin(Box<PendingPlugin>),
    Done,
}

/// Where the turn is in its plugin hooks.
#[derive(Debug)]
enum Stage {
    /// `before-model`, the next plugin to ask from this index.
    BeforeModel,
    /// Running the model's calls to plugins' tools.
    Tools {
        reply: TurnReply,
        calls: VecDeque<ToolCall>,
        results: Vec<(ToolCall, String)>,
    },
    /// `after-reply` on this reply.
    AfterReply { reply: TurnReply },
}

/// What the trace needs of a finished plugin call.
#[derive(Debug)]
struct CallInfo {
    index: usize,
    hook: Hook,
    started: Timestamp,
    tool: Option<ToolCall>,
}

#[derive(Debug)]
struct PendingPlugin {
    call: PluginCallId,
    /// Index into the turn's plugins.
    index: usize,
    hook: Hook,
    started: Timestamp,
    deadline: Timestamp,
    tool: Option<ToolCall>,
    stage: Stage,
}

/// One bot turn in flight.
#[derive(Debug)]
pub struct Turn {
    mode: ReplyMode,
    started: Timestamp,
    state: State,
    actions: VecDeque<Action>,
    targets: Vec<Target>,
    prices: Vec<Option<Price>>,
    /// The target being tried, and how often it has been.
    current: usize,
    tries: u32,
    attempts: u32,
    prompt: Vec<PromptMessage>,
    trimmed: bool,
    secrets: BTreeMap<String, String>,
    overrides: (Option<f64>, Option<u32>, Vec<crate::wire::ToolSpec>),
    timeouts: Timeouts,
    retry: RetryPolicy,
    rng: Rng,
    trace: Vec<AttemptRecord>,
    /// Text already reached the visitor: a failure now cannot be hidden by a fallback.
    streamed: bool,
    last_error: Option<ProviderError>,
    cost_micros: u64,
    all_priced: bool,
    plugins: Vec<ActivePlugin>,
    plugin_context: PluginContext,
    tools: ToolRegistry,
    plugin_calls: u32,
    plugin_records: Vec<PluginCallRecord>,
    /// Rounds of plugin tool calls so far (their attempts do not count against retries).
    tool_rounds: u32,
    /// Text of earlier rounds (before a tool call), prefixed to the final reply.
    earlier_text: String,
    /// After-reply hooks will judge the reply: stream nothing before they have.
    hold_deltas: bool,
    handoff_enabled: bool,
    question: String,
    /// The latest request sent: its target and body (for the turn's record; the body holds
    /// no secret, keys travel in headers).
    sent: Option<(String, Vec<u8>)>,
}

#[cfg(test)]
mod tests;
