//! [`ChatTurn`]: what follows a visitor's stored message, from the decision to the answer.
//!
//! The order, for every host: decide ([`dialogue::decide_matched`]: a human owns it, a rule, the
//! visitor asks for a person, the model); outside business hours the closed notice first;
//! a rule's reply, tag and close, or a handoff, need no model. Otherwise: wait for the
//! conversation's earlier turns, and if the bot still answers, search the knowledge base,
//! read the files the prompt shows, load the plugins, and run a [`ModelCall`] (admission,
//! provider and plugin calls, settlement). The reply is then applied to the conversation as
//! it is at that moment ([`Change::Reply`]): dropped when a human took over, replaced by the
//! knowledge base's honest "no answer" (logged for the operator; a handoff after repeated
//! misses), or recorded, followed by the handoff the model or a plugin asked for. A provider
//! failure hands off when the tenant says so. Last, the turn's record is stored.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::dialogue::{self, AfterReply, Decision};
use crate::handoff::HandoffReason;
use crate::hours::Schedule;
use crate::knowledge::{RetrievedChunk, Unanswered};
use crate::offline;
use crate::provider::ProviderError;
use crate::replay::TurnRecord;
use crate::rules::RuleSet;
use crate::time::Timestamp;
use crate::turn::{ReplyMode, TurnOptions, TurnReply};
use crate::vocab::{Message, Status};

use super::{Action, Applied, Change, Failure, Input, Machine, ModelCall, Outcome};

/// What a chat turn starts from: the visitor's message, already stored.
#[derive(Clone, Debug)]
pub struct Start {
    /// The tenant's configuration.
    pub config: TenantConfig,
    /// Streamed or whole reply.
    pub mode: ReplyMode,
    /// The conversation as stored with the visitor's message.
    pub conversation: Conversation,
    /// The conversation before the message (`None`: it is new), for the record's changes.
    pub before: Option<Conversation>,
    /// The visitor's stored message.
    pub visitor: Message,
    /// The secrets the deployment gave the tenant ([`crate::deployment::Deployment::resolve_secrets`]).
    pub secrets: BTreeMap<String, String>,
    /// Randomness for the turn (weighted routes, jitter).
    pub seed: u64,
}

/// What an applied change leads to.
#[derive(Clone, Debug)]
enum Then {
    /// The closed notice is stored: act on the decision.
    Decide,
    /// A rule's reply (and tag, close) is stored.
    Ruled,
    /// A rule's reply before its handoff is stored: hand off.
    HandOff(Change),
    /// The handoff is stored: its notice is the answer.
    HandedOff,
    /// A tag-only rule's tag is stored: the model answers.
    Tagged,
    /// The model's reply went to the conversation.
    Replied(Box<TurnReply>),
    /// The visitor was told their images cannot be read: the model answers.
    ImagesNoticed,
}

#[derive(Debug)]
enum Expect {
    Nothing,
    Loaded,
    Applied(Then),
    Knowledge,
    Files,
    Plugins,
    Model,
}

/// A visitor's turn: the machine every host drives ([`Machine`]).
#[derive(Debug)]
pub struct ChatTurn {
    config: Rc<TenantConfig>,
    /// The tenant's business hours, compiled once for the turn.
    schedule: Option<Rc<Schedule>>,
    visitor: Message,
    text: String,
    before: Option<Conversation>,
    latest: Conversation,
    /// Messages out of the window before the visitor's message (for the summary's rewrite).
    evicted_before: u32,
    decision: Option<Decision>,
    tag: Option<String>,
    record: TurnRecord,
    /// A replay: changes apply to `latest` here, and nothing is stored or logged.
    scratch: bool,
    /// A replay decides and changes its scratch copy at the message's recorded time (its
    /// business hours then); provider calls run on the host's clock.
    recorded_at: Option<Timestamp>,
    now: Timestamp,
    expect: Expect,
    actions: VecDeque<Action>,
    options: TurnOptions,
    retrieved: Vec<RetrievedChunk>,
    model: Option<ModelCall>,
    /// The model call that waits for the "images cannot be read" notice to be stored.
    held: Option<ModelCall>,
    line: Option<Value>,
    said: Vec<Message>,
    trace: Vec<crate::gateway::AttemptRecord>,
    plugin_calls: Vec<crate::plugin::PluginCallRecord>,
    outcome: Option<Outcome>,
}

