//! Anthropic's Messages API: requests, whole responses, SSE streams and typed errors.
//!
//! Where it differs from the chat-completions shape: system text is a top-level `system`
//! field; `max_tokens` is required; messages must alternate, user first, so consecutive
//! messages of one side are merged; a message is a list of content blocks (`text`, `image`,
//! `document`, `tool_use` from the assistant, `tool_result` from the user); and a stream is a
//! sequence of named events (`message_start`, `content_block_start`/`_delta`/`_stop`,
//! `message_delta`, `message_stop`, `ping`, `error`) whose usage is cumulative: input tokens
//! arrive in `message_start`, the running output count in each `message_delta`.

use core::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Completion, Endpoint, MAX_TOOL_CALLS, ModelRequest, OPENING_TURN, PromptMessage, PromptRole,
    StreamItem, ToolCall, Turns, arguments_object, arguments_text, data_url, document_mention,
    image_mention, json_bytes, json_headers, json_u32, malformed, media_type, text_of, usage,
};
use crate::provider::{
    self, FinishReason, Header, HttpRequest, ProviderError, classify_parts, error_message_and_code,
    parse_http_date, parse_rfc3339, until_next_utc_month,
};
use crate::sse::SseEvent;
use crate::vocab::Part;

/// The API version every request names (`anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// The reply limit sent when the request sets none: Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The most content blocks one streamed reply may open; more is a malfunction.
const MAX_BLOCKS: usize = 512;

/// The URL of the Messages endpoint under a base URL (`https://api.anthropic.com`, with or
/// without `/v1`).
pub fn endpoint(base_url: &str) -> String {
    let base = base_url.trim().trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

/// Builds the HTTP request for a model request.
pub fn build_request(endpoint: &Endpoint<'_>, request: &ModelRequest) -> HttpRequest {
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for m in &request.messages {
        match m.role {
            PromptRole::System => {
                let text = text_of(&m.parts);
                if !text.trim().is_empty() {
                    system.push(text);
                }
            }
            PromptRole::User => turns.push(false, content_blocks(&m.parts)),
            PromptRole::Assistant => {
                let mut blocks = content_blocks(&m.parts);
                blocks.extend(m.tool_calls.iter().map(|c| {
                    json!({
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": arguments_object(&c.arguments),
                    })
                }));
                turns.push(true, blocks);
            }
            // Results answer the assistant's calls from the user's side.
            PromptRole::Tool => turns.push(false, vec![tool_result(m)]),
        }
    }
    let messages: Vec<Value> = turns
        .finish(json!({"type": "text", "text": OPENING_TURN}), |b| {
            b.get("type").and_then(Value::as_str) == Some("tool_result")
        })
        .into_iter()
        .map(|(assistant, content)| {
            json!({"role": if assistant { "assistant" } else { "user" }, "content": content})
        })
        .collect();

    let mut body = Map::new();
    body.insert("model".into(), Value::String(endpoint.model.to_owned()));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1)),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::String(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = request.temperature.filter(|t| t.is_finite()) {
        // Anthropic's range is 0 to 1; configurations allow OpenAI's 0 to 2.
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let schema = if t.parameters.is_object() {
                    t.parameters.clone()
                } else {
                    json!({"type": "object", "properties": {}})
                };
                let mut tool = Map::new();
                tool.insert("name".into(), Value::String(t.name.clone()));
                if !t.description.is_empty() {
                    tool.insert("description".into(), Value::String(t.description.clone()));
                }
                tool.insert("input_schema".into(), schema);
                Value::Object(tool)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
    }

    let mut headers = json_headers(request.stream);
    headers.push(Header {
        name: "anthropic-version",
        value: API_VERSION.into(),
        sensitive: false,
    });
    if let Some(key) = endpoint.api_key.filter(|k| !k.is_empty()) {
        headers.push(Header {
            name: "x-api-key",
            value: key.to_owned(),
            sensitive: true,
        });
    }
    HttpRequest {
        method: "POST",
        url: self::endpoint(endpoint.base_url),
        headers,
        body: json_bytes(&Value::Object(body)),
    }
}

