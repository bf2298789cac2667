//! The conversation: who said what, in one order, and what the bot remembers.
//!
//! A [`Conversation`] is the durable state of one chat. It keeps the head (ids, status, times,
//! the next sequence number), a bounded window of the most recent messages for the prompt,
//! and a summary slot for what fell out of the window. The full transcript is not part of it:
//! hosts append every [`Message`] to their own transcript store as they persist, so the state
//! a turn loads stays small however long the chat runs.
//!
//! Every change goes through a method that returns what the host must persist and emit, so
//! the rule "a visitor's message is stored before anything else happens" lives here, once.

use serde::{Deserialize, Serialize};

use crate::Event;
use crate::config::TenantConfig;
use crate::time::Timestamp;
use crate::turn::{Turn, TurnOptions, TurnReply, build_prompt};
use crate::vocab::decode_versioned;
pub use crate::vocab::{
    ConversationId, DecodeError, Message, Part, Role, STATE_FORMAT_VERSION, Status, TenantId,
};

/// The most messages one conversation holds. A conversation is a support case, not a
/// channel: past this, the client starts a new conversation on `409 conversation_full`,
/// so no one conversation grows its storage without bound.
pub const MAX_MESSAGES: u32 = 5_000;

/// The messages kept free for the bot's reply and the system's notices after the last
/// message a person may send.
const REPLY_HEADROOM: u32 = 8;

/// Why the conversation refused a change. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversationError {
    /// The message has no content.
    #[error("the message is empty")]
    EmptyMessage,
    /// The conversation holds [`MAX_MESSAGES`] (or people's messages reached it).
    #[error("the conversation is full ({MAX_MESSAGES} messages): start a new one")]
    Full,
    /// A turn was asked for a message that is not one of this conversation's visitor messages.
    #[error("message {0} is not a visitor message awaiting a reply")]
    NotAwaitingReply(u32),
}

/// What a change produced: the messages to append to the transcript and the events to emit.
/// The host persists the appended messages together with [`Conversation::encode`] before it
/// acknowledges anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The message the change created.
    pub message: Message,
    /// Events for observers (webhooks, live chat, logs).
    pub events: Vec<Event>,
}

/// The durable state of one conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    id: ConversationId,
    tenant: TenantId,
    status: Status,
    created_at: Timestamp,
    updated_at: Timestamp,
    next_seq: u32,
    /// What the bot remembers of messages that left the window.
    summary: Option<String>,
    /// How many messages have left the window (their text lives on in the transcript).
    evicted: u32,
    /// The most recent messages, oldest first.
    window: Vec<Message>,
    /// The agent who owns the conversation (`with_agent`).
    pub(crate) assignee: Option<String>,
    /// The team queue it waits in or belongs to.
    pub(crate) queue: Option<String>,
    /// Labels from rules and agents.
    pub(crate) tags: Vec<String>,
    /// Bot answers in a row that found no answer (for the repeated-no-answer handoff).
    pub(crate) no_answers: u8,
    /// The visitor's satisfaction rating (1–5), once given.
    pub(crate) csat: Option<u8>,
    /// Outside business hours, the visitor was told so for the closed stretch that ends
    /// at this time (the team's next opening): the notice is given once a stretch.
    pub(crate) closed_notice_until: Option<Timestamp>,
    /// The verified visitor the conversation belongs to (see [`crate::identity`]), for hosts
    /// that keep it in the state (Spin; the Worker's object keeps it beside).
    pub(crate) owner: Option<String>,
}

/// Version 2 of the state: before the business-hours notice mark.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ConversationV2 {
    id: ConversationId,
    tenant: TenantId,
    status: Status,
    created_at: Timestamp,
    updated_at: Timestamp,
    next_seq: u32,
    summary: Option<String>,
    evicted: u32,
    window: Vec<Message>,
    assignee: Option<String>,
    queue: Option<String>,
    tags: Vec<String>,
    no_answers: u8,
    csat: Option<u8>,
}

