//! The OpenAI chat-completions wire format: requests, whole responses and SSE streams.
//!
//! Many providers speak it (OpenAI, Mistral, DeepSeek, Groq, OpenRouter, Ollama, vLLM), so it
//! is the first format Kefu speaks. Everything here is pure: bytes in, typed values out.
//!
//! Mistral speaks the same shape with its own edges, handled here when the endpoint's kind is
//! [`ProviderKind::Mistral`]: its request schema refuses unknown fields (so no
//! `stream_options`; it reports usage in the last chunk anyway), it stops with
//! `model_length` when the context window rather than `max_tokens` cut the reply, its errors
//! are `{"object":"error","message":..,"type":..,"code":..}` (or FastAPI's `{"detail":[..]}`
//! for a 422), a 429 may mean its shared capacity rather than the account's rate, and its
//! rate-limit window is told in `ratelimitbysize-reset` seconds.

use core::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Completion, Endpoint, MAX_TOOL_CALLS, ModelRequest, PromptMessage, PromptRole, ProviderKind,
    StreamItem, ToolCall, ToolSpec, arguments_text, document_mention, json_bytes, json_headers,
    json_u32, malformed, usage,
};
use crate::provider::{
    self, FinishReason, Header, HttpRequest, ProviderError, Usage, classify_parts,
    error_message_and_code,
};
use crate::sse::SseEvent;
use crate::vocab::Part;

/// The URL of the chat-completions endpoint under a base URL.
pub fn endpoint(base_url: &str) -> String {
    format!("{}/chat/completions", base_url.trim().trim_end_matches('/'))
}

/// Builds the HTTP request for a model request.
pub fn build_request(endpoint: &Endpoint<'_>, request: &ModelRequest) -> HttpRequest {
    let stream = request.stream;
    let mistral = endpoint.kind == ProviderKind::Mistral;
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = Map::new();
    body.insert("model".into(), Value::String(endpoint.model.to_owned()));
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        body.insert("tools".into(), tools_json(&request.tools));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(m) = request.max_tokens {
        body.insert("max_tokens".into(), json!(m));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
        if !mistral {
            // Without this, a streamed reply reports no usage at all. Mistral refuses fields
            // it does not know, and sends usage in its last chunk unasked.
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    let mut headers = json_headers(stream);
    if let Some(key) = endpoint.api_key.filter(|k| !k.is_empty()) {
        headers.push(Header {
            name: "authorization",
            value: format!("Bearer {key}"),
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

/// Tools in the chat-completions shape: `[{type: "function", function: {..}}]`.
pub(crate) fn tools_json(tools: &[ToolSpec]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut function = Map::new();
                function.insert("name".into(), Value::String(t.name.clone()));
                if !t.description.is_empty() {
                    function.insert("description".into(), Value::String(t.description.clone()));
                }
                if !t.parameters.is_null() {
                    function.insert("parameters".into(), t.parameters.clone());
                }
                json!({"type": "function", "function": function})
            })
            .collect(),
    )
}

/// One prompt message in the chat-completions shape.
pub(crate) fn message_json(m: &PromptMessage) -> Value {
    let role = match m.role {
        PromptRole::System => "system",
        PromptRole::User => "user",
        PromptRole::Assistant => "assistant",
        PromptRole::Tool => "tool",
    };
    // Plain text stays a string (every compatible server accepts it); images need the
    // array-of-parts form, which tool messages do not take.
    let only_text = m.role == PromptRole::Tool
        || m.parts
            .iter()
            .all(|p| matches!(p, Part::Text(_) | Part::Citations(_)));
    let content = if only_text {
        Value::String(super::text_of(&m.parts))
    } else {
        Value::Array(
            m.parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(json!({"type": "text", "text": t})),
                    Part::Image { url, .. } => {
                        Some(json!({"type": "image_url", "image_url": {"url": url}}))
                    }
                    Part::Document { name, url, .. } => {
                        Some(json!({"type": "text", "text": document_mention(name, url)}))
                    }
                    // Data for people beside a reply, never the model's.
                    Part::Citations(_) => None,
                })
                .collect(),
        )
    };
    let mut msg = Map::new();
    msg.insert("role".into(), Value::String(role.into()));
    if m.role == PromptRole::Assistant && !m.tool_calls.is_empty() {
        // A message that only calls tools has no content, which the API spells null.
        let empty = matches!(&content, Value::String(s) if s.is_empty());
        msg.insert("content".into(), if empty { Value::Null } else { content });
        msg.insert(
            "tool_calls".into(),
            Value::Array(
                m.tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        })
                    })
                    .collect(),
            ),
        );
    } else {
        msg.insert("content".into(), content);
    }
    if m.role == PromptRole::Tool
        && let Some(id) = &m.tool_call_id
    {
        msg.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    Value::Object(msg)
}

