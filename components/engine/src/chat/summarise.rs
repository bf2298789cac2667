//! [`SummaryRun`]: a model rewrites a conversation's summary slot, after the answer.
//!
//! A tenant with `summary.model` gets its conversations' summaries written by a model every
//! `summary.every` messages that leave the history window ([`crate::summary::model_due`];
//! the chat turn that crossed the mark offers the run, [`super::ChatTurn::summary_run`]).
//! The host drives it off the visitor's path (`wait_until` on Workers, after the response
//! on Spin), like any machine:
//!
//! 1. read the conversation and its transcript; if messages left the window since the turn,
//!    a later run covers them, and this one stops;
//! 2. load the tenant's plugins: those with a `before-model` hook see the summary's prompt
//!    as they see a chat prompt (a PII redactor redacts what the summary's model is shown;
//!    their tools and other hooks are left out, since nobody is answered);
//! 3. one [`ModelCall`] on the summary route (`summary.route`, else the chat route's
//!    cheapest target by `prices`), admitted under the tenant's quotas, bounded in tokens
//!    and time, settled like any call;
//! 4. what the model wrote, masked and bounded ([`crate::summary::from_model`]), replaces the
//!    slot ([`Change::Summary`]) unless messages left the window meanwhile.
//!
//! Whatever fails (the provider, a plugin that answers instead, an empty reply), the
//! extractive summary stays as it was, and the failure is logged.

use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::summary;
use crate::time::Timestamp;
use crate::turn::{ActivePlugin, ReplyMode, Responder, TurnOptions};
use crate::vocab::{ConversationId, Message, TenantId};

use super::{Action, Applied, Change, Input, Machine, ModelCall};

#[derive(Debug)]
enum Expect {
    Nothing,
    Conversation,
    Plugins,
    Model,
    Applied,
}

/// One rewrite of a conversation's summary by a model.
#[derive(Debug)]
pub struct SummaryRun {
    config: Rc<TenantConfig>,
    tenant: TenantId,
    conversation: ConversationId,
    secrets: std::collections::BTreeMap<String, String>,
    seed: u64,
    /// The evicted count the run was offered for.
    evicted: u32,
    /// The prompt, once the conversation is read.
    prompt: Vec<crate::wire::PromptMessage>,
    model: Option<ModelCall>,
    expect: Expect,
    actions: VecDeque<Action>,
    now: Timestamp,
    /// The summary the slot was given, once it is.
    written: Option<String>,
    finished: bool,
}

impl SummaryRun {
    /// A run for `conversation` of `tenant`, after a turn left it with `evicted` messages
    /// out of the window. `secrets` and `seed` as for the chat turn.
    pub fn new(
        now: Timestamp,
        config: Rc<TenantConfig>,
        conversation: &Conversation,
        secrets: std::collections::BTreeMap<String, String>,
        seed: u64,
    ) -> Self {
        let mut run = SummaryRun {
            tenant: conversation.tenant().clone(),
            conversation: conversation.id().clone(),
            evicted: conversation.evicted(),
            config,
            secrets,
            seed,
            prompt: Vec::new(),
            model: None,
            expect: Expect::Conversation,
            actions: VecDeque::new(),
            now,
            written: None,
            finished: false,
        };
        run.actions.push_back(Action::ReadConversation);
        run
    }

    /// The summary the run put in the slot, if it did.
    pub fn written(&self) -> Option<&str> {
        self.written.as_deref()
    }

