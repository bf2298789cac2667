//! Kefu's OpenAI-compatible API (`POST /v1/chat/completions`, `GET /v1/models`), minus the
//! HTTP: request parsing, model selection, and the JSON and SSE shapes the official SDKs
//! expect, so existing clients and frameworks work against Kefu unchanged.

use serde_json::{Map, Value, json};

use crate::TenantConfig;
use crate::gateway::QuotaError;
use crate::provider::ProviderError;
use crate::turn::TurnReply;
use crate::vocab::Part;
use crate::wire::{PromptMessage, PromptRole, ToolCall, ToolSpec};

/// The model name that means "the tenant's chat route".
pub const DEFAULT_MODEL_ALIAS: &str = "kefu";

/// The largest body of `POST /v1/chat/completions`, in bytes (the route's limit, in the
/// API's one table: [`crate::api::OPENAI_MAX_REQUEST_BYTES`]).
pub const MAX_REQUEST_BYTES: usize = crate::api::OPENAI_MAX_REQUEST_BYTES;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAiError {
    /// HTTP status.
    pub status: u16,
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    /// Stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request parameter at fault.
    pub param: Option<String>,
    /// Seconds to wait, for 429.
    pub retry_after_secs: Option<u64>,
}

impl OpenAiError {
    fn invalid(message: impl Into<String>, param: &str) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: "invalid_request",
            message: message.into(),
            param: Some(param.to_owned()),
            retry_after_secs: None,
        }
    }

    /// One of Kefu's errors in OpenAI's shape: the same status, code and message (a body
    /// over the route's limit is `413 payload_too_large` on either API).
    pub fn from_api(e: &crate::api::ApiError) -> Self {
        Self {
            status: e.status,
            kind: "invalid_request_error",
            code: e.code,
            message: e.message.clone(),
            param: e.field.clone(),
            retry_after_secs: None,
        }
    }

    /// `401`: no key, or a key Kefu does not know.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: 401,
            kind: "authentication_error",
            code: "invalid_api_key",
            message: message.into(),
            param: None,
            retry_after_secs: None,
        }
    }

    /// A provider failure that left the call without a reply.
    pub fn from_provider(e: &ProviderError) -> Self {
        Self {
            status: e.http_status(),
            kind: if matches!(e, ProviderError::Timeout { .. }) {
                "timeout"
            } else {
                "api_error"
            },
            code: e.code(),
            message: e.to_string(),
            param: None,
            retry_after_secs: None,
        }
    }

    /// Why a model call ended without a reply ([`crate::chat::ModelCall`]).
    pub fn from_failure(f: &crate::chat::Failure) -> Self {
        use crate::chat::Failure;
        match f {
            Failure::Provider(e) => Self::from_provider(e),
            Failure::Quota(q) => Self::from_quota(q),
            Failure::Host(e) => Self {
                status: e.status,
                kind: "api_error",
                code: e.code,
                message: e.message.clone(),
                param: None,
                retry_after_secs: e.retry_after.map(u64::from),
            },
        }
    }

    /// A quota refusal: `429` with `Retry-After`.
    pub fn from_quota(e: &QuotaError) -> Self {
        Self {
            status: 429,
            kind: "rate_limit_error",
            code: "rate_limit_exceeded",
            message: e.to_string(),
            param: None,
            retry_after_secs: Some(e.retry_after.as_millis().div_ceil(1000) as u64),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// A parsed `POST /v1/chat/completions` request.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    /// The requested model: `kefu`, a route name, a `provider/model` target, or a model name.
    pub model: String,
    /// The prompt.
    pub messages: Vec<PromptMessage>,
    /// Stream the reply as SSE chunks.
    pub stream: bool,
    /// Send a usage chunk at the end of the stream.
    pub include_usage: bool,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Reply token limit (`max_completion_tokens` or `max_tokens`).
    pub max_tokens: Option<u32>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
}

/// Where a requested model sends the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The tenant's chat route.
    ChatRoute,
    /// A named route.
    Route(String),
    /// One target (`provider/model`), no fallback.
    Target(String),
}

