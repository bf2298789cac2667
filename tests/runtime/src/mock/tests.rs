//! The mock over real HTTP: every format whole and streamed, checked against the fixtures,
//! and the fault profiles.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::template::{key_paths, sse_events};
use super::*;
use crate::sse::{self, SseTranscript};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(mock: &MockProvider, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn chat(text: &str, stream: bool) -> Value {
    json!({
        "model": "mock-gpt",
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text},
        ],
    })
}

const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;

fn fixture_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Key paths of every JSON event, per event name (`[DONE]` and the like left out).
fn event_shapes<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, data) in events {
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            out.entry(name.to_owned())
                .or_default()
                .extend(key_paths(&v));
        }
    }
    out
}

/// Key paths, leaving out what lies inside `free` (tool arguments: the caller's own keys).
fn shape_without(value: &Value, free: &str) -> BTreeSet<String> {
    let inside = format!("{free}.");
    key_paths(value)
        .into_iter()
        .filter(|k| !k.starts_with(&inside))
        .collect()
}

fn fixture_shapes(fixture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let events = sse_events(fixture);
    event_shapes(events.iter().map(|(n, d)| (n.as_str(), d.as_str())))
}

fn transcript_shapes(t: &SseTranscript) -> BTreeMap<String, BTreeSet<String>> {
    event_shapes(t.events.iter().map(|e| (e.event.as_str(), e.data.as_str())))
}

fn datas(t: &SseTranscript) -> Vec<&str> {
    t.events.iter().map(|e| e.data.as_str()).collect()
}

#[test]
fn every_template_compiles() {
    openai::check_templates();
    anthropic::check_templates();
    gemini::check_templates();
    workers_ai::check_templates();
}

#[test]
fn words_keep_their_spaces() {
    assert_eq!(
        split_words("Echo: hi  there (history=2)"),
        vec!["Echo: ", "hi  ", "there ", "(history=2)"]
    );
    assert_eq!(split_words(" lead"), vec![" lead"]);
    assert_eq!(split_words("trail "), vec!["trail "]);
    assert!(split_words("").is_empty());
    let reply = "a b\tc\nd é f";
    assert_eq!(split_words(reply).concat(), reply);
    assert_eq!(count_tokens(reply), 6);
}

// ---------------------------------------------------------------------------------------
// OpenAI

#[tokio::test]
async fn json_completion_echoes_and_counts() {
    let mock = MockProvider::start().await;
    let response = post(&mock, chat("hello there [mock delay_ms=1]", false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-gpt");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: hello there (history=2)"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "be brief" + "hello there [mock delay_ms=1]" = 2 + 4 words: the provider sees the
    // directive too; only the echo drops it.
    assert_eq!(body["usage"]["prompt_tokens"], 6);
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 10);
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!("openai/chat_completion.json")))
    );

    let recorded = mock.chat_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].headers["content-type"], "application/json");
    assert_eq!(recorded[0].profile, None);
    assert_eq!(recorded[0].format(), Some(WireFormat::Openai));
    assert_eq!(
        recorded[0].last_user_text().as_deref(),
        Some("hello there [mock delay_ms=1]")
    );
    let over_http: Value = reqwest::get(format!("http://{}/_mock/requests", mock.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http[0]["body"]["messages"][1]["role"], "user");
    assert_eq!(over_http[0]["profile"], Value::Null);
}

