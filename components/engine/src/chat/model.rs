//! One model call under the tenant's gateway: admission (quota, breakers), the [`Turn`]
//! planned without the targets the breakers refuse, its provider and plugin calls, and the
//! settlement of what it used. A chat turn runs one; the OpenAI-compatible API runs one on
//! its own.
//!
//! A call grounded in the knowledge base also resolves the reply's citation markers: a
//! marker citing no chunk the model was shown is removed from the reply, and from its
//! stream before the visitor sees it ([`CitationStream`] holds a marker back until it is
//! known), so what streamed is what is stored.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::api::ApiError;
use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::gateway::Report;
use crate::knowledge::{CitationStream, strip_unknown_citations};
use crate::provider::ProviderError;
use crate::time::Timestamp;
use crate::turn::{self, Turn, TurnOptions, TurnReply};
use crate::vocab::Message;
use crate::wire::PromptMessage;

use super::{Action, Failure, Grant, Input, Machine, Refusal};

/// What the turn is planned from.
#[derive(Clone, Debug)]
enum Plan {
    /// A conversation and the visitor message that triggers the turn (the prompt, the
    /// knowledge base and the files are the conversation's).
    Conversation(Box<(Conversation, Message)>),
    /// A prompt as it is (the OpenAI-compatible API).
    Prompt(Vec<PromptMessage>),
}

#[derive(Debug)]
enum State {
    /// Waiting for the gateway's answer.
    Admitting,
    /// The turn is running.
    Running,
    /// Over.
    Done(Box<Result<TurnReply, Failure>>),
}

/// Admission, one turn, settlement.
#[derive(Debug)]
pub struct ModelCall {
    config: Rc<TenantConfig>,
    plan: Plan,
    options: TurnOptions,
    turn: Turn,
    grant: Option<Grant>,
    state: State,
    actions: VecDeque<Action>,
    /// For a grounded call: the reply's stream with markers that cite nothing removed.
    citations: Option<CitationStream>,
}

impl ModelCall {
    /// A call on `prompt` as it is (the OpenAI-compatible API's).
    pub fn on_prompt(
        now: Timestamp,
        config: Rc<TenantConfig>,
        prompt: Vec<PromptMessage>,
        options: TurnOptions,
    ) -> Self {
        Self::new(now, config, Plan::Prompt(prompt), options).expect("a prompt always plans a turn")
    }

    /// A call for `trigger`, the newest visitor message of `conversation`.
    pub(crate) fn on_conversation(
        now: Timestamp,
        config: Rc<TenantConfig>,
        conversation: Conversation,
        trigger: Message,
        options: TurnOptions,
    ) -> Result<Self, ApiError> {
        Self::new(
            now,
            config,
            Plan::Conversation(Box::new((conversation, trigger))),
            options,
        )
    }

    fn new(
        now: Timestamp,
        config: Rc<TenantConfig>,
        plan: Plan,
        options: TurnOptions,
    ) -> Result<Self, ApiError> {
        let turn = start(now, &config, &plan, options.clone())?;
        // Only a prompt with the knowledge base's blocks asks the model to cite; any other
        // reply's brackets are left alone.
        let citations =
            (!options.knowledge.is_empty()).then(|| CitationStream::new(&options.knowledge));
        let mut call = ModelCall {
            state: State::Running,
            grant: None,
            actions: VecDeque::new(),
            citations,
            config,
            plan,
            options,
            turn,
        };
        if call.config.has_models() {
            call.state = State::Admitting;
            call.actions.push_back(Action::Admit {
                tokens: call.turn.estimated_tokens(),
            });
        }
        Ok(call)
    }

    /// The turn (its trace, the request it sent, its plugin calls).
    pub fn turn(&self) -> &Turn {
        &self.turn
    }