fn text_of(v: &Value, param: &str) -> Result<Vec<Part>, OpenAiError> {
    match v {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Null => Ok(Vec::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(Part::Text(
                    p.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )),
                Some("image_url") => {
                    let url = p
                        .get("image_url")
                        .and_then(|i| i.get("url"))
                        .and_then(Value::as_str);
                    url.map(|u| Part::Image {
                        url: u.to_owned(),
                        mime: None,
                    })
                    .ok_or_else(|| {
                        OpenAiError::invalid("image_url parts need image_url.url", param)
                    })
                }
                _ => Err(OpenAiError::invalid(
                    "content parts must be `text` or `image_url`",
                    param,
                )),
            })
            .collect(),
        _ => Err(OpenAiError::invalid(
            "content must be a string or an array of parts",
            param,
        )),
    }
}

/// Parses and validates a request body.
pub fn parse_request(body: &[u8]) -> Result<CompletionRequest, OpenAiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(OpenAiError::from_api(
            &crate::api::body_limit(&crate::api::Route::OpenAiChat).refusal(),
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| OpenAiError::invalid(format!("the body is not valid JSON: {e}"), "body"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| OpenAiError::invalid("the body must be a JSON object", "body"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| OpenAiError::invalid("`model` is required", "model"))?
        .to_owned();
    let raw = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| OpenAiError::invalid("`messages` must be a non-empty array", "messages"))?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => PromptRole::System,
            Some("user") => PromptRole::User,
            Some("assistant") => PromptRole::Assistant,
            Some("tool") => PromptRole::Tool,
            _ => {
                return Err(OpenAiError::invalid(
                    "role must be system, developer, user, assistant or tool",
                    &param,
                ));
            }
        };
        let parts = text_of(m.get("content").unwrap_or(&Value::Null), &param)?;
        let tool_calls = m
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| ToolCall {
                        id: c
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        name: c
                            .pointer("/function/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        arguments: c
                            .pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("{}")
                            .to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tool_call_id = m
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if role == PromptRole::Tool && tool_call_id.is_none() {
            return Err(OpenAiError::invalid(
                "tool messages need tool_call_id",
                &param,
            ));
        }
        messages.push(PromptMessage {
            role,
            parts,
            tool_calls,
            tool_call_id,
            stand_ins: Default::default(),
        });
    }
    let num = |k: &str| obj.get(k).and_then(Value::as_f64);
    let temperature = num("temperature");
    if temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(OpenAiError::invalid(
            "temperature must be between 0 and 2",
            "temperature",
        ));
    }
    let max_tokens = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| n.min(u64::from(u32::MAX)) as u32);
    let tools = obj
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    let f = t.get("function")?;
                    Some(ToolSpec {
                        name: f.get("name")?.as_str()?.to_owned(),
                        description: f
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        parameters: f
                            .get("parameters")
                            .cloned()
                            .unwrap_or_else(|| json!({"type": "object"})),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(CompletionRequest {
        model,
        messages,
        stream,
        include_usage,
        temperature,
        max_tokens,
        tools,
    })
}

/// Which route or target a requested model name means for this tenant.
pub fn select(config: &TenantConfig, model: &str) -> Result<Selection, OpenAiError> {
    if model.is_empty()
        || model == DEFAULT_MODEL_ALIAS
        || model == "default" && !config.routes.contains_key("default")
    {
        return Ok(Selection::ChatRoute);
    }
    if config.routes.contains_key(model) {
        return Ok(Selection::Route(model.to_owned()));
    }
    let targets = config.all_targets();
    if let Some(t) = targets.iter().find(|t| t.key == model) {
        return Ok(Selection::Target(t.key.clone()));
    }
    let by_name: Vec<_> = targets.iter().filter(|t| t.model == model).collect();
    if let [only] = by_name.as_slice() {
        return Ok(Selection::Target(only.key.clone()));
    }
    Err(OpenAiError {
        status: 404,
        kind: "invalid_request_error",
        code: "model_not_found",
        message: format!(
            "the model `{model}` does not exist for this tenant; GET /v1/models lists the models"
        ),
        param: Some("model".into()),
        retry_after_secs: None,
    })
}

/// The `GET /v1/models` body: the chat alias, every route and every target.
pub fn models_json(config: &TenantConfig, created_secs: u64) -> Value {
    let entry = |id: &str| json!({"id": id, "object": "model", "created": created_secs, "owned_by": "kefu"});
    let mut data = vec![entry(DEFAULT_MODEL_ALIAS)];
    data.extend(config.routes.keys().map(|r| entry(r)));
    data.extend(config.all_targets().iter().map(|t| entry(&t.key)));
    json!({"object": "list", "data": data})
}

fn model_name(reply: &TurnReply) -> String {
    reply
        .responder
        .model()
        .map_or_else(|| "kefu-offline".to_owned(), str::to_owned)
}

fn finish_reason(reply: &TurnReply) -> &str {
    if !reply.tool_calls.is_empty() {
        "tool_calls"
    } else {
        reply.finish_reason.as_str()
    }
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

fn usage_json(reply: &TurnReply) -> Value {
    let u = reply.usage.unwrap_or_default();
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
}

/// The whole (non-streamed) answer.
pub fn completion_json(id: &str, created_secs: u64, reply: &TurnReply) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if reply.text.is_empty() {
            Value::Null
        } else {
            reply.text.clone().into()
        },
    );
    if !reply.tool_calls.is_empty() {
        message.insert("tool_calls".into(), tool_calls_json(&reply.tool_calls));
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created_secs,
        "model": model_name(reply),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(reply)}],
        "usage": usage_json(reply),
    })
}