/// Content blocks for message parts. Empty text is dropped: Anthropic refuses empty text
/// blocks.
fn content_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => (!t.trim().is_empty()).then(|| json!({"type": "text", "text": t})),
            Part::Image { url, mime } => Some(match source(url, mime.as_deref()) {
                Some(source) => json!({"type": "image", "source": source}),
                None => json!({"type": "text", "text": image_mention(url)}),
            }),
            Part::Document { url, name, mime } => {
                let pdf = media_type(url, mime.as_deref(), "") == "application/pdf";
                Some(match source(url, Some("application/pdf")).filter(|_| pdf) {
                    Some(source) => json!({"type": "document", "source": source, "title": name}),
                    // Only PDFs are read as documents; others are mentioned by name.
                    None => json!({"type": "text", "text": document_mention(name, url)}),
                })
            }
            // Data for people beside a reply, never the model's.
            Part::Citations(_) => None,
        })
        .collect()
}

/// Where a block's bytes come from: inline base64 for a `data:` URL, else the URL itself.
fn source(url: &str, mime: Option<&str>) -> Option<Value> {
    if let Some((data_mime, data)) = data_url(url) {
        let media = if data_mime == "application/octet-stream" {
            mime.unwrap_or(data_mime)
        } else {
            data_mime
        };
        return Some(json!({"type": "base64", "media_type": media, "data": data}));
    }
    (url.starts_with("https://") || url.starts_with("http://"))
        .then(|| json!({"type": "url", "url": url}))
}

/// A tool message as a `tool_result` block (text if it answers no known call).
fn tool_result(m: &PromptMessage) -> Value {
    let Some(id) = &m.tool_call_id else {
        return json!({"type": "text", "text": format!("[tool result] {}", text_of(&m.parts))});
    };
    let mut block = Map::new();
    block.insert("type".into(), "tool_result".into());
    block.insert("tool_use_id".into(), Value::String(id.clone()));
    if m.parts.iter().all(|p| matches!(p, Part::Text(_))) {
        let text = text_of(&m.parts);
        if !text.is_empty() {
            block.insert("content".into(), Value::String(text));
        }
    } else {
        block.insert("content".into(), Value::Array(content_blocks(&m.parts)));
    }
    Value::Object(block)
}

/// Anthropic's `stop_reason`, normalized.
fn stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Input tokens of a usage object: uncached input plus cache writes and reads, all of which
/// the prompt consumed.
fn input_tokens(u: &Value) -> u32 {
    [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| json_u32(u.get(*k)))
    .fold(0u32, u32::saturating_add)
}

/// Parses a whole (non-streamed) 2xx response body.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return Err(error_event(&v));
    }
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("message without content"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            // Text blocks are consecutive pieces of one reply (citations split them).
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                if tool_calls.len() >= MAX_TOOL_CALLS {
                    return Err(malformed(format!(
                        "more than {MAX_TOOL_CALLS} tool calls in one reply"
                    )));
                }
                tool_calls.push(ToolCall {
                    id: block
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("call_{}", tool_calls.len()), str::to_owned),
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    arguments: arguments_text(block.get("input")),
                });
            }
            // Thinking, server tools and their results are not the reply.
            _ => {}
        }
    }
    Ok(Completion {
        text,
        tool_calls,
        finish_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(stop_reason),
        usage: v.get("usage").filter(|u| u.is_object()).map(|u| {
            usage(
                input_tokens(u),
                json_u32(u.get("output_tokens")).unwrap_or(0),
                None,
            )
        }),
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Classifies an error response: `{"type":"error","error":{"type":..,"message":..}}`.
///
/// A 429 waits as long as `retry-after` says. Without it, the delay is read from the
/// `anthropic-ratelimit-*-reset` header of each exhausted limit (`*-remaining: 0`): those are
/// RFC 3339 instants, and the engine has no clock, so they become delays only against the
/// response's own `Date` header; with no `Date`, no delay is claimed.
pub fn classify_error(status: u16, headers: &[(String, String)], body: &[u8]) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let message = match err.get("message").and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => error_message_and_code(body).0,
    };
    classify_typed(status, err, message, headers)
}

/// An `error` event (or an error body that came with a 2xx status).
fn error_event(v: &Value) -> ProviderError {
    let err = v.get("error").filter(|e| e.is_object()).unwrap_or(v);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error event without a message")
        .to_owned();
    // Mid-stream, the status is the stream's own.
    classify_typed(200, err, message, &[])
}

