//! The engine's leaf vocabulary: the ids, who wrote a message and what it holds, and a
//! conversation's status — the words every other module speaks. It imports nothing from
//! the crate, so a module that only needs to name a message or a tenant depends on nothing
//! else (and on no behaviour). [`crate::conversation`] re-exports every item at its old path.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A conversation's id: 1 to 128 characters of `[A-Za-z0-9_-]`, chosen by the host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationId(String);

/// A tenant's id: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId(String);

fn is_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ConversationId {
    /// Parses an id, or `None` when it is not of the allowed form.
    pub fn parse(s: &str) -> Option<Self> {
        is_id(s, 128).then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TenantId {
    /// The tenant a request without a tenant header belongs to.
    pub const DEFAULT: &'static str = "default";

    /// Parses an id, or `None` when it is not of the allowed form.
    pub fn parse(s: &str) -> Option<Self> {
        is_id(s, 64).then(|| Self(s.to_owned()))
    }

    /// The `default` tenant.
    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who owns the conversation now. The handoff state machine grows on these states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The bot answers.
    Bot,
    /// A human was asked for; the bot is silent.
    WaitingForAgent,
    /// A human agent owns the conversation; the bot is silent.
    WithAgent,
    /// Closed; a new visitor message reopens it.
    Resolved,
}

impl Status {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Bot => "bot",
            Status::WaitingForAgent => "waiting_for_agent",
            Status::WithAgent => "with_agent",
            Status::Resolved => "resolved",
        }
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The person asking for help.
    Visitor,
    /// Kefu's automated answer (a model, or the offline responder).
    Bot,
    /// A human agent.
    Agent,
    /// A notice from the system (e.g. "an agent joined").
    System,
    /// An agent's internal note: for agents only, never shown to the visitor or the model.
    Note,
}

impl Role {
    /// Parses the API's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "visitor" => Role::Visitor,
            "bot" => Role::Bot,
            "agent" => Role::Agent,
            "system" => Role::System,
            "note" => Role::Note,
            _ => return None,
        })
    }

    /// The role as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Bot => "bot",
            Role::Agent => "agent",
            Role::System => "system",
            Role::Note => "note",
        }
    }
}

/// One part of a message: its text, images and documents, and the knowledge-base sources a
/// bot's reply cites.
///
/// Messages are stored postcard-encoded ([`Message::encode`]), where a variant is its
/// index: new variants go at the end, so every stored message still decodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image, by URL (a stored upload or a `data:` URL).
    Image {
        /// Where the image is.
        url: String,
        /// Its media type, when known.
        mime: Option<String>,
    },
    /// A document, by URL.
    Document {
        /// Where the document is.
        url: String,
        /// The file name shown to people.
        name: String,
        /// Its media type, when known.
        mime: Option<String>,
    },
    /// The knowledge-base sources a bot's reply cites, in order of first citation: data
    /// beside the reply's text, never shown to the model.
    Citations(Vec<Citation>),
}

/// A source a bot's reply cites: the `[n]` marker in the reply's text and the chunk that
/// was put before the model as block `n` (see [`crate::knowledge::citations`]).
///
/// Stored inside messages ([`Part::Citations`]) in postcard's layout, where fields are
/// read in order: a change of fields needs a new [`STATE_FORMAT_VERSION`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// The number the reply cites (`[n]`), as the reply shows it.
    pub number: u32,
    /// The chunk it stands for (`<source id>#<position>`).
    pub chunk_id: String,
    /// The chunk's source.
    pub source_id: String,
    /// The source's title.
    pub title: Option<String>,
    /// The source's URL.
    pub url: Option<String>,
    /// The headings above the chunk, joined with ` › ` (`Returns › Refund times`).
    pub heading: Option<String>,
}

impl Citation {
    /// Bytes of text it holds.
    fn content_len(&self) -> usize {
        self.chunk_id.len()
            + self.source_id.len()
            + [&self.title, &self.url, &self.heading]
                .iter()
                .map(|s| s.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }
}

/// One message in a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Position in the conversation's one order, from 1.
    pub seq: u32,
    /// Who wrote it.
    pub role: Role,
    /// What it says.
    pub parts: Vec<Part>,
    /// When the engine accepted it.
    pub created_at: Timestamp,
}