#[tokio::test]
async fn stream_deltas_concatenate_to_reply() {
    let mock = MockProvider::start().await;
    let response = post(&mock, chat("one two three [mock chunk_delay_ms=1]", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[CONTENT_TYPE.as_str()],
        "text/event-stream"
    );
    let transcript = sse::read_stream(response).await;
    assert_eq!(transcript.body_error, None);
    assert_eq!(transcript.trailing_garbage, None);
    assert_eq!(datas(&transcript).last(), Some(&"[DONE]"));
    assert_eq!(
        transcript_shapes(&transcript),
        fixture_shapes(fixture!("openai/chat_completion_stream.sse"))
    );
    let chunks: Vec<Value> = transcript.events[..transcript.events.len() - 1]
        .iter()
        .map(|e| e.json().unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    let (finish, content) = rest.split_last().unwrap();
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let text: String = content[1..]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Echo: one two three (history=2)");
    assert_eq!(content.len(), 1 + 5);
    assert!(content.iter().all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn stream_without_usage_has_no_usage_chunk() {
    let mock = MockProvider::start().await;
    let mut body = chat("[mock reply=just_this]", true);
    body.as_object_mut().unwrap().remove("stream_options");
    let transcript = sse::read_stream(post(&mock, body).await).await;
    let datas = datas(&transcript);
    assert_eq!(datas.len(), 1 + 2 + 1 + 1, "{datas:?}");
    assert!(datas.iter().all(|d| !d.contains("usage")));
    assert!(datas[2].contains("\"this\""));
}

#[tokio::test]
async fn cut_stream_is_a_body_error() {
    let mock = MockProvider::start().await;
    let response = post(&mock, chat("a b c d e [mock cut_after=2]", true)).await;
    assert_eq!(response.status(), 200);
    let transcript = sse::read_stream(response).await;
    assert!(transcript.body_error.is_some(), "{transcript:?}");
    // The role chunk and two content chunks arrived; no finish chunk, no [DONE].
    assert_eq!(transcript.events.len(), 3, "{transcript:?}");
    assert!(transcript.events.iter().all(|e| !e.data.contains("stop")));
}

#[tokio::test]
async fn cut_json_is_a_body_error() {
    let mock = MockProvider::start().await;
    let response = post(&mock, chat("[mock cut_after=1]", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn malformed_and_error_statuses() {
    let mock = MockProvider::start().await;
    let response = post(&mock, chat("[mock malformed=1]", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());

    for key in ["malformed", "malformed_sse"] {
        let transcript =
            sse::read_stream(post(&mock, chat(&format!("x y [mock {key}=1]"), true)).await).await;
        assert!(
            transcript
                .events
                .iter()
                .any(|e| e.json().is_err() && e.data != "[DONE]"),
            "{key}"
        );
        assert_eq!(datas(&transcript).last(), Some(&"[DONE]"));
    }

    let response = post(&mock, chat("[mock status=429 retry_after=3]", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(response.headers()["x-ratelimit-reset-requests"], "3s");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!("openai/error.json")))
    );

    let response = post(&mock, chat("[mock bogus=1]", false)).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn delays_hold_headers_and_chunks() {
    let mock = MockProvider::start().await;
    for key in ["delay_ms", "headers_delay_ms", "latency_ms"] {
        let started = Instant::now();
        let response = post(&mock, chat(&format!("[mock {key}=150]"), false)).await;
        assert!(started.elapsed() >= Duration::from_millis(150), "{key}");
        assert_eq!(response.status(), 200);
    }

    let started = Instant::now();
    let response = post(&mock, chat("a b [mock stall_ms=150]", true)).await;
    // Headers come at once; the stall is inside the body.
    assert!(started.elapsed() < Duration::from_millis(150));
    let transcript = sse::read_stream(response).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(transcript.events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn models_list() {
    let mock = MockProvider::start().await;
    let body: Value = reqwest::get(format!("{}/models", mock.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["id"], MOCK_MODEL);
    let response = client()
        .delete(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let response = reqwest::get(format!("{}/nope", mock.root_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

fn tool_chat(text: &str, stream: bool) -> Value {
    let mut body = chat(text, stream);
    body["tools"] = serde_json::from_str(TOOLS).unwrap();
    body
}

#[tokio::test]
async fn openai_tool_calls_whole_and_streamed() {
    let mock = MockProvider::start().await;
    let text = r#"weather? [mock tool=get_weather args={"city":"Paris","days":[1,2]}]"#;
    let body: Value = post(&mock, tool_chat(text, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!(
            "openai/chat_completion_tool_calls.json"
        )))
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "days": [1, 2]}));

    // Without `tools` in the request the directive is ignored: a plain echo.
    let body: Value = post(&mock, chat(text, false)).await.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: weather? (history=2)"
    );

    let transcript = sse::read_stream(post(&mock, tool_chat(text, true)).await).await;
    assert_eq!(transcript.body_error, None);
    assert_eq!(
        transcript_shapes(&transcript),
        fixture_shapes(fixture!("openai/chat_completion_tool_calls_stream.sse"))
    );
    let chunks: Vec<Value> = transcript
        .events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| e.json().unwrap())
        .collect();
    let head = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["function"]["name"], "get_weather");
    assert!(head["id"].as_str().unwrap().starts_with("call_"));
    let fragments: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(fragments.len() > 2, "{fragments:?}");
    assert_eq!(fragments.concat(), r#"{"city":"Paris","days":[1,2]}"#);
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn openai_tool_result_is_answered() {
    let mock = MockProvider::start().await;
    let mut body = tool_chat("weather? [mock tool=get_weather]", false);
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ]}));
    messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}));
    let body: Value = post(&mock, body).await.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Tool result: sunny, 21 C"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn mistral_error_bodies() {
    let mock = MockProvider::start().await;
    let response = post(&mock, chat("[mock status=429 format=mistral]", false)).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "error");
    assert_eq!(body["type"], "rate_limit_error");
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!("mistral/error.json")))
    );
    // The same from a path profile, for a base URL that only Mistral targets use.
    let response = client()
        .post(format!(
            "{}/chat/completions",
            mock.profile_base_url("format=mistral,status=503")
        ))
        .json(&chat("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "error");
    assert_eq!(body["type"], "server_error");
}

// ---------------------------------------------------------------------------------------
// Anthropic

fn anthropic_body(text: &str, stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 256,
        "stream": stream,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "text", "text": text}]},
        ],
    })
}