fn classify_typed(
    status: u16,
    err: &Value,
    message: String,
    headers: &[(String, String)],
) -> ProviderError {
    let kind = err.get("type").and_then(Value::as_str).unwrap_or("");
    let lower = message.to_ascii_lowercase();
    let or = |fallback: u16| if status >= 400 { status } else { fallback };
    match kind {
        "overloaded_error" => ProviderError::Overloaded { message },
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after: rate_limit_delay(err, headers),
            message,
        },
        "authentication_error" => ProviderError::Auth {
            status: or(401),
            message,
        },
        "permission_error" => ProviderError::Auth {
            status: or(403),
            message,
        },
        "billing_error" => ProviderError::Auth {
            status: or(402),
            message,
        },
        "invalid_request_error"
            if lower.contains("prompt is too long")
                || lower.contains("exceed context limit")
                || lower.contains("context window") =>
        {
            ProviderError::ContextTooLong { message }
        }
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            let fallback = if kind == "request_too_large" {
                413
            } else {
                400
            };
            ProviderError::BadRequest {
                status: or(fallback),
                message,
            }
        }
        "api_error" | "timeout_error" => ProviderError::Upstream { status, message },
        _ => match status {
            529 => ProviderError::Overloaded { message },
            429 => ProviderError::RateLimited {
                retry_after: rate_limit_delay(err, headers),
                message,
            },
            _ => classify_parts(status, provider::retry_after(headers), message, kind),
        },
    }
}

/// How long a 429 asks to wait.
fn rate_limit_delay(err: &Value, headers: &[(String, String)]) -> Option<Duration> {
    let now = provider::header(headers, "date").and_then(parse_http_date);
    // A monthly spend cap, not a rate: usage resumes on the first of next month, UTC.
    let spend_cap = err
        .get("details")
        .and_then(|d| d.get("error_code"))
        .and_then(Value::as_str)
        == Some("enforced_spend_limit_reached");
    if spend_cap {
        return now.map(until_next_utc_month);
    }
    if let Some(d) = provider::retry_after(headers) {
        return Some(d);
    }
    let now = now?;
    ["requests", "tokens", "input-tokens", "output-tokens"]
        .iter()
        .filter(|limit| {
            provider::header(headers, &format!("anthropic-ratelimit-{limit}-remaining"))
                .and_then(|v| v.parse::<u64>().ok())
                == Some(0)
        })
        .filter_map(|limit| {
            provider::header(headers, &format!("anthropic-ratelimit-{limit}-reset"))
                .and_then(parse_rfc3339)
        })
        .map(|reset| Duration::from_millis(u64::try_from(reset - now).unwrap_or(0)))
        .max()
}

/// What an Anthropic stream spreads across events.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    input_tokens: u32,
    cache_creation_tokens: u32,
    cache_read_tokens: u32,
    output_tokens: u32,
    blocks: Vec<Block>,
    tool_calls: u32,
    stopped: bool,
}

/// A content block the stream opened.
#[derive(Debug)]
struct Block {
    index: u64,
    kind: BlockKind,
    open: bool,
    /// Bytes of tool input received so far.
    input_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum BlockKind {
    Text,
    /// The reply's tool call number `call`.
    ToolUse {
        call: u32,
    },
    /// Thinking, server tools and whatever later API versions add.
    Other,
}

impl StreamState {
    /// Whether `message_stop` arrived with every tool-use block closed (an open block's
    /// arguments may be cut).
    pub(crate) fn is_complete(&self) -> bool {
        self.stopped
            && self
                .blocks
                .iter()
                .all(|b| !b.open || !matches!(b.kind, BlockKind::ToolUse { .. }))
    }

    fn usage(&self) -> StreamItem {
        let input = self
            .input_tokens
            .saturating_add(self.cache_creation_tokens)
            .saturating_add(self.cache_read_tokens);
        StreamItem::Usage(usage(input, self.output_tokens, None))
    }