impl ChatTurn {
    /// Decides what to do with the stored visitor message, at `now`.
    pub fn new(now: Timestamp, start: Start) -> Self {
        Self::begin(now, start, false)
    }

    /// The same turn on a scratch copy: [`Action::Apply`] and [`Action::AwaitTurn`] are
    /// carried out by the machine itself on `start.conversation`, and nothing is stored
    /// or logged (a replay).
    pub(crate) fn scratch(now: Timestamp, start: Start) -> Self {
        Self::begin(now, start, true)
    }

    fn begin(now: Timestamp, start: Start, scratch: bool) -> Self {
        let Start {
            config,
            mode,
            conversation,
            before,
            visitor,
            secrets,
            seed,
        } = start;
        let text = visitor.text();
        let recorded_at = scratch.then_some(visitor.created_at);
        let at = recorded_at.unwrap_or(now);
        let schedule = config
            .business_hours
            .as_ref()
            .and_then(|h| h.compile().ok());
        // A stored configuration's rules compiled when it was accepted; one that no longer
        // compiles answers with no rules rather than not at all.
        let rules = RuleSet::compile(&config.rules).unwrap_or_default();
        let (decision, matched) =
            dialogue::decide_matched(&conversation, &config, &rules, schedule.as_ref(), at, &text);
        let record = TurnRecord::decided(
            visitor.seq,
            &decision,
            matched.as_ref(),
            schedule.as_ref(),
            at,
        );
        // A rule whose only action is a tag lets the model answer; the tag comes first.
        let tag = match (&decision, matched) {
            (Decision::Model, Some(m)) => m.actions.tag,
            _ => None,
        };
        let mut options = TurnOptions::new(mode);
        options.secrets = secrets;
        options.seed = seed;
        options.plugin_scope = Some((
            conversation.tenant().as_str().to_owned(),
            conversation.id().as_str().to_owned(),
        ));
        let closed_notice = matches!(decision, Decision::Model | Decision::Canned { .. })
            && conversation.closed_notice_due(at, schedule.as_ref());
        let mut turn = ChatTurn {
            config: Rc::new(config),
            schedule: schedule.map(Rc::new),
            visitor,
            text,
            evicted_before: before
                .as_ref()
                .map_or(conversation.evicted(), Conversation::evicted),
            before,
            latest: conversation,
            decision: Some(decision),
            tag,
            record,
            scratch,
            recorded_at,
            now,
            expect: Expect::Nothing,
            actions: VecDeque::new(),
            options,
            retrieved: Vec::new(),
            model: None,
            held: None,
            line: None,
            said: Vec::new(),
            trace: Vec::new(),
            plugin_calls: Vec::new(),
            outcome: None,
        };
        if closed_notice {
            // Outside business hours the bot says so (once a closed stretch) before it
            // answers.
            let schedule = turn.schedule.clone();
            turn.apply(Change::ClosedNotice(schedule), Then::Decide);
        } else {
            turn.decide();
        }
        turn
    }

    /// The outcome, once [`Action::Finished`] was polled.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The turn's record for the replay console (complete once finished).
    pub fn record(&self) -> &TurnRecord {
        &self.record
    }

    /// The messages this turn recorded, in order (replies, notices).
    pub fn said(&self) -> &[Message] {
        &self.said
    }

    /// What every provider attempt of the model call did (empty without one).
    pub fn trace(&self) -> &[crate::gateway::AttemptRecord] {
        &self.trace
    }

    /// What every plugin call of the model call did.
    pub fn plugin_calls(&self) -> &[crate::plugin::PluginCallRecord] {
        &self.plugin_calls
    }

    /// The conversation as this turn last saw it.
    pub(crate) fn latest(&self) -> &Conversation {
        &self.latest
    }

    /// The visitor's message.
    pub fn visitor(&self) -> &Message {
        &self.visitor
    }

    /// The time decisions and changes are made at.
    /// The model's rewrite of the conversation's summary this turn made due: the tenant
    /// lets a model write it (`summary.model`) and the turn pushed `summary.every` more
    /// messages out of the window. The host runs it after the answer.
    pub fn summary_run(&self, now: Timestamp) -> Option<super::SummaryRun> {
        let policy = &self.config.summary;
        if self.scratch || self.outcome.is_none() || !policy.model || !self.config.has_models() {
            return None;
        }
        if !crate::summary::model_due(policy.every, self.evicted_before, self.latest.evicted()) {
            return None;
        }
        Some(super::SummaryRun::new(
            now,
            self.config.clone(),
            &self.latest,
            self.options.secrets.clone(),
            self.options.seed.wrapping_add(1),
        ))
    }

