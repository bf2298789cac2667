//! Human handoff: the explicit state machine that decides who owns a conversation.
//!
//! ```text
//!            request_handoff                 assign(agent)                resolve
//!   bot ──────────────────────▶ waiting_for_agent ──────────▶ with_agent ─────────▶ resolved
//!    ▲  ╲______________________________ assign(agent) ______▲   │  ▲  transfer(agent) │
//!    │                                                           │  └──────────────────┘
//!    │      transfer(queue) sends with_agent back to waiting_for_agent                 │
//!    └──────────────────── a new visitor message reopens a resolved conversation ──────┘
//! ```
//!
//! Once the conversation is `waiting_for_agent` or `with_agent`, [`Conversation::bot_answers`]
//! is false and the hosts run no bot turn: the bot never talks over a human. Every change
//! records a visible system message for the visitor (so nobody is left wondering who is
//! there) and emits the events webhooks and live chat carry. Internal notes are recorded
//! with [`Role::Note`]: agents see them; visitors and the model never do.

use crate::Event;
use crate::config::TenantConfig;
use crate::conversation::{Conversation, ConversationError};
use crate::hours::Schedule;
use crate::offline::{Lang, detect_lang};
use crate::time::Timestamp;
use crate::turn::TurnReply;
use crate::vocab::{Message, Part, Role, Status};

pub use crate::turn::{HANDOFF_TOOL, handoff_tool};

/// The reason the model gave, when its reply asks for a handoff.
pub fn model_wants_handoff(reply: &TurnReply) -> Option<String> {
    let call = reply.tool_calls.iter().find(|c| c.name == HANDOFF_TOOL)?;
    let reason = serde_json::from_slice::<serde_json::Value>(call.arguments.as_bytes())
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Some(reason)
}

/// Why a conversation went to a human.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffReason {
    /// The visitor asked for a person.
    VisitorAsked,
    /// A rule's action.
    Rule(String),
    /// The model called its handoff tool.
    Model,
    /// The bot found no answer several times in a row.
    RepeatedNoAnswer,
    /// No provider could answer.
    ProviderFailure,
    /// An agent took it over without being asked.
    AgentTookOver,
    /// A plugin asked for a human (its `before-model` or `after-reply` hook).
    Plugin {
        /// The plugin's id in the tenant.
        id: String,
        /// Why, as the plugin said.
        reason: String,
    },
}

impl HandoffReason {
    /// A stable name for traces and webhooks.
    pub fn as_str(&self) -> &str {
        match self {
            HandoffReason::VisitorAsked => "visitor_asked",
            HandoffReason::Rule(_) => "rule",
            HandoffReason::Model => "model",
            HandoffReason::RepeatedNoAnswer => "repeated_no_answer",
            HandoffReason::ProviderFailure => "provider_failure",
            HandoffReason::AgentTookOver => "agent_took_over",
            HandoffReason::Plugin { .. } => "plugin",
        }
    }
}

/// A change that the state machine refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The change does not apply in this status.
    #[error("the conversation is {status}; {action} is not possible now")]
    WrongStatus {
        /// The status it is in.
        status: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// Only the assigned agent may do this.
    #[error("the conversation belongs to agent {owner}")]
    NotAssignee {
        /// Who owns it.
        owner: String,
    },
    /// A bad argument (empty message, score out of range, bad id).
    #[error("{0}")]
    Invalid(&'static str),
    /// The conversation itself refused (full).
    #[error(transparent)]
    Conversation(#[from] ConversationError),
}

impl HandoffError {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            HandoffError::WrongStatus { .. } => "invalid_state",
            HandoffError::NotAssignee { .. } => "not_assignee",
            HandoffError::Invalid(_) => "invalid_field",
            HandoffError::Conversation(_) => "conversation_full",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            HandoffError::WrongStatus { .. } | HandoffError::NotAssignee { .. } => 409,
            HandoffError::Invalid(_) => 400,
            HandoffError::Conversation(_) => 409,
        }
    }
}

