//! Conversation events as plugins see them (`on-event`): which engine events they hear
//! of, what an event carries, and the calls it makes to the plugins that observe it.

use super::hook::{Author, EventKind, HookCall, PluginContext, PluginEvent, TranscriptMessage};
use super::spec::{ActivePlugin, PluginSpec};

/// How many recent messages an event carries.
pub const EVENT_TRANSCRIPT: usize = 20;

/// The event plugins see: `kind`, its text, the conversation's last [`EVENT_TRANSCRIPT`]
/// messages (internal notes left out: they are for agents) and its tags.
pub fn event(
    kind: EventKind,
    text: Option<String>,
    transcript: &[crate::vocab::Message],
    tags: &[String],
) -> PluginEvent {
    use crate::vocab::Role;
    let messages: Vec<TranscriptMessage> = transcript
        .iter()
        .filter_map(|m| {
            let author = match m.role {
                Role::Visitor => Author::Visitor,
                Role::Bot => Author::Bot,
                Role::Agent => Author::Agent,
                Role::System => Author::System,
                Role::Note => return None,
            };
            Some(TranscriptMessage {
                author,
                text: m.text(),
            })
        })
        .collect();
    let skip = messages.len().saturating_sub(EVENT_TRANSCRIPT);
    PluginEvent {
        kind,
        text,
        transcript: messages.into_iter().skip(skip).collect(),
        tags: tags.to_vec(),
    }
}

/// What plugins hear of an engine event: the conversation, the kind, the message's number
/// (for message events, whose text the host reads from the transcript) and a detail (the
/// agent who claimed). Events plugins have no hook for (a new conversation, a rating) give
/// `None`.
pub fn event_kind(
    event: &crate::Event,
) -> Option<(
    crate::vocab::ConversationId,
    EventKind,
    Option<u32>,
    Option<String>,
)> {
    use crate::Event;
    use crate::vocab::{Role, Status};
    Some(match event {
        Event::MessageCreated {
            conversation,
            seq,
            role,
        } => {
            let kind = match role {
                Role::Visitor => EventKind::VisitorMessage,
                Role::Bot => EventKind::BotReply,
                Role::Agent => EventKind::AgentMessage,
                Role::System | Role::Note => return None,
            };
            (conversation.clone(), kind, Some(*seq), None)
        }
        Event::StatusChanged {
            conversation,
            status,
        } => {
            let kind = match status {
                Status::WaitingForAgent => EventKind::HandoffRequested,
                Status::Resolved => EventKind::Resolved,
                Status::Bot | Status::WithAgent => return None,
            };
            (conversation.clone(), kind, None, None)
        }
        Event::Assigned {
            conversation,
            agent,
        } => (
            conversation.clone(),
            EventKind::Claimed,
            None,
            Some(agent.clone()),
        ),
        _ => return None,
    })
}

/// The `on-event` calls an event makes: one per enabled plugin that implements the hook, in
/// configuration order, each with its spec (for the budget and grants).
pub fn event_calls(
    plugins: &[ActivePlugin],
    tenant: &str,
    conversation_id: &str,
    language: Option<&str>,
    event: &PluginEvent,
) -> Vec<(PluginSpec, HookCall)> {
    plugins
        .iter()
        .filter(|p| p.spec.enabled && p.manifest.hooks.on_event)
        .map(|p| {
            (
                p.spec.clone(),
                HookCall::OnEvent {
                    ctx: PluginContext {
                        tenant: tenant.to_owned(),
                        conversation_id: conversation_id.to_owned(),
                        plugin_id: p.spec.id.clone(),
                        language: language.map(str::to_owned),
                    },
                    event: event.clone(),
                },
            )
        })
        .collect()
}