/// The usage object of a response or chunk, if it has one.
pub(crate) fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    if !u.is_object() {
        return None;
    }
    Some(usage(
        json_u32(u.get("prompt_tokens")).unwrap_or(0),
        json_u32(u.get("completion_tokens")).unwrap_or(0),
        json_u32(u.get("total_tokens")),
    ))
}

/// A finish reason in the chat-completions family. `"error"` (Mistral, and OpenRouter when
/// an upstream fails mid-reply) means the reply is broken, not finished.
pub(crate) fn finish_reason(reason: &str) -> Result<FinishReason, ProviderError> {
    match reason {
        // Mistral: the model's context window, not `max_tokens`, cut the reply.
        "model_length" => Ok(FinishReason::Length),
        "error" => Err(ProviderError::Upstream {
            status: 200,
            message: "the provider stopped the reply with finish_reason \"error\"".into(),
        }),
        other => Ok(FinishReason::parse(other)),
    }
}

/// Parses a whole (non-streamed) 2xx response body.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    parse_response_for(ProviderKind::Openai, body)
}

/// Parses a whole 2xx response body of a chat-completions `kind` (Mistral's errors differ).
pub fn parse_response_for(kind: ProviderKind, body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if v.get("error").is_some_and(|e| !e.is_null())
        || v.get("object").and_then(Value::as_str) == Some("error")
    {
        return Err(classify_for(kind, 500, &[], body));
    }
    completion_of(&v)
}

/// A completion from a parsed chat-completions response.
pub(crate) fn completion_of(v: &Value) -> Result<Completion, ProviderError> {
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| malformed("no choices"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| malformed("choice without a message"))?;
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| {
                p.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "text")
            })
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(Value::Null) | None => String::new(),
        Some(_) => return Err(malformed("message content is neither text nor parts")),
    };
    let tool_calls = match message.get("tool_calls") {
        Some(Value::Array(calls)) => tool_calls_of(calls)?,
        _ => Vec::new(),
    };
    let mut finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(finish_reason)
        .transpose()?;
    // A refusal (structured outputs) comes without content: it is the filter speaking.
    if text.is_empty()
        && tool_calls.is_empty()
        && message
            .get("refusal")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
    {
        finish_reason = Some(FinishReason::ContentFilter);
    }
    Ok(Completion {
        text,
        tool_calls,
        finish_reason,
        usage: usage_of(v),
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Tool calls of a whole message: `[{id, type, function: {name, arguments}}]`.
pub(crate) fn tool_calls_of(calls: &[Value]) -> Result<Vec<ToolCall>, ProviderError> {
    if calls.len() > MAX_TOOL_CALLS {
        return Err(malformed(format!(
            "{} tool calls in one reply (at most {MAX_TOOL_CALLS})",
            calls.len()
        )));
    }
    Ok(calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let function = c.get("function").unwrap_or(c);
            ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| format!("call_{i}"), str::to_owned),
                name: function
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                arguments: arguments_text(function.get("arguments")),
            }
        })
        .collect())
}

/// Classifies an error body of a chat-completions `kind`.
fn classify_for(
    kind: ProviderKind,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    if kind == ProviderKind::Mistral {
        classify_mistral_error(status, headers, body)
    } else {
        ProviderError::from_status(status, headers, body)
    }
}

/// Classifies a Mistral error: `{"object":"error","message":..,"type":..,"code":..}`, where
/// `message` may itself be an object (validation details), or FastAPI's `{"detail":[..]}`.
pub fn classify_mistral_error(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (message, code) = match (v.get("message"), v.get("detail")) {
        (Some(m), _) if !m.is_string() && !m.is_null() => (short(&m.to_string()), code_of(&v)),
        (None, Some(d)) => (short(&d.to_string()), code_of(&v)),
        _ => error_message_and_code(body),
    };
    let text = format!("{message} {code}").to_ascii_lowercase();
    if status == 429
        && (text.contains("service_tier_capacity_exceeded") || text.contains("capacity exceeded"))
    {
        // Mistral's shared capacity for the model, not this account's rate.
        return ProviderError::Overloaded { message };
    }
    if (400..500).contains(&status)
        && (text.contains("too large for model") || text.contains("context length"))
    {
        return ProviderError::ContextTooLong { message };
    }
    let retry_after = provider::retry_after(headers).or_else(|| {
        provider::header(headers, "ratelimitbysize-reset")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
    });
    classify_parts(status, retry_after, message, &code)
}

