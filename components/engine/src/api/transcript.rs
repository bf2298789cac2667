//! A conversation as the API shows it: its messages, its transcript (with or without
//! internal notes) and its line in the agents' inbox.

use serde_json::{Value, json};

use crate::conversation::Conversation;
use crate::vocab::{Citation, Message, Part};

/// A message as the API shows it: its parts, and the sources it cites (`citations`, only
/// when it cites some).
pub fn message_json(m: &Message) -> Value {
    let parts: Vec<Value> = m
        .parts
        .iter()
        .filter(|p| !matches!(p, Part::Citations(_)))
        .map(|p| match p {
            Part::Text(text) => json!({"type": "text", "text": text}),
            // A stored upload is shown by its API path (and id); other URLs as given.
            _ if crate::attachment::part_ref(p).is_some() => {
                let id = crate::attachment::part_ref(p).unwrap_or_default();
                let kind = crate::attachment::part_kind(p).map_or("document", |k| k.as_str());
                let (name, mime) = match p {
                    Part::Document { name, mime, .. } => (Some(name), mime),
                    Part::Image { mime, .. } => (None, mime),
                    Part::Text(_) | Part::Citations(_) => (None, &None),
                };
                json!({"type": kind, "attachment_id": id, "url": crate::attachment::api_path(id), "name": name, "mime": mime})
            }
            Part::Image { url, mime } => json!({"type": "image", "url": url, "mime": mime}),
            Part::Document { url, name, mime } => {
                json!({"type": "document", "url": url, "name": name, "mime": mime})
            }
            Part::Citations(_) => Value::Null,
        })
        .collect();
    let mut json = json!({"seq": m.seq, "role": m.role.as_str(), "parts": parts, "created_at": m.created_at.to_rfc3339()});
    if !m.citations().is_empty() {
        json["citations"] = citations_json(m.citations());
    }
    json
}

/// Cited sources as the API shows them: `number` (the reply's `[n]`), `source_id`,
/// `chunk_id`, `title`, `url` and `heading` (`null` when unknown).
pub fn citations_json(citations: &[Citation]) -> Value {
    Value::Array(
        citations
            .iter()
            .map(|c| {
                json!({
                    "number": c.number,
                    "source_id": c.source_id,
                    "chunk_id": c.chunk_id,
                    "title": c.title,
                    "url": c.url,
                    "heading": c.heading,
                })
            })
            .collect(),
    )
}

/// The verified visitor a conversation belongs to, as the API shows it (`null` when the
/// visitor is anonymous).
fn visitor_json(visitor: Option<&str>) -> Value {
    visitor.map_or(Value::Null, |id| json!({"id": id, "verified": true}))
}

/// One line of the agents' inbox: where a conversation stands, without its transcript.
/// `visitor` is the verified visitor it belongs to, if any.
pub fn inbox_entry_json(c: &Conversation, visitor: Option<&str>) -> Value {
    let last = c
        .window()
        .iter()
        .rev()
        .find(|m| m.role != crate::vocab::Role::Note);
    let preview: String = last
        .map(|m| m.text())
        .unwrap_or_default()
        .chars()
        .take(140)
        .collect();
    json!({
        "id": c.id().as_str(),
        "status": c.status().as_str(),
        "assignee": c.assignee(),
        "queue": c.queue(),
        "tags": c.tags(),
        "csat": c.csat(),
        "messages": c.message_count(),
        "visitor": visitor_json(visitor),
        "last_message": {"role": last.map(|m| m.role.as_str()), "preview": preview},
        "created_at": c.created_at().to_rfc3339(),
        "updated_at": c.updated_at().to_rfc3339(),
        "updated_ms": c.updated_at().as_millis(),
    })
}

/// A conversation and its transcript as the API shows them. Visitors never see internal
/// notes (`with_notes: false`); agents do, and the bot's running summary of the messages
/// that left its window (`summary`: its text, or `null`, and how many messages it covers). `visitor` is the verified visitor it belongs
/// to, if any.
pub fn conversation_json(
    c: &Conversation,
    transcript: &[Message],
    with_notes: bool,
    visitor: Option<&str>,
) -> Value {
    let mut out = json!({
        "id": c.id().as_str(),
        "tenant": c.tenant().as_str(),
        "status": c.status().as_str(),
        "visitor": visitor_json(visitor),
        "assignee": c.assignee(),
        "queue": c.queue(),
        "tags": c.tags(),
        "csat": c.csat(),
        "created_at": c.created_at().to_rfc3339(),
        "updated_at": c.updated_at().to_rfc3339(),
        "messages": transcript
            .iter()
            .filter(|m| with_notes || m.role != crate::vocab::Role::Note)
            .map(message_json)
            .collect::<Vec<_>>(),
    });
    if with_notes {
        // Agents taking a long conversation over see what the bot remembers of its early
        // part (the transcript has it all; the summary is what the bot was working from).
        out["summary"] = json!({"text": c.summary(), "messages": c.evicted()});
    }
    out
}