async fn anthropic(mock: &MockProvider, base: &str, body: Value) -> reqwest::Response {
    let _ = mock;
    client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn anthropic_whole_message() {
    let mock = MockProvider::start().await;
    let response = anthropic(
        &mock,
        &mock.root_url(),
        anthropic_body("hello there", false),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!("anthropic/message.json")))
    );
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["model"], "claude-sonnet-4-20250514");
    // system + three messages.
    assert_eq!(body["content"][0]["text"], "Echo: hello there (history=4)");
    assert_eq!(body["stop_reason"], "end_turn");
    // "be brief" + "earlier" + "ok" + "hello there" = 2 + 1 + 1 + 2.
    assert_eq!(body["usage"]["input_tokens"], 6);
    assert_eq!(body["usage"]["output_tokens"], 4);
    let recorded = mock.model_requests();
    assert_eq!(recorded[0].format(), Some(WireFormat::Anthropic));
    assert_eq!(recorded[0].last_user_text().as_deref(), Some("hello there"));
    assert!(!recorded[0].is_chat());
}

#[tokio::test]
async fn anthropic_stream_events() {
    let mock = MockProvider::start().await;
    let response = anthropic(
        &mock,
        &mock.root_url(),
        anthropic_body("one two [mock chunk_delay_ms=1]", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[CONTENT_TYPE.as_str()]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let transcript = sse::read_stream(response).await;
    assert_eq!(transcript.body_error, None);
    assert_eq!(
        transcript.names(),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        transcript_shapes(&transcript),
        fixture_shapes(fixture!("anthropic/message_stream.sse"))
    );
    for e in &transcript.events {
        assert_eq!(e.json().unwrap()["type"], e.event.as_str());
    }
    let text: String = transcript
        .named("content_block_delta")
        .map(|e| {
            e.json().unwrap()["delta"]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Echo: one two (history=4)");
    let delta = transcript
        .named("message_delta")
        .next()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);
    // "be brief" + "earlier" + "ok" + "one two [mock chunk_delay_ms=1]".
    assert_eq!(delta["usage"]["input_tokens"], 8);
}

#[tokio::test]
async fn anthropic_tool_use_and_result() {
    let mock = MockProvider::start().await;
    let mut body = anthropic_body(
        r#"weather? [mock tool=get_weather args={"city":"Oslo"}]"#,
        false,
    );
    body["tools"] = json!([{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]);
    let whole: Value = anthropic(&mock, &mock.root_url(), body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        shape_without(&whole, "content[].input"),
        shape_without(
            &fixture_json(fixture!("anthropic/tool_use.json")),
            "content[].input"
        )
    );
    assert_eq!(whole["stop_reason"], "tool_use");
    assert_eq!(whole["content"][0]["type"], "tool_use");
    assert_eq!(whole["content"][0]["name"], "get_weather");
    assert_eq!(whole["content"][0]["input"], json!({"city": "Oslo"}));

    body["stream"] = json!(true);
    let transcript = sse::read_stream(anthropic(&mock, &mock.root_url(), body.clone()).await).await;
    assert_eq!(transcript.body_error, None);
    let start = transcript
        .named("content_block_start")
        .next()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["input"], json!({}));
    let partial: String = transcript
        .named("content_block_delta")
        .map(|e| {
            let v = e.json().unwrap();
            assert_eq!(v["delta"]["type"], "input_json_delta");
            v["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(partial, r#"{"city":"Oslo"}"#);
    let delta = transcript
        .named("message_delta")
        .next()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    let tool_shapes = fixture_shapes(fixture!("anthropic/tool_use_stream.sse"));
    let shapes = transcript_shapes(&transcript);
    for name in [
        "content_block_start",
        "content_block_delta",
        "message_delta",
    ] {
        assert_eq!(shapes[name], tool_shapes[name], "{name}");
    }

    // The tool result comes back as a `tool_result` block in a user message.
    body["stream"] = json!(false);
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "snow"}]}
    ]}));
    let whole: Value = anthropic(&mock, &mock.root_url(), body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whole["content"][0]["text"], "Tool result: snow");
}

