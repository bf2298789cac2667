//! The changes a chat turn makes to its conversation, as values: the host applies each one
//! atomically to the conversation as stored at that moment ([`Change::apply`]), which is
//! what lets a compare-and-swap store re-apply it after losing a race, and lets a replay
//! apply it to a scratch copy.

use crate::Event;
use crate::api::{self, ApiError};
use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::dialogue::{self, AfterReply};
use crate::handoff::{Changed, HandoffReason};
use crate::time::Timestamp;
use crate::turn::TurnReply;
use crate::vocab::Message;

/// One change a chat turn makes to its conversation.
#[derive(Clone, Debug)]
pub enum Change {
    /// Outside business hours: the notice that the team is away (once a closed stretch),
    /// by the tenant's compiled business hours.
    ClosedNotice(Option<std::rc::Rc<crate::hours::Schedule>>),
    /// A rule's answer: its tag, its reply (may be empty), and closing the conversation.
    Rule {
        /// A tag to add.
        tag: Option<String>,
        /// The canned reply (empty: none).
        reply: String,
        /// Resolve the conversation after the reply.
        close: bool,
    },
    /// A tag only (a rule whose only action is a tag; the model still answers).
    Tag(String),
    /// A reply no model wrote, recorded before a handoff (a rule's).
    BotText(String),
    /// Hand the conversation to a human.
    Handoff {
        /// Why.
        reason: HandoffReason,
        /// The queue.
        queue: Option<String>,
        /// The notice instead of the standard one (outside business hours).
        notice: Option<String>,
    },
    /// What a plugin's `on-event` answer asked for (tags always; a message or a handoff
    /// only while the bot answers).
    PluginActions {
        /// The plugin's id in the tenant.
        plugin: String,
        /// Its actions.
        actions: Vec<crate::plugin::PluginAction>,
    },
    /// A model's finished reply: what becomes of it is decided on the conversation as it is
    /// now ([`dialogue::after_reply`]) — dropped if a human took over, the knowledge base's
    /// honest "no answer" instead, or recorded.
    Reply {
        /// The reply.
        reply: Box<TurnReply>,
        /// Whether the turn was grounded in the knowledge base.
        grounded: bool,
        /// The sources the reply cites, stored with it.
        citations: Vec<crate::vocab::Citation>,
    },
    /// A model-written summary for the slot ([`crate::chat::SummaryRun`]), written from
    /// the conversation with `evicted` messages out of the window: kept only if none has
    /// left since.
    Summary {
        /// The summary, masked and bounded ([`crate::summary::from_model`]).
        text: String,
        /// The evicted count it was written for.
        evicted: u32,
    },
}

/// What applying a [`Change`] did.
#[derive(Clone, Debug, Default)]
pub struct Effect {
    /// The messages recorded, in order (to persist with the state).
    pub messages: Vec<Message>,
    /// The events to publish.
    pub events: Vec<Event>,
    /// For [`Change::Reply`]: what became of the reply.
    pub(crate) after_reply: Option<AfterReply>,
    /// For a "no answer": the misses reached the handoff limit (nothing recorded; a person
    /// takes over).
    pub(crate) no_answer_limit: bool,
    /// For [`Change::PluginActions`]: per action, what was done or why not.
    pub said: Vec<String>,
}

impl From<Changed> for Effect {
    fn from(c: Changed) -> Self {
        Effect {
            messages: c.messages,
            events: c.events,
            ..Effect::default()
        }
    }
}

impl Effect {
    fn extend(&mut self, more: Changed) {
        self.messages.extend(more.messages);
        self.events.extend(more.events);
    }
}

/// A change as stored: the conversation after it and what it did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The conversation with the change.
    pub conversation: Conversation,
    /// What the change did.
    pub effect: Effect,
}