/// One streamed chunk: the role (first chunk), a text delta, or the finish.
pub fn chunk_json(id: &str, created_secs: u64, model: &str, delta: ChunkDelta<'_>) -> Value {
    let (delta, finish) = match delta {
        ChunkDelta::Role => (json!({"role": "assistant", "content": ""}), Value::Null),
        ChunkDelta::Text(t) => (json!({"content": t}), Value::Null),
        ChunkDelta::Finish(reply) => {
            let mut d = Map::new();
            if !reply.tool_calls.is_empty() {
                let calls: Vec<Value> = reply
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| json!({"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect();
                d.insert("tool_calls".into(), Value::Array(calls));
            }
            (Value::Object(d), Value::from(finish_reason(reply)))
        }
    };
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created_secs, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

/// What a chunk carries.
#[derive(Clone, Copy, Debug)]
pub enum ChunkDelta<'a> {
    /// The assistant role, first.
    Role,
    /// Reply text.
    Text(&'a str),
    /// The end (and any tool calls).
    Finish(&'a TurnReply),
}

/// The usage chunk sent last when `stream_options.include_usage` is set.
pub fn usage_chunk_json(id: &str, created_secs: u64, reply: &TurnReply) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created_secs, "model": model_name(reply),
        "choices": [], "usage": usage_json(reply),
    })
}

/// One SSE `data:` frame.
pub fn sse_data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// The stream's terminator.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// The frames of one streamed completion, in order: the role chunk before the first text
/// (naming the model once the first delta says which target answers), text chunks, then
/// the finish chunk, the usage chunk when asked for, and `[DONE]`; or, after text went out,
/// an error event and no `[DONE]` (which the SDKs raise). Hosts feed it what the turn does.
#[derive(Clone, Debug)]
pub struct StreamFrames {
    id: String,
    created_secs: u64,
    include_usage: bool,
    model: String,
}

impl StreamFrames {
    /// A stream with this completion id and creation time.
    pub fn new(id: &str, created_secs: u64, include_usage: bool) -> Self {
        Self {
            id: id.to_owned(),
            created_secs,
            include_usage,
            model: String::new(),
        }
    }

    fn chunk(&self, delta: ChunkDelta<'_>) -> String {
        sse_data(&chunk_json(&self.id, self.created_secs, &self.model, delta))
    }

    /// A text delta from `target` (`provider/model`, when known).
    pub fn delta(&mut self, text: &str, target: Option<&str>) -> String {
        let mut out = String::new();
        if self.model.is_empty() {
            self.model = target
                .and_then(|t| t.split_once('/'))
                .map_or("kefu", |(_, m)| m)
                .to_owned();
            out += &self.chunk(ChunkDelta::Role);
        }
        out += &self.chunk(ChunkDelta::Text(text));
        out
    }

    /// The end of a successful turn (a reply that streamed nothing, e.g. the offline
    /// responder's, is sent whole first).
    pub fn done(&mut self, reply: &TurnReply) -> String {
        let mut out = String::new();
        if self.model.is_empty() {
            self.model = reply.responder.model().unwrap_or("kefu-offline").to_owned();
            out += &self.chunk(ChunkDelta::Role);
            if !reply.text.is_empty() {
                out += &self.chunk(ChunkDelta::Text(&reply.text));
            }
        }
        out += &self.chunk(ChunkDelta::Finish(reply));
        if self.include_usage {
            out += &sse_data(&usage_chunk_json(&self.id, self.created_secs, reply));
        }
        out += SSE_DONE;
        out
    }

    /// A failure after text went out: an error event, and no `[DONE]`.
    pub fn failed(&self, e: &crate::chat::Failure) -> String {
        sse_data(&OpenAiError::from_failure(e).body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::FinishReason;
    use crate::turn::Responder;
    use core::time::Duration;

    #[test]
    fn parses_sdk_requests() {
        let r = parse_request(
            br#"{"model":"kefu","messages":[{"role":"developer","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"https://x.example/a.png"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"id\":1}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"shipped"}],
                "stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":50,
                "tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].role, PromptRole::System);
        assert!(matches!(r.messages[1].parts[1], Part::Image { .. }));
        assert_eq!(r.messages[2].tool_calls[0].name, "lookup");
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(50));
        assert_eq!(r.tools[0].name, "lookup");
        for (body, param) in [
            (
                &br#"{"messages":[{"role":"user","content":"x"}]}"#[..],
                "model",
            ),
            (br#"{"model":"kefu","messages":[]}"#, "messages"),
            (
                br#"{"model":"kefu","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0]",
            ),
            (
                br#"{"model":"kefu","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (b"nope", "body"),
        ] {
            let e = parse_request(body).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn selects_routes_and_targets() {
        let c = TenantConfig::from_json(
            r#"{"providers":{"oa":{"base_url":"https://api.openai.com/v1"},"mi":{"kind":"mistral","base_url":"https://api.mistral.ai/v1"}},
                "routes":{"default":{"targets":[{"provider":"oa","model":"gpt-4o-mini"},{"provider":"mi","model":"mistral-small-latest"}]},
                          "cheap":{"targets":[{"provider":"mi","model":"mistral-small-latest"}]}}}"#,
        )
        .unwrap();
        assert_eq!(select(&c, "kefu").unwrap(), Selection::ChatRoute);
        assert_eq!(
            select(&c, "cheap").unwrap(),
            Selection::Route("cheap".into())
        );
        assert_eq!(
            select(&c, "oa/gpt-4o-mini").unwrap(),
            Selection::Target("oa/gpt-4o-mini".into())
        );
        assert_eq!(
            select(&c, "mistral-small-latest").unwrap(),
            Selection::Target("mi/mistral-small-latest".into())
        );
        assert_eq!(select(&c, "gpt-5").unwrap_err().status, 404);
        let ids: Vec<String> = models_json(&c, 0)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        // Routes by name, then every target once, in route-name order.
        assert_eq!(
            ids,
            [
                "kefu",
                "cheap",
                "default",
                "mi/mistral-small-latest",
                "oa/gpt-4o-mini"
            ]
        );
    }

    #[test]
    fn response_shapes() {
        let reply = TurnReply {
            text: "Hi".into(),
            responder: Responder::Provider {
                model: "gpt-4o-mini".into(),
            },
            target: Some("oa/gpt-4o-mini".into()),
            route: Some("default".into()),
            attempts: 2,
            finish_reason: FinishReason::Stop,
            usage: None,
            cost_micros: None,
            tool_calls: vec![],
            plugin_handoff: None,
            time_to_first_token: None,
            duration: Duration::ZERO,
        };
        let c = completion_json("chatcmpl-1", 5, &reply);
        assert_eq!(c["choices"][0]["message"]["content"], "Hi");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["usage"]["total_tokens"], 0);
        let first = chunk_json("chatcmpl-1", 5, "gpt-4o-mini", ChunkDelta::Role);
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let last = chunk_json("chatcmpl-1", 5, "gpt-4o-mini", ChunkDelta::Finish(&reply));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert!(sse_data(&last).starts_with("data: {"));
        let q = OpenAiError::from_quota(&QuotaError {
            limit: crate::gateway::quota::Limit::DailyRequests,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!((q.status, q.retry_after_secs), (429, Some(2)));
    }
}