    fn log(&mut self, level: &'static str, mut line: Value) {
        line["tenant"] = self.tenant.as_str().into();
        line["conversation_id"] = self.conversation.as_str().into();
        self.actions.push_back(Action::Log { level, line });
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.expect = Expect::Nothing;
            self.model = None;
            self.actions.push_back(Action::Finished);
        }
    }

    fn read(&mut self, loaded: Result<Option<(Conversation, Vec<Message>)>, ApiError>) {
        let (conversation, transcript) = match loaded {
            Ok(Some(found)) => found,
            Ok(None) => return self.finish(),
            Err(e) => {
                self.log(
                    "warn",
                    json!({"msg": "summary not written", "error": e.message}),
                );
                return self.finish();
            }
        };
        if conversation.evicted() != self.evicted {
            // More left the window since the turn: the run their turn offers covers them.
            return self.finish();
        }
        let batch = summary::model_batch(&transcript, self.evicted, self.config.summary.every);
        if batch.is_empty() {
            return self.finish();
        }
        self.prompt = summary::model_prompt(conversation.summary(), &batch);
        if self.config.plugins.iter().any(|p| p.enabled) {
            self.actions.push_back(Action::LoadPlugins);
            self.expect = Expect::Plugins;
        } else {
            self.call(Vec::new());
        }
    }

    fn call(&mut self, plugins: Vec<ActivePlugin>) {
        let (route, target) = self.config.summary_call();
        let mut config = (*self.config).clone();
        let t = &mut config.timeouts;
        t.total_ms = t.total_ms.min(summary::MODEL_SUMMARY_TIMEOUT_MS);
        t.first_token_ms = t.first_token_ms.min(t.total_ms);
        t.connect_ms = t.connect_ms.min(t.total_ms);
        let mut options = TurnOptions::new(ReplyMode::Whole);
        options.secrets = self.secrets.clone();
        options.seed = self.seed;
        options.route = route;
        options.target = target;
        options.max_tokens = Some(summary::MODEL_SUMMARY_MAX_TOKENS);
        // Only what guards the prompt: nobody is answered, so no tools, no after-reply.
        options.plugins = plugins
            .into_iter()
            .filter(|p| p.spec.enabled && p.manifest.hooks.before_model)
            .map(|mut p| {
                p.manifest.tools.clear();
                p.manifest.hooks.after_reply = false;
                p.manifest.hooks.on_event = false;
                p
            })
            .collect();
        options.plugin_scope = Some((
            self.tenant.as_str().to_owned(),
            self.conversation.as_str().to_owned(),
        ));
        let prompt = core::mem::take(&mut self.prompt);
        self.model = Some(ModelCall::on_prompt(
            self.now,
            Rc::new(config),
            prompt,
            options,
        ));
        self.expect = Expect::Model;
    }

    fn model_done(&mut self) {
        let Some(mut call) = self.model.take() else {
            return self.finish();
        };
        let trace = json!(call.turn().trace());
        let result = call.take_result();
        let text = match result {
            Some(Ok(reply)) if matches!(reply.responder, Responder::Provider { .. }) => {
                summary::from_model(&reply.text)
            }
            Some(Ok(reply)) => {
                self.log(
                    "warn",
                    json!({"msg": "summary not written", "error": format!("answered by {}, not a model", reply.responder.kind()), "trace": trace}),
                );
                return self.finish();
            }
            Some(Err(f)) => {
                let (code, message) = f.code_and_message();
                self.log(
                    "warn",
                    json!({"msg": "summary not written", "error": {"code": code, "message": message}, "trace": trace}),
                );
                return self.finish();
            }
            None => None,
        };
        let Some(text) = text else {
            self.log(
                "warn",
                json!({"msg": "summary not written", "error": "the model wrote nothing usable", "trace": trace}),
            );
            return self.finish();
        };
        self.log(
            "info",
            json!({"msg": "summary written", "evicted": self.evicted, "chars": text.chars().count(), "trace": trace}),
        );
        self.written = Some(text.clone());
        self.actions.push_back(Action::Apply(Change::Summary {
            text,
            evicted: self.evicted,
        }));
        self.expect = Expect::Applied;
    }

    fn applied(&mut self, result: Result<Applied, ApiError>) {
        match result {
            Ok(applied) if applied.effect.said.is_empty() => {}
            Ok(applied) => {
                self.written = None;
                let said = applied.effect.said.join("; ");
                self.log("info", json!({"msg": "summary not kept", "why": said}));
            }
            Err(e) => {
                self.written = None;
                self.log(
                    "warn",
                    json!({"msg": "summary not stored", "error": e.message}),
                );
            }
        }
        self.finish();
    }
}

impl Machine for SummaryRun {
    fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let call = self.model.as_mut()?;
        match call.poll_action()? {
            Action::Finished => {
                self.model_done();
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
            (Input::Conversation(loaded), Expect::Conversation) => self.read(loaded),
            (Input::Plugins(plugins), Expect::Plugins) => self.call(plugins),
            (Input::Applied(result), Expect::Applied) => self.applied(result),
            (input, Expect::Model) => {
                self.expect = Expect::Model;
                if let Some(call) = self.model.as_mut() {
                    call.handle(now, input);
                }
            }
            (Input::Stalled, _) => self.finish(),
            (_, expect) => self.expect = expect,
        }
    }
}
