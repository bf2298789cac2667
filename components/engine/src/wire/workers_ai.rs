//! Cloudflare Workers AI's REST API (`POST {base}/run/{model}`): requests, whole responses,
//! SSE streams and typed errors.
//!
//! The request is chat-completions-like (`messages`, `stream`, `max_tokens`, `temperature`,
//! `tools`). Answers come in two shapes, depending on the model:
//!
//! - native: a whole reply is wrapped in Cloudflare's API envelope,
//!   `{"result":{"response":..,"tool_calls":[..],"usage":{..}},"success":true,"errors":[]}`,
//!   and a stream is `data: {"response":"..","p":".."}` chunks (`p` is padding against
//!   length side channels, not text), a final chunk with the whole usage, then `[DONE]`;
//! - OpenAI-shaped, from newer models (gpt-oss, Llama 4, Gemma 3/4, Kimi, …): a whole reply's
//!   `result` is a `chat.completion`, and stream chunks carry `choices[].delta` whose `usage`
//!   counts only that chunk's tokens, followed by the same native usage chunk and `[DONE]`.
//!
//! Both are read. A stream is complete only at `[DONE]`. Failures are the envelope with
//! `"success":false` and `errors:[{code,message}]`; the internal codes (3040 out of capacity,
//! 3036 daily allocation used up, 5021 context window, …) say more than the HTTP status.

use serde_json::{Value, json};

use super::openai;
use super::{
    Completion, Endpoint, MAX_TOOL_CALLS, ModelRequest, StreamItem, arguments_text, json_bytes,
    json_headers, json_u32, malformed, usage,
};
use crate::provider::{
    self, FinishReason, Header, HttpRequest, ProviderError, classify_parts, error_message_and_code,
    parse_http_date, until_next_utc_day,
};
use crate::sse::SseEvent;

/// The URL that runs `model` (`@cf/meta/llama-3.1-8b-instruct`) under a base URL
/// (`https://api.cloudflare.com/client/v4/accounts/{account_id}/ai`).
pub fn endpoint(base_url: &str, model: &str) -> String {
    let base = base_url.trim().trim_end_matches('/');
    let model = model.trim().trim_start_matches('/');
    format!("{base}/run/{model}")
}

/// The base URL that means "the Workers AI binding named `NAME`" instead of the REST API:
/// `binding:AI`. The request then goes to `binding:AI/run/<model>`, which a Workers host
/// carries out with `env.AI.run(model, body)` rather than `fetch`.
pub const BINDING_SCHEME: &str = "binding:";

/// Whether `base_url` names a binding (`binding:NAME`, NAME of `[A-Za-z0-9_]`).
pub fn is_binding_base(base_url: &str) -> bool {
    base_url
        .trim()
        .strip_prefix(BINDING_SCHEME)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The binding name and model of a request URL built on a binding base
/// (`binding:AI/run/@cf/meta/llama-3.1-8b-instruct` → `("AI", "@cf/meta/llama-3.1-8b-instruct")`).
pub fn parse_binding_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix(BINDING_SCHEME)?;
    let (name, model) = rest.split_once("/run/")?;
    (!name.is_empty() && !model.is_empty()).then_some((name, model))
}

/// What a binding call that threw looks like as an HTTP answer, so [`classify_error`] reads
/// it like a REST error: Workers AI puts its internal code in the message
/// (`AiError: 3040: Capacity temporarily exceeded`), and that code decides the kind.
pub fn binding_error(message: &str) -> (u16, Vec<u8>) {
    let code = message
        .split(|c: char| !c.is_ascii_digit())
        .find(|d| d.len() == 4)
        .and_then(|d| d.parse::<u64>().ok());
    let status = match code {
        Some(3036) => 429,
        Some(3040) => 503,
        Some(10000) | Some(10001) => 401,
        _ => 500,
    };
    let body =
        json!({"success": false, "errors": [{"code": code, "message": message}], "result": null});
    (status, body.to_string().into_bytes())
}