/// Version 1 of the state: before handoff (no assignee, queue, tags, counters).
#[derive(Deserialize)]
struct ConversationV1 {
    id: ConversationId,
    tenant: TenantId,
    status: Status,
    created_at: Timestamp,
    updated_at: Timestamp,
    next_seq: u32,
    summary: Option<String>,
    evicted: u32,
    window: Vec<Message>,
}

impl Conversation {
    /// A new, empty conversation.
    pub fn new(id: ConversationId, tenant: TenantId, now: Timestamp) -> Self {
        Self {
            id,
            tenant,
            status: Status::Bot,
            created_at: now,
            updated_at: now,
            next_seq: 1,
            summary: None,
            evicted: 0,
            window: Vec::new(),
            assignee: None,
            queue: None,
            tags: Vec::new(),
            no_answers: 0,
            csat: None,
            closed_notice_until: None,
            owner: None,
        }
    }

    /// The conversation's id.
    pub fn id(&self) -> &ConversationId {
        &self.id
    }

    /// The tenant it belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Who owns it now.
    pub fn status(&self) -> Status {
        self.status
    }

    /// When it was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When it last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// The verified visitor the conversation belongs to, if the host recorded one.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Records the verified visitor the conversation now belongs to.
    pub fn set_owner(&mut self, visitor: &str) {
        self.owner = Some(visitor.to_owned());
    }

    /// How many messages it holds in all (window and evicted).
    pub fn message_count(&self) -> u32 {
        self.next_seq - 1
    }

    /// The recent messages the bot sees, oldest first.
    pub fn window(&self) -> &[Message] {
        &self.window
    }