#[tokio::test]
async fn anthropic_errors_and_required_headers() {
    let mock = MockProvider::start().await;
    let response = anthropic(
        &mock,
        &mock.root_url(),
        anthropic_body("[mock status=529]", false),
    )
    .await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!("anthropic/error.json")))
    );
    for (status, kind) in [
        (429, "rate_limit_error"),
        (400, "invalid_request_error"),
        (401, "authentication_error"),
    ] {
        let response = anthropic(
            &mock,
            &mock.root_url(),
            anthropic_body(&format!("[mock status={status}]"), false),
        )
        .await;
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], kind);
    }

    let url = format!("{}/v1/messages", mock.root_url());
    let response = client()
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let response = client()
        .post(&url)
        .header("x-api-key", "k")
        .json(&anthropic_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let mut no_max = anthropic_body("hi", false);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let response = anthropic(&mock, &mock.root_url(), no_max).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn anthropic_overload_mid_stream() {
    let mock = MockProvider::start().await;
    let base = mock.profile_url("overload_mid_stream=1");
    let transcript =
        sse::read_stream(anthropic(&mock, &base, anthropic_body("one two three", true)).await)
            .await;
    // A clean end right after the error event.
    assert_eq!(transcript.body_error, None);
    assert_eq!(transcript.trailing_garbage, None);
    assert_eq!(
        transcript.names(),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error"
        ]
    );
    let error = transcript.events.last().unwrap().json().unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(
        transcript_shapes(&transcript)["error"],
        fixture_shapes(fixture!("anthropic/stream_error.sse"))["error"]
    );
}

