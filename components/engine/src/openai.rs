//! The OpenAI chat-completions wire format: requests, whole responses and SSE streams.
//!
//! Many providers speak it (OpenAI, Mistral, DeepSeek, Groq, OpenRouter, Ollama, vLLM), so it
//! is the first format Kefu speaks. Everything here is pure: bytes in, typed values out.

use serde_json::{Map, Value, json};

use crate::conversation::Part;
use crate::provider::{FinishReason, Header, HttpRequest, ProviderError, Usage};
use crate::sse::SseEvent;
use crate::wire::{Completion, Endpoint, ModelRequest, PromptMessage, PromptRole, StreamItem};

/// The URL of the chat-completions endpoint under a base URL.
pub fn endpoint(base_url: &str) -> String {
    format!("{}/chat/completions", base_url.trim().trim_end_matches('/'))
}

/// Builds the HTTP request for a model request.
pub fn build_request(endpoint: &Endpoint<'_>, request: &ModelRequest) -> HttpRequest {
    let stream = request.stream;
    let api_key = endpoint.api_key;
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = Map::new();
    body.insert("model".into(), Value::String(endpoint.model.to_owned()));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(m) = request.max_tokens {
        body.insert("max_tokens".into(), json!(m));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
        // Without this, a streamed reply reports no usage at all.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut headers = vec![
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
    ];
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
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
        body: serde_json::to_vec(&Value::Object(body)).expect("JSON values serialize"),
    }
}

fn message_json(m: &PromptMessage) -> Value {
    let role = match m.role {
        PromptRole::System => "system",
        PromptRole::User => "user",
        PromptRole::Assistant => "assistant",
        PromptRole::Tool => "tool",
    };
    // Plain text stays a string (every compatible server accepts it); images need the
    // array-of-parts form.
    let only_text = m.parts.iter().all(|p| matches!(p, Part::Text(_)));
    let content = if only_text {
        let texts: Vec<&str> = m
            .parts
            .iter()
            .filter_map(|p| {
                if let Part::Text(t) = p {
                    Some(t.as_str())
                } else {
                    None
                }
            })
            .collect();
        Value::String(texts.join("\n"))
    } else {
        Value::Array(
            m.parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::Image { url, .. } => json!({"type": "image_url", "image_url": {"url": url}}),
                    Part::Document { name, url, .. } => {
                        json!({"type": "text", "text": format!("[attached document: {name} <{url}>]")})
                    }
                })
                .collect(),
        )
    };
    json!({"role": role, "content": content})
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    if u.is_null() {
        return None;
    }
    let n = |k: &str| {
        u.get(k)
            .and_then(Value::as_u64)
            .map(|x| x.min(u64::from(u32::MAX)) as u32)
    };
    let prompt_tokens = n("prompt_tokens").unwrap_or(0);
    let completion_tokens = n("completion_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: n("total_tokens").unwrap_or(prompt_tokens + completion_tokens),
    })
}

fn malformed(detail: impl Into<String>) -> ProviderError {
    ProviderError::Malformed {
        detail: detail.into(),
    }
}

/// Parses a whole (non-streamed) 2xx response body.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(ProviderError::from_status(500, &[], body));
    }
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
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(Value::Null) | None => String::new(),
        Some(_) => return Err(malformed("message content is neither text nor parts")),
    };
    Ok(Completion {
        text,
        tool_calls: Vec::new(),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(FinishReason::parse),
        usage: usage_of(&v),
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Decodes one SSE event of a chat-completions stream into items.
pub fn decode_stream_event(
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
    let v: Value = serde_json::from_str(data)
        .map_err(|e| malformed(format!("invalid JSON in stream chunk: {e}")))?;
    if v.get("error").is_some_and(|e| !e.is_null()) || event.event.as_deref() == Some("error") {
        // An error event mid-stream (e.g. an overloaded upstream): the reply is not finished.
        return Err(ProviderError::from_status(500, &[], data.as_bytes()));
    }
    if let Some(model) = v.get("model").and_then(Value::as_str) {
        out.push(StreamItem::Model(model.to_owned()));
    }
    if let Some(choice) = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    {
        if let Some(text) = choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            && !text.is_empty()
        {
            out.push(StreamItem::Delta(text.to_owned()));
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(StreamItem::Finish(FinishReason::parse(reason)));
        }
    }
    if let Some(usage) = usage_of(&v) {
        out.push(StreamItem::Usage(usage));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    fn endpoint(api_key: Option<&str>) -> Endpoint<'_> {
        Endpoint {
            kind: crate::wire::ProviderKind::Openai,
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
