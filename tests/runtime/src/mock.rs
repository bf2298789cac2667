//! A mock OpenAI-compatible provider: a real HTTP server on loopback.
//!
//! It speaks the chat-completions wire format (plain JSON and Server-Sent Events streams,
//! including `stream_options.include_usage`) so the host under test talks to it exactly as it
//! would talk to a real provider. What it does for a request is scripted by directives in the
//! *last user message*, written as `[mock key=value ...]`, so a scenario sends an ordinary chat
//! message through Kefu and the fault arrives where it would in production:
//!
//! | directive | effect |
//! |---|---|
//! | `status=NNN` | answer with that status and an OpenAI-style error body |
//! | `retry_after=S` | with `status`, also send `Retry-After: S` |
//! | `delay_ms=N` | wait before sending the response headers |
//! | `chunk_delay_ms=N` | (stream) wait between chunks |
//! | `stall_ms=N` | (stream) wait after the first content chunk |
//! | `cut_after=N` | (stream) drop the connection after N content chunks; (JSON) after half the body |
//! | `malformed=1` | (JSON) a body that is not JSON; (stream) a broken `data:` line |
//! | `reply=WORD_WORD` | reply with this text, `_` meaning a space |
//!
//! Without `reply`, the answer is `Echo: <text> (history=<messages in the request>)`, so a
//! scenario can check both what reached the provider and how much history came with it.
//! Every request is recorded ([`MockProvider::requests`], or `GET /_mock/requests`).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The one model the mock serves (any requested model name is echoed back, though).
pub const MOCK_MODEL: &str = "mock-gpt";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// One request as the mock received it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub index: u64,
    /// HTTP method.
    pub method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers, names lower-cased; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or `None` when it was empty or not JSON.
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// The request's chat messages (`body.messages`), empty when there are none.
    pub fn messages(&self) -> &[Value] {
        self.body
            .as_ref()
            .and_then(|b| b.get("messages"))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The text of the last `user` message, directives included.
    pub fn last_user_text(&self) -> Option<String> {
        last_user_text(self.messages())
    }

    /// Whether this was a chat-completions call.
    pub fn is_chat(&self) -> bool {
        self.method == "POST" && self.path.starts_with("/v1/chat/completions")
    }
}

/// How the mock is told to behave for one request (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `status=NNN`.
    pub status: Option<u16>,
    /// `retry_after=S`.
    pub retry_after: Option<String>,
    /// `delay_ms=N`.
    pub delay_ms: Option<u64>,
    /// `chunk_delay_ms=N`.
    pub chunk_delay_ms: Option<u64>,
    /// `stall_ms=N`.
    pub stall_ms: Option<u64>,
    /// `cut_after=N`.
    pub cut_after: Option<usize>,
    /// `malformed=1`.
    pub malformed: bool,
    /// `reply=WORD_WORD`, underscores already turned into spaces.
    pub reply: Option<String>,
}

/// Extracts every `[mock ...]` directive from `text`.
///
/// Returns the directives and the text without them, trimmed. An unknown key or a bad value is
/// an error, so a mistyped directive fails loudly instead of being ignored.
pub fn parse_directives(text: &str) -> Result<(Directives, String), String> {
    let mut directives = Directives::default();
    let mut rest = String::with_capacity(text.len());
    let mut remaining = text;
    while let Some(start) = find_directive(remaining) {
        rest.push_str(&remaining[..start]);
        let after = &remaining[start + "[mock".len()..];
        let end = after
            .find(']')
            .ok_or_else(|| format!("unterminated `[mock` directive in {text:?}"))?;
        for pair in after[..end].split_whitespace() {
            apply_directive(&mut directives, pair)?;
        }
        remaining = &after[end + 1..];
    }
    rest.push_str(remaining);
    Ok((directives, rest.trim().to_owned()))
}

/// The byte offset of the next `[mock` that starts a directive (followed by space or `]`).
fn find_directive(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("[mock") {
        let at = from + i;
        match text[at + "[mock".len()..].chars().next() {
            Some(c) if c == ']' || c.is_whitespace() => return Some(at),
            _ => from = at + 1,
        }
    }
    None
}

