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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::{TenantConfig, Timeouts};
use crate::gateway::retry::Disposition;
use crate::gateway::route::{RouteContext, Target};
use crate::gateway::trace::{AttemptOutcome, AttemptRecord, error_kind};
use crate::gateway::{Price, RetryPolicy, Rng};
use crate::offline;
use crate::plugin::{
    self, Answer, FailureKind, Hook, HookCall, ModelDecision, PluginCallRecord, PluginContext,
    PluginFailure, PluginSpec, ReplyDecision, ToolRegistry,
};
use crate::provider::{FinishReason, ProviderError, ProviderEvent, TimeoutPhase, Usage};
use crate::sse::SseParser;
use crate::time::Timestamp;
use crate::vocab::{Message, Role};
use crate::wire::{
    self, Endpoint, ModelRequest, PromptMessage, PromptRole, StreamDecoder, StreamItem, ToolCall,
};

use core::time::Duration;

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

/// Identifies one provider call within a turn; events for another attempt are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttemptId(pub u32);

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

/// Identifies one plugin call within a turn; answers to another call are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PluginCallId(pub u32);

/// A plugin enabled for the turn's tenant (defined beside the plugins' specs).
pub use crate::plugin::ActivePlugin;

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
    Finished(Result<TurnReply, ProviderError>),
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
        }
    }
}

/// The most body bytes buffered for a whole reply or an error body.
const MAX_BODY: usize = 8 << 20;

/// Reply tokens reserved for a target that sets no `max_tokens`.
pub const DEFAULT_REPLY_TOKENS: u32 = 1024;

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

impl Turn {
    /// Starts a turn on `prompt` under `config` (the offline responder answers when the
    /// configuration has no model).
    pub fn new(
        now: Timestamp,
        config: &TenantConfig,
        prompt: Vec<PromptMessage>,
        options: TurnOptions,
    ) -> Self {
        let TurnOptions {
            mode,
            secrets,
            blocked,
            seed,
            route,
            target,
            temperature,
            max_tokens,
            tools,
            knowledge: _,
            mut context,
            attachments: _,
            plugins,
            plugin_scope,
        } = options;
        let plugins: Vec<ActivePlugin> = plugins.into_iter().filter(|p| p.spec.enabled).collect();
        let registry = ToolRegistry::new(plugins.iter().map(|p| (p.spec.id.as_str(), &p.manifest)));
        let hold_deltas = plugins.iter().any(|p| p.manifest.hooks.after_reply);
        let (tenant, conversation_id) = plugin_scope.unwrap_or_default();
        let mut rng = Rng::new(seed);
        let mut turn = Turn {
            mode,
            started: now,
            state: State::Done,
            actions: VecDeque::new(),
            targets: Vec::new(),
            prices: Vec::new(),
            current: 0,
            tries: 0,
            attempts: 0,
            prompt,
            trimmed: false,
            secrets,
            overrides: (temperature, max_tokens, tools),
            timeouts: config.timeouts,
            retry: config.retry.clone(),
            rng: Rng::new(0),
            trace: Vec::new(),
            streamed: false,
            last_error: None,
            cost_micros: 0,
            all_priced: true,
            plugins,
            plugin_context: PluginContext {
                tenant,
                conversation_id,
                plugin_id: String::new(),
                language: None,
            },
            tools: registry,
            plugin_calls: 0,
            plugin_records: Vec::new(),
            tool_rounds: 0,
            earlier_text: String::new(),
            hold_deltas,
            handoff_enabled: config.handoff.enabled,
            question: String::new(),
            sent: None,
        };
        let question = last_user_text(&turn.prompt);
        turn.question.clone_from(&question);
        if !config.has_models() {
            let text = offline::answer(&config.faq, config.name.as_deref(), &question);
            if mode == ReplyMode::Stream {
                for piece in split_for_streaming(&text) {
                    turn.actions.push_back(Action::Delta(piece.to_owned()));
                }
            }
            turn.actions.push_back(Action::Finished(Ok(TurnReply {
                text,
                responder: Responder::Offline,
                target: None,
                route: None,
                attempts: 0,
                finish_reason: FinishReason::Stop,
                usage: None,
                cost_micros: None,
                tool_calls: Vec::new(),
                plugin_handoff: None,
                time_to_first_token: Some(Duration::ZERO),
                duration: Duration::ZERO,
            })));
            return turn;
        }
        if context.plan.is_none() {
            context.plan.clone_from(&config.plan);
        }
        if context.language.is_none() {
            context.language = Some(
                match offline::detect_lang(&question) {
                    offline::Lang::Zh => "zh",
                    offline::Lang::En => "en",
                }
                .to_owned(),
            );
        }
        context.has_images |= turn.prompt.iter().any(|m| {
            m.parts
                .iter()
                .any(|p| matches!(p, crate::vocab::Part::Image { .. }))
        });
        let plan = match &target {
            Some(key) => config
                .all_targets()
                .into_iter()
                .filter(|t| &t.key == key)
                .collect(),
            None => config.plan(route.as_deref(), &context, &mut rng),
        };
        let (open, closed): (Vec<Target>, Vec<Target>) =
            plan.into_iter().partition(|t| blocked.contains(&t.key));
        for t in &open {
            turn.trace.push(AttemptRecord {
                target: t.key.clone(),
                route: t.route.clone(),
                started_ms: 0,
                status: None,
                latency_ms: 0,
                ttft_ms: None,
                usage: None,
                cost_micros: None,
                outcome: AttemptOutcome::SkippedOpenBreaker,
            });
        }
        // With every breaker open, probing the first target beats refusing the visitor.
        turn.targets = if closed.is_empty() {
            open.into_iter().take(1).collect()
        } else {
            closed
        };
        turn.prices = turn.targets.iter().map(|t| config.price_for(t)).collect();
        turn.rng = rng;
        turn.plugin_context.language.clone_from(&context.language);
        turn.overrides.2.extend(turn.tools.specs());
        if turn.targets.is_empty() {
            turn.finish(Err(ProviderError::Unreachable {
                reason: "the route has no targets".into(),
            }));
        } else {
            turn.next_before_model(now, 0);
        }
        turn
    }

