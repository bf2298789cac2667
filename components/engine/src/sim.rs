//! A deterministic simulator: a fake clock, a scripted provider and an in-memory store,
//! driving the engine exactly as a host does, with no network and no real time.
//!
//! Each provider call consumes the next [`Script`]: timed steps (head, data, end, failure)
//! relative to the moment the call was made. The simulator advances its clock to whichever
//! comes first, the next scripted step or the turn's own deadline, so timeouts, stalls and
//! cut streams play out in microseconds and the same every time.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::Event;
use crate::attachment::Resolved;
use crate::chat::{
    Action as ChatAction, Applied, Change, ChatTurn, EventPass, Failure, Input, Machine, Outcome,
    ReplayRun, Start,
};
use crate::chat::{Grant, Refusal};
use crate::config::TenantConfig;
use crate::conversation::{Conversation, ConversationError};
use crate::gateway::Report;
use crate::gateway::{AttemptRecord, BreakerBoard, QuotaError, QuotaState};
use crate::knowledge::{RetrievedChunk, Unanswered};
use crate::plugin::{HookCall, PluginCallRecord, PluginFailure};
use crate::provider::{HttpRequest, ProviderError, ProviderEvent};
use crate::replay::TurnRecord;
use crate::time::Timestamp;
use crate::turn::{ActivePlugin, ReplyMode, TurnReply};
use crate::vocab::{ConversationId, Message, Part, TenantId};

use core::time::Duration;

/// One timed step of a scripted provider response.
#[derive(Clone, Debug)]
pub struct Step {
    /// Milliseconds after the call.
    pub at_ms: u64,
    /// What happens then.
    pub event: ProviderEvent,
}

/// A scripted provider response: steps in time order. A script that ends without `End` or
/// `Failed` hangs, as a provider that stops sending does.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// The steps.
    pub steps: Vec<Step>,
}