fn apply_directive(d: &mut Directives, pair: &str) -> Result<(), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("mock directive `{pair}` is not key=value"))?;
    fn num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("mock directive `{key}` needs a number, got `{value}`"))
    }
    match key {
        "status" => d.status = Some(num(key, value)?),
        "retry_after" => d.retry_after = Some(value.to_owned()),
        "delay_ms" => d.delay_ms = Some(num(key, value)?),
        "chunk_delay_ms" => d.chunk_delay_ms = Some(num(key, value)?),
        "stall_ms" => d.stall_ms = Some(num(key, value)?),
        "cut_after" => d.cut_after = Some(num(key, value)?),
        "malformed" => d.malformed = num::<u8>(key, value)? != 0,
        "reply" => d.reply = Some(value.replace('_', " ")),
        _ => return Err(format!("unknown mock directive `{key}`")),
    }
    Ok(())
}

/// The mock's default answer: what it received and how many messages came with it.
pub fn echo_reply(text: &str, history: usize) -> String {
    format!("Echo: {text} (history={history})")
}

/// Splits a reply into stream deltas, one per word, each keeping the white space after it so
/// the deltas concatenate exactly to the reply.
pub fn split_words(reply: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    let mut after_word = false;
    for (i, c) in reply.char_indices() {
        if c.is_whitespace() {
            after_word |= in_word;
            in_word = false;
        } else {
            // A word starts where non-space follows a word's trailing space; leading space
            // stays with the first word.
            if after_word {
                pieces.push(&reply[start..i]);
                start = i;
                after_word = false;
            }
            in_word = true;
        }
    }
    if start < reply.len() {
        pieces.push(&reply[start..]);
    }
    pieces
}

/// Tokens, as the mock counts them: white-space separated words.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of a message's `content`: a string, or the text parts of a content array.
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn last_user_text(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content_text)
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    counter: AtomicU64,
}

/// The running mock provider. It serves until dropped.
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// Starts the mock on `127.0.0.1` with a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        Self::start_on(0)
            .await
            .expect("mock provider: cannot bind 127.0.0.1")
    }

    /// Starts the mock on `127.0.0.1:port` (0 picks a free port).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(Self { addr, state, task })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A snapshot of every request received so far (the `/_mock/` endpoints excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("mock lock").clone()
    }

    /// The chat-completions requests received so far.
    pub fn chat_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_chat)
            .collect()
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet, so this ends them all.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow for ever.
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            // Errors here are the client going away, or a cut the mock made on purpose.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let bytes = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {e}"),
            ));
        }
    };
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();

    if path.starts_with("/_mock/") {
        return Ok(match (method.clone(), path.as_str()) {
            (Method::GET, "/_mock/requests") => {
                let requests = state.requests.lock().expect("mock lock").clone();
                json_response(StatusCode::OK, &json!(requests))
            }
            _ => error_response(StatusCode::NOT_FOUND, "no such mock endpoint"),
        });
    }

    let index = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    state
        .requests
        .lock()
        .expect("mock lock")
        .push(RecordedRequest {
            index,
            method: method.to_string(),
            path: path.clone(),
            headers,
            body: body.clone(),
        });

    let route = path.split('?').next().unwrap_or_default();
    Ok(match (method, route) {
        (Method::POST, "/v1/chat/completions") => match body {
            Some(body) => chat_completions(index, &body).await,
            None => error_response(StatusCode::BAD_REQUEST, "request body is not JSON"),
        },
        (Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({
                "object": "list",
                "data": [{"id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "kefu-mock"}],
            }),
        ),
        (_, "/v1/chat/completions" | "/v1/models") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_response(StatusCode::NOT_FOUND, &format!("no route for {route}")),
    })
}

/// `POST /v1/chat/completions`.
async fn chat_completions(index: u64, body: &Value) -> Response<Body> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return error_response(StatusCode::BAD_REQUEST, "`messages` must be an array");
    };
    let Some(user_text) = last_user_text(messages) else {
        return error_response(StatusCode::BAD_REQUEST, "no `user` message in `messages`");
    };
    let (directives, text) = match parse_directives(&user_text) {
        Ok(parsed) => parsed,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(MOCK_MODEL)
        .to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    if let Some(ms) = directives.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = directives.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = error_response(status, &format!("mock error {}", status.as_u16()));
        if let Some(retry_after) = &directives.retry_after
            && let Ok(value) = HeaderValue::from_str(retry_after)
        {
            response.headers_mut().insert("retry-after", value);
        }
        return response;
    }

    let reply = directives
        .reply
        .clone()
        .unwrap_or_else(|| echo_reply(&text, messages.len()));
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| count_tokens(&content_text(m)))
        .sum();
    let completion_tokens = count_tokens(&reply);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = format!("chatcmpl-mock-{index}");
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if stream {
        let chunks = StreamChunks {
            id,
            created,
            model,
            include_usage,
        };
        return sse_response(chunks.steps(&reply, &usage, &directives));
    }

    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage,
    });
    let bytes = completion.to_string().into_bytes();
    if directives.malformed {
        let broken = format!("{{\"id\": \"{id}\", \"object\": \"chat.completion\", \"choices\": [");
        return body_response(StatusCode::OK, "application/json", Full::new(broken.into()));
    }
    if directives.cut_after.is_some() {
        let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
        return stepped_response(
            StatusCode::OK,
            "application/json",
            vec![Step::Send(half), Step::Abort],
        );
    }
    body_response(StatusCode::OK, "application/json", Full::new(bytes.into()))
}