/// Builds the HTTP request for a model request.
pub fn build_request(endpoint: &Endpoint<'_>, request: &ModelRequest) -> HttpRequest {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let mut msg = openai::message_json(m);
            // Older models' schemas want string content, even beside tool calls.
            if let Some(content) = msg.get_mut("content")
                && content.is_null()
            {
                *content = Value::String(String::new());
            }
            msg
        })
        .collect();
    let mut body = serde_json::Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    if let Some(m) = request.max_tokens {
        body.insert("max_tokens".into(), json!(m));
    }
    if let Some(t) = request.temperature.filter(|t| t.is_finite()) {
        body.insert("temperature".into(), json!(t));
    }
    if !request.tools.is_empty() {
        body.insert("tools".into(), openai::tools_json(&request.tools));
    }
    let mut headers = json_headers(request.stream);
    if let Some(key) = endpoint.api_key.filter(|k| !k.is_empty()) {
        headers.push(Header {
            name: "authorization",
            value: format!("Bearer {key}"),
            sensitive: true,
        });
    }
    HttpRequest {
        method: "POST",
        url: self::endpoint(endpoint.base_url, endpoint.model),
        headers,
        body: json_bytes(&Value::Object(body)),
    }
}

/// Whether a body is Cloudflare's failure envelope (or carries an error object).
fn is_failure(v: &Value) -> bool {
    v.get("success").and_then(Value::as_bool) == Some(false)
        || v.get("errors")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
        || v.get("error").is_some_and(|e| !e.is_null())
}

/// Parses a whole 2xx response body.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if is_failure(&v) {
        return Err(classify_error(200, &[], body));
    }
    // The REST API wraps the model's output in `result`; the Workers binding does not.
    let result = v.get("result").filter(|r| r.is_object()).unwrap_or(&v);
    if result.get("choices").is_some() {
        return openai::completion_of(result);
    }
    let text = match result.get("response") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        // JSON mode answers with the object itself.
        Some(other) => other.to_string(),
    };
    let tool_calls = match result.get("tool_calls") {
        Some(Value::Array(calls)) => openai::tool_calls_of(calls)?,
        _ => Vec::new(),
    };
    if result.get("response").is_none() && result.get("tool_calls").is_none() {
        return Err(malformed("result without a response"));
    }
    Ok(Completion {
        finish_reason: (!tool_calls.is_empty()).then_some(FinishReason::ToolCalls),
        text,
        tool_calls,
        usage: openai::usage_of(result),
        model: None,
    })
}

/// Classifies an error response: `{"success":false,"errors":[{"code":3040,"message":..}]}`.
///
/// The daily free allocation (3036) resets at 00:00 UTC: with the response's `Date` header
/// that becomes the delay; without one, none is claimed.
pub fn classify_error(status: u16, headers: &[(String, String)], body: &[u8]) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let first = v
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first());
    let (code, message) = match first {
        Some(e) => (
            e.get("code").and_then(Value::as_u64),
            e.get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error_message_and_code(body).0, str::to_owned),
        ),
        None => (None, error_message_and_code(body).0),
    };
    let lower = message.to_ascii_lowercase();
    let or = |fallback: u16| if status >= 400 { status } else { fallback };
    match code {
        // Cloudflare's API authentication.
        Some(10000 | 10001) => ProviderError::Auth {
            status: or(401),
            message,
        },
        // Blocked account, private model, unaccepted model terms.
        Some(3023 | 3041 | 5016 | 5018) => ProviderError::Auth {
            status: or(403),
            message,
        },
        Some(3036) => ProviderError::RateLimited {
            retry_after: provider::header(headers, "date")
                .and_then(parse_http_date)
                .map(until_next_utc_day),
            message,
        },
        Some(3040) => ProviderError::Overloaded { message },
        Some(5021) => ProviderError::ContextTooLong { message },
        _ if lower.contains("context window limit") || lower.contains("maximum context length") => {
            ProviderError::ContextTooLong { message }
        }
        Some(3007 | 3008) => ProviderError::Upstream {
            status: or(408),
            message,
        },
        Some(3006) => ProviderError::BadRequest {
            status: or(413),
            message,
        },
        _ if status < 400 => ProviderError::Upstream { status, message },
        code => classify_parts(
            status,
            provider::retry_after(headers),
            message,
            &code.map(|c| c.to_string()).unwrap_or_default(),
        ),
    }
}

/// What a Workers AI stream spreads across events.
#[derive(Debug)]
pub(crate) struct StreamState {
    openai: openai::StreamState,
    native_calls: u32,
    /// Usage summed over OpenAI-shaped chunks, which count only their own tokens.
    chunk_usage: Option<(u32, u32)>,
    /// The native usage chunk arrived: it is the whole count and replaces the sums.
    native_usage: bool,
    done: bool,
}

impl Default for StreamState {
    fn default() -> Self {
        Self {
            openai: openai::StreamState::new(super::ProviderKind::WorkersAi),
            native_calls: 0,
            chunk_usage: None,
            native_usage: false,
            done: false,
        }
    }
}

