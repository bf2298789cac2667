//! Provider wire formats behind one face.
//!
//! Every provider Kefu speaks is reached through these types and functions: a
//! [`ModelRequest`] (normalized prompt, tools, sampling) goes out as an [`HttpRequest`] built
//! for an [`Endpoint`]; what comes back is read whole ([`parse_response`]) or as a stream of
//! Server-Sent Events through a [`StreamDecoder`], into normalized [`Completion`]s and
//! [`StreamItem`]s; error statuses become typed [`ProviderError`]s ([`classify_error`]).
//! The turn state machine knows nothing about any one provider's JSON.
//!
//! The formats live in their own modules under this one: [`openai`] (OpenAI, compatible
//! servers, Mistral), [`anthropic`], [`gemini`] and [`workers_ai`]. Each decides, in [`StreamDecoder::is_complete`], what
//! "the reply is complete" means in its own terms; an error event mid-stream is always an
//! `Err`, never a completion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provider::{FinishReason, Header, HttpRequest, ProviderError, Usage};
use crate::sse::SseEvent;
use crate::vocab::Part;

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod workers_ai;

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's chat completions (`{base}/chat/completions`, base like
    /// `https://api.openai.com/v1`).
    #[default]
    Openai,
    /// Any server that speaks OpenAI's chat completions (Ollama, vLLM, DeepSeek, Groq,
    /// OpenRouter, …).
    OpenaiCompatible,
    /// Mistral's chat completions (OpenAI's shape, Mistral's errors and limits; base
    /// `https://api.mistral.ai/v1`).
    Mistral,
    /// Anthropic's Messages API (`{base}/v1/messages`, base `https://api.anthropic.com`).
    Anthropic,
    /// Google's Gemini API (`{base}/v1beta/models/{model}:generateContent`, base
    /// `https://generativelanguage.googleapis.com`).
    Gemini,
    /// Cloudflare Workers AI's REST API (`{base}/run/{model}`, base
    /// `https://api.cloudflare.com/client/v4/accounts/{account_id}/ai`).
    WorkersAi,
}

impl ProviderKind {
    /// Every kind, in declaration order.
    pub const ALL: [ProviderKind; 6] = [
        ProviderKind::Openai,
        ProviderKind::OpenaiCompatible,
        ProviderKind::Mistral,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::WorkersAi,
    ];

    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::WorkersAi => "workers_ai",
        }
    }

    /// The kind the configuration spells `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the format speaks OpenAI's chat-completions shape.
    pub fn is_openai_shaped(self) -> bool {
        matches!(
            self,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral
        )
    }

    /// Whether the format takes a PDF itself (Anthropic's `document` blocks, Gemini's
    /// inline data); the others get the PDF's text.
    pub fn reads_pdfs(self) -> bool {
        matches!(self, ProviderKind::Anthropic | ProviderKind::Gemini)
    }
}

/// What a model reads besides text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reads {
    /// Images (a vision model).
    pub images: bool,
    /// PDFs, as documents.
    pub pdfs: bool,
}

/// The prompt as a model that reads `reads` gets it: each image or PDF it cannot read is
/// replaced by its stand-in text ([`PromptMessage::stand_ins`]: a PDF's text, a description
/// of an image), or, without one, by a sentence saying that a file was attached and cannot
/// be read here. Nothing else changes.
pub fn prompt_for(prompt: &[PromptMessage], reads: Reads) -> Vec<PromptMessage> {
    prompt
        .iter()
        .map(|m| {
            let unreadable = |p: &Part| match p {
                Part::Image { .. } => !reads.images,
                Part::Document { url, mime, .. } => {
                    !reads.pdfs
                        && url.starts_with("data:")
                        && media_type(url, mime.as_deref(), "") == "application/pdf"
                }
                // Citations never reach a prompt (turn::prompt leaves them out); they are
                // not files either.
                Part::Text(_) | Part::Citations(_) => false,
            };
            if !m.parts.iter().any(unreadable) {
                return m.clone();
            }
            let mut out = PromptMessage {
                parts: Vec::with_capacity(m.parts.len()),
                stand_ins: BTreeMap::new(),
                ..m.clone_without_parts()
            };
            let mut file = 0;
            for part in &m.parts {
                if !is_file(part) {
                    out.parts.push(part.clone());
                    continue;
                }
                let here = file;
                file += 1;
                if !unreadable(part) {
                    if let Some(s) = m.stand_ins.get(&here) {
                        out.stand_ins
                            .insert(out.parts.len() - text_parts(&out.parts), s.clone());
                    }
                    out.parts.push(part.clone());
                    continue;
                }
                match (m.stand_ins.get(&here), part) {
                    // An empty stand-in: said with another part's (one description of
                    // several images).
                    (Some(s), _) if s.is_empty() => {}
                    (Some(s), _) => out.parts.push(Part::Text(s.clone())),
                    (None, Part::Image { .. }) => out.parts.push(Part::Text(
                        "[an image was attached; it cannot be read here]".into(),
                    )),
                    (None, Part::Document { name, .. }) => out.parts.push(Part::Text(format!(
                        "[a PDF was attached ({name}); its text could not be read]"
                    ))),
                    (None, Part::Text(_) | Part::Citations(_)) => {}
                }
            }
            out
        })
        .collect()
}