    /// Tokens to reserve against quotas before the turn's calls: the prompt (estimated at
    /// three characters a token, generous for most scripts) plus the reply limit.
    pub fn estimated_tokens(&self) -> u64 {
        let chars: usize = self
            .prompt
            .iter()
            .flat_map(|m| m.parts.iter())
            .map(|p| match p {
                crate::vocab::Part::Text(t) => t.chars().count(),
                _ => 1000,
            })
            .sum();
        let reply = self
            .overrides
            .1
            .or_else(|| self.targets.first().and_then(|t| t.max_tokens))
            .unwrap_or(DEFAULT_REPLY_TOKENS);
        (chars as u64).div_ceil(3) + u64::from(reply)
    }

    /// The target being tried now (the one answering, once text arrived).
    pub fn current_target(&self) -> Option<&Target> {
        self.targets.get(self.current)
    }

    /// Provider calls made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The targets this turn will try, in order (after breakers).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The latest request the turn sent — the answering one once it finished — as
    /// (`provider/model`, body bytes): the exact prompt the provider's adapter produced.
    /// Keys travel in headers, never in the body, so it holds no secret.
    pub fn sent_request(&self) -> Option<(&str, &[u8])> {
        self.sent.as_ref().map(|(t, b)| (t.as_str(), b.as_slice()))
    }

    /// What every attempt did so far.
    pub fn trace(&self) -> &[AttemptRecord] {
        &self.trace
    }

    /// Tokens all attempts used, as reported.
    pub fn used_tokens(&self) -> u64 {
        self.trace
            .iter()
            .filter_map(|a| a.usage)
            .map(|u| u64::from(u.total_tokens))
            .sum()
    }