/// Accepts a visitor's message into `c`, at `now`: a verified visitor's conversation takes
/// only that visitor, an anonymous one is adopted by the first verified visitor who writes
/// in it ([`crate::identity::may_continue`]), and the message gets the next sequence number.
/// The rule every host runs inside the atomic step that stores the message.
pub fn accept(
    c: &mut Conversation,
    now: Timestamp,
    parts: Vec<crate::vocab::Part>,
    visitor: Option<&str>,
    config: &TenantConfig,
) -> Result<crate::conversation::Recorded, ApiError> {
    crate::identity::may_continue(c.owner(), visitor).map_err(|e| api::identity_error(&e))?;
    if let (None, Some(v)) = (c.owner(), visitor) {
        c.set_owner(v);
    }
    c.handle_visitor_message(now, parts, config)
        .map_err(|e| api::conversation_error(&e))
}

impl Change {
    /// Whether the events this change records go to the plugins that observe events. A
    /// plugin's own actions do not, so plugins cannot loop.
    pub fn heard_by_plugins(&self) -> bool {
        !matches!(self, Change::PluginActions { .. })
    }

    /// Applies the change to `c` at `now`: the rule every host (and a replay's scratch copy)
    /// runs inside its atomic step. An error changes nothing the host keeps.
    pub fn apply(
        &self,
        c: &mut Conversation,
        now: Timestamp,
        config: &TenantConfig,
    ) -> Result<Effect, ApiError> {
        let handoff = |e| api::handoff_error(&e);
        match self {
            Change::ClosedNotice(schedule) => Ok(c
                .record_closed_notice(now, config, schedule.as_deref())
                .map_err(handoff)?
                .into()),
            Change::Rule { tag, reply, close } => {
                if let Some(tag) = tag {
                    c.tag(tag);
                }
                let mut effect = Effect::default();
                if !reply.is_empty() {
                    effect.extend(c.record_bot_text(now, config, reply).map_err(handoff)?);
                }
                if *close {
                    effect.extend(c.resolve(now, config, None).map_err(handoff)?);
                }
                Ok(effect)
            }
            Change::Tag(tag) => {
                c.tag(tag);
                Ok(Effect::default())
            }
            Change::BotText(text) => Ok(c
                .record_bot_text(now, config, text)
                .map_err(handoff)?
                .into()),
            // A person already has the conversation (an agent took it, or it waits for
            // one, since the turn began): nothing to hand off, and the bot says nothing.
            Change::Handoff { .. } if !c.bot_answers() => Ok(Effect::default()),
            Change::Handoff {
                reason,
                queue,
                notice,
            } => Ok(c
                .request_handoff(now, config, reason, queue.as_deref(), notice.clone())
                .map_err(handoff)?
                .into()),
            Change::PluginActions { plugin, actions } => {
                let (changed, said) = c.apply_plugin_actions(now, config, plugin, actions.clone());
                let mut effect = Effect::from(changed);
                effect.said = said;
                Ok(effect)
            }
            Change::Summary { text, evicted } => {
                let mut effect = Effect::default();
                if !c.rewrite_summary(text.clone(), *evicted) {
                    effect
                        .said
                        .push("messages left the window meanwhile: kept as it was".into());
                }
                Ok(effect)
            }
            Change::Reply {
                reply,
                grounded,
                citations,
            } => {
                let verdict = dialogue::after_reply(c, config, reply, *grounded);
                let mut effect = Effect::default();
                match &verdict {
                    AfterReply::Drop | AfterReply::Keep { record: false, .. } => {}
                    AfterReply::NoAnswer(_) => {
                        // Counted, and the honest sentence recorded, in the same step.
                        let (changed, reached) =
                            c.record_no_answer(now, config).map_err(handoff)?;
                        effect.extend(changed);
                        effect.no_answer_limit = reached;
                    }
                    AfterReply::Keep { record: true, .. } => {
                        if *grounded {
                            c.note_no_answer(false, 0);
                        }
                        let r = c
                            .record_reply(now, reply, citations, config)
                            .map_err(|e| api::conversation_error(&e))?;
                        effect.messages.push(r.message);
                        effect.events.extend(r.events);
                    }
                }
                effect.after_reply = Some(verdict);
                Ok(effect)
            }
        }
    }
}