/// Whether a part is a file (an image or a document): stand-ins are numbered by files.
pub(crate) fn is_file(part: &Part) -> bool {
    matches!(part, Part::Image { .. } | Part::Document { .. })
}

fn text_parts(parts: &[Part]) -> usize {
    parts.iter().filter(|p| !is_file(p)).count()
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
    /// Text for a model that cannot read one of the message's files, by the file's
    /// position among the message's non-text parts: a PDF's extracted text, a description
    /// of an image. A model that reads the file gets the file (see [`prompt_for`]).
    pub stand_ins: BTreeMap<usize, String>,
}

impl PromptMessage {
    /// A message of plain parts.
    pub fn new(role: PromptRole, parts: Vec<Part>) -> Self {
        Self {
            role,
            parts,
            tool_calls: Vec::new(),
            tool_call_id: None,
            stand_ins: BTreeMap::new(),
        }
    }

    fn clone_without_parts(&self) -> Self {
        Self {
            role: self.role,
            parts: Vec::new(),
            tool_calls: self.tool_calls.clone(),
            tool_call_id: self.tool_call_id.clone(),
            stand_ins: BTreeMap::new(),
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
        ProviderKind::Anthropic => anthropic::build_request(endpoint, request),
        ProviderKind::Gemini => gemini::build_request(endpoint, request),
        ProviderKind::WorkersAi => workers_ai::build_request(endpoint, request),
    }
}

/// Parses a whole 2xx response body.
pub fn parse_response(kind: ProviderKind, body: &[u8]) -> Result<Completion, ProviderError> {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
            openai::parse_response_for(kind, body)
        }
        ProviderKind::Anthropic => anthropic::parse_response(body),
        ProviderKind::Gemini => gemini::parse_response(body),
        ProviderKind::WorkersAi => workers_ai::parse_response(body),
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
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            ProviderError::from_status(status, headers, body)
        }
        ProviderKind::Mistral => openai::classify_mistral_error(status, headers, body),
        ProviderKind::Anthropic => anthropic::classify_error(status, headers, body),
        ProviderKind::Gemini => gemini::classify_error(status, headers, body),
        ProviderKind::WorkersAi => workers_ai::classify_error(status, headers, body),
    }
}

/// Decodes a provider's event stream, event by event, remembering what a format spreads
/// across events (cumulative usage, tool-call ids, whether the terminal event arrived).
#[derive(Debug)]
pub struct StreamDecoder {
    kind: ProviderKind,
    format: FormatState,
    saw_done: bool,
    saw_finish: bool,
}

/// What each format remembers between events.
#[derive(Debug)]
enum FormatState {
    Openai(openai::StreamState),
    Anthropic(anthropic::StreamState),
    Gemini(gemini::StreamState),
    WorkersAi(workers_ai::StreamState),
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new(kind: ProviderKind) -> Self {
        let format = match kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
                FormatState::Openai(openai::StreamState::new(kind))
            }
            ProviderKind::Anthropic => FormatState::Anthropic(anthropic::StreamState::default()),
            ProviderKind::Gemini => FormatState::Gemini(gemini::StreamState::default()),
            ProviderKind::WorkersAi => FormatState::WorkersAi(workers_ai::StreamState::default()),
        };
        Self {
            kind,
            format,
            saw_done: false,
            saw_finish: false,
        }
    }

    /// The format this decoder reads.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Decodes one event into items. An error event mid-stream is an `Err`: the reply is not
    /// finished, whatever text came before it.
    pub fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let start = out.len();
        match &mut self.format {
            FormatState::Openai(state) => state.decode(event, out)?,
            FormatState::Anthropic(state) => state.decode(event, out)?,
            FormatState::Gemini(state) => state.decode(event, out)?,
            FormatState::WorkersAi(state) => state.decode(event, out)?,
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
        match &self.format {
            // `[DONE]`; some compatible servers end after the finish reason without it.
            FormatState::Openai(_) => self.saw_done || self.saw_finish,
            // `message_stop`, with every tool-use block closed.
            FormatState::Anthropic(state) => state.is_complete(),
            // A chunk that carried a `finishReason`: Gemini sends no terminal event.
            FormatState::Gemini(state) => state.is_complete(),
            // `[DONE]` only: a finish reason in an OpenAI-shaped chunk may still be followed
            // by the usage chunk, and native chunks carry no finish reason at all.
            FormatState::WorkersAi(state) => state.is_complete(),
        }
    }
}