    /// The next thing the host must do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the host must call [`Turn::handle_timeout`] if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.state {
            State::Calling(c) => [c.first_token_deadline, c.connect_deadline]
                .into_iter()
                .flatten()
                .chain([c.total_deadline])
                .min(),
            State::Waiting { until } => Some(*until),
            State::Plugin(p) => Some(p.deadline),
            State::Done => None,
        }
    }

    /// The plugin calls made so far, for the trace.
    pub fn plugin_calls(&self) -> &[PluginCallRecord] {
        &self.plugin_records
    }

    /// Whether the turn has produced its final action.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn start_attempt(&mut self, now: Timestamp) {
        let target = &self.targets[self.current];
        self.tries += 1;
        self.attempts += 1;
        let attempt = AttemptId(self.attempts);
        let api_key = target
            .api_key_secret
            .as_ref()
            .and_then(|name| self.secrets.get(name));
        if let (Some(name), None) = (&target.api_key_secret, api_key) {
            // A missing secret is this target's failure, not the turn's: another target may
            // have its key.
            let error = ProviderError::Auth {
                status: 0,
                message: format!("the secret {name} is not set"),
            };
            self.state = State::Calling(Box::new(self.new_call(attempt, now)));
            self.fail(now, error, false);
            return;
        }
        let request = wire::build_request(
            &Endpoint {
                kind: target.kind,
                base_url: &target.base_url,
                model: &target.model,
                api_key: api_key.map(String::as_str),
            },
            &ModelRequest {
                messages: self.prompt.clone(),
                tools: self.overrides.2.clone(),
                temperature: self.overrides.0.or(target.temperature),
                max_tokens: self.overrides.1.or(target.max_tokens),
                stream: self.mode == ReplyMode::Stream,
            },
        );
        self.state = State::Calling(Box::new(self.new_call(attempt, now)));
        let target = self.targets[self.current].key.clone();
        self.sent = Some((target.clone(), request.body.clone()));
        self.actions.push_back(Action::CallProvider {
            attempt,
            target,
            request,
        });
    }

    fn new_call(&self, attempt: AttemptId, now: Timestamp) -> Call {
        let target = &self.targets[self.current];
        let t = self.timeouts;
        Call {
            attempt,
            target: self.current,
            started: now,
            model: target.model.clone(),
            first_token_deadline: Some(now + Duration::from_millis(t.first_token_ms.into())),
            connect_deadline: Some(now + Duration::from_millis(t.connect_ms.into())),
            total_deadline: now + Duration::from_millis(t.total_ms.into()),
            status: None,
            headers: Vec::new(),
            buffer_whole: self.mode == ReplyMode::Whole,
            body: Vec::new(),
            sse: SseParser::new(),
            decoder: StreamDecoder::new(target.kind),
            tool_calls: Vec::new(),
            text: String::new(),
            first_token_at: None,
            finish: None,
            usage: None,
            done: false,
        }
    }

    /// A deadline may have passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match &self.state {
            State::Calling(call) => {
                let phase = if now >= call.total_deadline {
                    TimeoutPhase::Total
                } else if call.connect_deadline.is_some_and(|d| now >= d) {
                    TimeoutPhase::Connect
                } else if call.first_token_deadline.is_some_and(|d| now >= d) {
                    TimeoutPhase::FirstToken
                } else {
                    return;
                };
                self.fail(now, ProviderError::Timeout { phase }, true);
            }
            State::Waiting { until } if now >= *until => self.start_attempt(now),
            State::Plugin(p) if now >= p.deadline => {
                let (call, budget) = (p.call, ms(p.deadline.since(p.started)));
                self.handle_plugin_answer(
                    now,
                    call,
                    Err(PluginFailure::new(
                        FailureKind::Timeout,
                        format!("no answer within its budget of {budget} ms"),
                    )),
                );
            }
            _ => {}
        }
    }

    /// Something happened to provider call `attempt`.
    pub fn handle_provider_event(
        &mut self,
        now: Timestamp,
        attempt: AttemptId,
        event: ProviderEvent,
    ) {
        let State::Calling(call) = &mut self.state else {
            return;
        };
        if call.attempt != attempt {
            return;
        }
        // A host that was busy may deliver events after a deadline: the deadline wins.
        self.handle_timeout(now);
        let State::Calling(call) = &mut self.state else {
            return;
        };
        if call.attempt != attempt {
            return;
        }
        // After End or Failed the connection is gone; after a bad head or body it is open.
        let still_open = matches!(event, ProviderEvent::Head { .. } | ProviderEvent::Data(_));
        let result = match event {
            ProviderEvent::Head { status, headers } => {
                let is_json = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("content-type")
                        && v.to_ascii_lowercase().contains("json")
                });
                call.status = Some(status);
                call.connect_deadline = None;
                call.buffer_whole |= !(200..300).contains(&status) || is_json;
                call.headers = headers;
                if self.mode == ReplyMode::Whole && (200..300).contains(&status) {
                    call.first_token_deadline = None;
                }
                Ok(None)
            }
            ProviderEvent::Data(bytes) => self.on_data(now, &bytes).map(|()| None),
            ProviderEvent::End => self.on_end(now).map(Some),
            ProviderEvent::Failed { reason } => Err(match call.status {
                None => ProviderError::Unreachable { reason },
                Some(_) => ProviderError::StreamInterrupted {
                    received_chars: call.text.chars().count(),
                },
            }),
        };
        match result {
            Ok(Some(reply)) => self.reply_ready(now, reply),
            Ok(None) => {}
            Err(e) => self.fail(now, e, still_open),
        }
    }

    fn on_data(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), ProviderError> {
        let State::Calling(call) = &mut self.state else {
            return Ok(());
        };
        if call.status.is_none() {
            return Err(ProviderError::Malformed {
                detail: "body bytes before a response head".into(),
            });
        }
        if call.buffer_whole {
            if call.body.len() + bytes.len() > MAX_BODY {
                return Err(ProviderError::Malformed {
                    detail: format!("response body exceeds {MAX_BODY} bytes"),
                });
            }
            call.body.extend_from_slice(bytes);
            return Ok(());
        }
        let mut events = Vec::new();
        call.sse
            .feed(bytes, &mut events)
            .map_err(|e| ProviderError::Malformed {
                detail: e.to_string(),
            })?;
        let mut items = Vec::new();
        for event in &events {
            call.decoder.decode(event, &mut items)?;
        }
        for item in items {
            match item {
                StreamItem::Delta(text) => {
                    if call.first_token_at.is_none() {
                        call.first_token_at = Some(now);
                        call.first_token_deadline = None;
                    }
                    call.text.push_str(&text);
                    if self.mode == ReplyMode::Stream && !self.hold_deltas {
                        self.streamed = true;
                        self.actions.push_back(Action::Delta(text));
                    }
                }
                StreamItem::ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments,
                } => {
                    let index = index as usize;
                    if call.tool_calls.len() <= index {
                        call.tool_calls.resize_with(index + 1, || ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                    }
                    let tc = &mut call.tool_calls[index];
                    if let Some(id) = id {
                        tc.id = id;
                    }
                    if let Some(name) = name {
                        tc.name = name;
                    }
                    tc.arguments.push_str(&arguments);
                }
                StreamItem::Finish(reason) => call.finish = Some(reason),
                StreamItem::Usage(u) => call.usage = Some(u),
                StreamItem::Model(m) => call.model = m,
                StreamItem::Done => call.done = true,
            }
        }
        Ok(())
    }

    fn on_end(&mut self, now: Timestamp) -> Result<TurnReply, ProviderError> {
        let State::Calling(call) = &mut self.state else {
            return Err(ProviderError::Malformed {
                detail: "turn already finished".into(),
            });
        };
        let status = call.status.ok_or_else(|| ProviderError::Malformed {
            detail: "end before a response head".into(),
        })?;
        if !(200..300).contains(&status) {
            return Err(wire::classify_error(
                call.decoder.kind(),
                status,
                &call.headers,
                &call.body,
            ));
        }
        if call.buffer_whole {
            let completion = wire::parse_response(call.decoder.kind(), &call.body)?;
            if let Some(m) = completion.model {
                call.model = m;
            }
            if self.mode == ReplyMode::Stream && !completion.text.is_empty() && !self.hold_deltas {
                self.streamed = true;
                self.actions
                    .push_back(Action::Delta(completion.text.clone()));
            }
            call.text = completion.text;
            call.tool_calls = completion.tool_calls;
            call.finish = completion.finish_reason.or(Some(FinishReason::Stop));
            call.usage = completion.usage;
            call.first_token_at.get_or_insert(now);
        } else if !call.decoder.is_complete() || (!call.done && call.sse.has_partial()) {
            // The body ended cleanly at the transport level, but the stream never said it
            // was complete: this is a cut, not a reply.
            return Err(ProviderError::StreamInterrupted {
                received_chars: call.text.chars().count(),
            });
        }
        // A reply may be only tool calls (the model asked for a tool or a handoff); with
        // neither text nor calls it is nothing at all.
        if call.text.trim().is_empty() && call.tool_calls.is_empty() {
            return Err(match call.finish {
                Some(FinishReason::ContentFilter) => ProviderError::ContentFiltered {
                    message: "the reply was filtered".into(),
                },
                _ => ProviderError::Malformed {
                    detail: "the provider returned no text".into(),
                },
            });
        }
        let call_target = call.target;
        let cost = self.prices[call_target]
            .zip(call.usage)
            .map(|(p, u)| p.cost_micros(&u));
        let record = AttemptRecord {
            target: self.targets[call_target].key.clone(),
            route: self.targets[call_target].route.clone(),
            started_ms: ms(call.started.since(self.started)),
            status: call.status,
            latency_ms: ms(now.since(call.started)),
            ttft_ms: call.first_token_at.map(|t| ms(t.since(call.started))),
            usage: call.usage,
            cost_micros: cost,
            outcome: AttemptOutcome::Success,
        };
        let mut reply = TurnReply {
            text: core::mem::take(&mut call.text),
            responder: Responder::Provider {
                model: call.model.clone(),
            },
            target: Some(record.target.clone()),
            route: Some(record.route.clone()),
            attempts: self.attempts,
            finish_reason: call.finish.clone().unwrap_or(FinishReason::Stop),
            usage: call.usage,
            cost_micros: None,
            tool_calls: core::mem::take(&mut call.tool_calls),
            plugin_handoff: None,
            time_to_first_token: call.first_token_at.map(|t| t.since(self.started)),
            duration: now.since(self.started),
        };
        self.add_cost(cost);
        self.trace.push(record);
        reply.cost_micros = self.all_priced.then_some(self.cost_micros);
        Ok(reply)
    }

    fn add_cost(&mut self, cost: Option<u64>) {
        match cost {
            Some(c) => self.cost_micros += c,
            None => self.all_priced = false,
        }
    }

    /// The current attempt failed: record it, then retry, fall back or give up.
    fn fail(&mut self, now: Timestamp, mut error: ProviderError, cancel: bool) {
        let secrets: Vec<&str> = self.secrets.values().map(String::as_str).collect();
        error.redact(&secrets);
        let State::Calling(call) = &self.state else {
            return;
        };
        if cancel {
            self.actions.push_back(Action::CancelProvider {
                attempt: call.attempt,
            });
        }
        let (call_started, status, first_token_at, usage, target_idx) = (
            call.started,
            call.status,
            call.first_token_at,
            call.usage,
            call.target,
        );
        let next = if self.mode == ReplyMode::Stream && self.streamed {
            // The visitor saw part of this reply: say it broke rather than splice another
            // model's answer onto it.
            Disposition::Stop
        } else if self.attempts - self.tool_rounds >= self.retry.max_attempts {
            Disposition::Stop
        } else {
            self.retry.dispose(&error, self.tries, &mut self.rng)
        };
        let next = match next {
            Disposition::ShrinkContext => self.shrink_context(),
            Disposition::Fallback if self.current + 1 >= self.targets.len() => Disposition::Stop,
            other => other,
        };
        let cost = self.prices[target_idx]
            .zip(usage)
            .map(|(p, u)| p.cost_micros(&u));
        if usage.is_some() {
            self.add_cost(cost);
        }
        self.trace.push(AttemptRecord {
            target: self.targets[target_idx].key.clone(),
            route: self.targets[target_idx].route.clone(),
            started_ms: ms(call_started.since(self.started)),
            status,
            latency_ms: ms(now.since(call_started)),
            ttft_ms: first_token_at.map(|t| ms(t.since(call_started))),
            usage,
            cost_micros: cost,
            outcome: AttemptOutcome::Failure {
                code: error_kind(&error).into(),
                message: error.to_string(),
                next: match &next {
                    Disposition::Retry(_) => "retry",
                    Disposition::Fallback => "fallback",
                    Disposition::ShrinkContext => "shrink_context",
                    Disposition::Stop => "stop",
                }
                .into(),
            },
        });
        match next {
            Disposition::Retry(wait) => {
                self.last_error = Some(error);
                if wait.is_zero() {
                    self.start_attempt(now);
                } else {
                    self.state = State::Waiting { until: now + wait };
                }
            }
            Disposition::Fallback => {
                self.last_error = Some(error);
                self.current += 1;
                self.tries = 0;
                self.start_attempt(now);
            }
            // `shrink_context` already moved to a larger target or trimmed the prompt.
            Disposition::ShrinkContext => {
                self.last_error = Some(error);
                self.start_attempt(now);
            }
            Disposition::Stop => self.finish(Err(error)),
        }
    }

    /// After "context too long": move to a later target with a larger context window, or
    /// (once) drop the older half of the history and retry; otherwise stop.
    fn shrink_context(&mut self) -> Disposition {
        let here = self.targets[self.current].context_window.unwrap_or(0);
        if let Some(j) = (self.current + 1..self.targets.len())
            .find(|&j| self.targets[j].context_window.is_some_and(|w| w > here))
        {
            self.current = j;
            self.tries = 0;
            return Disposition::ShrinkContext;
        }
        if !self.trimmed {
            let (system, rest): (Vec<PromptMessage>, Vec<PromptMessage>) =
                core::mem::take(&mut self.prompt)
                    .into_iter()
                    .partition(|m| m.role == PromptRole::System);
            let keep = rest.len().div_ceil(2).max(1);
            let dropped = rest.len() - keep;
            self.prompt = system
                .into_iter()
                .chain(rest.into_iter().skip(dropped))
                .collect();
            self.trimmed = dropped > 0;
            if self.trimmed {
                self.tries = 0;
                return Disposition::ShrinkContext;
            }
        }
        Disposition::Stop
    }

    // ---- Plugins ------------------------------------------------------------------------

    fn context_for(&self, index: usize) -> PluginContext {
        PluginContext {
            plugin_id: self.plugins[index].spec.id.clone(),
            ..self.plugin_context.clone()
        }
    }

    fn call_plugin(
        &mut self,
        now: Timestamp,
        index: usize,
        hook: HookCall,
        tool: Option<ToolCall>,
        stage: Stage,
    ) {
        self.plugin_calls += 1;
        let call = PluginCallId(self.plugin_calls);
        let spec = self.plugins[index].spec.clone();
        self.state = State::Plugin(Box::new(PendingPlugin {
            call,
            index,
            hook: hook.hook(),
            started: now,
            deadline: now + Duration::from_millis(spec.budget_ms().into()),
            tool,
            stage,
        }));
        self.actions
            .push_back(Action::CallPlugin { call, spec, hook });
    }

    fn record_plugin(&mut self, now: Timestamp, call: &CallInfo, outcome: plugin::CallOutcome) {
        let active = &self.plugins[call.index];
        self.plugin_records.push(PluginCallRecord {
            plugin_id: active.spec.id.clone(),
            plugin: active.manifest.name.clone(),
            hook: call.hook,
            tool: call.tool.as_ref().map(|t| t.name.clone()),
            duration_ms: ms(now.since(call.started)),
            outcome,
        });
    }

    /// Asks the next plugin (from `from`) with a `before-model` hook about the prompt, or
    /// starts the first attempt when none is left.
    fn next_before_model(&mut self, now: Timestamp, from: usize) {
        let next =
            (from..self.plugins.len()).find(|&i| self.plugins[i].manifest.hooks.before_model);
        let Some(index) = next else {
            self.start_attempt(now);
            return;
        };
        let target = self
            .targets
            .first()
            .map(|t| t.key.clone())
            .unwrap_or_default();
        let hook = HookCall::BeforeModel {
            ctx: self.context_for(index),
            request: plugin::plugin_view(&target, &self.prompt),
        };
        self.call_plugin(now, index, hook, None, Stage::BeforeModel);
    }

    /// A model reply arrived: run the plugin tools it called, or let `after-reply` hooks
    /// judge it, then finish.
    fn reply_ready(&mut self, now: Timestamp, mut reply: TurnReply) {
        let wants_handoff = reply.tool_calls.iter().any(|c| c.name == HANDOFF_TOOL);
        let calls: VecDeque<ToolCall> = reply
            .tool_calls
            .iter()
            .filter(|c| self.tools.owner(&c.name).is_some())
            .cloned()
            .collect();
        if !wants_handoff && !calls.is_empty() && self.tool_rounds < plugin::MAX_TOOL_ROUNDS {
            let stage = Stage::Tools {
                reply,
                calls,
                results: Vec::new(),
            };
            self.next_tool(now, stage);
            return;
        }
        if !self.earlier_text.is_empty() {
            reply.text = format!("{}{}", self.earlier_text, reply.text);
        }
        self.next_after_reply(now, 0, reply);
    }

    fn next_tool(&mut self, now: Timestamp, stage: Stage) {
        let Stage::Tools {
            reply,
            mut calls,
            results,
        } = stage
        else {
            return;
        };
        let Some(tool) = calls.pop_front() else {
            self.continue_after_tools(now, reply, results);
            return;
        };
        let owner = self.tools.owner(&tool.name).unwrap_or_default().to_owned();
        let index = self
            .plugins
            .iter()
            .position(|p| p.spec.id == owner)
            .unwrap_or_default();
        let hook = HookCall::CallTool {
            ctx: self.context_for(index),
            name: tool.name.clone(),
            arguments: tool.arguments.clone(),
        };
        let stage = Stage::Tools {
            reply,
            calls,
            results,
        };
        self.call_plugin(now, index, hook, Some(tool), stage);
    }

    /// Every tool call of the round has its result: show them to the model and ask again
    /// (on the target that called them).
    fn continue_after_tools(
        &mut self,
        now: Timestamp,
        reply: TurnReply,
        results: Vec<(ToolCall, String)>,
    ) {
        self.tool_rounds += 1;
        self.earlier_text.push_str(&reply.text);
        let mut assistant = PromptMessage::text(PromptRole::Assistant, reply.text);
        if let Some(crate::vocab::Part::Text(t)) = assistant.parts.first()
            && t.is_empty()
        {
            assistant.parts.clear();
        }
        assistant.tool_calls = results.iter().map(|(c, _)| c.clone()).collect();
        self.prompt.push(assistant);
        for (call, result) in results {
            let mut message = PromptMessage::text(PromptRole::Tool, result);
            message.tool_call_id = Some(call.id);
            self.prompt.push(message);
        }
        if self.tool_rounds >= plugin::MAX_TOOL_ROUNDS {
            // The last round: the model must answer in words now.
            let tools = &self.tools;
            self.overrides.2.retain(|t| tools.owner(&t.name).is_none());
        }
        self.tries = 0;
        self.start_attempt(now);
    }

    fn next_after_reply(&mut self, now: Timestamp, from: usize, reply: TurnReply) {
        let next = (from..self.plugins.len()).find(|&i| self.plugins[i].manifest.hooks.after_reply);
        let Some(index) = next else {
            self.release(reply);
            return;
        };
        if reply.text.trim().is_empty() {
            // Nothing to judge (a handoff call without words).
            self.release(reply);
            return;
        }
        let hook = HookCall::AfterReply {
            ctx: self.context_for(index),
            question: self.question.clone(),
            reply: reply.text.clone(),
        };
        self.call_plugin(now, index, hook, None, Stage::AfterReply { reply });
    }

    /// Finishes with `reply`, streaming it now if deltas were held for the hooks.
    fn release(&mut self, reply: TurnReply) {
        if self.mode == ReplyMode::Stream && self.hold_deltas && !reply.text.is_empty() {
            for piece in split_for_streaming(&reply.text) {
                self.actions.push_back(Action::Delta(piece.to_owned()));
            }
        }
        self.finish(Ok(reply));
    }

    /// A reply the plugins replaced by a handoff or a refusal; `text` is what the visitor
    /// gets instead (empty for a handoff: the host's handoff says the rest).
    fn replaced_reply(
        &self,
        now: Timestamp,
        text: String,
        handoff: Option<PluginHandoff>,
        responder: Option<Responder>,
        base: Option<TurnReply>,
    ) -> TurnReply {
        let mut reply = base.unwrap_or_else(|| TurnReply {
            text: String::new(),
            responder: Responder::Offline,
            target: None,
            route: None,
            attempts: self.attempts,
            finish_reason: FinishReason::Stop,
            usage: None,
            cost_micros: None,
            tool_calls: Vec::new(),
            plugin_handoff: None,
            time_to_first_token: Some(now.since(self.started)),
            duration: now.since(self.started),
        });
        reply.text = text;
        reply.tool_calls.clear();
        reply.plugin_handoff = handoff;
        if let Some(r) = responder {
            reply.responder = r;
        }
        reply
    }

    fn language_is_zh(&self) -> bool {
        self.plugin_context
            .language
            .as_deref()
            .is_some_and(|l| l.starts_with("zh"))
    }

    /// What the visitor reads when a plugin blocked a reply.
    fn blocked_sentence(&self) -> String {
        if self.language_is_zh() {
            "抱歉，这个问题我无法在这里回答。还有其他可以帮您的吗？".into()
        } else {
            "I'm sorry, I can't help with that here. Is there anything else I can do for you?"
                .into()
        }
    }

    /// A plugin answered (`Ok`: the runner's JSON) or failed: record it, apply what it
    /// decided, and go on with the next plugin or step. A failed call is skipped.
    pub fn handle_plugin_answer(
        &mut self,
        now: Timestamp,
        call: PluginCallId,
        answer: Result<Vec<u8>, PluginFailure>,
    ) {
        match &self.state {
            State::Plugin(p) if p.call == call => {}
            _ => return,
        }
        let State::Plugin(pending) = core::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        let PendingPlugin {
            index,
            hook,
            started,
            tool,
            stage,
            ..
        } = *pending;
        let pending = CallInfo {
            index,
            hook,
            started,
            tool,
        };
        let limit = self.plugins[pending.index].spec.max_output_bytes();
        let parsed = answer.and_then(|json| plugin::parse_answer(pending.hook, &json, limit));
        let failed = |e: &PluginFailure| plugin::CallOutcome::Failed {
            failure: e.kind,
            message: e.message.clone(),
        };
        let ok = |effect: String| plugin::CallOutcome::Ok { effect };
        let plugin_id = self.plugins[pending.index].spec.id.clone();
        let next_index = pending.index + 1;
        match stage {
            Stage::BeforeModel => {
                let decision = match parsed {
                    Ok(Answer::Model(d)) => plugin::check_model_decision(&d).map(|()| d),
                    Ok(_) => Err(PluginFailure::new(
                        FailureKind::Invalid,
                        "not a model decision",
                    )),
                    Err(e) => Err(e),
                };
                let decision = decision.and_then(|d| match d {
                    ModelDecision::Rewrite(texts) => {
                        let n = texts.len();
                        let before = self.prompt.clone();
                        plugin::apply_rewrite(&mut self.prompt, texts).map(|()| {
                            let changed = self
                                .prompt
                                .iter()
                                .zip(&before)
                                .filter(|(a, b)| a != b)
                                .count();
                            (
                                ModelDecision::Keep,
                                format!("rewrote {changed} of {n} messages"),
                            )
                        })
                    }
                    ModelDecision::Keep => Ok((ModelDecision::Keep, "kept".to_owned())),
                    other => Ok((other, String::new())),
                });
                match decision {
                    Err(e) => {
                        self.record_plugin(now, &pending, failed(&e));
                        self.next_before_model(now, next_index);
                    }
                    Ok((ModelDecision::Answer(text), _)) => {
                        self.record_plugin(
                            now,
                            &pending,
                            ok("answered instead of the model".into()),
                        );
                        let reply = self.replaced_reply(
                            now,
                            text,
                            None,
                            Some(Responder::Plugin { id: plugin_id }),
                            None,
                        );
                        self.release(reply);
                    }
                    Ok((ModelDecision::Handoff(reason), _)) => {
                        if self.handoff_enabled {
                            self.record_plugin(now, &pending, ok(format!("handoff: {reason}")));
                            let handoff = PluginHandoff {
                                plugin_id: plugin_id.clone(),
                                reason,
                            };
                            let reply = self.replaced_reply(
                                now,
                                String::new(),
                                Some(handoff),
                                Some(Responder::Plugin { id: plugin_id }),
                                None,
                            );
                            self.finish(Ok(reply));
                        } else {
                            self.record_plugin(
                                now,
                                &pending,
                                ok(format!("blocked (handoff is off): {reason}")),
                            );
                            let text = self.blocked_sentence();
                            let reply = self.replaced_reply(
                                now,
                                text,
                                None,
                                Some(Responder::Plugin { id: plugin_id }),
                                None,
                            );
                            self.release(reply);
                        }
                    }
                    Ok((_, effect)) => {
                        self.record_plugin(now, &pending, ok(effect));
                        self.next_before_model(now, next_index);
                    }
                }
            }
            Stage::Tools {
                reply,
                calls,
                mut results,
            } => {
                let tool = pending.tool.clone().unwrap_or(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                let result = match parsed {
                    Ok(Answer::Tool(Ok(result))) => {
                        self.record_plugin(
                            now,
                            &pending,
                            ok(format!("{} bytes for the model", result.len())),
                        );
                        result
                    }
                    Ok(Answer::Tool(Err(error))) => {
                        self.record_plugin(now, &pending, ok(format!("tool error: {error}")));
                        format!("error: {error}")
                    }
                    Ok(_) => {
                        let e = PluginFailure::new(FailureKind::Invalid, "not a tool result");
                        self.record_plugin(now, &pending, failed(&e));
                        "error: the tool failed".to_owned()
                    }
                    Err(e) => {
                        self.record_plugin(now, &pending, failed(&e));
                        "error: the tool is unavailable right now".to_owned()
                    }
                };
                results.push((tool, result));
                self.next_tool(
                    now,
                    Stage::Tools {
                        reply,
                        calls,
                        results,
                    },
                );
            }
            Stage::AfterReply { reply } => {
                let decision = match parsed {
                    Ok(Answer::Reply(d)) => plugin::check_reply_decision(&d).map(|()| d),
                    Ok(_) => Err(PluginFailure::new(
                        FailureKind::Invalid,
                        "not a reply decision",
                    )),
                    Err(e) => Err(e),
                };
                match decision {
                    Err(e) => {
                        self.record_plugin(now, &pending, failed(&e));
                        self.next_after_reply(now, next_index, reply);
                    }
                    Ok(ReplyDecision::Keep) => {
                        self.record_plugin(now, &pending, ok("kept".into()));
                        self.next_after_reply(now, next_index, reply);
                    }
                    Ok(ReplyDecision::Rewrite(text)) => {
                        self.record_plugin(now, &pending, ok("rewrote the reply".into()));
                        let mut reply = reply;
                        reply.text = text;
                        self.next_after_reply(now, next_index, reply);
                    }
                    Ok(ReplyDecision::Block(reason)) => {
                        self.record_plugin(now, &pending, ok(format!("blocked: {reason}")));
                        let text = self.blocked_sentence();
                        let reply = self.replaced_reply(now, text, None, None, Some(reply));
                        self.release(reply);
                    }
                    Ok(ReplyDecision::Handoff(reason)) => {
                        if self.handoff_enabled {
                            self.record_plugin(now, &pending, ok(format!("handoff: {reason}")));
                            let handoff = PluginHandoff { plugin_id, reason };
                            let reply = self.replaced_reply(
                                now,
                                String::new(),
                                Some(handoff),
                                None,
                                Some(reply),
                            );
                            self.finish(Ok(reply));
                        } else {
                            self.record_plugin(
                                now,
                                &pending,
                                ok(format!("blocked (handoff is off): {reason}")),
                            );
                            let text = self.blocked_sentence();
                            let reply = self.replaced_reply(now, text, None, None, Some(reply));
                            self.release(reply);
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self, result: Result<TurnReply, ProviderError>) {
        self.state = State::Done;
        self.actions.push_back(Action::Finished(result));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn last_user_text(prompt: &[PromptMessage]) -> String {
    prompt
        .iter()
        .rev()
        .find(|m| m.role == PromptRole::User)
        .map(|m| {
            m.parts
                .iter()
                .filter_map(|p| {
                    if let crate::vocab::Part::Text(t) = p {
                        Some(t.as_str())
                    } else {
                        None
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The prompt: the system prompt, the running summary, then the window.
pub(crate) fn build_prompt(
    system_prompt: &str,
    summary: Option<&str>,
    history: &[&Message],
) -> Vec<PromptMessage> {
    let mut prompt = Vec::with_capacity(history.len() + 2);
    if !system_prompt.trim().is_empty() {
        prompt.push(PromptMessage::text(PromptRole::System, system_prompt));
    }
    if let Some(s) = summary {
        prompt.push(PromptMessage::text(
            PromptRole::System,
            format!("Summary of the earlier conversation:\n{s}"),
        ));
    }
    for m in history {
        let role = match m.role {
            Role::Visitor => PromptRole::User,
            Role::Bot | Role::Agent => PromptRole::Assistant,
            // System notices are for people, not the model.
            Role::System | Role::Note => continue,
        };
        prompt.push(PromptMessage::new(role, m.parts.clone()));
    }
    prompt
}

/// Splits an offline answer into word-sized deltas, so a streamed offline reply looks and
/// behaves like a streamed model reply (the pieces concatenate to the whole).
fn split_for_streaming(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, c) in text.char_indices() {
        count += 1;
        // A piece ends after a space, or every 8 characters of unspaced script.
        if c == ' ' || c == '\n' || count >= 8 {
            let end = i + c.len_utf8();
            pieces.push(&text[start..end]);
            start = end;
            count = 0;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_pieces_concatenate() {
        for t in [
            "Hello there, friend.",
            "你好！我是 Kefu。你可以问我：Kefu 是什么",
            "",
            "x",
        ] {
            assert_eq!(split_for_streaming(t).concat(), t);
        }
        assert!(split_for_streaming("one two three").len() == 3);
    }
}