impl StreamState {
    /// Whether `[DONE]` arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.done
    }

    /// Decodes one event.
    pub(crate) fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            out.push(StreamItem::Done);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data.as_bytes())
            .map_err(|e| malformed(format!("invalid JSON in stream chunk: {e}")))?;
        if is_failure(&v) || event.event.as_deref() == Some("error") {
            return Err(classify_error(200, &[], data.as_bytes()));
        }
        if v.get("choices").is_some() {
            return self.openai_chunk(&v, out);
        }
        if let Some(text) = v.get("response").and_then(Value::as_str)
            && !text.is_empty()
        {
            out.push(StreamItem::Delta(text.to_owned()));
        }
        if let Some(Value::Array(calls)) = v.get("tool_calls") {
            for call in calls {
                self.native_call(call, out)?;
            }
        }
        if let Some(u) = openai::usage_of(&v) {
            self.native_usage = true;
            out.push(StreamItem::Usage(u));
        }
        Ok(())
    }

    fn openai_chunk(&mut self, v: &Value, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let start = out.len();
        self.openai.decode_chunk(v, out)?;
        // Per-chunk counts are summed here rather than passed on as if they were totals.
        let tail = out.split_off(start);
        out.extend(
            tail.into_iter()
                .filter(|item| !matches!(item, StreamItem::Usage(_))),
        );
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let (p, c) = self.chunk_usage.unwrap_or((0, 0));
            let sum = (
                p.saturating_add(json_u32(u.get("prompt_tokens")).unwrap_or(0)),
                c.saturating_add(json_u32(u.get("completion_tokens")).unwrap_or(0)),
            );
            self.chunk_usage = Some(sum);
            if !self.native_usage {
                out.push(StreamItem::Usage(usage(sum.0, sum.1, None)));
            }
        }
        Ok(())
    }

    /// A native tool call arrives whole: `{"name":..,"arguments":{..}}` (or OpenAI's
    /// `{"id":..,"function":{..}}`).
    fn native_call(
        &mut self,
        call: &Value,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        if self.native_calls as usize >= MAX_TOOL_CALLS {
            return Err(malformed(format!(
                "more than {MAX_TOOL_CALLS} tool calls in one reply"
            )));
        }
        let index = self.native_calls;
        self.native_calls += 1;
        let function = call.get("function").unwrap_or(call);
        out.push(StreamItem::ToolCallDelta {
            index,
            id: Some(
                call.get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| format!("call_{index}"), str::to_owned),
            ),
            name: function
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            arguments: arguments_text(function.get("arguments")),
        });
        Ok(())
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;

    #[test]
    fn binding_urls_and_errors() {
        assert!(is_binding_base("binding:AI"));
        assert!(!is_binding_base("binding:"));
        assert!(!is_binding_base("binding:A I"));
        assert_eq!(
            endpoint("binding:AI", "@cf/meta/llama-3.1-8b-instruct"),
            "binding:AI/run/@cf/meta/llama-3.1-8b-instruct"
        );
        assert_eq!(
            parse_binding_url("binding:AI/run/@cf/meta/llama-3.1-8b-instruct"),
            Some(("AI", "@cf/meta/llama-3.1-8b-instruct"))
        );
        assert_eq!(parse_binding_url("https://api.cloudflare.com/run/x"), None);
        let (status, body) =
            binding_error("AiError: 3040: Capacity temporarily exceeded, please try again.");
        assert_eq!(status, 503);
        assert!(matches!(
            classify_error(status, &[], &body),
            ProviderError::Overloaded { .. }
        ));
        let (status, body) = binding_error("something odd");
        assert_eq!(status, 500);
        assert!(matches!(
            classify_error(status, &[], &body),
            ProviderError::Upstream { .. }
        ));
        // A configuration may name the binding as the base URL.
        let c = crate::TenantConfig::from_json(
            r#"{"providers":{"cf":{"kind":"workers_ai","base_url":"binding:AI"}},
                "routes":{"default":{"targets":[{"provider":"cf","model":"@cf/meta/llama-3.1-8b-instruct"}]}}}"#,
        );
        assert!(c.is_ok(), "{c:?}");
        let bad = crate::TenantConfig::from_json(
            r#"{"providers":{"oa":{"kind":"openai","base_url":"binding:AI"}},
                "routes":{"default":{"targets":[{"provider":"oa","model":"m"}]}}}"#,
        );
        assert_eq!(bad.unwrap_err().field, "providers.oa.base_url");
    }
}