/// What a change recorded: the messages to append (in order) and the events to emit. The
/// host persists them with the new state, as for a visitor's message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// New messages, in order.
    pub messages: Vec<Message>,
    /// Events for observers.
    pub events: Vec<Event>,
}

fn valid_agent(agent: &str) -> bool {
    !agent.is_empty()
        && agent.len() <= 64
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'@')
}

impl Conversation {
    /// The agent who owns the conversation, if one does.
    pub fn assignee(&self) -> Option<&str> {
        self.assignee.as_deref()
    }

    /// The queue it waits in, if any.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// Its tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The visitor's rating, once given.
    pub fn csat(&self) -> Option<u8> {
        self.csat
    }

    /// The language of the visitor's latest message (for system notices).
    pub(crate) fn visitor_lang(&self) -> Lang {
        self.window()
            .iter()
            .rev()
            .find(|m| m.role == Role::Visitor)
            .map_or(Lang::En, |m| detect_lang(&m.text()))
    }

    fn notice(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        text: String,
        changed: &mut Changed,
    ) -> Result<(), HandoffError> {
        let m = self.append(now, Role::System, vec![Part::Text(text)], config)?;
        changed.events.push(Event::MessageCreated {
            conversation: self.id().clone(),
            seq: m.seq,
            role: Role::System,
        });
        changed.messages.push(m);
        Ok(())
    }

    fn status_changed(&mut self, status: Status, changed: &mut Changed) {
        self.set_status(status);
        changed.events.push(Event::StatusChanged {
            conversation: self.id().clone(),
            status,
        });
    }

    /// Hands the conversation to a human: `bot` → `waiting_for_agent`, with a notice that
    /// says so honestly (when no agent is around, `offline_notice` replaces the promise).
    pub fn request_handoff(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        reason: &HandoffReason,
        queue: Option<&str>,
        offline_notice: Option<String>,
    ) -> Result<Changed, HandoffError> {
        if self.status() != Status::Bot {
            return Err(HandoffError::WrongStatus {
                status: self.status().as_str(),
                action: "a handoff",
            });
        }
        let mut changed = Changed::default();
        let text = offline_notice.unwrap_or_else(|| match self.visitor_lang() {
            Lang::Zh => "正在为你转接人工客服，请稍候。客服接入后会在这里回复你。".to_owned(),
            Lang::En => "I'm connecting you with a member of our team. They'll reply here as soon as they join.".to_owned(),
        });
        self.queue = queue.map(str::to_owned).or_else(|| self.queue.take());
        self.no_answers = 0;
        if let HandoffReason::Rule(tag) = reason {
            self.tag(tag);
        }
        self.notice(now, config, text, &mut changed)?;
        self.status_changed(Status::WaitingForAgent, &mut changed);
        Ok(changed)
    }

    /// An agent takes the conversation: claiming it from the queue, taking it over from the
    /// bot, or receiving it by transfer.
    pub fn assign(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        agent: &str,
        agent_name: &str,
    ) -> Result<Changed, HandoffError> {
        if !valid_agent(agent) {
            return Err(HandoffError::Invalid(
                "agent ids are 1 to 64 characters of [A-Za-z0-9._@-]",
            ));
        }
        if self.assignee.as_deref() == Some(agent) && self.status() == Status::WithAgent {
            return Ok(Changed::default());
        }
        if self.status() == Status::Resolved {
            return Err(HandoffError::WrongStatus {
                status: "resolved",
                action: "claiming it",
            });
        }
        let mut changed = Changed::default();
        let name = if agent_name.trim().is_empty() {
            agent
        } else {
            agent_name.trim()
        };
        let text = match self.visitor_lang() {
            Lang::Zh => format!("{name} 已加入对话。"),
            Lang::En => format!("{name} joined the conversation."),
        };
        self.assignee = Some(agent.to_owned());
        self.notice(now, config, text, &mut changed)?;
        if self.status() != Status::WithAgent {
            self.status_changed(Status::WithAgent, &mut changed);
        }
        changed.events.push(Event::Assigned {
            conversation: self.id().clone(),
            agent: agent.to_owned(),
        });
        Ok(changed)
    }

