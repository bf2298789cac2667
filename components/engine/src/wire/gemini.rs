//! Google's Gemini API: `generateContent` and `streamGenerateContent?alt=sse` requests, whole
//! responses, SSE streams and typed errors.
//!
//! Where it differs from the chat-completions shape: the prompt is `contents` of `user` and
//! `model` turns made of `parts` (`text`, `inlineData`, `fileData`, `functionCall`,
//! `functionResponse`), system text goes in `systemInstruction`, sampling in
//! `generationConfig`. A stream is data-only SSE where every event is a whole
//! `GenerateContentResponse` carrying the next piece; there is no `[DONE]`, so a stream is
//! complete when a chunk carried a `finishReason`. Function calls carry no ids: calls are
//! named `call_<n>` by their position in the reply, and a result is matched to its call by
//! name. Errors are Google's `{"error":{"code","message","status","details"}}`, with the
//! retry delay in a `RetryInfo` detail.

use core::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Completion, Endpoint, MAX_TOOL_CALLS, ModelRequest, OPENING_TURN, PromptMessage, PromptRole,
    StreamItem, ToolCall, Turns, arguments_object, data_url, document_mention, image_mention,
    json_bytes, json_headers, json_u32, malformed, media_type, text_of, usage,
};
use crate::provider::{
    self, FinishReason, Header, HttpRequest, ProviderError, classify_parts, error_message_and_code,
    parse_go_duration,
};
use crate::sse::SseEvent;
use crate::vocab::Part;

/// The URL of the model's `generateContent` (or, streaming, `streamGenerateContent` as SSE)
/// method under a base URL (`https://generativelanguage.googleapis.com`, with or without the
/// API version).
pub fn endpoint(base_url: &str, model: &str, stream: bool) -> String {
    let base = base_url.trim().trim_end_matches('/');
    let versioned = base.ends_with("/v1beta") || base.ends_with("/v1");
    let version = if versioned { "" } else { "/v1beta" };
    let model = model.trim();
    let model = model.strip_prefix("models/").unwrap_or(model);
    if stream {
        format!("{base}{version}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}{version}/models/{model}:generateContent")
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
            PromptRole::User => turns.push(false, parts(&m.parts)),
            PromptRole::Assistant => {
                let mut blocks = parts(&m.parts);
                blocks.extend(m.tool_calls.iter().map(|c| {
                    json!({"functionCall": {"name": c.name, "args": arguments_object(&c.arguments)}})
                }));
                turns.push(true, blocks);
            }
            PromptRole::Tool => turns.push(false, vec![function_response(m, &request.messages)]),
        }
    }
    let contents: Vec<Value> = turns
        .finish(json!({"text": OPENING_TURN}), |p| {
            p.get("functionResponse").is_some()
        })
        .into_iter()
        .map(|(model, parts)| json!({"role": if model { "model" } else { "user" }, "parts": parts}))
        .collect();

    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    let mut config = Map::new();
    if let Some(t) = request.temperature.filter(|t| t.is_finite()) {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(m) = request.max_tokens {
        config.insert("maxOutputTokens".into(), json!(m));
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), Value::String(t.name.clone()));
                d.insert("description".into(), Value::String(t.description.clone()));
                if !t.parameters.is_null() {
                    // `parametersJsonSchema` takes JSON Schema as written for other
                    // providers; `parameters` takes only an OpenAPI subset and refuses keys
                    // such as `additionalProperties`.
                    d.insert("parametersJsonSchema".into(), t.parameters.clone());
                }
                Value::Object(d)
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }

    let mut headers = json_headers(request.stream);
    if let Some(key) = endpoint.api_key.filter(|k| !k.is_empty()) {
        headers.push(Header {
            name: "x-goog-api-key",
            value: key.to_owned(),
            sensitive: true,
        });
    }
    HttpRequest {
        method: "POST",
        url: self::endpoint(endpoint.base_url, endpoint.model, request.stream),
        headers,
        body: json_bytes(&Value::Object(body)),
    }
}