    /// The running summary of messages that left the window (see [`crate::summary`]), if
    /// any was worth keeping: bounded to [`crate::summary::MAX_SUMMARY_CHARS`].
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }

    /// Puts a model-written summary in the slot, if no message left the window since the
    /// model was shown the conversation with `evicted` gone (otherwise their lines would be
    /// lost: the next rewrite covers them). Whether it was put.
    pub(crate) fn rewrite_summary(&mut self, text: String, evicted: u32) -> bool {
        if self.evicted != evicted || text.trim().is_empty() {
            return false;
        }
        self.summary = Some(text);
        true
    }

    /// How many messages have left the window.
    pub fn evicted(&self) -> u32 {
        self.evicted
    }

    /// Records a visitor's message. The host must persist the result before it answers.
    pub fn handle_visitor_message(
        &mut self,
        now: Timestamp,
        parts: Vec<Part>,
        config: &TenantConfig,
    ) -> Result<Recorded, ConversationError> {
        let is_empty = parts
            .iter()
            .all(|p| matches!(p, Part::Text(t) if t.trim().is_empty()));
        if is_empty {
            return Err(ConversationError::EmptyMessage);
        }
        let first = self.next_seq == 1;
        let message = self.append(now, Role::Visitor, parts, config)?;
        let mut events = Vec::with_capacity(3);
        if first {
            events.push(Event::ConversationCreated {
                conversation: self.id.clone(),
            });
        }
        if self.status == Status::Resolved {
            self.status = Status::Bot;
            events.push(Event::StatusChanged {
                conversation: self.id.clone(),
                status: Status::Bot,
            });
        }
        events.push(Event::MessageCreated {
            conversation: self.id.clone(),
            seq: message.seq,
            role: Role::Visitor,
        });
        Ok(Recorded { message, events })
    }

    /// Whether the bot should answer now (no human owns the conversation).
    pub fn bot_answers(&self) -> bool {
        self.status == Status::Bot
    }

    /// The messages a turn answering `trigger` shows the model, oldest first: the window
    /// without visitor messages that came after it, and the trigger last.
    fn turn_history<'a>(&'a self, trigger: &'a Message) -> Vec<&'a Message> {
        let mut history: Vec<&Message> = self
            .window
            .iter()
            .filter(|m| m.seq != trigger.seq && !(m.role == Role::Visitor && m.seq > trigger.seq))
            .collect();
        history.push(trigger);
        history
    }

    /// The stored attachments a turn answering `trigger` shows the model (newest first, at
    /// most [`crate::attachment::MAX_RESOLVED_PER_TURN`]), each with whether the host should
    /// fetch its bytes (`true`: images, PDFs) or the text stored beside them. The host puts
    /// what it fetched in [`TurnOptions::attachments`].
    pub fn turn_attachments(&self, trigger: &Message) -> Vec<(String, bool)> {
        let history = self.turn_history(trigger);
        let parts = history
            .iter()
            .filter(|m| matches!(m.role, Role::Visitor | Role::Bot | Role::Agent))
            .flat_map(|m| m.parts.iter());
        crate::attachment::wanted(parts)
            .into_iter()
            .map(|(id, part)| (id.to_owned(), crate::attachment::part_wants_bytes(part)))
            .collect()
    }

    /// Starts the bot's turn answering the visitor message `trigger` (as
    /// [`Conversation::handle_visitor_message`] recorded it).
    ///
    /// The prompt is the window as it stands, without visitor messages that arrived after
    /// `trigger` (their own turns answer them), and with `trigger` last. A burst of messages
    /// longer than the window can push `trigger` itself out of the window before its turn
    /// runs; it is still answered, with whatever context the window still holds.
    pub fn start_turn(
        &self,
        now: Timestamp,
        config: &TenantConfig,
        trigger: &Message,
        options: TurnOptions,
    ) -> Result<Turn, ConversationError> {
        if trigger.role != Role::Visitor || trigger.seq >= self.next_seq {
            return Err(ConversationError::NotAwaitingReply(trigger.seq));
        }
        let history = self.turn_history(trigger);
        let mut options = options;
        let mut prompt = if options.knowledge.is_empty() {
            build_prompt(&config.system_prompt, self.summary.as_deref(), &history)
        } else {
            // The grounded system message replaces the plain one (some models accept only
            // one system message).
            let (mut system, tools) = crate::knowledge::grounded_prompt(
                &config.system_prompt,
                &trigger.text(),
                &options.knowledge,
                None,
            );
            options.tools.extend(tools);
            system.extend(build_prompt("", self.summary.as_deref(), &history));
            system
        };
        // Stored files become what the model takes: images, PDFs, or their text.
        for m in &mut prompt {
            if m.parts
                .iter()
                .any(|p| crate::attachment::part_ref(p).is_some())
            {
                let (parts, stand_ins) =
                    crate::attachment::resolve_parts(&m.parts, &options.attachments);
                m.parts = parts;
                m.stand_ins = stand_ins;
            }
        }
        let h = &config.handoff;
        if h.enabled && h.model_may_hand_off && config.has_models() {
            options.tools.push(crate::turn::handoff_tool());
        }
        Ok(Turn::new(now, config, prompt, options))
    }

    /// Records the bot's reply that a finished turn produced.
    pub fn record_reply(
        &mut self,
        now: Timestamp,
        reply: &TurnReply,
        citations: &[crate::vocab::Citation],
        config: &TenantConfig,
    ) -> Result<Recorded, ConversationError> {
        let mut parts = vec![Part::Text(reply.text.clone())];
        if !citations.is_empty() {
            parts.push(Part::Citations(citations.to_vec()));
        }
        let message = self.append(now, Role::Bot, parts, config)?;
        let events = vec![Event::MessageCreated {
            conversation: self.id.clone(),
            seq: message.seq,
            role: Role::Bot,
        }];
        Ok(Recorded { message, events })
    }

    pub(crate) fn set_status(&mut self, status: Status) {
        self.status = status;
    }

    pub(crate) fn append(
        &mut self,
        now: Timestamp,
        role: Role,
        parts: Vec<Part>,
        config: &TenantConfig,
    ) -> Result<Message, ConversationError> {
        let seq = self.next_seq;
        // People's messages stop short of the bound, so the turn a message starts always
        // has room for its reply and notices: a message is refused, never half answered.
        let bound = match role {
            Role::Visitor | Role::Agent | Role::Note => MAX_MESSAGES - REPLY_HEADROOM,
            Role::Bot | Role::System => MAX_MESSAGES,
        };
        if seq > bound {
            return Err(ConversationError::Full);
        }
        self.next_seq = seq.checked_add(1).ok_or(ConversationError::Full)?;
        let message = Message {
            seq,
            role,
            parts,
            created_at: now,
        };
        // The window is what prompts are built from; cited sources are for people, so
        // they stay in the transcript and out of the state.
        let mut kept = message.clone();
        kept.parts.retain(|p| !matches!(p, Part::Citations(_)));
        self.window.push(kept);
        let limit = usize::from(config.history_window.max(1));
        if self.window.len() > limit {
            let drop = self.window.len() - limit;
            // What leaves the window lives on in the transcript for people, and in the
            // bounded summary for the bot.
            let gone: Vec<Message> = self.window.drain(..drop).collect();
            self.summary = crate::summary::fold(self.summary.as_deref(), &gone);
            self.evicted += drop as u32;
        }
        self.updated_at = now;
        Ok(message)
    }

    /// The compact, versioned serialized form: one version byte, then the fields in
    /// postcard's varint encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT_VERSION];
        // Serializing plain owned data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).expect("conversation state serializes"));
        out
    }

    /// Decodes what [`Conversation::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if let Some((1, rest)) = bytes.split_first() {
            let v1: ConversationV1 =
                postcard::from_bytes(rest).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            return Ok(Conversation {
                id: v1.id,
                tenant: v1.tenant,
                status: v1.status,
                created_at: v1.created_at,
                updated_at: v1.updated_at,
                next_seq: v1.next_seq,
                summary: v1.summary,
                evicted: v1.evicted,
                window: v1.window,
                assignee: None,
                queue: None,
                tags: Vec::new(),
                no_answers: 0,
                csat: None,
                closed_notice_until: None,
                owner: None,
            });
        }
        if let Some((2, rest)) = bytes.split_first() {
            let v2: ConversationV2 =
                postcard::from_bytes(rest).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            return Ok(Conversation {
                id: v2.id,
                tenant: v2.tenant,
                status: v2.status,
                created_at: v2.created_at,
                updated_at: v2.updated_at,
                next_seq: v2.next_seq,
                summary: v2.summary,
                evicted: v2.evicted,
                window: v2.window,
                assignee: v2.assignee,
                queue: v2.queue,
                tags: v2.tags,
                no_answers: v2.no_answers,
                csat: v2.csat,
                closed_notice_until: None,
                owner: None,
            });
        }
        decode_versioned(bytes)
    }

    /// Bytes of state that are not message content: the bookkeeping a conversation costs.
    pub fn overhead_len(&self) -> usize {
        let content: usize = self.window.iter().map(Message::content_len).sum::<usize>()
            + self.summary.as_ref().map_or(0, String::len);
        self.encode().len() - content
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Conversation {
        Conversation::new(
            ConversationId::parse("c1").unwrap(),
            TenantId::default_tenant(),
            Timestamp::from_millis(1_000),
        )
    }

    fn opts() -> TurnOptions {
        TurnOptions::new(crate::turn::ReplyMode::Whole)
    }

    fn text(s: &str) -> Vec<Part> {
        vec![Part::Text(s.to_owned())]
    }

    #[test]
    fn version_2_states_still_decode() {
        let mut c = conv();
        c.handle_visitor_message(
            Timestamp::from_millis(2_000),
            text("hi"),
            &TenantConfig::default(),
        )
        .unwrap();
        let v2 = ConversationV2 {
            id: c.id.clone(),
            tenant: c.tenant.clone(),
            status: c.status,
            created_at: c.created_at,
            updated_at: c.updated_at,
            next_seq: c.next_seq,
            summary: None,
            evicted: 0,
            window: c.window.clone(),
            assignee: Some("ana".into()),
            queue: Some("billing".into()),
            tags: vec!["vip".into()],
            no_answers: 1,
            csat: Some(5),
        };
        let mut bytes = vec![2];
        bytes.extend(postcard::to_allocvec(&v2).unwrap());
        let decoded = Conversation::decode(&bytes).unwrap();
        assert_eq!(decoded.window, c.window);
        assert_eq!(
            (decoded.assignee.as_deref(), decoded.csat),
            (Some("ana"), Some(5))
        );
        assert_eq!(decoded.closed_notice_until, None);
        // Messages stored under version 2 read the same.
        let mut message = vec![2];
        message.extend(postcard::to_allocvec(&c.window[0]).unwrap());
        assert_eq!(Message::decode(&message).unwrap(), c.window[0]);
    }

    /// An OpenAI model, as a tenant's single `provider`.
    fn openai_provider() -> crate::config::ProviderConfig {
        crate::config::ProviderConfig {
            kind: crate::wire::ProviderKind::Openai,
            base_url: "https://api.example.test/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_secret: None,
            temperature: None,
            max_tokens: None,
            vision: None,
        }
    }

    #[test]
    fn a_turn_sees_stored_files_as_the_host_resolved_them() {
        use crate::attachment::{Resolved, accept, new_id};
        let cfg = TenantConfig {
            provider: Some(openai_provider()),
            ..TenantConfig::default()
        };
        let png = b"\x89PNG\r\n\x1a\nrest".as_slice();
        let image = accept(new_id([1; 16]), "image/png", "i.png", png).unwrap();
        let notes = accept(new_id([2; 16]), "text/plain", "n.txt", b"serial 99").unwrap();
        let mut c = conv();
        let mut parts = text("what is this?");
        parts.push(image.part());
        parts.push(notes.part());
        let r = c
            .handle_visitor_message(Timestamp::from_millis(2_000), parts, &cfg)
            .unwrap();
        let wanted = c.turn_attachments(&r.message);
        assert_eq!(
            wanted,
            vec![(notes.id.clone(), false), (image.id.clone(), true)]
        );
        let mut options = opts();
        options.attachments.insert(
            image.id.clone(),
            Resolved::Bytes {
                mime: "image/png".into(),
                bytes: png.to_vec(),
                text: None,
            },
        );
        options
            .attachments
            .insert(notes.id.clone(), Resolved::Text("serial 99".into()));
        let mut turn = c
            .start_turn(Timestamp::from_millis(2_001), &cfg, &r.message, options)
            .unwrap();
        let Some(crate::Action::CallProvider { request, .. }) = turn.poll_action() else {
            panic!("the turn calls the provider first");
        };
        let body = String::from_utf8(request.body).unwrap();
        assert!(
            body.contains("data:image/png;base64,iVBORw0KGgpyZXN0"),
            "{body}"
        );
        assert!(
            body.contains("serial 99") && body.contains("n.txt"),
            "{body}"
        );
        assert!(!body.contains(crate::attachment::SCHEME), "{body}");
    }

    #[test]
    fn ids_are_validated() {
        assert!(ConversationId::parse("abc_DEF-123").is_some());
        assert!(ConversationId::parse("").is_none());
        assert!(ConversationId::parse("a b").is_none());
        assert!(ConversationId::parse(&"a".repeat(129)).is_none());
        assert!(TenantId::parse(&"t".repeat(64)).is_some());
        assert!(TenantId::parse(&"t".repeat(65)).is_none());
        assert!(TenantId::parse("bad tenant!").is_none());
    }

    #[test]
    fn first_message_creates_and_numbers_from_one() {
        let mut c = conv();
        let cfg = TenantConfig::default();
        let r = c
            .handle_visitor_message(Timestamp::from_millis(2_000), text("hi"), &cfg)
            .unwrap();
        assert_eq!(r.message.seq, 1);
        assert_eq!(r.events.len(), 2);
        assert!(matches!(r.events[0], Event::ConversationCreated { .. }));
        let r = c
            .handle_visitor_message(Timestamp::from_millis(3_000), text("again"), &cfg)
            .unwrap();
        assert_eq!(r.message.seq, 2);
        assert_eq!(r.events.len(), 1);
        assert_eq!(c.updated_at(), Timestamp::from_millis(3_000));
        assert_eq!(c.message_count(), 2);
    }

    #[test]
    fn a_full_conversation_refuses_people_but_keeps_room_for_the_reply() {
        let mut c = conv();
        let cfg = TenantConfig::default();
        for i in 0..MAX_MESSAGES - REPLY_HEADROOM {
            c.handle_visitor_message(Timestamp::from_millis(u64::from(i)), text("m"), &cfg)
                .unwrap();
        }
        let before = c.clone();
        let err = c.handle_visitor_message(Timestamp::from_millis(1), text("one more"), &cfg);
        assert_eq!(err, Err(ConversationError::Full));
        assert_eq!(c, before, "a refused message changes nothing");
        // The last accepted message still gets its reply.
        c.append(Timestamp::from_millis(2), Role::Bot, text("reply"), &cfg)
            .unwrap();
    }

    #[test]
    fn empty_message_changes_nothing() {
        let mut c = conv();
        let before = c.clone();
        let err = c.handle_visitor_message(
            Timestamp::from_millis(5),
            text("  \n "),
            &TenantConfig::default(),
        );
        assert_eq!(err, Err(ConversationError::EmptyMessage));
        assert_eq!(c, before);
    }

    #[test]
    fn window_is_bounded_and_counts_evictions() {
        let mut c = conv();
        let cfg = TenantConfig {
            history_window: 4,
            ..TenantConfig::default()
        };
        for i in 0..10 {
            c.handle_visitor_message(Timestamp::from_millis(i), text(&format!("m{i}")), &cfg)
                .unwrap();
        }
        assert_eq!(c.window().len(), 4);
        assert_eq!(c.evicted(), 6);
        assert_eq!(c.window()[0].text(), "m6");
        assert_eq!(c.message_count(), 10);
    }

    #[test]
    fn what_leaves_the_window_is_summarised_and_prompted() {
        let cfg = TenantConfig {
            history_window: 4,
            provider: Some(openai_provider()),
            ..TenantConfig::default()
        };
        let mut c = conv();
        c.handle_visitor_message(
            Timestamp::from_millis(1),
            text("Where is order #48213? Reach me at jane@example.com."),
            &cfg,
        )
        .unwrap();
        c.append(
            Timestamp::from_millis(2),
            Role::Bot,
            text("Let me check. I will email you the tracking link today."),
            &cfg,
        )
        .unwrap();
        assert_eq!(c.summary(), None, "nothing has left the window yet");
        let mut last = None;
        for i in 0..4 {
            last = Some(
                c.handle_visitor_message(
                    Timestamp::from_millis(3 + i),
                    text(&format!("later {i}")),
                    &cfg,
                )
                .unwrap()
                .message,
            );
        }
        assert_eq!(c.evicted(), 2);
        assert_eq!(
            c.summary(),
            Some(
                "Visitor: Where is order #48213? Reach me at [email].\n\
                 Bot: Let me check. I will email you the tracking link today."
            )
        );
        // The summary survives the codec.
        assert_eq!(Conversation::decode(&c.encode()).unwrap(), c);
        // And the next turn's prompt carries it, after the system prompt.
        let mut turn = c
            .start_turn(Timestamp::from_millis(9), &cfg, &last.unwrap(), opts())
            .unwrap();
        let Some(crate::Action::CallProvider { request, .. }) = turn.poll_action() else {
            panic!("the turn calls the provider first");
        };
        let body = String::from_utf8(request.body).unwrap();
        assert!(
            body.contains("Summary of the earlier conversation"),
            "{body}"
        );
        assert!(body.contains("#48213") && !body.contains("jane@"), "{body}");
    }

    #[test]
    fn a_stored_state_from_before_summaries_starts_one_at_the_next_eviction() {
        // Version 3 states written before the summary was filled: messages had left the
        // window, the slot was empty.
        let cfg = TenantConfig {
            history_window: 2,
            ..TenantConfig::default()
        };
        let mut c = conv();
        for i in 0..4 {
            c.handle_visitor_message(Timestamp::from_millis(i), text(&format!("m{i}")), &cfg)
                .unwrap();
        }
        c.summary = None;
        let mut old = Conversation::decode(&c.encode()).unwrap();
        assert_eq!((old.summary(), old.evicted()), (None, 2));
        old.handle_visitor_message(Timestamp::from_millis(9), text("order 77 please"), &cfg)
            .unwrap();
        assert_eq!(old.summary(), Some("Visitor: m2"));
    }

    #[test]
    fn state_round_trips_and_rejects_unknown_versions() {
        let mut c = conv();
        let cfg = TenantConfig::default();
        c.handle_visitor_message(Timestamp::from_millis(7), text("hello 你好"), &cfg)
            .unwrap();
        let bytes = c.encode();
        assert_eq!(bytes[0], STATE_FORMAT_VERSION);
        assert_eq!(Conversation::decode(&bytes).unwrap(), c);
        let mut newer = bytes.clone();
        newer[0] = 99;
        assert_eq!(
            Conversation::decode(&newer),
            Err(DecodeError::UnknownVersion(99))
        );
        assert_eq!(Conversation::decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            Conversation::decode(&bytes[..bytes.len() - 3]),
            Err(DecodeError::Corrupt(_))
        ));
        let m = &c.window()[0];
        assert_eq!(&Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn version_1_state_still_decodes() {
        // The layout version 1 wrote, before handoff added its fields.
        #[derive(serde::Serialize)]
        struct V1<'a> {
            id: &'a ConversationId,
            tenant: &'a TenantId,
            status: Status,
            created_at: Timestamp,
            updated_at: Timestamp,
            next_seq: u32,
            summary: Option<String>,
            evicted: u32,
            window: &'a [Message],
        }
        let mut c = conv();
        let cfg = TenantConfig::default();
        c.handle_visitor_message(Timestamp::from_millis(7), text("from v1"), &cfg)
            .unwrap();
        let v1 = V1 {
            id: c.id(),
            tenant: c.tenant(),
            status: c.status(),
            created_at: c.created_at(),
            updated_at: c.updated_at(),
            next_seq: 2,
            summary: None,
            evicted: 0,
            window: c.window(),
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_allocvec(&v1).unwrap());
        assert_eq!(Conversation::decode(&bytes).unwrap(), c);
        let mut m = vec![1u8];
        m.extend(postcard::to_allocvec(&c.window()[0]).unwrap());
        assert_eq!(&Message::decode(&m).unwrap(), &c.window()[0]);
    }

    #[test]
    fn turn_only_for_a_visitor_message() {
        let mut c = conv();
        let cfg = TenantConfig::default();
        let visitor = c
            .handle_visitor_message(Timestamp::from_millis(7), text("hi"), &cfg)
            .unwrap()
            .message;
        assert!(
            c.start_turn(Timestamp::from_millis(8), &cfg, &visitor, opts())
                .is_ok()
        );
        let mut bot = visitor.clone();
        bot.role = Role::Bot;
        assert!(
            c.start_turn(Timestamp::from_millis(8), &cfg, &bot, opts())
                .is_err()
        );
        let mut future = visitor.clone();
        future.seq = 2;
        assert_eq!(
            c.start_turn(Timestamp::from_millis(8), &cfg, &future, opts())
                .err(),
            Some(ConversationError::NotAwaitingReply(2))
        );
    }
}