    fn at(&self) -> Timestamp {
        self.recorded_at.unwrap_or(self.now)
    }

    fn log(&mut self, level: &'static str, line: Value) {
        if !self.scratch {
            self.actions.push_back(Action::Log { level, line });
        }
    }

    fn apply(&mut self, change: Change, then: Then) {
        if self.scratch {
            let mut copy = self.latest.clone();
            let result = change
                .apply(&mut copy, self.at(), &self.config)
                .map(|effect| Applied {
                    conversation: copy,
                    effect,
                });
            self.applied(result, then);
        } else {
            self.actions.push_back(Action::Apply(change));
            self.expect = Expect::Applied(then);
        }
    }

    fn decide(&mut self) {
        let Some(decision) = self.decision.take() else {
            return;
        };
        match decision {
            Decision::Silent => self.finish(Outcome::Silent {
                status: self.latest.status(),
            }),
            Decision::Handoff {
                reason,
                queue,
                notice,
                reply,
            } => {
                self.log("info", json!({"msg": "handoff", "reason": reason.as_str()}));
                let handoff = Change::Handoff {
                    reason,
                    queue,
                    notice,
                };
                match reply {
                    Some(reply) => self.apply(Change::BotText(reply), Then::HandOff(handoff)),
                    None => self.apply(handoff, Then::HandedOff),
                }
            }
            Decision::Canned {
                rule,
                reply,
                tag,
                close,
            } => {
                self.log("info", json!({"msg": "rule", "rule": rule, "close": close}));
                self.apply(Change::Rule { tag, reply, close }, Then::Ruled);
            }
            Decision::Model => match self.tag.take() {
                Some(tag) => self.apply(Change::Tag(tag), Then::Tagged),
                None => self.await_turn(),
            },
        }
    }

    fn await_turn(&mut self) {
        if self.scratch {
            let latest = self.latest.clone();
            self.loaded(Ok(Some(latest)));
        } else {
            self.actions.push_back(Action::AwaitTurn);
            self.expect = Expect::Loaded;
        }
    }

    fn loaded(&mut self, loaded: Result<Option<Conversation>, ApiError>) {
        match loaded {
            Ok(Some(c)) => {
                self.latest = c;
                // An earlier message may have handed the conversation to a human.
                if !self.latest.bot_answers() {
                    return self.finish(Outcome::Silent {
                        status: self.latest.status(),
                    });
                }
                if self.config.knowledge.enabled && self.config.has_models() {
                    self.actions.push_back(Action::SearchKnowledge {
                        query: self.text.clone(),
                        top_k: self.config.knowledge.top_k,
                        scope: crate::knowledge::Scope::Live,
                    });
                    self.expect = Expect::Knowledge;
                } else {
                    self.read_files();
                }
            }
            Ok(None) => self.finish(Outcome::Failed(Failure::Host(
                ApiError::conversation_not_found(),
            ))),
            Err(e) => self.finish(Outcome::Failed(Failure::Host(e))),
        }
    }

    fn read_files(&mut self) {
        let wanted = self.latest.turn_attachments(&self.visitor);
        if wanted.is_empty() {
            self.load_plugins();
        } else {
            self.actions.push_back(Action::ReadFiles(wanted));
            self.expect = Expect::Files;
        }
    }

    fn load_plugins(&mut self) {
        if self.config.plugins.iter().any(|p| p.enabled) {
            self.actions.push_back(Action::LoadPlugins);
            self.expect = Expect::Plugins;
        } else {
            self.call_model();
        }
    }

    fn call_model(&mut self) {
        let mut options = self.options.clone();
        options.knowledge = self.retrieved.clone();
        match ModelCall::on_conversation(
            self.now,
            self.config.clone(),
            self.latest.clone(),
            self.visitor.clone(),
            options,
        ) {
            Ok(call) if call.images_unread() => {
                // No model here reads images and the tenant names none to describe them:
                // the visitor is told so, plainly, before the answer.
                let chinese = offline::detect_lang(&self.text) == offline::Lang::Zh;
                let notice = crate::attachment::images_unreadable_notice(chinese);
                self.held = Some(call);
                self.apply(Change::BotText(notice.into()), Then::ImagesNoticed);
            }
            Ok(call) => {
                self.model = Some(call);
                self.expect = Expect::Model;
            }
            Err(e) => self.finish(Outcome::Failed(Failure::Host(e))),
        }
    }