// ---------------------------------------------------------------------------------------
// Gemini

fn gemini_body(text: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "earlier"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
            {"role": "user", "parts": [{"text": text}]},
        ],
        "generationConfig": {"maxOutputTokens": 256},
    })
}

async fn gemini_post(url: String, body: Value) -> reqwest::Response {
    client()
        .post(url)
        .header("x-goog-api-key", "test-key")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn gemini_whole_and_stream() {
    let mock = MockProvider::start().await;
    let url = format!(
        "{}/v1beta/models/gemini-2.0-flash:generateContent",
        mock.root_url()
    );
    let response = gemini_post(url, gemini_body("hello there")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        key_paths(&body),
        key_paths(&fixture_json(fixture!("gemini/generate_content.json")))
    );
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"][0]["text"],
        "Echo: hello there (history=4)"
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(body["usageMetadata"]["promptTokenCount"], 6);
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 4);
    assert_eq!(body["usageMetadata"]["totalTokenCount"], 10);
    assert_eq!(body["modelVersion"], "gemini-2.0-flash");

    let url = format!(
        "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        mock.root_url()
    );
    let transcript = sse::read_stream(gemini_post(url, gemini_body("one two")).await).await;
    assert_eq!(transcript.body_error, None);
    assert_eq!(transcript.trailing_garbage, None);
    assert!(transcript.events.iter().all(|e| e.event == "message"));
    assert_eq!(
        transcript_shapes(&transcript),
        fixture_shapes(fixture!("gemini/stream_generate_content.sse"))
    );
    let chunks: Vec<Value> = transcript
        .events
        .iter()
        .map(|e| e.json().unwrap())
        .collect();
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(
        rest.iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none())
    );
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "Echo: one two (history=4)");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 4);

    // Without alt=sse a stream is one JSON array of the same chunks.
    let url = format!(
        "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        mock.root_url()
    );
    let array: Value = gemini_post(url, gemini_body("one two"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(array.as_array().unwrap().len(), chunks.len());

    let recorded = mock.model_requests();
    assert_eq!(recorded[0].format(), Some(WireFormat::Gemini));
    assert_eq!(recorded[0].last_user_text().as_deref(), Some("hello there"));
}

#[tokio::test]
async fn gemini_function_calls_keys_and_errors() {
    let mock = MockProvider::start().await;
    let mut body = gemini_body(r#"weather? [mock tool=get_weather args={"city":"Rome"}]"#);
    body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}]);
    let url = format!("{}/v1beta/models/g:generateContent", mock.root_url());
    let whole: Value = gemini_post(url, body.clone()).await.json().await.unwrap();
    let args = "candidates[].content.parts[].functionCall.args";
    assert_eq!(
        shape_without(&whole, args),
        shape_without(&fixture_json(fixture!("gemini/function_call.json")), args)
    );
    let call = &whole["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"city": "Rome"}));

    let url = format!(
        "{}/v1beta/models/g:streamGenerateContent?alt=sse",
        mock.root_url()
    );
    let transcript = sse::read_stream(gemini_post(url, body.clone()).await).await;
    assert_eq!(transcript.events.len(), 1);
    let chunk = transcript.events[0].json().unwrap();
    assert_eq!(
        chunk["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"city": "Rome"})
    );

    // The function response comes back; the key may sit in the query instead of a header.
    let contents = body["contents"].as_array_mut().unwrap();
    contents.push(json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]}));
    contents.push(json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "warm"}}}]}));
    let whole: Value = client()
        .post(format!(
            "{}/v1beta/models/g:generateContent?key=abc",
            mock.root_url()
        ))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        whole["candidates"][0]["content"]["parts"][0]["text"],
        "Tool result: warm"
    );

    let url = format!(
        "{}/v1beta/models/g:generateContent",
        mock.profile_url("status=429")
    );
    let response = gemini_post(url, gemini_body("hi")).await;
    assert_eq!(response.status(), 429);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], 429);
    assert_eq!(error["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        key_paths(&error),
        key_paths(&fixture_json(fixture!("gemini/error.json")))
    );

    // No key at all.
    let response = client()
        .post(format!(
            "{}/v1beta/models/g:generateContent",
            mock.root_url()
        ))
        .json(&gemini_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["status"], "PERMISSION_DENIED");
}