/// What goes into every `chat.completion.chunk` of one stream.
struct StreamChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl StreamChunks {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Step {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            // OpenAI sends `usage: null` on every chunk but the last when usage is asked for.
            chunk["usage"] = Value::Null;
        }
        data_line(&chunk.to_string())
    }

    fn steps(&self, reply: &str, usage: &Value, d: &Directives) -> Vec<Step> {
        let pause = d.chunk_delay_ms.map(Duration::from_millis);
        let mut steps = vec![self.chunk(json!({"role": "assistant", "content": ""}), None)];
        for (n, word) in split_words(reply).into_iter().enumerate() {
            if let Some(pause) = pause {
                steps.push(Step::Sleep(pause));
            }
            steps.push(self.chunk(json!({ "content": word }), None));
            if n == 0 {
                if let Some(ms) = d.stall_ms {
                    steps.push(Step::Sleep(Duration::from_millis(ms)));
                }
                if d.malformed {
                    steps.push(data_line(&format!(
                        "{{\"id\":\"{}\",\"choices\":[{{\"delta\":",
                        self.id
                    )));
                }
            }
            if d.cut_after == Some(n + 1) {
                steps.push(Step::Abort);
                return steps;
            }
        }
        if let Some(pause) = pause {
            steps.push(Step::Sleep(pause));
        }
        steps.push(self.chunk(json!({}), Some("stop")));
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            });
            steps.push(data_line(&chunk.to_string()));
        }
        steps.push(data_line("[DONE]"));
        steps
    }
}

fn data_line(data: &str) -> Step {
    Step::Send(Bytes::from(format!("data: {data}\n\n")))
}

/// One step of a scripted response body.
enum Step {
    Sleep(Duration),
    Send(Bytes),
    /// End the body with an error: hyper then drops the connection without the final empty
    /// chunk, so the client sees a broken body rather than a clean end.
    Abort,
}