    fn after_hours(&self) -> Option<String> {
        dialogue::after_hours_notice(
            self.schedule.as_deref(),
            self.at(),
            offline::detect_lang(&self.text),
        )
    }

    fn hand_off(&mut self, reason: HandoffReason) {
        self.log("info", json!({"msg": "handoff", "reason": reason.as_str()}));
        let change = Change::Handoff {
            reason,
            queue: self.config.handoff.default_queue.clone(),
            notice: self.after_hours(),
        };
        self.apply(change, Then::HandedOff);
    }

    fn model_done(&mut self, result: Result<TurnReply, Failure>) {
        let Some(call) = self.model.take() else {
            return;
        };
        self.record.add_turn(call.turn(), &self.retrieved);
        self.trace = call.turn().trace().to_vec();
        self.plugin_calls = call.turn().plugin_calls().to_vec();
        let mut line = json!({
            "msg": "turn",
            "conversation_id": self.latest.id().as_str(),
            "seq": self.visitor.seq,
            "trace": call.turn().trace(),
        });
        match result {
            Ok(reply) => {
                line["responder"] = reply.responder.kind().into();
                line["target"] = reply.target.clone().map_or(Value::Null, Value::from);
                line["attempts"] = reply.attempts.into();
                line["duration_ms"] = (reply.duration.as_millis() as u64).into();
                line["ttft_ms"] = reply
                    .time_to_first_token
                    .map_or(Value::Null, |d| (d.as_millis() as u64).into());
                line["usage"] = json!(reply.usage);
                // The reply's markers were resolved by the model call (those citing nothing
                // are gone): each one left names a chunk the model was shown.
                let citations = crate::knowledge::citations(&reply.text, &self.retrieved);
                self.line = Some(line);
                let change = Change::Reply {
                    reply: Box::new(reply.clone()),
                    grounded: !self.retrieved.is_empty(),
                    citations,
                };
                self.apply(change, Then::Replied(Box::new(reply)));
            }
            Err(Failure::Provider(e))
                if self.config.handoff.enabled && self.config.handoff.on_provider_failure =>
            {
                line["error"] = json!({"code": e.code(), "message": e.to_string()});
                line["handoff"] = "provider_failure".into();
                self.line = Some(line);
                self.hand_off(HandoffReason::ProviderFailure);
            }
            Err(f) => {
                let (code, message) = f.code_and_message();
                line["error"] = json!({"code": code, "message": message});
                self.line = Some(line);
                self.finish(Outcome::Failed(f));
            }
        }
    }

    fn applied(&mut self, result: Result<Applied, ApiError>, then: Then) {
        let Applied {
            conversation,
            effect,
        } = match result {
            Ok(a) => a,
            Err(e) => return self.finish(Outcome::Failed(Failure::Host(e))),
        };
        self.latest = conversation;
        self.said.extend(effect.messages.iter().cloned());
        let first = effect.messages.first().cloned();
        match then {
            Then::Decide => self.decide(),
            Then::Tagged => self.await_turn(),
            Then::ImagesNoticed => {
                self.model = self.held.take();
                self.expect = Expect::Model;
            }
            Then::HandOff(change) => self.apply(change, Then::HandedOff),
            Then::Ruled => match first {
                Some(message) => self.finish(Outcome::Notice {
                    message,
                    status: self.latest.status(),
                    responder: "rule",
                }),
                None => self.finish(Outcome::Silent {
                    status: self.latest.status(),
                }),
            },
            Then::HandedOff => match first {
                Some(message) => self.finish(Outcome::Notice {
                    message,
                    status: Status::WaitingForAgent,
                    responder: "handoff",
                }),
                // A person took the conversation meanwhile ([`Change::Handoff`] did
                // nothing): the bot never talks over them.
                None => self.finish(Outcome::Silent {
                    status: self.latest.status(),
                }),
            },
            Then::Replied(reply) => {
                let verdict = effect.after_reply.clone().unwrap_or(AfterReply::Drop);
                self.replied(*reply, verdict, first, effect.no_answer_limit);
            }
        }
    }