    /// Whether the call is over.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done(_)) && self.actions.is_empty()
    }

    /// Takes the result (once).
    pub fn take_result(&mut self) -> Option<Result<TurnReply, Failure>> {
        match core::mem::replace(&mut self.state, State::Running) {
            State::Done(r) => Some(*r),
            other => {
                self.state = other;
                None
            }
        }
    }

    fn admitted(&mut self, now: Timestamp, admission: Result<Grant, Refusal>) {
        match admission {
            Ok(grant) => {
                if !grant.blocked.is_empty() {
                    // Breakers refused some targets: plan again without them (the same
                    // grounding, files and plugins).
                    let mut options = self.options.clone();
                    options.blocked = grant.blocked.clone();
                    match start(now, &self.config, &self.plan, options) {
                        Ok(turn) => self.turn = turn,
                        Err(e) => return self.finish(Err(Failure::Host(e))),
                    }
                }
                self.grant = Some(grant);
                self.state = State::Running;
            }
            Err(Refusal::Quota(q)) => self.finish(Err(Failure::Quota(q))),
            Err(Refusal::Host(e)) => self.finish(Err(Failure::Host(e))),
        }
    }

    fn finish(&mut self, result: Result<TurnReply, Failure>) {
        if let Some(grant) = self.grant.take() {
            let report = Report::new(
                &self.config.breaker,
                &self.config.quotas,
                grant.reservation,
                self.turn.trace(),
            );
            if !report.is_empty() {
                self.actions.push_back(Action::Settle(report));
            }
        }
        self.state = State::Done(Box::new(result));
        self.actions.push_back(Action::Finished);
    }

    /// Moves the turn's own actions out, translated; stops at its end.
    fn pump(&mut self) {
        if !matches!(self.state, State::Running) {
            return;
        }
        while let Some(action) = self.turn.poll_action() {
            let out = match action {
                turn::Action::CallProvider {
                    attempt,
                    target,
                    request,
                } => Action::CallProvider {
                    attempt,
                    target,
                    request,
                },
                turn::Action::CancelProvider { attempt } => Action::CancelProvider { attempt },
                turn::Action::CallPlugin { call, spec, hook } => {
                    Action::CallPlugin { call, spec, hook }
                }
                turn::Action::Delta(text) => {
                    let text = match &mut self.citations {
                        Some(stream) => stream.push(&text),
                        None => text,
                    };
                    if text.is_empty() {
                        continue;
                    }
                    self.delta(text)
                }
                turn::Action::Finished(mut result) => {
                    if let (Some(stream), Ok(reply)) = (&mut self.citations, &mut result) {
                        // What the stream held back at the end is text, and the stored
                        // reply is what streamed.
                        let rest = stream.finish();
                        if !rest.is_empty() {
                            let delta = self.delta(rest);
                            self.actions.push_back(delta);
                        }
                        reply.text = strip_unknown_citations(&reply.text, &self.options.knowledge);
                    }
                    self.finish(result.map_err(Failure::Provider));
                    return;
                }
            };
            self.actions.push_back(out);
        }
    }

    fn delta(&self, text: String) -> Action {
        let target = self.turn.current_target();
        Action::Delta(super::Delta {
            text,
            target: target.map(|t| t.key.clone()),
            route: target.map(|t| t.route.clone()),
            attempts: self.turn.attempts(),
        })
    }
}

fn start(
    now: Timestamp,
    config: &TenantConfig,
    plan: &Plan,
    options: TurnOptions,
) -> Result<Turn, ApiError> {
    match plan {
        Plan::Prompt(prompt) => Ok(Turn::new(now, config, prompt.clone(), options)),
        Plan::Conversation(c) => {
            let (conversation, trigger) = &**c;
            conversation
                .start_turn(now, config, trigger, options)
                .map_err(|e| ApiError::internal(e.to_string()))
        }
    }
}

impl Machine for ModelCall {
    fn poll_action(&mut self) -> Option<Action> {
        self.pump();
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Running => self.turn.poll_timeout(),
            _ => None,
        }
    }

    fn handle(&mut self, now: Timestamp, input: Input) {
        match (input, &self.state) {
            (Input::Admission(a), State::Admitting) => self.admitted(now, a),
            (Input::Provider { attempt, event }, State::Running) => {
                self.turn.handle_provider_event(now, attempt, event)
            }
            (Input::PluginAnswer { call, answer }, State::Running) => {
                self.turn.handle_plugin_answer(now, call, answer)
            }
            (Input::Timeout, State::Running) => self.turn.handle_timeout(now),
            (Input::Stalled, State::Running | State::Admitting) => {
                self.finish(Err(Failure::Provider(stalled())))
            }
            // Anything else is stale (an event for an abandoned call after the end).
            _ => {}
        }
    }
}

/// What a turn waiting on nothing ends with ([`Input::Stalled`]).
fn stalled() -> ProviderError {
    ProviderError::Malformed {
        detail: "the turn is waiting on nothing".into(),
    }
}
