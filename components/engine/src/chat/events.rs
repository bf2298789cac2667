//! [`EventPass`]: a conversation's stored events played to the tenant's plugins that observe
//! events (`on-event`), after the answer, and what they ask for (a tag, a message, a
//! handoff) applied to the conversation like any change ([`Change::PluginActions`]). Events
//! of those changes are not played to plugins again, so plugins cannot loop: the host does
//! not start a pass for them ([`Change::heard_by_plugins`]).

use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::json;

use crate::Event;
use crate::api::ApiError;
use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::plugin::{self, Answer, CallOutcome, HookCall, PluginCallRecord, PluginSpec};
use crate::time::Timestamp;
use crate::turn::{ActivePlugin, PluginCallId};
use crate::vocab::{ConversationId, Message, TenantId};

use super::{Action, Applied, Change, Input, Machine};

#[derive(Debug)]
enum Expect {
    Nothing,
    Plugins,
    Conversation,
    Answer(PluginCallId),
    Applied,
}

/// A call being made: the plugin, the hook call, its name and when it started.
#[derive(Debug)]
struct Calling {
    spec: PluginSpec,
    call: HookCall,
    name: String,
    started: Timestamp,
}

/// One pass of a conversation's events through its tenant's observing plugins.
#[derive(Debug)]
pub struct EventPass {
    config: Rc<TenantConfig>,
    tenant: TenantId,
    conversation: ConversationId,
    events: VecDeque<Event>,
    observers: Vec<ActivePlugin>,
    /// The event being played: its kind, and the calls still to make for it.
    kind: Option<plugin::EventKind>,
    calls: VecDeque<(PluginSpec, HookCall)>,
    calling: Option<Calling>,
    record: Option<PluginCallRecord>,
    next_call: u32,
    expect: Expect,
    actions: VecDeque<Action>,
    now: Timestamp,
    records: Vec<PluginCallRecord>,
    finished: bool,
}

impl EventPass {
    /// A pass over the `events` conversation `conversation` of `tenant` stored (others are
    /// left out).
    pub fn new(
        now: Timestamp,
        tenant: TenantId,
        config: TenantConfig,
        conversation: ConversationId,
        events: Vec<Event>,
    ) -> Self {
        let events: VecDeque<Event> = events
            .into_iter()
            .filter(|e| e.conversation() == &conversation)
            .collect();
        let mut pass = EventPass {
            config: Rc::new(config),
            tenant,
            conversation,
            events,
            observers: Vec::new(),
            kind: None,
            calls: VecDeque::new(),
            calling: None,
            record: None,
            next_call: 0,
            expect: Expect::Nothing,
            actions: VecDeque::new(),
            now,
            records: Vec::new(),
            finished: false,
        };
        if pass.events.is_empty() || !pass.config.plugins.iter().any(|p| p.enabled) {
            pass.finish();
        } else {
            pass.actions.push_back(Action::LoadPlugins);
            pass.expect = Expect::Plugins;
        }
        pass
    }

    /// Every call the pass made, with its outcome (and what its actions did).
    pub fn records(&self) -> &[PluginCallRecord] {
        &self.records
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.expect = Expect::Nothing;
            self.actions.push_back(Action::Finished);
        }
    }

    /// The next call for the current event, or the next event, or the end.
    fn next(&mut self) {
        if let Some((spec, call)) = self.calls.pop_front() {
            let name = self
                .observers
                .iter()
                .find(|p| p.spec.id == spec.id)
                .map_or_else(String::new, |p| p.manifest.name.clone());
            let id = PluginCallId(self.next_call);
            self.next_call += 1;
            self.actions.push_back(Action::CallPlugin {
                call: id,
                spec: spec.clone(),
                hook: call.clone(),
            });
            self.calling = Some(Calling {
                spec,
                call,
                name,
                started: self.now,
            });
            self.expect = Expect::Answer(id);
            return;
        }
        while let Some(event) = self.events.pop_front() {
            if plugin::event_kind(&event).is_some() {
                self.events.push_front(event);
                self.actions.push_back(Action::ReadConversation);
                self.expect = Expect::Conversation;
                return;
            }
        }
        self.finish();
    }

    /// The event in front, heard with the conversation as stored now.
    fn heard(&mut self, loaded: Result<Option<(Conversation, Vec<Message>)>, ApiError>) {
        let Some(event) = self.events.pop_front() else {
            return self.finish();
        };
        let (Some((_, kind, seq, detail)), Ok(Some((conversation, transcript)))) =
            (plugin::event_kind(&event), loaded)
        else {
            // A conversation that cannot be read has nothing to show: the next event.
            return self.next();
        };
        let text = seq
            .and_then(|s| transcript.iter().find(|m| m.seq == s))
            .map(Message::text)
            .or(detail);
        let heard = plugin::event(kind, text, &transcript, conversation.tags());
        let language = conversation.plugin_language();
        self.kind = Some(kind);
        self.calls = plugin::event_calls(
            &self.observers,
            self.tenant.as_str(),
            self.conversation.as_str(),
            Some(&language),
            &heard,
        )
        .into();
        self.next();
    }

    fn answered(&mut self, answer: Result<Vec<u8>, plugin::PluginFailure>) {
        let Some(calling) = self.calling.take() else {
            return self.next();
        };
        let spent = self.now.since(calling.started).as_millis() as u64;
        let (parsed, record) =
            plugin::finish_call(&calling.spec, &calling.name, &calling.call, spent, answer);
        match parsed {
            Ok(Answer::Actions(actions)) if !actions.is_empty() => {
                self.record = Some(record);
                self.actions.push_back(Action::Apply(Change::PluginActions {
                    plugin: calling.spec.id,
                    actions,
                }));
                self.expect = Expect::Applied;
            }
            _ => {
                self.log(record);
                self.next();
            }
        }
    }

    fn applied(&mut self, result: Result<Applied, ApiError>) {
        if let Some(mut record) = self.record.take() {
            let effect = match result {
                Ok(applied) => applied.effect.said.join("; "),
                Err(e) => format!("not applied: {}", e.message),
            };
            record.outcome = CallOutcome::Ok { effect };
            self.log(record);
        }
        self.next();
    }

    fn log(&mut self, record: PluginCallRecord) {
        self.actions.push_back(Action::Log {
            level: "info",
            line: json!({
                "msg": "plugin event",
                "tenant": self.tenant.as_str(),
                "conversation_id": self.conversation.as_str(),
                "event": self.kind,
                "call": record,
            }),
        });
        self.records.push(record);
    }
}

impl Machine for EventPass {
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        // A plugin call is bounded by its budget in the host's runner.
        None
    }

    fn handle(&mut self, now: Timestamp, input: Input) {
        self.now = now;
        match (input, core::mem::replace(&mut self.expect, Expect::Nothing)) {
            (Input::Plugins(plugins), Expect::Plugins) => {
                self.observers = plugins
                    .into_iter()
                    .filter(|p| p.spec.enabled && p.manifest.hooks.on_event)
                    .collect();
                if self.observers.is_empty() {
                    self.finish();
                } else {
                    self.next();
                }
            }
            (Input::Conversation(loaded), Expect::Conversation) => self.heard(loaded),
            (Input::PluginAnswer { call, answer }, Expect::Answer(id)) if call == id => {
                self.answered(answer)
            }
            (Input::Applied(result), Expect::Applied) => self.applied(result),
            (Input::Stalled, _) => self.finish(),
            (_, expect) => self.expect = expect,
        }
    }
}