fn code_of(v: &Value) -> String {
    ["type", "code"]
        .iter()
        .filter_map(|k| v.get(*k))
        .filter(|c| !c.is_null())
        .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
        .collect::<Vec<_>>()
        .join(" ")
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Decodes one SSE event of a chat-completions stream into items.
///
/// This reads each event on its own; [`super::StreamDecoder`] keeps what a stream spreads
/// across events (which tool call an index-less fragment continues) and is what hosts use.
pub fn decode_stream_event(
    event: &SseEvent,
    out: &mut Vec<StreamItem>,
) -> Result<(), ProviderError> {
    StreamState::new(ProviderKind::Openai).decode(event, out)
}

/// What a chat-completions stream spreads across events.
#[derive(Debug)]
pub(crate) struct StreamState {
    kind: ProviderKind,
    calls: ToolCallSlots,
}

impl StreamState {
    /// The state at the start of a stream of `kind`.
    pub(crate) fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            calls: ToolCallSlots::default(),
        }
    }

    /// Decodes one event.
    pub(crate) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push(StreamItem::Done);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data.as_bytes())
            .map_err(|e| malformed(format!("invalid JSON in stream chunk: {e}")))?;
        if v.get("error").is_some_and(|e| !e.is_null())
            || event.event.as_deref() == Some("error")
            || v.get("object").and_then(Value::as_str) == Some("error")
        {
            // An error event mid-stream (e.g. an overloaded upstream): the reply is not
            // finished. Its own code, when it has one, is the best status there is.
            let status = v
                .get("error")
                .and_then(|e| e.get("code"))
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            return Err(classify_for(self.kind, status, &[], data.as_bytes()));
        }
        self.decode_chunk(&v, out)
    }

    /// Decodes one parsed `chat.completion.chunk`.
    pub(crate) fn decode_chunk(
        &mut self,
        v: &Value,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        if let Some(model) = v.get("model").and_then(Value::as_str) {
            out.push(StreamItem::Model(model.to_owned()));
        }
        if let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push(StreamItem::Delta(text.to_owned()));
            }
            if let Some(Value::Array(calls)) = delta.and_then(|d| d.get("tool_calls")) {
                for call in calls {
                    self.tool_call_fragment(call, out)?;
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(StreamItem::Finish(finish_reason(reason)?));
            }
        }
        if let Some(usage) = usage_of(v) {
            out.push(StreamItem::Usage(usage));
        }
        Ok(())
    }

    fn tool_call_fragment(
        &mut self,
        call: &Value,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && *id != "null");
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let (index, generated) = self.calls.slot(
            call.get("index").and_then(Value::as_u64),
            id,
            name.is_some(),
        )?;
        let arguments = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // Some servers send whole arguments as an object.
            Some(v) => v.to_string(),
        };
        out.push(StreamItem::ToolCallDelta {
            index,
            id: id.map(str::to_owned).or(generated),
            name: name.map(str::to_owned),
            arguments,
        });
        Ok(())
    }
}

/// Which of a reply's tool calls a streamed fragment continues.
///
/// OpenAI sends `index` on every fragment and the id and name on the first. Some compatible
/// servers (Ollama, proxies bridging other APIs) send parallel calls under one index, or none;
/// so a new id, or a second name where a call already has one, starts a new call, and a
/// fragment with neither continues the call its index (or, without one, the last fragment)
/// points at.
#[derive(Debug, Default)]
pub(crate) struct ToolCallSlots {
    /// Each call's id and whether its name arrived, in the order calls appeared.
    calls: Vec<(Option<String>, bool)>,
    /// The provider's index → ours.
    by_index: Vec<(u64, u32)>,
    last: Option<u32>,
}