impl Message {
    /// The message's text parts joined with newlines.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if let Part::Text(t) = part {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
        }
        out
    }

    /// The sources the message cites (a bot's grounded reply; empty otherwise).
    pub fn citations(&self) -> &[Citation] {
        self.parts
            .iter()
            .find_map(|p| match p {
                Part::Citations(c) => Some(c.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// The compact, versioned form hosts store transcript rows in (same scheme as
    /// [`crate::Conversation::encode`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT_VERSION];
        out.extend(postcard::to_allocvec(self).expect("message serializes"));
        out
    }

    /// Decodes what [`Message::encode`] wrote (a message's layout is the same in versions 1
    /// to 3; version 2 only added a role at the end, version 3 changed the conversation's
    /// layout alone; [`Part::Citations`] came later at the end of its enum, which leaves
    /// older bytes as they were).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((1 | 2, rest)) => {
                postcard::from_bytes(rest).map_err(|e| DecodeError::Corrupt(e.to_string()))
            }
            _ => decode_versioned(bytes),
        }
    }

    /// Bytes of message content (text and URLs), the part of the state that is the
    /// conversation itself rather than bookkeeping.
    pub fn content_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Image { url, mime } => url.len() + mime.as_ref().map_or(0, String::len),
                Part::Document { url, name, mime } => {
                    url.len() + name.len() + mime.as_ref().map_or(0, String::len)
                }
                Part::Citations(c) => c.iter().map(Citation::content_len).sum(),
            })
            .sum()
    }
}

/// The serialized form's version. Bump it when the layout changes, and keep a decoder for
/// every version still found in stores.
pub const STATE_FORMAT_VERSION: u8 = 3;

/// Why stored bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty conversation state")]
    Empty,
    /// A version this build does not know (written by a newer Kefu).
    #[error(
        "conversation state format {0} is not supported (this build reads {STATE_FORMAT_VERSION})"
    )]
    UnknownVersion(u8),
    /// The bytes are damaged.
    #[error("conversation state is corrupt: {0}")]
    Corrupt(String),
}

pub(crate) fn decode_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&STATE_FORMAT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| DecodeError::Corrupt(e.to_string()))
        }
        Some((&v, _)) => Err(DecodeError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(parts: Vec<Part>) -> Message {
        Message {
            seq: 3,
            role: Role::Bot,
            parts,
            created_at: Timestamp::from_millis(1_700_000_000_000),
        }
    }

    /// A message as a build before [`Part::Citations`] stored it (text, image, document).
    const STORED_BEFORE_CITATIONS: [u8; 26] = [
        3, 3, 1, 3, 0, 2, 72, 105, 1, 1, 117, 0, 2, 1, 100, 1, 110, 1, 1, 109, 128, 208, 149, 255,
        188, 49,
    ];

    #[test]
    fn messages_stored_before_citations_still_decode() {
        let old = message(vec![
            Part::Text("Hi".into()),
            Part::Image {
                url: "u".into(),
                mime: None,
            },
            Part::Document {
                url: "d".into(),
                name: "n".into(),
                mime: Some("m".into()),
            },
        ]);
        assert_eq!(Message::decode(&STORED_BEFORE_CITATIONS), Ok(old.clone()));
        // And the variant that came later leaves the earlier ones' bytes as they were.
        assert_eq!(old.encode(), STORED_BEFORE_CITATIONS);
        assert!(old.citations().is_empty());
    }

    #[test]
    fn a_reply_with_citations_round_trips() {
        let cited = Citation {
            number: 2,
            chunk_id: "returns#4".into(),
            source_id: "returns".into(),
            title: Some("Returns".into()),
            url: Some("https://shop.example/returns".into()),
            heading: Some("Returns › Refund times".into()),
        };
        let m = message(vec![
            Part::Text("Refunds take 5 days [2].".into()),
            Part::Citations(vec![cited.clone()]),
        ]);
        let decoded = Message::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(decoded.citations(), [cited]);
        // The citations are not the message's text.
        assert_eq!(decoded.text(), "Refunds take 5 days [2].");
        assert!(decoded.content_len() > "Refunds take 5 days [2].".len());
    }
}