fn chunk_json(content: Option<&str>, finish: Option<&str>) -> String {
    let delta = match content {
        Some(c) => serde_json::json!({"content": c}),
        None => serde_json::json!({}),
    };
    let v = serde_json::json!({"object": "chat.completion.chunk", "model": "sim-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

impl Script {
    fn head(status: u16, content_type: &str) -> Step {
        Step {
            at_ms: 0,
            event: ProviderEvent::Head {
                status,
                headers: vec![("content-type".into(), content_type.into())],
            },
        }
    }

    /// A successful streamed reply: one chunk per piece, `gap_ms` apart, then a finish
    /// reason, usage and `[DONE]`.
    pub fn stream(pieces: &[&str], gap_ms: u64) -> Self {
        let mut steps = vec![Self::head(200, "text/event-stream")];
        let mut t = 0;
        for p in pieces {
            t += gap_ms;
            steps.push(Step {
                at_ms: t,
                event: ProviderEvent::Data(chunk_json(Some(p), None).into_bytes()),
            });
        }
        let tail = format!(
            "{}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
            chunk_json(None, Some("stop")),
            pieces.len(),
            10 + pieces.len()
        );
        steps.push(Step {
            at_ms: t + gap_ms,
            event: ProviderEvent::Data(tail.into_bytes()),
        });
        steps.push(Step {
            at_ms: t + gap_ms,
            event: ProviderEvent::End,
        });
        Script { steps }
    }

    /// A successful whole (JSON) reply after `delay_ms`.
    pub fn json(text: &str, delay_ms: u64) -> Self {
        let body = serde_json::json!({"object": "chat.completion", "model": "sim-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}});
        let mut head = Self::head(200, "application/json");
        head.at_ms = delay_ms;
        Script {
            steps: vec![
                head,
                Step {
                    at_ms: delay_ms,
                    event: ProviderEvent::Data(body.to_string().into_bytes()),
                },
                Step {
                    at_ms: delay_ms,
                    event: ProviderEvent::End,
                },
            ],
        }
    }

    /// An error status with a body.
    pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Script {
            steps: vec![
                Step {
                    at_ms: 1,
                    event: ProviderEvent::Head { status, headers },
                },
                Step {
                    at_ms: 1,
                    event: ProviderEvent::Data(body.as_bytes().to_vec()),
                },
                Step {
                    at_ms: 1,
                    event: ProviderEvent::End,
                },
            ],
        }
    }

    /// A stream that delivers `pieces` and then has its connection cut.
    pub fn cut_stream(pieces: &[&str], gap_ms: u64) -> Self {
        let mut s = Self::stream(pieces, gap_ms);
        s.steps.truncate(pieces.len() + 1);
        let t = s.steps.last().map_or(0, |st| st.at_ms) + gap_ms;
        s.steps.push(Step {
            at_ms: t,
            event: ProviderEvent::Failed {
                reason: "connection reset".into(),
            },
        });
        s
    }

    /// A connection that cannot be made.
    pub fn unreachable() -> Self {
        Script {
            steps: vec![Step {
                at_ms: 2,
                event: ProviderEvent::Failed {
                    reason: "connection refused".into(),
                },
            }],
        }
    }

    /// Never answers.
    pub fn hang() -> Self {
        Script::default()
    }

    /// Raw steps.
    pub fn steps(steps: Vec<Step>) -> Self {
        Script { steps }
    }
}

/// A scripted plugin answer: after `after_ms`, the runner's JSON or a failure; `None` never
/// answers (the turn's deadline for the call decides).
#[derive(Clone, Debug)]
pub struct PluginScript {
    /// Milliseconds after the call.
    pub after_ms: u64,
    /// What the runner reports.
    pub answer: Option<Result<Vec<u8>, PluginFailure>>,
}

impl PluginScript {
    /// Answers `json` after 1 ms.
    pub fn answer(json: serde_json::Value) -> Self {
        PluginScript {
            after_ms: 1,
            answer: Some(Ok(json.to_string().into_bytes())),
        }
    }

    /// Fails after 1 ms.
    pub fn fail(failure: PluginFailure) -> Self {
        PluginScript {
            after_ms: 1,
            answer: Some(Err(failure)),
        }
    }

    /// Never answers.
    pub fn hang() -> Self {
        PluginScript {
            after_ms: 0,
            answer: None,
        }
    }
}

/// A conversation as the in-memory store holds it: the encoded state and the transcript.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// [`Conversation::encode`] output.
    pub state: Vec<u8>,
    /// Every message, in order.
    pub transcript: Vec<Message>,
}

/// What one simulated chat request produced.
#[derive(Clone, Debug)]
pub struct ChatOutcome {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The stored visitor message.
    pub visitor: Message,
    /// Deltas streamed to the visitor, in order.
    pub deltas: Vec<String>,
    /// The stored reply, or why there is none.
    pub result: Result<(Message, TurnReply), ProviderError>,
    /// What every attempt did.
    pub trace: Vec<AttemptRecord>,
    /// What every plugin call did.
    pub plugin_calls: Vec<PluginCallRecord>,
    /// How the chat turn ended.
    pub outcome: Outcome,
}

/// What driving a machine observed besides the store's changes.
#[derive(Clone, Debug, Default)]
pub struct Driven {
    /// Deltas streamed, in order.
    pub deltas: Vec<String>,
    /// Whether the gateway was settled.
    pub settled: bool,
    /// The model's reply, when one reached the conversation.
    pub reply: Option<TurnReply>,
}

/// The simulator.
#[derive(Debug)]
pub struct Simulator {
    /// The fake clock.
    pub now: Timestamp,
    /// The tenant configuration every turn uses.
    pub config: TenantConfig,
    /// Secret values handed to turns.
    pub secrets: BTreeMap<String, String>,
    /// Scripts for the next provider calls, in order (when no target has its own).
    pub scripts: VecDeque<Script>,
    /// Scripts for the next calls to one target (`provider/model`), in order.
    pub target_scripts: HashMap<String, VecDeque<Script>>,
    /// Every request sent to a provider, with its target.
    pub requests: Vec<HttpRequest>,
    /// The target of each request in `requests`.
    pub request_targets: Vec<String>,
    /// The circuit breakers, shared by every turn as the host's store shares them.
    pub breakers: BreakerBoard,
    /// The tenant's quota state.
    pub quota: QuotaState,
    /// The next turn's random seed (each turn takes the next).
    pub seed: u64,
    /// How many calls were cancelled.
    pub cancelled: usize,
    /// Every event emitted.
    pub events: Vec<Event>,
    /// The store.
    pub store: HashMap<ConversationId, Stored>,
    /// The tenant's plugins, as the host loaded them.
    pub plugins: Vec<ActivePlugin>,
    /// Scripted answers for the next calls to each plugin id, in order.
    pub plugin_scripts: HashMap<String, VecDeque<PluginScript>>,
    /// Every hook call made, with the plugin id it went to.
    pub hook_calls: Vec<(String, HookCall)>,
    /// What a knowledge search finds (`Err`: the search fails).
    pub knowledge: Result<Vec<RetrievedChunk>, String>,
    /// Every knowledge search's query.
    pub searches: Vec<String>,
    /// The tenant's stored files, as a host resolves them.
    pub files: BTreeMap<String, Resolved>,
    /// Questions logged as unanswered.
    pub unanswered: Vec<Unanswered>,
    /// Turn records stored, by conversation.
    pub records: Vec<(ConversationId, TurnRecord)>,
    /// Every gateway report settled.
    pub settled: Vec<Report>,
    /// Every log line the machines wrote.
    pub logs: Vec<serde_json::Value>,
    /// The state before each conversation's latest visitor message (for its record).
    before: HashMap<ConversationId, Conversation>,
    next_id: u32,
}

impl Simulator {
    /// A simulator at a fixed start time with this configuration.
    pub fn new(config: TenantConfig) -> Self {
        Self {
            now: Timestamp::from_millis(1_795_593_600_000),
            config,
            secrets: BTreeMap::new(),
            scripts: VecDeque::new(),
            target_scripts: HashMap::new(),
            requests: Vec::new(),
            request_targets: Vec::new(),
            breakers: BreakerBoard::default(),
            quota: QuotaState::default(),
            seed: 1,
            cancelled: 0,
            events: Vec::new(),
            store: HashMap::new(),
            plugins: Vec::new(),
            plugin_scripts: HashMap::new(),
            hook_calls: Vec::new(),
            knowledge: Ok(Vec::new()),
            searches: Vec::new(),
            files: BTreeMap::new(),
            unanswered: Vec::new(),
            records: Vec::new(),
            settled: Vec::new(),
            logs: Vec::new(),
            before: HashMap::new(),
            next_id: 0,
        }
    }

    /// Queues the script for the next provider call.
    pub fn script(&mut self, script: Script) -> &mut Self {
        self.scripts.push_back(script);
        self
    }

    /// Queues the script for the next call to `target` (`provider/model`).
    pub fn script_for(&mut self, target: &str, script: Script) -> &mut Self {
        self.target_scripts
            .entry(target.to_owned())
            .or_default()
            .push_back(script);
        self
    }

    /// Queues a scripted answer for the next call to plugin `id`.
    pub fn plugin_script(&mut self, id: &str, script: PluginScript) -> &mut Self {
        self.plugin_scripts
            .entry(id.to_owned())
            .or_default()
            .push_back(script);
        self
    }

    fn load(&self, id: &ConversationId) -> Conversation {
        let stored = &self.store[id];
        Conversation::decode(&stored.state).expect("stored state decodes")
    }

    fn persist(&mut self, conversation: &Conversation, message: Message, events: Vec<Event>) {
        let stored = self.store.entry(conversation.id().clone()).or_default();
        stored.state = conversation.encode();
        stored.transcript.push(message);
        self.events.extend(events);
    }

    /// A visitor message arrives: stored at once (in a new conversation when `id` is
    /// `None`), before any turn runs. Returns the conversation and the message.
    pub fn arrive(
        &mut self,
        id: Option<&ConversationId>,
        text: &str,
    ) -> Result<(ConversationId, Message), ConversationError> {
        self.arrive_parts(id, vec![Part::Text(text.to_owned())])
    }

    /// A visitor message of these parts (text, stored files' references) arrives, as
    /// [`Simulator::arrive`].
    pub fn arrive_parts(
        &mut self,
        id: Option<&ConversationId>,
        parts: Vec<Part>,
    ) -> Result<(ConversationId, Message), ConversationError> {
        let before = id.map(|id| self.load(id));
        let mut conversation = match id {
            Some(id) => self.load(id),
            None => {
                self.next_id += 1;
                let id = ConversationId::parse(&format!("sim-{}", self.next_id)).expect("valid id");
                Conversation::new(id, TenantId::default_tenant(), self.now)
            }
        };
        let recorded = conversation.handle_visitor_message(self.now, parts, &self.config)?;
        let id = conversation.id().clone();
        match before {
            Some(b) => self.before.insert(id.clone(), b),
            None => self.before.remove(&id),
        };
        self.persist(&conversation, recorded.message.clone(), recorded.events);
        Ok((id, recorded.message))
    }

    /// Runs the chat turn for the stored visitor message, as a host drives the engine's
    /// [`ChatTurn`]: every action carried out on the simulator's store, gateway, knowledge,
    /// files and plugins, the clock advanced to the next scripted step or deadline.
    pub fn try_run_turn(
        &mut self,
        id: &ConversationId,
        visitor: Message,
        mode: ReplyMode,
    ) -> Result<ChatOutcome, QuotaError> {
        let conversation = self.load(id);
        let before = self.before.remove(id);
        self.seed += 1;
        let start = Start {
            config: self.config.clone(),
            mode,
            conversation,
            before,
            visitor: visitor.clone(),
            secrets: self.secrets.clone(),
            seed: self.seed,
        };
        let mut turn = ChatTurn::new(self.now, start);
        let driven = self.drive(Some(id), &mut turn);
        let outcome = turn
            .outcome()
            .cloned()
            .expect("a finished turn has an outcome");
        let result = match &outcome {
            Outcome::Failed(Failure::Quota(q)) => return Err(q.clone()),
            Outcome::Failed(Failure::Provider(e)) => Err(e.clone()),
            Outcome::Reply { message, reply } => Ok((message.clone(), reply.clone())),
            Outcome::Notice { message, .. } if driven.reply.is_some() => {
                Ok((message.clone(), driven.reply.clone().expect("checked")))
            }
            other => Err(ProviderError::Malformed {
                detail: format!("no model reply: {other:?}"),
            }),
        };
        Ok(ChatOutcome {
            conversation_id: id.clone(),
            visitor,
            deltas: driven.deltas,
            result,
            trace: turn.trace().to_vec(),
            plugin_calls: turn.plugin_calls().to_vec(),
            outcome,
        })
    }

    /// Drives `machine` to its end as a host would, on conversation `id` (when it is about
    /// one): performs each action, advances the clock to the next scripted step or
    /// deadline, feeds events back.
    pub fn drive(&mut self, id: Option<&ConversationId>, machine: &mut impl Machine) -> Driven {
        let mut driven = Driven::default();
        // The call in flight: its attempt id, start time and remaining steps.
        let mut call: Option<(crate::turn::AttemptId, Timestamp, VecDeque<Step>)> = None;
        // The plugin call in flight: its id, when it answers and what.
        type PendingAnswer = (
            crate::turn::PluginCallId,
            Timestamp,
            Option<Result<Vec<u8>, PluginFailure>>,
        );
        let mut plugin_call: Option<PendingAnswer> = None;
        loop {
            while let Some(action) = machine.poll_action() {
                match action {
                    ChatAction::AwaitTurn => {
                        let loaded = id.map(|id| self.load(id));
                        machine.handle(self.now, Input::Loaded(Ok(loaded)));
                    }
                    ChatAction::Apply(change) => {
                        let id = id.expect("a change belongs to a conversation");
                        let mut c = self.load(id);
                        let result = change.apply(&mut c, self.now, &self.config).map(|effect| {
                            let stored = self.store.entry(id.clone()).or_default();
                            stored.state = c.encode();
                            stored.transcript.extend(effect.messages.iter().cloned());
                            self.events.extend(effect.events.iter().cloned());
                            if let Change::Reply { reply, .. } = &change {
                                driven.reply = Some((**reply).clone());
                            }
                            Applied {
                                conversation: c,
                                effect,
                            }
                        });
                        machine.handle(self.now, Input::Applied(result));
                    }
                    ChatAction::ReadConversation => {
                        let read = id.map(|id| (self.load(id), self.store[id].transcript.clone()));
                        machine.handle(self.now, Input::Conversation(Ok(read)));
                    }
                    ChatAction::SearchKnowledge { query, .. } => {
                        self.searches.push(query);
                        let found = self.knowledge.clone();
                        machine.handle(self.now, Input::Knowledge(found));
                    }
                    ChatAction::ReadFiles(wanted) => {
                        let files = wanted
                            .iter()
                            .filter_map(|(id, _)| Some((id.clone(), self.files.get(id)?.clone())))
                            .collect();
                        machine.handle(self.now, Input::Files(files));
                    }
                    ChatAction::LoadPlugins => {
                        let plugins = self.plugins.clone();
                        machine.handle(self.now, Input::Plugins(plugins));
                    }
                    ChatAction::Admit { tokens } => {
                        let admission = self.admit(tokens);
                        machine.handle(self.now, Input::Admission(admission));
                    }
                    ChatAction::CallProvider {
                        attempt,
                        target,
                        request,
                    } => {
                        self.requests.push(request);
                        let script = self
                            .target_scripts
                            .get_mut(&target)
                            .and_then(VecDeque::pop_front)
                            .or_else(|| self.scripts.pop_front())
                            .unwrap_or_else(|| panic!("no script for a call to {target}"));
                        self.request_targets.push(target);
                        call = Some((attempt, self.now, script.steps.into()));
                    }
                    ChatAction::CancelProvider { .. } => {
                        self.cancelled += 1;
                        call = None;
                    }
                    ChatAction::CallPlugin {
                        call: id,
                        spec,
                        hook,
                    } => {
                        let script = self
                            .plugin_scripts
                            .get_mut(&spec.id)
                            .and_then(VecDeque::pop_front)
                            .unwrap_or_else(|| {
                                panic!("no script for a call to plugin {}", spec.id)
                            });
                        self.hook_calls.push((spec.id.clone(), hook));
                        plugin_call = Some((
                            id,
                            self.now + Duration::from_millis(script.after_ms),
                            script.answer,
                        ));
                    }
                    ChatAction::Delta(d) => driven.deltas.push(d.text),
                    ChatAction::Settle(report) => {
                        driven.settled = true;
                        self.settle(&report);
                        self.settled.push(report);
                    }
                    ChatAction::LogUnanswered(entry) => self.unanswered.push(entry),
                    ChatAction::StoreRecord(record) => {
                        if let Some(id) = id {
                            self.records.push((id.clone(), record));
                        }
                    }
                    ChatAction::Log { line, .. } => self.logs.push(line),
                    ChatAction::Finished => return driven,
                }
            }
            if let Some((pid, at, answer)) = plugin_call.take() {
                match answer {
                    Some(answer) if machine.poll_timeout().is_none_or(|d| at < d) => {
                        self.now = self.now.max(at);
                        machine.handle(self.now, Input::PluginAnswer { call: pid, answer });
                    }
                    // Too late or never: the turn's deadline for the call decides.
                    _ => {
                        self.now = self
                            .now
                            .max(machine.poll_timeout().expect("a plugin deadline"));
                        machine.handle(self.now, Input::Timeout);
                    }
                }
                continue;
            }
            let next_step = call.as_ref().and_then(|(_, started, steps)| {
                steps
                    .front()
                    .map(|s| *started + Duration::from_millis(s.at_ms))
            });
            let deadline = machine.poll_timeout();
            match (next_step, deadline) {
                (Some(step_at), d) if d.is_none_or(|d| step_at < d) => {
                    self.now = self.now.max(step_at);
                    let (attempt, _, steps) = call.as_mut().expect("a call in flight");
                    let step = steps.pop_front().expect("a step");
                    machine.handle(
                        self.now,
                        Input::Provider {
                            attempt: *attempt,
                            event: step.event,
                        },
                    );
                }
                (_, Some(d)) => {
                    self.now = self.now.max(d);
                    machine.handle(self.now, Input::Timeout);
                }
                (_, None) => machine.handle(self.now, Input::Stalled),
            }
        }
    }

    /// Admission as the hosts' gateway decides it ([`crate::gateway::Ledger::admit`]): the
    /// quota reserved, the targets the breakers refuse (claiming a due probe).
    fn admit(&mut self, tokens: u64) -> Result<Grant, Refusal> {
        let reservation = if self.config.quotas.is_limited() {
            Some(
                self.quota
                    .reserve(self.now, &self.config.quotas, tokens)
                    .map_err(Refusal::Quota)?,
            )
        } else {
            None
        };
        let blocked = self
            .config
            .all_targets()
            .into_iter()
            .map(|t| t.key)
            .filter(|k| !self.breakers.admit(self.now, k, &self.config.breaker))
            .collect();
        Ok(Grant {
            blocked,
            reservation,
        })
    }

    /// Settlement as the hosts' gateway applies it ([`crate::gateway::Ledger::settle`]).
    fn settle(&mut self, report: &Report) {
        for (key, ok) in &report.signals {
            self.breakers.record(self.now, key, *ok, &report.breaker);
        }
        if let Some(r) = report.reservation {
            self.quota.settle(
                self.now,
                &report.quotas,
                r,
                Some(report.used_tokens),
                report.cost_micros,
            );
        }
    }

    /// Plays `events` of conversation `id` to the plugins that observe events, as hosts do
    /// after the answer ([`EventPass`]); returns every call's record.
    pub fn play_events(
        &mut self,
        id: &ConversationId,
        events: Vec<Event>,
    ) -> Vec<crate::plugin::PluginCallRecord> {
        let mut pass = EventPass::new(
            self.now,
            TenantId::default_tenant(),
            self.config.clone(),
            id.clone(),
            events,
        );
        self.drive(Some(id), &mut pass);
        pass.records().to_vec()
    }

    /// Replays conversation `id` as `request` asks, with the stored turn records: the
    /// replay's answer, as both hosts send it.
    pub fn replay(
        &mut self,
        id: &ConversationId,
        request: crate::replay::ReplayRequest,
    ) -> Result<serde_json::Value, crate::api::ApiError> {
        let transcript = self.store[id].transcript.clone();
        let records: Vec<_> = self
            .records
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, r)| r.clone())
            .collect();
        self.seed += 1;
        let mut run = ReplayRun::new(
            self.now,
            id.clone(),
            TenantId::default_tenant(),
            request,
            transcript,
            &records,
            self.secrets.clone(),
            self.seed,
        )?;
        self.drive(None, &mut run);
        run.result()
    }

    /// [`Simulator::try_run_turn`] for a turn the quota admits.
    pub fn run_turn(
        &mut self,
        id: &ConversationId,
        visitor: Message,
        mode: ReplyMode,
    ) -> ChatOutcome {
        self.try_run_turn(id, visitor, mode)
            .expect("the quota admits the turn")
    }

    /// Advances the fake clock.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    /// One whole chat request: the message arrives, then its turn runs.
    pub fn chat(
        &mut self,
        id: Option<&ConversationId>,
        text: &str,
        mode: ReplyMode,
    ) -> ChatOutcome {
        let (id, visitor) = self.arrive(id, text).expect("message accepted");
        self.run_turn(&id, visitor, mode)
    }

    /// The stored transcript of a conversation.
    pub fn transcript(&self, id: &ConversationId) -> &[Message] {
        &self.store[id].transcript
    }

    /// The stored state of a conversation, decoded.
    pub fn conversation(&self, id: &ConversationId) -> Conversation {
        self.load(id)
    }
}

/// The tenant configuration [`bench_turns`] runs with: one OpenAI-compatible provider (the
/// model named as `make bench`'s mock provider names it) and a system prompt.
pub const BENCH_CONFIG: &str = r#"{"provider":{"base_url":"http://mock.test/v1","model":"mock-gpt"},"system_prompt":"You are a helpful support bot."}"#;

/// The engine's share of `make bench`: `turns` chat turns through a fresh simulator, each
/// with a scripted reply in `mode` (a whole JSON answer, or seven streamed pieces), so the
/// engine does all of a turn's work (state decode and encode, prompt and request building,
/// response parsing, the turn's record) with no network and no runtime around it.
///
/// Conversations run long, as a busy support chat does: each takes 1,000 turns before the
/// next starts, so the prompt window stays at its bound (20 messages) and no conversation
/// nears the most messages one holds.
///
/// Returns how many turns ended with a stored reply; it stops at the first that did not, so
/// anything short of `turns` is a fault. The same code runs natively (`kefu-bench`) and in
/// wasm on workerd (`tests/bench/engine-wasm`); the caller times it, since the engine reads
/// no clock.
pub fn bench_turns(turns: u32, mode: ReplyMode) -> u32 {
    let config = TenantConfig::from_json(BENCH_CONFIG).expect("BENCH_CONFIG is a valid config");
    let mut sim = Simulator::new(config);
    let mut id = None;
    for i in 0..turns {
        sim.script(match mode {
            ReplyMode::Stream => Script::stream(
                &[
                    "Thanks ", "for ", "asking! ", "Here ", "is ", "the ", "answer.",
                ],
                1,
            ),
            ReplyMode::Whole => Script::json("Thanks for asking! Here is the answer.", 1),
        });
        let out = sim.chat(
            id.as_ref(),
            &format!("How do I reset my password? ({i})"),
            mode,
        );
        if out.result.is_err() {
            return i;
        }
        id = (i % 1000 != 999).then_some(out.conversation_id);
    }
    turns
}