// ---------------------------------------------------------------------------------------
// Workers AI

const CF_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";

async fn workers_post(base: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!(
            "{base}/client/v4/accounts/acc123/ai/run/{CF_MODEL}"
        ))
        .bearer_auth("cf-token")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn workers_ai_whole_stream_and_errors() {
    let mock = MockProvider::start().await;
    let mut body = chat("hello there", false);
    body.as_object_mut().unwrap().remove("model");
    let response = workers_post(&mock.root_url(), body.clone()).await;
    assert_eq!(response.status(), 200);
    let whole: Value = response.json().await.unwrap();
    assert_eq!(
        key_paths(&whole),
        key_paths(&fixture_json(fixture!("workers_ai/run.json")))
    );
    assert_eq!(whole["success"], true);
    assert_eq!(whole["result"]["response"], "Echo: hello there (history=2)");
    assert_eq!(whole["result"]["usage"]["prompt_tokens"], 4);
    let recorded = mock.model_requests();
    assert_eq!(recorded[0].format(), Some(WireFormat::WorkersAi));
    assert!(recorded[0].path.ends_with(CF_MODEL));

    body["stream"] = json!(true);
    let transcript = sse::read_stream(workers_post(&mock.root_url(), body.clone()).await).await;
    assert_eq!(transcript.body_error, None);
    assert_eq!(datas(&transcript).last(), Some(&"[DONE]"));
    assert_eq!(
        transcript_shapes(&transcript),
        fixture_shapes(fixture!("workers_ai/run_stream.sse"))
    );
    let text: String = transcript
        .events
        .iter()
        .filter_map(|e| e.json().ok())
        .map(|v| v["response"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Echo: hello there (history=2)");

    // A bare `prompt` works too.
    let whole: Value = workers_post(&mock.root_url(), json!({"prompt": "hi [mock reply=yo]"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whole["result"]["response"], "yo");

    // Tool calls (whole).
    let mut tools = chat(r#"[mock tool=getWeather args={"lat":"1"}]"#, false);
    tools["tools"] = json!([{"name": "getWeather", "parameters": {"type": "object"}}]);
    let whole: Value = workers_post(&mock.root_url(), tools)
        .await
        .json()
        .await
        .unwrap();
    let args = "result.tool_calls[].arguments";
    assert_eq!(
        shape_without(&whole, args),
        shape_without(
            &fixture_json(fixture!("workers_ai/run_tool_calls.json")),
            args
        )
    );
    assert_eq!(whole["result"]["tool_calls"][0]["name"], "getWeather");
    assert_eq!(
        whole["result"]["tool_calls"][0]["arguments"],
        json!({"lat": "1"})
    );

    let response = workers_post(&mock.profile_url("status=429"), chat("hi", false)).await;
    assert_eq!(response.status(), 429);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["success"], false);
    assert_eq!(error["result"], Value::Null);
    assert!(error["errors"][0]["code"].is_u64());
    assert_eq!(
        key_paths(&error),
        key_paths(&fixture_json(fixture!("workers_ai/error.json")))
    );

    let response = client()
        .post(format!(
            "{}/client/v4/accounts/acc123/ai/run/{CF_MODEL}",
            mock.root_url()
        ))
        .json(&chat("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

// ---------------------------------------------------------------------------------------
// Fault profiles

/// Status codes of `n` OpenAI calls through `base`.
async fn statuses(base: &str, text: &str, n: usize) -> Vec<u16> {
    let http = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let response = http
            .post(format!("{base}/chat/completions"))
            .json(&chat(text, false))
            .send()
            .await
            .unwrap();
        out.push(response.status().as_u16());
        let _ = response.bytes().await;
    }
    out
}

#[tokio::test]
async fn fail_percent_is_deterministic_and_near_its_rate() {
    let profile = "fail_percent=33,seed=7";
    let first = MockProvider::start().await;
    let second = MockProvider::start().await;
    let a = statuses(&first.profile_base_url(profile), "hi", 300).await;
    let b = statuses(&second.profile_base_url(profile), "hi", 300).await;
    assert_eq!(a, b, "the same profile fails the same calls");
    let failed = a.iter().filter(|s| **s == 500).count();
    assert!((70..=130).contains(&failed), "{failed} of 300 failed");
    assert!(a.iter().all(|s| *s == 200 || *s == 500));
    assert_eq!(first.calls_for(profile), 300);
    assert_eq!(first.requests_for(profile).len(), 300);
    assert_eq!(first.calls_for(""), 0);

    // Another seed, another sequence; fail_status picks the status.
    let c = statuses(
        &first.profile_base_url("fail_percent=33,seed=8,fail_status=502"),
        "hi",
        300,
    )
    .await;
    assert_ne!(
        a.iter().map(|s| *s == 200).collect::<Vec<_>>(),
        c.iter().map(|s| *s == 200).collect::<Vec<_>>()
    );
    assert!(c.iter().all(|s| *s == 200 || *s == 502));
}

#[tokio::test]
async fn fail_first_counts_per_profile() {
    let mock = MockProvider::start().await;
    let primary = mock.profile_base_url("fail_first=2");
    let other = mock.profile_base_url("fail_first=1,fail_status=429");
    assert_eq!(statuses(&primary, "hi", 4).await, [503, 503, 200, 200]);
    assert_eq!(statuses(&other, "hi", 2).await, [429, 200]);
    assert_eq!(mock.calls_for("fail_first=2"), 4);
    assert_eq!(mock.calls_for("fail_first=1,fail_status=429"), 2);
    let counters: Value = reqwest::get(format!("{}/_mock/counters", mock.root_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["fail_first=2"], 4);
    assert_eq!(mock.calls().len(), 2);
    let recorded = mock.requests_for("fail_first=2");
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0].profile.as_deref(), Some("fail_first=2"));
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert!(recorded[0].is_chat());
}

#[tokio::test]
async fn path_directives_apply_first_and_messages_override() {
    let mock = MockProvider::start().await;
    let failing = mock.profile_base_url("status=500");
    // The same message to two targets: only the profiled one fails.
    assert_eq!(statuses(&failing, "hi", 1).await, [500]);
    assert_eq!(statuses(&mock.base_url(), "hi", 1).await, [200]);
    // A message directive overrides the path's.
    assert_eq!(statuses(&failing, "hi [mock status=429]", 1).await, [429]);
    // Path and message directives combine.
    let replying = mock.profile_base_url("reply=from_path,delay_ms=1");
    let body: Value = client()
        .post(format!("{replying}/chat/completions"))
        .json(&chat("hi", false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from path");
    let body: Value = client()
        .post(format!("{replying}/chat/completions"))
        .json(&chat("hi [mock reply=from_message]", false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from message");
    // A bad path profile is a 400, like a bad message directive.
    assert_eq!(
        statuses(&mock.profile_base_url("nope=1"), "hi", 1).await,
        [400]
    );
}

#[tokio::test]
async fn retry_after_headers_with_any_status() {
    let mock = MockProvider::start().await;
    let base = mock.profile_base_url("status=503,retry_after=2,retry_after_ms=1500");
    let response = client()
        .post(format!("{base}/chat/completions"))
        .json(&chat("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    assert_eq!(response.headers()["x-ratelimit-reset-requests"], "2s");

    // Anthropic format: the same headers, no OpenAI rate-limit header.
    let response = anthropic(
        &mock,
        &mock.profile_url("fail_first=1,fail_status=529,retry_after=4"),
        anthropic_body("hi", false),
    )
    .await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["retry-after"], "4");
    assert!(
        response
            .headers()
            .get("x-ratelimit-reset-requests")
            .is_none()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    // Success carries no retry headers.
    let response = post(&mock, chat("[mock retry_after=9]", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn mid_stream_faults_in_other_formats() {
    let mock = MockProvider::start().await;
    // OpenAI: an error object as a data line, then a clean end without [DONE].
    let transcript =
        sse::read_stream(post(&mock, chat("a b c [mock overload_mid_stream=1]", true)).await).await;
    assert_eq!(transcript.body_error, None);
    let last = transcript.events.last().unwrap().json().unwrap();
    assert!(last["error"]["message"].is_string());
    assert!(datas(&transcript).iter().all(|d| *d != "[DONE]"));

    // Gemini with a malformed line from the path profile.
    let url = format!(
        "{}/v1beta/models/g:streamGenerateContent?alt=sse",
        mock.profile_url("malformed_sse=1")
    );
    let transcript = sse::read_stream(gemini_post(url, gemini_body("one two three")).await).await;
    assert!(transcript.events.iter().any(|e| e.json().is_err()));
    assert!(transcript.events.last().unwrap().json().is_ok());

    // Workers AI cut after one chunk.
    let mut body = chat("one two three [mock cut_after=1]", true);
    body.as_object_mut().unwrap().remove("model");
    let transcript = sse::read_stream(workers_post(&mock.root_url(), body).await).await;
    assert!(transcript.body_error.is_some());
    assert_eq!(transcript.events.len(), 1);
}

#[tokio::test]
async fn record_limit_keeps_the_newest() {
    let mock = MockProvider::start().await;
    mock.set_record_limit(Some(2));
    statuses(&mock.base_url(), "hi", 5).await;
    let recorded = mock.requests();
    assert_eq!(recorded.iter().map(|r| r.index).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(mock.calls_for(""), 5);
}

#[tokio::test]
async fn concurrent_plain_requests_are_quick() {
    // The short path: no directives, whole answers from precompiled templates.
    let mock = std::sync::Arc::new(MockProvider::start().await);
    let http = client();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let http = http.clone();
        let url = format!("{}/chat/completions", mock.base_url());
        tasks.spawn(async move {
            let body: Value = http
                .post(url)
                .json(&chat(&format!("n{i}"), false))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                body["choices"][0]["message"]["content"],
                format!("Echo: n{i} (history=2)")
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(mock.calls_for(""), 200);
}

#[tokio::test]
async fn the_order_api_and_crm_inbox_answer_over_http_and_are_recorded() {
    let mock = MockProvider::start().await;
    let root = mock.root_url();
    let order = client()
        .get(format!(
            "{root}/shop/orders/KF-1002?email=li.wei%40example.cn"
        ))
        .bearer_auth(shop::SHOP_TOKEN)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 200);
    let order: Value = order.json().await.unwrap();
    assert_eq!(order["order"]["status"], "processing");
    let unauthorized = client()
        .get(format!("{root}/shop/orders/KF-1002"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let posted = client()
        .post(format!("{root}/crm/summaries"))
        .header("x-kefu-signature", "sha256=00")
        .json(&json!({"event": "conversation.resolved", "conversation_id": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].path,
        "/shop/orders/KF-1002?email=li.wei%40example.cn"
    );
    assert_eq!(
        requests[0].headers["authorization"],
        "Bearer mock-shop-token"
    );
    assert_eq!(requests[2].body.as_ref().unwrap()["conversation_id"], "c1");
    assert_eq!(requests[2].headers["x-kefu-signature"], "sha256=00");
    // None of them is a model call.
    assert!(mock.model_requests().is_empty());
}