    fn replied(
        &mut self,
        reply: TurnReply,
        verdict: AfterReply,
        recorded: Option<Message>,
        limit_reached: bool,
    ) {
        let mut line = self.line.take().unwrap_or_else(|| json!({}));
        match verdict {
            AfterReply::Drop => {
                // A human took the conversation while the model was answering: the bot
                // never talks over them.
                line["dropped"] = "a human owns the conversation".into();
                self.line = Some(line);
                self.finish(Outcome::Silent {
                    status: self.latest.status(),
                });
            }
            AfterReply::NoAnswer(reason) => {
                line["no_answer"] = reason.clone().into();
                self.line = Some(line);
                if !self.scratch {
                    self.actions
                        .push_back(Action::LogUnanswered(Unanswered::new(
                            &self.text,
                            self.now,
                            self.latest.id().clone(),
                            &reason,
                        )));
                }
                match recorded {
                    _ if limit_reached => self.hand_off(HandoffReason::RepeatedNoAnswer),
                    Some(message) => self.finish(Outcome::Notice {
                        message,
                        status: self.latest.status(),
                        responder: "no_answer",
                    }),
                    None => self.finish(Outcome::Failed(Failure::Host(ApiError::internal(
                        "no reply was recorded",
                    )))),
                }
            }
            AfterReply::Keep { handoff, .. } => {
                if let Some(message) = &recorded {
                    self.record.citations = message.citations().to_vec();
                }
                if !self.retrieved.is_empty() {
                    let cited: Vec<&str> = self
                        .record
                        .citations
                        .iter()
                        .map(|c| c.chunk_id.as_str())
                        .collect();
                    line["citations"] = json!(cited);
                }
                match (handoff, recorded) {
                    (Some(reason), _) => {
                        line["handoff"] = match &reason {
                            HandoffReason::Plugin { id, reason } => {
                                format!("plugin {id}: {reason}")
                            }
                            other => other.as_str().to_owned(),
                        }
                        .into();
                        self.line = Some(line);
                        self.hand_off(reason);
                    }
                    (None, Some(message)) => {
                        self.line = Some(line);
                        self.finish(Outcome::Reply { message, reply });
                    }
                    (None, None) => {
                        self.line = Some(line);
                        self.finish(Outcome::Failed(Failure::Provider(
                            ProviderError::Malformed {
                                detail: "the model called a tool but wrote no reply".into(),
                            },
                        )));
                    }
                }
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.record.set_state(self.before.as_ref(), &self.latest);
        self.record.set_outcome(outcome.recorded());
        if let Some(line) = self.line.take() {
            let level = if matches!(outcome, Outcome::Failed(_)) {
                "warn"
            } else {
                "info"
            };
            self.log(level, line);
        }
        if !self.scratch {
            self.actions
                .push_back(Action::StoreRecord(self.record.clone()));
        }
        self.outcome = Some(outcome);
        self.expect = Expect::Nothing;
        self.actions.push_back(Action::Finished);
    }
}

impl Machine for ChatTurn {
    fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let call = self.model.as_mut()?;
        match call.poll_action()? {
            Action::Finished => {
                let result = call.take_result().unwrap_or_else(|| {
                    Err(Failure::Host(ApiError::internal(
                        "the model call ended without a result",
                    )))
                });
                self.model_done(result);
                self.actions.pop_front()
            }
            other => Some(other),
        }
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.model.as_ref().and_then(Machine::poll_timeout)
    }

    fn handle(&mut self, now: Timestamp, input: Input) {
        self.now = now;
        match (input, core::mem::replace(&mut self.expect, Expect::Nothing)) {
            (Input::Loaded(loaded), Expect::Loaded) => self.loaded(loaded),
            (Input::Applied(result), Expect::Applied(then)) => self.applied(result, then),
            (Input::Knowledge(found), Expect::Knowledge) => {
                match found {
                    Ok(chunks) => self.retrieved = chunks,
                    // Without the knowledge base the model still answers (and may say it
                    // does not know).
                    Err(error) => self.log(
                        "error",
                        json!({"msg": "knowledge search failed", "error": error}),
                    ),
                }
                self.read_files();
            }
            (Input::Files(files), Expect::Files) => {
                self.options.attachments = files;
                self.load_plugins();
            }
            (Input::Plugins(plugins), Expect::Plugins) => {
                self.options.plugins = plugins;
                self.call_model();
            }
            (input, Expect::Model) => {
                self.expect = Expect::Model;
                if let Some(call) = self.model.as_mut() {
                    call.handle(now, input);
                }
            }
            // Not what the machine waits for: stale, ignored.
            (_, expect) => self.expect = expect,
        }
    }
}