    /// Cumulative counts: each report replaces the fields it carries.
    fn update_usage(&mut self, u: &Value) {
        if let Some(n) = json_u32(u.get("input_tokens")) {
            self.input_tokens = n;
        }
        if let Some(n) = json_u32(u.get("cache_creation_input_tokens")) {
            self.cache_creation_tokens = n;
        }
        if let Some(n) = json_u32(u.get("cache_read_input_tokens")) {
            self.cache_read_tokens = n;
        }
        if let Some(n) = json_u32(u.get("output_tokens")) {
            self.output_tokens = n;
        }
    }

    fn block(&mut self, v: &Value) -> Result<Option<&mut Block>, ProviderError> {
        let index = v
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("content block event without an index"))?;
        Ok(self.blocks.iter_mut().rev().find(|b| b.index == index))
    }

    /// Decodes one event.
    pub(crate) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data.as_bytes())
            .map_err(|e| malformed(format!("invalid JSON in stream event: {e}")))?;
        // The data's `type` names the event as well as the `event:` field does.
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                let message = v.get("message").unwrap_or(&Value::Null);
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    out.push(StreamItem::Model(model.to_owned()));
                }
                if let Some(u) = message.get("usage").filter(|u| u.is_object()) {
                    self.update_usage(u);
                    out.push(self.usage());
                }
            }
            "content_block_start" => self.block_start(&v, out)?,
            "content_block_delta" => self.block_delta(&v, out)?,
            "content_block_stop" => {
                if let Some(block) = self.block(&v)? {
                    block.open = false;
                    // A call without parameters streams no input: its arguments are `{}`.
                    if let BlockKind::ToolUse { call } = block.kind
                        && block.input_len == 0
                    {
                        out.push(StreamItem::ToolCallDelta {
                            index: call,
                            id: None,
                            name: None,
                            arguments: "{}".into(),
                        });
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(StreamItem::Finish(stop_reason(reason)));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    self.update_usage(u);
                    out.push(self.usage());
                }
            }
            "message_stop" => {
                self.stopped = true;
                out.push(StreamItem::Done);
            }
            "error" => return Err(error_event(&v)),
            // `ping`, and event types later API versions add.
            _ => {}
        }
        Ok(())
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let index = v
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("content_block_start without an index"))?;
        if self.blocks.len() >= MAX_BLOCKS {
            return Err(malformed(format!(
                "more than {MAX_BLOCKS} content blocks in one reply"
            )));
        }
        let block = v.get("content_block").unwrap_or(&Value::Null);
        let mut input_len = 0;
        let kind = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = block.get("text").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(StreamItem::Delta(text.to_owned()));
                }
                BlockKind::Text
            }
            Some("tool_use") => {
                if self.tool_calls as usize >= MAX_TOOL_CALLS {
                    return Err(malformed(format!(
                        "more than {MAX_TOOL_CALLS} tool calls in one reply"
                    )));
                }
                let call = self.tool_calls;
                self.tool_calls += 1;
                // The input normally streams as JSON text; a start that already carries a
                // non-empty input (some compatible servers) is taken as the whole of it.
                let arguments = match block.get("input") {
                    Some(Value::Object(o)) if !o.is_empty() => Value::Object(o.clone()).to_string(),
                    _ => String::new(),
                };
                input_len = arguments.len();
                out.push(StreamItem::ToolCallDelta {
                    index: call,
                    id: Some(
                        block
                            .get("id")
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("call_{call}"), str::to_owned),
                    ),
                    name: block.get("name").and_then(Value::as_str).map(str::to_owned),
                    arguments,
                });
                BlockKind::ToolUse { call }
            }
            _ => BlockKind::Other,
        };
        self.blocks.push(Block {
            index,
            kind,
            open: true,
            input_len,
        });
        Ok(())
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let delta = v.get("delta").unwrap_or(&Value::Null);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                if let Some(text) = delta.get("text").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(StreamItem::Delta(text.to_owned()));
                }
            }
            Some("input_json_delta") => {
                let part = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let block = self
                    .block(v)?
                    .ok_or_else(|| malformed("input_json_delta for a block that never started"))?;
                // Server tools stream input too; only the model's own calls are ours.
                if let BlockKind::ToolUse { call } = block.kind {
                    block.input_len += part.len();
                    out.push(StreamItem::ToolCallDelta {
                        index: call,
                        id: None,
                        name: None,
                        arguments: part.to_owned(),
                    });
                }
            }
            // Thinking, signatures, citations.
            _ => {}
        }
        Ok(())
    }
}