impl ToolCallSlots {
    /// Our index for a fragment, and a generated id when the fragment starts a call that has
    /// none.
    pub(crate) fn slot(
        &mut self,
        index: Option<u64>,
        id: Option<&str>,
        named: bool,
    ) -> Result<(u32, Option<String>), ProviderError> {
        let pointed = match index {
            Some(p) => self
                .by_index
                .iter()
                .find(|(q, _)| *q == p)
                .map(|&(_, ours)| ours),
            None => self.last,
        };
        let found = match id {
            Some(id) => match self
                .calls
                .iter()
                .position(|(x, _)| x.as_deref() == Some(id))
            {
                Some(i) => Some(i as u32),
                // The id arrives after an id-less fragment at the same index.
                None => pointed.filter(|&m| self.calls[m as usize].0.is_none()),
            },
            None => pointed.filter(|&m| !(named && self.calls[m as usize].1)),
        };
        let (ours, generated) = match found {
            Some(i) => (i, None),
            None => {
                if self.calls.len() >= MAX_TOOL_CALLS {
                    return Err(malformed(format!(
                        "more than {MAX_TOOL_CALLS} tool calls in one reply"
                    )));
                }
                let i = self.calls.len() as u32;
                self.calls.push((None, false));
                (i, id.is_none().then(|| format!("call_{i}")))
            }
        };
        let call = &mut self.calls[ours as usize];
        if call.0.is_none() {
            call.0 = id.map(str::to_owned);
        }
        call.1 |= named;
        if let Some(p) = index {
            match self.by_index.iter().position(|(q, _)| *q == p) {
                Some(at) => self.by_index[at].1 = ours,
                None if self.by_index.len() < MAX_TOOL_CALLS => self.by_index.push((p, ours)),
                None => {
                    return Err(malformed(format!(
                        "more than {MAX_TOOL_CALLS} tool-call indices in one reply"
                    )));
                }
            }
        }
        self.last = Some(ours);
        Ok((ours, generated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    fn endpoint(api_key: Option<&str>) -> Endpoint<'_> {
        Endpoint {
            kind: super::ProviderKind::Openai,
            base_url: "https://api.openai.com/v1/",
            model: "gpt-4o-mini",
            api_key,
        }
    }

    fn request(messages: &[PromptMessage], stream: bool) -> ModelRequest {
        ModelRequest {
            messages: messages.to_vec(),
            temperature: Some(0.2),
            max_tokens: Some(300),
            stream,
            ..ModelRequest::default()
        }
    }

    #[test]
    fn builds_text_and_image_requests() {
        let prompt = vec![
            PromptMessage::text(PromptRole::System, "Be brief."),
            PromptMessage::new(
                PromptRole::User,
                vec![
                    Part::Text("What is this?".into()),
                    Part::Image {
                        url: "https://x.example/a.png".into(),
                        mime: None,
                    },
                ],
            ),
        ];
        let req = build_request(&endpoint(Some("sk-1")), &request(&prompt, true));
        assert_eq!(req.url, "https://api.openai.com/v1/chat/completions");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 300);
        assert_eq!(
            body["messages"][0],
            json!({"role":"system","content":"Be brief."})
        );
        assert_eq!(
            body["messages"][1]["content"][1]["image_url"]["url"],
            "https://x.example/a.png"
        );
        let auth = req
            .headers
            .iter()
            .find(|h| h.name == "authorization")
            .unwrap();
        assert!(auth.sensitive);
        assert_eq!(auth.value, "Bearer sk-1");
        let whole = build_request(&endpoint(None), &request(&prompt[..1], false));
        assert!(whole.headers.iter().all(|h| h.name != "authorization"));
        let body: Value = serde_json::from_slice(&whole.body).unwrap();
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn parses_a_whole_response() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
        let c = parse_response(body).unwrap();
        assert_eq!(c.text, "Hello!");
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                total_tokens: 11
            })
        );
        assert!(matches!(
            parse_response(b"{\"choices\":[]}"),
            Err(ProviderError::Malformed { .. })
        ));
        assert!(matches!(
            parse_response(b"{\"choi"),
            Err(ProviderError::Malformed { .. })
        ));
    }

    #[test]
    fn decodes_a_stream() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.feed(stream.as_bytes(), &mut events).unwrap();
        let mut items = Vec::new();
        for e in &events {
            decode_stream_event(e, &mut items).unwrap();
        }
        assert_eq!(
            items,
            vec![
                StreamItem::Model("m".into()),
                StreamItem::Delta("Hel".into()),
                StreamItem::Delta("lo".into()),
                StreamItem::Finish(FinishReason::Stop),
                StreamItem::Usage(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 2,
                    total_tokens: 7
                }),
                StreamItem::Done,
            ]
        );
    }

    #[test]
    fn stream_errors_are_typed() {
        let bad = SseEvent {
            data: "{\"choices\":[{\"delta\":".into(),
            ..SseEvent::default()
        };
        assert!(matches!(
            decode_stream_event(&bad, &mut vec![]),
            Err(ProviderError::Malformed { .. })
        ));
        let err = SseEvent {
            data: r#"{"error":{"message":"Overloaded","type":"overloaded_error"}}"#.into(),
            ..SseEvent::default()
        };
        assert!(matches!(
            decode_stream_event(&err, &mut vec![]),
            Err(ProviderError::Overloaded { .. })
        ));
    }
}