fn stepped_body(steps: Vec<Step>) -> Body {
    let mut steps: VecDeque<Step> = steps.into();
    // Give hyper a chance to flush what was sent before the abort tears the connection down:
    // a body error discards whatever is still in its write buffer.
    if let Some(i) = steps.iter().position(|s| matches!(s, Step::Abort)) {
        steps.insert(i, Step::Sleep(Duration::from_millis(10)));
    }
    let stream = futures::stream::unfold(steps, |mut steps| async move {
        loop {
            match steps.pop_front()? {
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Send(bytes) => return Some((Ok(Frame::data(bytes)), steps)),
                Step::Abort => {
                    steps.clear();
                    let err: BoxError = "mock provider: connection cut on purpose".into();
                    return Some((Err(err), steps));
                }
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

fn stepped_response(status: StatusCode, content_type: &str, steps: Vec<Step>) -> Response<Body> {
    let mut response = Response::new(stepped_body(steps));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn sse_response(steps: Vec<Step>) -> Response<Body> {
    let mut response = stepped_response(StatusCode::OK, "text/event-stream", steps);
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

fn body_response(status: StatusCode, content_type: &str, body: Full<Bytes>) -> Response<Body> {
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    body_response(
        status,
        "application/json",
        Full::new(value.to_string().into()),
    )
}

/// An OpenAI-style error: `{"error":{"message","type","code"}}`.
fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => (
            "invalid_request_error",
            json!("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", json!("not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse;

    #[test]
    fn directives_are_parsed_and_removed() {
        let (d, text) =
            parse_directives("[mock status=503 retry_after=7] hello [mock reply=a_b_c]").unwrap();
        assert_eq!(
            d,
            Directives {
                status: Some(503),
                retry_after: Some("7".into()),
                reply: Some("a b c".into()),
                ..Directives::default()
            }
        );
        assert_eq!(text, "hello");

        let (d, text) = parse_directives(
            "slow [mock delay_ms=10 chunk_delay_ms=2 stall_ms=3 cut_after=4 malformed=1]",
        )
        .unwrap();
        assert_eq!(d.delay_ms, Some(10));
        assert_eq!(d.chunk_delay_ms, Some(2));
        assert_eq!(d.stall_ms, Some(3));
        assert_eq!(d.cut_after, Some(4));
        assert!(d.malformed);
        assert_eq!(text, "slow");
    }

    #[test]
    fn text_without_directives_is_untouched() {
        let (d, text) = parse_directives("  [mockery] is not [a directive]  ").unwrap();
        assert_eq!(d, Directives::default());
        assert_eq!(text, "[mockery] is not [a directive]");
        assert_eq!(parse_directives("[mock]").unwrap().1, "");
    }

    #[test]
    fn bad_directives_fail_loudly() {
        assert!(parse_directives("[mock stauts=500]").is_err());
        assert!(parse_directives("[mock status=five]").is_err());
        assert!(parse_directives("[mock status]").is_err());
        assert!(parse_directives("[mock status=500").is_err());
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

    async fn post(mock: &MockProvider, body: Value) -> reqwest::Response {
        reqwest::Client::new()
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
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10})
        );

        let recorded = mock.chat_requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].headers["content-type"], "application/json");
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
        let datas: Vec<&str> = transcript.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(datas.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = transcript.events[..transcript.events.len() - 1]
            .iter()
            .map(|e| e.json().unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let (usage_chunk, rest) = chunks.split_last().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
        let (finish, content) = rest.split_last().unwrap();
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let text: String = content
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Echo: one two three (history=2)");
        assert_eq!(content.len(), 1 + 5);
    }

    #[tokio::test]
    async fn stream_without_usage_has_no_usage_chunk() {
        let mock = MockProvider::start().await;
        let mut body = chat("[mock reply=just_this]", true);
        body.as_object_mut().unwrap().remove("stream_options");
        let transcript = sse::read_stream(post(&mock, body).await).await;
        let datas: Vec<&str> = transcript.events.iter().map(|e| e.data.as_str()).collect();
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

        let transcript =
            sse::read_stream(post(&mock, chat("x y [mock malformed=1]", true)).await).await;
        assert!(
            transcript
                .events
                .iter()
                .any(|e| e.json().is_err() && e.data != "[DONE]")
        );

        let response = post(&mock, chat("[mock status=429 retry_after=3]", false)).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");

        let response = post(&mock, chat("[mock bogus=1]", false)).await;
        assert_eq!(response.status(), 400);
    }

    #[tokio::test]
    async fn delays_hold_headers_and_chunks() {
        let mock = MockProvider::start().await;
        let started = std::time::Instant::now();
        let response = post(&mock, chat("[mock delay_ms=150]", false)).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(response.status(), 200);

        let started = std::time::Instant::now();
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
    }
}