    /// The assigned agent hands the conversation on: to another agent, or back to a queue.
    pub fn transfer(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        by: &str,
        to_agent: Option<(&str, &str)>,
        to_queue: Option<&str>,
    ) -> Result<Changed, HandoffError> {
        self.require_assignee(by, "a transfer")?;
        match (to_agent, to_queue) {
            (Some((agent, name)), _) => {
                self.queue = to_queue.map(str::to_owned).or_else(|| self.queue.take());
                self.assign(now, config, agent, name)
            }
            (None, Some(queue)) => {
                let mut changed = Changed::default();
                self.assignee = None;
                self.queue = Some(queue.to_owned());
                let text = match self.visitor_lang() {
                    Lang::Zh => "正在为你转接其他同事，请稍候。".to_owned(),
                    Lang::En => "I'm passing you to a colleague who can help further. They'll reply here shortly.".to_owned(),
                };
                self.notice(now, config, text, &mut changed)?;
                self.status_changed(Status::WaitingForAgent, &mut changed);
                Ok(changed)
            }
            (None, None) => Err(HandoffError::Invalid(
                "a transfer needs an agent or a queue",
            )),
        }
    }

    fn require_assignee(&self, agent: &str, action: &'static str) -> Result<(), HandoffError> {
        if self.status() != Status::WithAgent {
            return Err(HandoffError::WrongStatus {
                status: self.status().as_str(),
                action,
            });
        }
        match &self.assignee {
            Some(owner) if owner != agent => Err(HandoffError::NotAssignee {
                owner: owner.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The assigned agent writes to the visitor, or (with `internal`) leaves a note that
    /// only agents see.
    pub fn handle_agent_message(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        agent: &str,
        parts: Vec<Part>,
        internal: bool,
    ) -> Result<Changed, HandoffError> {
        if parts
            .iter()
            .all(|p| matches!(p, Part::Text(t) if t.trim().is_empty()))
        {
            return Err(HandoffError::Invalid("the message is empty"));
        }
        if internal {
            // Notes may be left in any status by any agent of the tenant.
            if !valid_agent(agent) {
                return Err(HandoffError::Invalid(
                    "agent ids are 1 to 64 characters of [A-Za-z0-9._@-]",
                ));
            }
        } else {
            self.require_assignee(agent, "replying")?;
        }
        let role = if internal { Role::Note } else { Role::Agent };
        let m = self.append(now, role, parts, config)?;
        let mut changed = Changed::default();
        changed.events.push(Event::MessageCreated {
            conversation: self.id().clone(),
            seq: m.seq,
            role,
        });
        changed.messages.push(m);
        Ok(changed)
    }

    /// Closes the conversation. The visitor is thanked and asked for a rating; a new visitor
    /// message reopens it (to the bot).
    pub fn resolve(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        by: Option<&str>,
    ) -> Result<Changed, HandoffError> {
        if self.status() == Status::Resolved {
            return Err(HandoffError::WrongStatus {
                status: "resolved",
                action: "resolving it again",
            });
        }
        if let (Some(agent), Status::WithAgent) = (by, self.status()) {
            self.require_assignee(agent, "resolving it")?;
        }
        let mut changed = Changed::default();
        let text = match self.visitor_lang() {
            Lang::Zh => "本次对话已结束，感谢你的耐心！欢迎为本次服务评分（1–5 分）。".to_owned(),
            Lang::En => "This conversation is now closed. Thanks for reaching out! How did we do? Rate us from 1 to 5.".to_owned(),
        };
        self.notice(now, config, text, &mut changed)?;
        self.assignee = None;
        self.status_changed(Status::Resolved, &mut changed);
        Ok(changed)
    }

    /// The visitor's rating (1–5) after the conversation was resolved. Rating again
    /// replaces the earlier score.
    pub fn submit_csat(&mut self, score: u8) -> Result<Changed, HandoffError> {
        if !(1..=5).contains(&score) {
            return Err(HandoffError::Invalid("the score must be between 1 and 5"));
        }
        if self.status() != Status::Resolved {
            return Err(HandoffError::WrongStatus {
                status: self.status().as_str(),
                action: "rating it",
            });
        }
        self.csat = Some(score);
        Ok(Changed {
            messages: Vec::new(),
            events: vec![Event::CsatSubmitted {
                conversation: self.id().clone(),
                score,
            }],
        })
    }

    /// Counts a bot answer that found nothing (`true`) or an answer (`false`); returns
    /// whether the count reached `limit`.
    pub fn note_no_answer(&mut self, found_nothing: bool, limit: u8) -> bool {
        self.no_answers = if found_nothing {
            self.no_answers.saturating_add(1)
        } else {
            0
        };
        limit > 0 && self.no_answers >= limit
    }

    /// The knowledge base had no answer to the visitor's question: counts it and, unless
    /// that makes `handoff.no_answer_limit` misses in a row with handoff on (then the
    /// returned flag is set and the caller hands off, with [`HandoffReason::RepeatedNoAnswer`]),
    /// records the honest sentence (`knowledge.no_answer_message`, or a built-in one in the
    /// visitor's language).
    pub fn record_no_answer(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
    ) -> Result<(Changed, bool), HandoffError> {
        let reached = self.note_no_answer(true, config.handoff.no_answer_limit);
        if reached && config.handoff.enabled {
            return Ok((Changed::default(), true));
        }
        let text = config
            .knowledge
            .no_answer_message
            .clone()
            .unwrap_or_else(|| match self.visitor_lang() {
                Lang::Zh => "抱歉，我在帮助中心里没有找到这个问题的答案。需要我为你转接人工客服吗？".to_owned(),
                Lang::En => "I'm sorry, I couldn't find the answer to that in our help center. Would you like me to connect you with a member of our team?".to_owned(),
            });
        Ok((self.record_bot_text(now, config, &text)?, false))
    }

    /// Records a reply the bot did not get from a model (a rule's canned reply).
    pub fn record_bot_text(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        text: &str,
    ) -> Result<Changed, HandoffError> {
        let m = self.append(now, Role::Bot, vec![Part::Text(text.to_owned())], config)?;
        Ok(Changed {
            events: vec![Event::MessageCreated {
                conversation: self.id().clone(),
                seq: m.seq,
                role: Role::Bot,
            }],
            messages: vec![m],
        })
    }

    /// Whether the bot should say, before it answers at `now`, that the team is away: outside
    /// business hours, once per closed stretch (until the next opening; a visitor who comes
    /// back after the team opened and closed again hears it again).
    pub fn closed_notice_due(&self, now: Timestamp, schedule: Option<&Schedule>) -> bool {
        schedule.is_some_and(|s| !s.is_open(now))
            && self.closed_notice_until.is_none_or(|until| now >= until)
    }

    /// Records the closed notice ([`Conversation::closed_notice_due`]): the team is away,
    /// when it is back, that the bot can still help and that a message left here reaches the
    /// team — never that an agent is coming now. Returns nothing to record while open.
    pub fn record_closed_notice(
        &mut self,
        now: Timestamp,
        config: &TenantConfig,
        schedule: Option<&Schedule>,
    ) -> Result<Changed, HandoffError> {
        let mut changed = Changed::default();
        let Some(schedule) = schedule.filter(|_| self.closed_notice_due(now, schedule)) else {
            return Ok(changed);
        };
        let lang = self.visitor_lang();
        let Some(closed) = schedule.closed_notice(now, lang) else {
            return Ok(changed);
        };
        let text = match lang {
            Lang::Zh => format!(
                "{closed} 我是智能助手，现在仍可以回答很多问题。如需人工服务，请在这里留言（最好留下邮箱），同事回来后会回复你。"
            ),
            Lang::En => format!(
                "{closed} I'm the virtual assistant and can still help with many questions now. If you need a person, leave your message here (and your e-mail address) and the team will reply when they're back."
            ),
        };
        self.notice(now, config, text, &mut changed)?;
        // A schedule that never opens again: said once, for good.
        self.closed_notice_until = Some(
            schedule
                .next_open(now)
                .unwrap_or(Timestamp::from_millis(u64::MAX)),
        );
        Ok(changed)
    }

    /// Adds a tag (no duplicates).
    pub fn tag(&mut self, tag: &str) {
        if !tag.is_empty() && !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_owned());
        }
    }
}

/// What plugins see of a conversation, and what their `on-event` actions do to it (the
/// plugin module holds their specs and calls; the changes are the conversation's).
impl Conversation {
    /// The visitor's language as plugins get it (`en` or `zh`, from their latest message).
    pub fn plugin_language(&self) -> String {
        match self.visitor_lang() {
            crate::offline::Lang::Zh => "zh".into(),
            crate::offline::Lang::En => "en".into(),
        }
    }

    /// Applies what a plugin's `on-event` answer asked for, after [`crate::plugin::accept_actions`]: tags
    /// always; a message to the visitor and a handoff only while the bot answers (a plugin
    /// never talks over a human). Returns what to persist, and per action what was done or
    /// why not (for the trace).
    pub fn apply_plugin_actions(
        &mut self,
        now: crate::time::Timestamp,
        config: &crate::config::TenantConfig,
        plugin_id: &str,
        actions: Vec<crate::plugin::PluginAction>,
    ) -> (Changed, Vec<String>) {
        let (taken, mut said) = crate::plugin::accept_actions(actions);
        let mut changed = Changed::default();
        for action in taken {
            let outcome = match action {
                crate::plugin::PluginAction::Tag(tag) => {
                    self.tag(&tag);
                    Ok(format!("tag {tag}"))
                }
                crate::plugin::PluginAction::SendMessage(text) if self.bot_answers() => self
                    .record_bot_text(now, config, &text)
                    .map(|c| {
                        changed.messages.extend(c.messages);
                        changed.events.extend(c.events);
                        "sent a message".to_owned()
                    })
                    .map_err(|e| e.to_string()),
                crate::plugin::PluginAction::Handoff(reason)
                    if self.bot_answers() && config.handoff.enabled =>
                {
                    let why = HandoffReason::Plugin {
                        id: plugin_id.to_owned(),
                        reason: reason.clone(),
                    };
                    self.request_handoff(
                        now,
                        config,
                        &why,
                        config.handoff.default_queue.as_deref(),
                        None,
                    )
                    .map(|c| {
                        changed.messages.extend(c.messages);
                        changed.events.extend(c.events);
                        format!("handoff: {reason}")
                    })
                    .map_err(|e| e.to_string())
                }
                crate::plugin::PluginAction::SendMessage(_)
                | crate::plugin::PluginAction::Handoff(_) => Err(format!(
                    "not done: the conversation is {} (the bot does not answer now)",
                    self.status().as_str()
                )),
            };
            said.push(match outcome {
                Ok(done) => done,
                Err(why) => format!("refused: {why}"),
            });
        }
        (changed, said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{ConversationId, TenantId};

    fn conv() -> (Conversation, TenantConfig) {
        let cfg = TenantConfig::default();
        let mut c = Conversation::new(
            ConversationId::parse("c1").unwrap(),
            TenantId::default_tenant(),
            Timestamp::from_millis(1),
        );
        c.handle_visitor_message(
            Timestamp::from_millis(2),
            vec![Part::Text("hi".into())],
            &cfg,
        )
        .unwrap();
        (c, cfg)
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn the_closed_notice_is_said_once_a_closed_stretch() {
        let (mut c, cfg) = conv();
        let hours: crate::hours::BusinessHours = serde_json::from_slice(
            br#"{"timezone": "Europe/Berlin", "weekly": {"mon": [["09:00", "17:00"]]}}"#,
        )
        .unwrap();
        let schedule = hours.compile().unwrap();
        let saturday_noon = t(1_795_867_200_000);
        let saturday_night = t(1_795_896_000_000);
        let monday_open = t(1_796_032_800_000);
        let monday_evening = t(1_796_061_600_000);
        assert!(
            !c.closed_notice_due(saturday_noon, None),
            "no hours: always open"
        );
        assert!(c.closed_notice_due(saturday_noon, Some(&schedule)));
        let said = c
            .record_closed_notice(saturday_noon, &cfg, Some(&schedule))
            .unwrap();
        assert_eq!(said.messages.len(), 1);
        assert_eq!(said.messages[0].role, Role::System);
        let text = said.messages[0].text();
        assert!(
            text.contains("Monday") && text.contains("leave your message"),
            "{text}"
        );
        assert!(!text.contains("connecting"), "{text}");
        // Later the same weekend: already said.
        assert!(!c.closed_notice_due(saturday_night, Some(&schedule)));
        let again = c
            .record_closed_notice(saturday_night, &cfg, Some(&schedule))
            .unwrap();
        assert!(again.messages.is_empty());
        // Open: nothing to say; closed again after that: said again.
        assert!(!c.closed_notice_due(monday_open, Some(&schedule)));
        assert!(c.closed_notice_due(monday_evening, Some(&schedule)));
        // It survives a round trip through the stored state.
        let stored = Conversation::decode(&c.encode()).unwrap();
        assert!(!stored.closed_notice_due(saturday_night, Some(&schedule)));
        // A schedule that never opens says it once, for good.
        let never: crate::hours::BusinessHours =
            serde_json::from_slice(br#"{"timezone": "UTC", "weekly": {}}"#).unwrap();
        let never = never.compile().unwrap();
        let (mut c, cfg) = conv();
        assert_eq!(
            c.record_closed_notice(saturday_noon, &cfg, Some(&never))
                .unwrap()
                .messages
                .len(),
            1
        );
        assert!(!c.closed_notice_due(monday_evening, Some(&never)));
    }

    fn names(c: &Changed) -> Vec<&'static str> {
        c.events.iter().map(Event::name).collect()
    }

    #[test]
    fn the_whole_path_bot_to_resolved_and_back() {
        let (mut c, cfg) = conv();
        let h = c
            .request_handoff(
                t(3),
                &cfg,
                &HandoffReason::VisitorAsked,
                Some("billing"),
                None,
            )
            .unwrap();
        assert_eq!(
            names(&h),
            ["message.created", "conversation.status_changed"]
        );
        assert_eq!(h.messages[0].role, Role::System);
        assert!(h.messages[0].text().contains("connecting you"));
        assert_eq!(c.status(), Status::WaitingForAgent);
        assert!(!c.bot_answers());
        assert_eq!(c.queue(), Some("billing"));

        let a = c.assign(t(4), &cfg, "alex", "Alex").unwrap();
        assert_eq!(
            names(&a),
            [
                "message.created",
                "conversation.status_changed",
                "conversation.assigned"
            ]
        );
        assert!(a.messages[0].text().contains("Alex joined"));
        assert_eq!(
            (c.status(), c.assignee()),
            (Status::WithAgent, Some("alex"))
        );

        let m = c
            .handle_agent_message(
                t(5),
                &cfg,
                "alex",
                vec![Part::Text("Hello, I'm Alex.".into())],
                false,
            )
            .unwrap();
        assert_eq!(m.messages[0].role, Role::Agent);
        let n = c
            .handle_agent_message(
                t(6),
                &cfg,
                "sam",
                vec![Part::Text("VIP customer".into())],
                true,
            )
            .unwrap();
        assert_eq!(n.messages[0].role, Role::Note);

        let r = c.resolve(t(7), &cfg, Some("alex")).unwrap();
        assert_eq!(c.status(), Status::Resolved);
        assert!(r.messages[0].text().contains("Rate us"));
        assert_eq!(names(&c.submit_csat(5).unwrap()), ["csat.submitted"]);
        assert_eq!(c.csat(), Some(5));

        // A new visitor message reopens it to the bot.
        let again = c
            .handle_visitor_message(t(8), vec![Part::Text("one more thing".into())], &cfg)
            .unwrap();
        assert!(again.events.iter().any(|e| matches!(
            e,
            Event::StatusChanged {
                status: Status::Bot,
                ..
            }
        )));
        assert!(c.bot_answers());
    }

    #[test]
    fn only_the_assignee_replies_and_wrong_moves_change_nothing() {
        let (mut c, cfg) = conv();
        let before = c.clone();
        assert_eq!(
            c.handle_agent_message(t(3), &cfg, "alex", vec![Part::Text("hi".into())], false)
                .unwrap_err()
                .code(),
            "invalid_state"
        );
        assert_eq!(c.submit_csat(4).unwrap_err().code(), "invalid_state");
        assert_eq!(c, before);
        c.assign(t(4), &cfg, "alex", "").unwrap();
        let e = c
            .handle_agent_message(t(5), &cfg, "sam", vec![Part::Text("hi".into())], false)
            .unwrap_err();
        assert_eq!((e.code(), e.status()), ("not_assignee", 409));
        assert_eq!(
            c.request_handoff(t(6), &cfg, &HandoffReason::Model, None, None)
                .unwrap_err()
                .code(),
            "invalid_state"
        );
        assert_eq!(
            c.assign(t(7), &cfg, "bad id!", "").unwrap_err().code(),
            "invalid_field"
        );
        assert_eq!(c.submit_csat(9).unwrap_err().code(), "invalid_field");
    }

    #[test]
    fn transfers_to_an_agent_or_back_to_a_queue() {
        let (mut c, cfg) = conv();
        c.request_handoff(
            t(3),
            &cfg,
            &HandoffReason::VisitorAsked,
            Some("sales"),
            None,
        )
        .unwrap();
        c.assign(t(4), &cfg, "alex", "Alex").unwrap();
        let x = c
            .transfer(t(5), &cfg, "alex", Some(("kim", "Kim")), None)
            .unwrap();
        assert!(names(&x).contains(&"conversation.assigned"));
        assert_eq!(c.assignee(), Some("kim"));
        let q = c
            .transfer(t(6), &cfg, "kim", None, Some("billing"))
            .unwrap();
        assert_eq!(
            names(&q),
            ["message.created", "conversation.status_changed"]
        );
        assert_eq!(
            (c.status(), c.assignee(), c.queue()),
            (Status::WaitingForAgent, None, Some("billing"))
        );
        assert_eq!(
            c.transfer(t(7), &cfg, "kim", None, None)
                .unwrap_err()
                .code(),
            "invalid_state"
        );
    }

    #[test]
    fn notices_speak_the_visitors_language() {
        let cfg = TenantConfig::default();
        let mut c = Conversation::new(
            ConversationId::parse("c2").unwrap(),
            TenantId::default_tenant(),
            t(1),
        );
        c.handle_visitor_message(t(2), vec![Part::Text("我要转人工".into())], &cfg)
            .unwrap();
        let h = c
            .request_handoff(t(3), &cfg, &HandoffReason::VisitorAsked, None, None)
            .unwrap();
        assert!(h.messages[0].text().contains("人工客服"));
        let h = c.assign(t(4), &cfg, "li", "小李").unwrap();
        assert!(h.messages[0].text().contains("小李 已加入"));
    }

    #[test]
    fn no_answer_counter_and_state_survives_the_codec() {
        let (mut c, cfg) = conv();
        assert!(!c.note_no_answer(true, 2));
        assert!(c.note_no_answer(true, 2));
        assert!(!c.note_no_answer(false, 2));
        c.tag("vip");
        c.request_handoff(
            t(3),
            &cfg,
            &HandoffReason::Rule("refund".into()),
            Some("billing"),
            None,
        )
        .unwrap();
        let back = Conversation::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.tags(), ["vip", "refund"]);
    }
}