/// Parts for message parts. Empty text is dropped: Gemini refuses empty parts.
fn parts(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => (!t.trim().is_empty()).then(|| json!({"text": t})),
            Part::Image { url, mime } => Some(
                media(url, media_type(url, mime.as_deref(), "image/jpeg"))
                    .unwrap_or_else(|| json!({"text": image_mention(url)})),
            ),
            Part::Document { url, name, mime } => {
                let mime = media_type(url, mime.as_deref(), "");
                // PDFs and plain text are read; other documents are mentioned by name.
                let readable = mime == "application/pdf" || mime == "text/plain";
                Some(
                    media(url, mime)
                        .filter(|_| readable)
                        .unwrap_or_else(|| json!({"text": document_mention(name, url)})),
                )
            }
            // Data for people beside a reply, never the model's.
            Part::Citations(_) => None,
        })
        .collect()
}

/// Inline bytes for a `data:` URL, a file reference for an HTTP(S) URL.
fn media(url: &str, mime: &str) -> Option<Value> {
    if let Some((_, data)) = data_url(url) {
        return Some(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    (url.starts_with("https://") || url.starts_with("http://"))
        .then(|| json!({"fileData": {"mimeType": mime, "fileUri": url}}))
}

/// A tool message as a `functionResponse` part. Gemini matches results to calls by function
/// name, which the result's call id leads back to; the response must be an object, so other
/// JSON (or plain text) goes under `result`.
fn function_response(m: &PromptMessage, prompt: &[PromptMessage]) -> Value {
    let id = m.tool_call_id.as_deref().unwrap_or_default();
    let name = prompt
        .iter()
        .flat_map(|p| &p.tool_calls)
        .find(|c| c.id == id)
        .map_or(id, |c| c.name.as_str());
    let text = text_of(&m.parts);
    let response = match serde_json::from_slice::<Value>(text.as_bytes()) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    };
    json!({"functionResponse": {"name": name, "response": response}})
}

/// Gemini's `finishReason`, normalized; a natural stop after function calls is a stop for
/// tools.
fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "STOP" if called_tools => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Parses a whole 2xx response body: one `GenerateContentResponse`, or the JSON array of
/// them that `streamGenerateContent` sends without `alt=sse`.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let chunks = match &v {
        Value::Array(chunks) => chunks.as_slice(),
        one => core::slice::from_ref(one),
    };
    let mut state = StreamState::default();
    let mut items = Vec::new();
    let mut candidates = false;
    for chunk in chunks {
        candidates |= chunk
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        state.decode_chunk(chunk, &mut items)?;
    }
    if !candidates {
        return Err(malformed("no candidates"));
    }
    let mut completion = Completion::default();
    for item in items {
        match item {
            StreamItem::Delta(t) => completion.text.push_str(&t),
            StreamItem::ToolCallDelta {
                id,
                name,
                arguments,
                ..
            } => completion.tool_calls.push(ToolCall {
                id: id.unwrap_or_default(),
                name: name.unwrap_or_default(),
                arguments,
            }),
            StreamItem::Finish(r) => completion.finish_reason = Some(r),
            StreamItem::Usage(u) => completion.usage = Some(u),
            StreamItem::Model(m) => completion.model = Some(m),
            StreamItem::Done => {}
        }
    }
    Ok(completion)
}

/// Classifies an error response: `{"error":{"code":429,"message":..,"status":
/// "RESOURCE_EXHAUSTED","details":[..]}}` (sometimes wrapped in an array).
///
/// A 429's delay comes from the `RetryInfo` detail's `retryDelay` (`"13s"`), else from
/// `Retry-After`. An invalid key is a 400 `INVALID_ARGUMENT` whose detail says
/// `API_KEY_INVALID`: that is an authentication failure, not a bad request.
pub fn classify_error(status: u16, headers: &[(String, String)], body: &[u8]) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let v = match &v {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        other => other,
    };
    match v.get("error").filter(|e| e.is_object()) {
        Some(err) => classify_status(status, err, headers),
        None => {
            let (message, code) = error_message_and_code(body);
            classify_parts(status, provider::retry_after(headers), message, &code)
        }
    }
}