// Helpers the format modules share.

/// The most tool calls one reply may carry; more is a malfunction, and bounding it bounds
/// the decoders' state.
pub(crate) const MAX_TOOL_CALLS: usize = 128;

/// The user turn put before a prompt that opens with the assistant (a bot greeting), for
/// formats that require the first message to be the user's (Anthropic, Gemini).
pub(crate) const OPENING_TURN: &str = "[The visitor opened the chat.]";

/// A `Malformed` error.
pub(crate) fn malformed(detail: impl Into<String>) -> ProviderError {
    ProviderError::Malformed {
        detail: detail.into(),
    }
}

/// Serializes a JSON value. A `Value` always serializes; the fallback only avoids a panic
/// path.
pub(crate) fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The text parts of a message, joined with newlines.
pub(crate) fn text_of(parts: &[Part]) -> String {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    texts.join("\n")
}

/// How an image the format cannot fetch is mentioned instead (a `data:` URL it cannot
/// decode is not pasted into the prompt).
pub(crate) fn image_mention(url: &str) -> String {
    if url.starts_with("data:") {
        "[image]".to_owned()
    } else {
        format!("[image: {url}]")
    }
}

/// How a document the model cannot read is mentioned to it instead (a `data:` URL's bytes
/// are not pasted into the prompt).
pub(crate) fn document_mention(name: &str, url: &str) -> String {
    if url.starts_with("data:") {
        format!("[attached document: {name}]")
    } else {
        format!("[attached document: {name} <{url}>]")
    }
}

/// A number from JSON as a `u32`, saturating.
pub(crate) fn json_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .map(|x| u32::try_from(x).unwrap_or(u32::MAX))
}

/// The media type and base64 payload of a `data:` URL (`data:image/png;base64,....`).
/// URLs that are not base64-encoded yield `None`.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    Some((mime, data))
}

/// The media type of a part: as given, from a `data:` URL, or guessed from the URL's
/// extension; `fallback` when nothing says.
pub(crate) fn media_type<'a>(url: &'a str, given: Option<&'a str>, fallback: &'a str) -> &'a str {
    if let Some(m) = given.filter(|m| !m.trim().is_empty()) {
        return m.trim();
    }
    if let Some((m, _)) = data_url(url) {
        return m;
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => fallback,
    }
}

/// Tool-call arguments (JSON text) as the JSON object formats that want structured
/// arguments (Anthropic's `input`, Gemini's `args`) send. Empty text is `{}`; text that is not
/// a JSON object is kept whole under `"arguments"` rather than dropped.
pub(crate) fn arguments_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(arguments.as_bytes()) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::json!({ "arguments": arguments }),
    }
}

/// Structured tool-call arguments as JSON text (what [`ToolCall::arguments`] holds).
pub(crate) fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The usual request headers: JSON in, JSON or an event stream out.
pub(crate) fn json_headers(stream: bool) -> Vec<Header> {
    vec![
        Header {
            name: "content-type",
            value: "application/json".into(),
            sensitive: false,
        },
        Header {
            name: "accept",
            value: if stream {
                "text/event-stream"
            } else {
                "application/json"
            }
            .into(),
            sensitive: false,
        },
    ]
}

/// Conversation turns for formats that require user and assistant to alternate (Anthropic,
/// Gemini): consecutive messages of one side are merged into one turn.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    turns: Vec<(bool, Vec<Value>)>,
}

impl Turns {
    /// Adds content blocks said by the assistant (`true`) or the user (`false`).
    pub(crate) fn push(&mut self, assistant: bool, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((side, existing)) if *side == assistant => existing.extend(blocks),
            _ => self.turns.push((assistant, blocks)),
        }
    }

    /// The turns, user first: a prompt that opens with the assistant gets `opening` before
    /// it. In user turns, blocks for which `answers_call` holds (tool results) come first,
    /// as the formats require results to lead the turn that follows the calls.
    pub(crate) fn finish(
        mut self,
        opening: Value,
        answers_call: impl Fn(&Value) -> bool,
    ) -> Vec<(bool, Vec<Value>)> {
        if self.turns.first().is_some_and(|(assistant, _)| *assistant) {
            self.turns.insert(0, (false, vec![opening]));
        }
        for (assistant, blocks) in &mut self.turns {
            if !*assistant {
                let (mut results, rest): (Vec<Value>, Vec<Value>) =
                    blocks.drain(..).partition(|b| answers_call(b));
                results.extend(rest);
                *blocks = results;
            }
        }
        self.turns
    }
}

/// A usage report; the total is the sum when the provider reports none.
pub(crate) fn usage(prompt_tokens: u32, completion_tokens: u32, total: Option<u32>) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: total.unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
    }
}
