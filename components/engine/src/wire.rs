//! Provider wire formats behind one face.
//!
//! Every provider Kefu speaks is reached through these types and functions: a
//! [`ModelRequest`] (normalized prompt, tools, sampling) goes out as an [`HttpRequest`] built
//! for an [`Endpoint`]; what comes back is read whole ([`parse_response`]) or as a stream of
//! Server-Sent Events through a [`StreamDecoder`], into normalized [`Completion`]s and
//! [`StreamItem`]s; error statuses become typed [`ProviderError`]s ([`classify_error`]).
//! The turn state machine knows nothing about any one provider's JSON.

use serde::{Deserialize, Serialize};

use crate::conversation::Part;
use crate::openai;
use crate::provider::{FinishReason, HttpRequest, ProviderError, Usage};
use crate::sse::SseEvent;

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's chat completions (`/chat/completions`).
    #[default]
    Openai,
    /// Any server that speaks OpenAI's chat completions (Ollama, vLLM, DeepSeek, Groq,
    /// OpenRouter, …).
    OpenaiCompatible,
    /// Mistral's chat completions (OpenAI's shape, Mistral's errors and limits).
    Mistral,
}

impl ProviderKind {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Mistral => "mistral",
        }
    }
}

/// Where and as whom a request goes.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    /// The wire format.
    pub kind: ProviderKind,
    /// The provider's API base URL.
    pub base_url: &'a str,
    /// The model to ask.
    pub model: &'a str,
    /// The API key, if the provider needs one.
    pub api_key: Option<&'a str>,
}

/// Who speaks a prompt message, in the model's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptRole {
    /// Instructions.
    System,
    /// The visitor.
    User,
    /// The bot or an agent.
    Assistant,
    /// The result of a tool call the assistant made.
    Tool,
}

/// One message of a prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptMessage {
    /// Who speaks.
    pub role: PromptRole,
    /// What they say.
    pub parts: Vec<Part>,
    /// Tools the assistant called in this message (assistant messages only).
    pub tool_calls: Vec<ToolCall>,
    /// Which call this message answers (tool messages only).
    pub tool_call_id: Option<String>,
}

impl PromptMessage {
    /// A message of plain parts.
    pub fn new(role: PromptRole, parts: Vec<Part>) -> Self {
        Self {
            role,
            parts,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A message of one text part.
    pub fn text(role: PromptRole, text: impl Into<String>) -> Self {
        Self::new(role, vec![Part::Text(text.into())])
    }
}

/// A tool the model may call: a named function with JSON-schema parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// A JSON schema for its arguments.
    pub parameters: serde_json::Value,
}

/// A call the model made to a tool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call (generated when the provider gives none).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// A normalized request to a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelRequest {
    /// The prompt, system messages first.
    pub messages: Vec<PromptMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Upper bound on reply tokens.
    pub max_tokens: Option<u32>,
    /// Stream the reply.
    pub stream: bool,
}

/// A reply read whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// The reply's text.
    pub text: String,
    /// Tool calls the model made.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub finish_reason: Option<FinishReason>,
    /// Tokens used, when reported.
    pub usage: Option<Usage>,
    /// The model that answered, when reported.
    pub model: Option<String>,
}

/// What a streamed event contributed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// More reply text.
    Delta(String),
    /// A fragment of tool call number `index`: its id and name arrive once, its arguments in
    /// pieces that concatenate to JSON text.
    ToolCallDelta {
        /// Which call (by position in the reply).
        index: u32,
        /// The call's id, when this fragment carries it.
        id: Option<String>,
        /// The tool's name, when this fragment carries it.
        name: Option<String>,
        /// More argument text.
        arguments: String,
    },
    /// The model stopped, for this reason.
    Finish(FinishReason),
    /// Token usage so far (later reports replace earlier ones).
    Usage(Usage),
    /// The model that answered.
    Model(String),
    /// The stream said it is complete.
    Done,
}

/// Builds the HTTP request for `request` at `endpoint`.
pub fn build_request(endpoint: &Endpoint<'_>, request: &ModelRequest) -> HttpRequest {
    match endpoint.kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
            openai::build_request(endpoint, request)
        }
    }
}

/// Parses a whole 2xx response body.
pub fn parse_response(kind: ProviderKind, body: &[u8]) -> Result<Completion, ProviderError> {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
            openai::parse_response(body)
        }
    }
}

/// Classifies an error response into a typed error.
pub fn classify_error(
    kind: ProviderKind,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
            ProviderError::from_status(status, headers, body)
        }
    }
}

/// Decodes a provider's event stream, event by event, remembering what a format spreads
/// across events (cumulative usage, tool-call ids, whether the terminal event arrived).
#[derive(Debug)]
pub struct StreamDecoder {
    kind: ProviderKind,
    saw_done: bool,
    saw_finish: bool,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            saw_done: false,
            saw_finish: false,
        }
    }

    /// The format this decoder reads.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Decodes one event into items.
    pub fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let start = out.len();
        match self.kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
                openai::decode_stream_event(event, out)?
            }
        }
        for item in &out[start..] {
            match item {
                StreamItem::Done => self.saw_done = true,
                StreamItem::Finish(_) => self.saw_finish = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether the stream has said, in its format's terms, that the reply is complete.
    /// A stream that ends before this is a cut, whatever the transport says.
    pub fn is_complete(&self) -> bool {
        match self.kind {
            // `[DONE]`; some compatible servers end after the finish reason without it.
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
                self.saw_done || self.saw_finish
            }
        }
    }
}