fn classify_status(status: u16, err: &Value, headers: &[(String, String)]) -> ProviderError {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no error message")
        .to_owned();
    let canonical = err.get("status").and_then(Value::as_str).unwrap_or("");
    let status = if (400..600).contains(&status) {
        status
    } else {
        // Mid-stream, the body's own code is the best status there is.
        err.get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or(status)
    };
    let details = err
        .get("details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let key_invalid = details
        .iter()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
        || lower.contains("api key not valid")
        || lower.contains("api key expired");
    let token_limit = lower.contains("token count")
        || lower.contains("maximum number of tokens")
        || lower.contains("too many tokens")
        || lower.contains("context window");
    match (canonical, status) {
        _ if key_invalid => ProviderError::Auth { status, message },
        ("UNAUTHENTICATED" | "PERMISSION_DENIED", _) | (_, 401 | 403) => {
            ProviderError::Auth { status, message }
        }
        ("RESOURCE_EXHAUSTED", _) | (_, 429) => ProviderError::RateLimited {
            retry_after: retry_delay(details).or_else(|| provider::retry_after(headers)),
            message,
        },
        ("UNAVAILABLE", _) | (_, 503) => ProviderError::Overloaded { message },
        _ if token_limit && (400..500).contains(&status) => {
            ProviderError::ContextTooLong { message }
        }
        _ => classify_parts(status, provider::retry_after(headers), message, canonical),
    }
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail.
fn retry_delay(details: &[Value]) -> Option<Duration> {
    details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_none_or(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(parse_go_duration)
}

/// What a Gemini stream spreads across chunks.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    model_reported: bool,
    tool_calls: u32,
    finished: bool,
}

impl StreamState {
    /// Whether a chunk carried a finish reason.
    pub(crate) fn is_complete(&self) -> bool {
        self.finished
    }

    /// Decodes one event.
    pub(crate) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let data = event.data.trim();
        // Gemini sends no `[DONE]`; OpenAI-minded proxies in front of it may. It ends
        // nothing: the finish reason does.
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data.as_bytes())
            .map_err(|e| malformed(format!("invalid JSON in stream chunk: {e}")))?;
        self.decode_chunk(&v, out)
    }

    /// Decodes one `GenerateContentResponse`.
    fn decode_chunk(&mut self, v: &Value, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        if let Some(err) = v.get("error").filter(|e| e.is_object()) {
            return Err(classify_status(200, err, &[]));
        }
        if let Some(reason) = v
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .and_then(Value::as_str)
        {
            return Err(ProviderError::ContentFiltered {
                message: format!("the prompt was blocked ({reason})"),
            });
        }
        if !self.model_reported
            && let Some(model) = v.get("modelVersion").and_then(Value::as_str)
        {
            self.model_reported = true;
            out.push(StreamItem::Model(model.to_owned()));
        }
        if let Some(candidate) = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let parts = candidate
                .get("content")
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for part in parts {
                // Thought summaries are not the reply.
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                if let Some(text) = part.get("text").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(StreamItem::Delta(text.to_owned()));
                }
                if let Some(call) = part.get("functionCall") {
                    self.function_call(call, out)?;
                }
            }
            if let Some(reason) = candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .filter(|r| *r != "FINISH_REASON_UNSPECIFIED")
            {
                self.finished = true;
                out.push(StreamItem::Finish(finish_reason(
                    reason,
                    self.tool_calls > 0,
                )));
            }
        }
        if let Some(u) = v.get("usageMetadata").filter(|u| u.is_object()) {
            // Thinking tokens are billed as output and counted in the total.
            let completion = json_u32(u.get("candidatesTokenCount"))
                .unwrap_or(0)
                .saturating_add(json_u32(u.get("thoughtsTokenCount")).unwrap_or(0));
            out.push(StreamItem::Usage(usage(
                json_u32(u.get("promptTokenCount")).unwrap_or(0),
                completion,
                json_u32(u.get("totalTokenCount")),
            )));
        }
        Ok(())
    }

    /// A function call arrives whole in one part; it is named by its position in the reply.
    fn function_call(
        &mut self,
        call: &Value,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        if self.tool_calls as usize >= MAX_TOOL_CALLS {
            return Err(malformed(format!(
                "more than {MAX_TOOL_CALLS} tool calls in one reply"
            )));
        }
        let index = self.tool_calls;
        self.tool_calls += 1;
        let args = match call.get("args") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(v) => v.to_string(),
        };
        out.push(StreamItem::ToolCallDelta {
            index,
            id: Some(
                call.get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| format!("call_{index}"), str::to_owned),
            ),
            name: Some(
                call.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            arguments: args,
        });
        Ok(())
    }
}
