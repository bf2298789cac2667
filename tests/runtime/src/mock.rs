//! A mock LLM provider: a real HTTP server on loopback that speaks every wire format Kefu's
//! gateway supports.
//!
//! | format | path (any of them may start with `/p/<directives>/`) |
//! |---|---|
//! | OpenAI chat completions (also Mistral, compatible servers) | `POST /v1/chat/completions`, `GET /v1/models` |
//! | Anthropic Messages | `POST /v1/messages` (needs `x-api-key` and `anthropic-version`) |
//! | Gemini | `POST /v1beta/models/{model}:generateContent`, `…:streamGenerateContent?alt=sse` (key in `x-goog-api-key` or `?key=`; `/v1/models/…` too) |
//! | Workers AI REST | `POST /client/v4/accounts/{account}/ai/run/{model}` (model may hold `/` and `@`; needs `Authorization: Bearer …`) |
//!
//! Beside the models it serves, for the example plugins' tests, a mock order API
//! (`GET /shop/orders/{id}`) and CRM inbox (`POST /crm/summaries`): see [`shop`].
//!
//! Each format answers whole (JSON) and streamed (its own Server-Sent Events framing: OpenAI
//! `data:` chunks with `[DONE]` and `stream_options.include_usage`; Anthropic named events;
//! Gemini data-only full-response chunks, the last with `finishReason`, or one JSON array
//! without `alt=sse`; Workers AI `{"response":…}` chunks, a usage chunk and `[DONE]`), and
//! fails in its own documented error body. The bodies are rendered from the real-shape
//! fixtures in `tests/runtime/fixtures/`, so the host under test talks to the mock exactly as
//! it would talk to the real provider.
//!
//! What the mock does for a request is scripted by directives, written `key=value`:
//! in the *last user message* as `[mock key=value ...]`, so a scenario sends an ordinary chat
//! message through Kefu and the fault arrives where it would in production; and in the URL
//! path as `/p/key=value,key=value/…` (a *fault profile*), so a gateway route whose targets
//! have different base URLs can make only one target fail even though every target gets the
//! same message. Path directives apply first, message directives override them.
//!
//! | directive | effect |
//! |---|---|
//! | `status=NNN` | always fail with that status and the format's error body (`format=anthropic` or the Anthropic path: 529 → `overloaded_error`, 429 → `rate_limit_error`, 400 → `invalid_request_error`, 401 → `authentication_error`, …) |
//! | `fail_percent=N` | fail about N % of calls (0–100), pseudo-randomly but reproducibly per (profile, seed, call number) |
//! | `fail_first=N` | the profile's first N calls fail, later ones succeed (circuit-breaker recovery) |
//! | `fail_status=S` | status of `fail_percent` (default 500) and `fail_first` (default 503) failures |
//! | `seed=K` | varies the `fail_percent` sequence (default 0) |
//! | `retry_after=S` | on any failure, also send `Retry-After: S` (OpenAI/Mistral format: and `x-ratelimit-reset-requests: Ss`) |
//! | `retry_after_ms=N` | on any failure, also send `retry-after-ms: N` |
//! | `delay_ms=N` | wait before sending the response headers (a timeout before the first byte) |
//! | `headers_delay_ms=N` | alias of `delay_ms` |
//! | `latency_ms=N` | alias of `delay_ms` (a fixed latency, for benchmarks) |
//! | `chunk_delay_ms=N` | (stream) wait before each content chunk |
//! | `stall_ms=N` | (stream) wait after the first content chunk |
//! | `cut_after=N` | (stream) drop the connection after N content chunks; (whole) after half the body |
//! | `malformed=1` | (whole) a body that is not JSON; (stream) a broken JSON line after the first content chunk |
//! | `malformed_sse=1` | alias of `malformed` |
//! | `overload_mid_stream=1` | (stream) after the first content chunk an error event, then the stream ends (Anthropic: `event: error` with `overloaded_error`; others: their error body as a `data:` line) |
//! | `format=NAME` | error body shape: `openai`, `mistral`, `anthropic`, `gemini`, `workers_ai` (default: the route's; `mistral` on `/v1/chat/completions` gives Mistral's `{"object":"error",…}`) |
//! | `reply=WORD_WORD` | reply with this text, `_` meaning a space |
//! | `tool=NAME` | when the request offers `tools`, answer with a call to NAME (OpenAI `tool_calls`, Anthropic `tool_use`, Gemini `functionCall`, Workers AI `tool_calls`); streamed, the arguments come in fragments |
//! | `args=JSON` | the call's arguments: a JSON object without spaces (default `{}`) |
//!
//! Without `reply` or `tool`, the answer is `Echo: <text> (history=<messages in the request>)`
//! (a top-level `system` / `systemInstruction` counts as one message), so a scenario can check
//! both what reached the provider and how much history came with it. When the request's last
//! message is a tool result (OpenAI `role: "tool"`, an Anthropic `tool_result` block, a Gemini
//! `functionResponse`), the answer is `Tool result: <content>`.
//!
//! Calls are counted per profile (the `/p/<directives>/` segment, percent-decoded; requests
//! without one share the empty profile `""`): `fail_first` and `fail_percent` use that count,
//! and [`MockProvider::calls_for`] reads it. Every request is recorded
//! ([`MockProvider::requests`], or `GET /_mock/requests`; counters at `GET /_mock/counters`).
//! A request without directives takes a short path: its body is rendered straight from
//! precompiled template bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// `include_str!` of a file under `tests/runtime/fixtures/`.
macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/", $path))
    };
}

mod anthropic;
mod directives;
mod faults;
mod gemini;
mod openai;
pub mod services;
pub mod shop;
mod stream;
mod template;
mod wire;
mod workers_ai;

#[cfg(test)]
mod tests;

pub use directives::{
    DIRECTIVE_KEYS, DIRECTIVE_TABLE, Directives, parse_directives, parse_profile,
};
pub use faults::{FAIL_FIRST_STATUS, FAIL_PERCENT_STATUS};
pub use wire::WireFormat;

use stream::{Step, StreamPlan, stepped_body};
use wire::{Answer, Prompt, Route};

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
    /// Path and query, e.g. `/v1/chat/completions`, after any `/p/<directives>` prefix.
    pub path: String,
    /// Headers, names lower-cased; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or `None` when it was empty or not JSON.
    pub body: Option<Value>,
    /// The fault profile from the path (`/p/<profile>/…`), percent-decoded.
    pub profile: Option<String>,
}

impl RecordedRequest {
    /// The request's chat messages (`body.messages`, or Gemini's `body.contents`), empty when
    /// there are none.
    pub fn messages(&self) -> &[Value] {
        self.body
            .as_ref()
            .and_then(|b| b.get("messages").or_else(|| b.get("contents")))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The text of the last `user` message, directives included (in any format).
    pub fn last_user_text(&self) -> Option<String> {
        let body = self.body.as_ref()?;
        match self.format() {
            Some(WireFormat::Anthropic) => wire::anthropic_read(body).ok()?.user_text,
            Some(WireFormat::Gemini) => wire::gemini_prompt(body, "", false).ok()?.user_text,
            Some(WireFormat::WorkersAi) if body.get("prompt").is_some() => body
                .get("prompt")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => last_user_text(self.messages()),
        }
    }

    /// Whether this was an OpenAI-style chat-completions call.
    pub fn is_chat(&self) -> bool {
        self.method == "POST" && self.path.starts_with("/v1/chat/completions")
    }

    /// Whether this was a model call in any format.
    pub fn is_model_call(&self) -> bool {
        self.method == "POST" && Route::of(&self.path).is_model_call()
    }

    /// The wire format of the route it was sent to (`None` for unknown paths). Mistral shares
    /// OpenAI's path and reads as [`WireFormat::Openai`].
    pub fn format(&self) -> Option<WireFormat> {
        Route::of(&self.path).format()
    }
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
    requests: Mutex<VecDeque<RecordedRequest>>,
    counter: AtomicU64,
    /// Calls per profile (`""`: requests without one).
    calls: Mutex<HashMap<String, u64>>,
    /// Most requests kept in the log; 0 keeps all.
    record_limit: AtomicUsize,
}

impl State {
    /// Counts a call for `profile`; returns its number, from 1.
    fn count_call(&self, profile: &str) -> u64 {
        let mut calls = self.calls.lock().expect("mock lock");
        if let Some(n) = calls.get_mut(profile) {
            *n += 1;
            *n
        } else {
            calls.insert(profile.to_owned(), 1);
            1
        }
    }

    fn record(&self, request: RecordedRequest) {
        let limit = self.record_limit.load(Ordering::Relaxed);
        let mut requests = self.requests.lock().expect("mock lock");
        if limit > 0 {
            while requests.len() >= limit {
                requests.pop_front();
            }
        }
        requests.push_back(request);
    }
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

    /// The server's root, `http://127.0.0.1:<port>` (Anthropic and Gemini base URLs; append
    /// `/client/v4/accounts/<id>/ai` for Workers AI).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The root URL of a target with a fault profile: `http://127.0.0.1:<port>/p/<profile>`.
    /// Characters that would end the path segment are percent-encoded; the profile is
    /// counted under `profile` as given.
    pub fn profile_url(&self, profile: &str) -> String {
        let mut url = format!("http://{}/p/", self.addr);
        for c in profile.chars() {
            match c {
                '/' | '?' | '#' | '%' | ' ' => url.push_str(&format!("%{:02X}", c as u32)),
                c => url.push(c),
            }
        }
        url
    }

    /// The OpenAI-style base URL of a target with a fault profile:
    /// `http://127.0.0.1:<port>/p/<profile>/v1`.
    pub fn profile_base_url(&self, profile: &str) -> String {
        format!("{}/v1", self.profile_url(profile))
    }

    /// A snapshot of every request received so far (the `/_mock/` endpoints excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .expect("mock lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The chat-completions requests received so far.
    pub fn chat_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_chat)
            .collect()
    }

    /// The model calls received so far, in any format.
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_model_call)
            .collect()
    }

    /// How many requests arrived with this fault profile (`""`: without one), including
    /// failed ones.
    pub fn calls_for(&self, profile: &str) -> u64 {
        self.state
            .calls
            .lock()
            .expect("mock lock")
            .get(profile)
            .copied()
            .unwrap_or(0)
    }

    /// The recorded requests with this fault profile (`""`: those without one).
    pub fn requests_for(&self, profile: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.profile.as_deref().unwrap_or("") == profile)
            .collect()
    }

    /// Calls per profile so far.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.state
            .calls
            .lock()
            .expect("mock lock")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Starts every profile's call count from zero again, so `fail_first` fails anew: the
    /// runner does this before it runs the same scenarios on the next runtime.
    pub fn reset_calls(&self) {
        self.state.calls.lock().expect("mock lock").clear();
    }

    /// Keeps at most `limit` requests in the log, dropping the oldest (`None`: all, the
    /// default). Long benchmark runs want a limit.
    pub fn set_record_limit(&self, limit: Option<usize>) {
        self.state
            .record_limit
            .store(limit.unwrap_or(0), Ordering::Relaxed);
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
        let _ = stream.set_nodelay(true);
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
    let full_path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let (raw_profile, path) = directives::split_profile(&full_path);
    let profile = raw_profile
        .map(directives::percent_decode)
        .filter(|p| !p.is_empty());
    let path = path.to_owned();
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
    let route = Route::of(&path);
    let format = route.format().unwrap_or(WireFormat::Openai);
    let bytes = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(error_response(
                format,
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {e}"),
                0,
            ));
        }
    };

    if path.starts_with("/_mock/") {
        return Ok(mock_endpoint(&state, &method, &path));
    }

    let index = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let bare = path.split('?').next().unwrap_or_default();
    if method == Method::POST && matches!(bare, "/v1/audio/transcriptions" | "/v1/embeddings") {
        // Speech to text and embeddings (see `services`): recorded, never faulted.
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let outcome = if bare == "/v1/embeddings" {
            services::embeddings(parsed.as_ref())
                .map(|a| (a, parsed.clone().unwrap_or(Value::Null)))
        } else {
            services::transcription(&content_type, &bytes)
        };
        let (response, recorded) = match outcome {
            Ok((answer, summary)) => (
                json_response(
                    StatusCode::OK,
                    serde_json::to_vec(&answer).unwrap_or_default(),
                ),
                Some(summary),
            ),
            Err(e) => (
                error_response(WireFormat::Openai, StatusCode::BAD_REQUEST, &e, index),
                None,
            ),
        };
        state.record(RecordedRequest {
            index,
            method: method.to_string(),
            path,
            headers,
            body: recorded,
            profile,
        });
        return Ok(response);
    }
    if shop::handles(bare) {
        // The example plugins' order API and CRM inbox (see `shop`): recorded, never faulted.
        let (status, answer) = shop::answer(
            method.as_str(),
            &path,
            headers.get("authorization").map(String::as_str),
            &bytes,
        );
        state.record(RecordedRequest {
            index,
            method: method.to_string(),
            path,
            headers,
            body: serde_json::from_slice(&bytes).ok(),
            profile,
        });
        return Ok(json_response(
            status,
            serde_json::to_vec(&answer).unwrap_or_default(),
        ));
    }
    let call = state.count_call(profile.as_deref().unwrap_or(""));
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let plan = prepare(&Arrival {
        method: &method,
        path: path.split('?').next().unwrap_or_default(),
        route: &route,
        headers: &headers,
        body: body.as_ref(),
        profile: profile.as_deref(),
        call,
        index,
    });
    state.record(RecordedRequest {
        index,
        method: method.to_string(),
        path,
        headers,
        body,
        profile,
    });
    Ok(match plan {
        Plan::Now(response) => response,
        Plan::Call(call) => call.run().await,
    })
}

fn mock_endpoint(state: &State, method: &Method, path: &str) -> Response<Body> {
    let route = path.split('?').next().unwrap_or_default();
    match (method, route) {
        (&Method::GET, "/_mock/requests") => {
            let requests = state.requests.lock().expect("mock lock");
            json_response(
                StatusCode::OK,
                serde_json::to_vec(&*requests).unwrap_or_default(),
            )
        }
        (&Method::GET, "/_mock/counters") => {
            let calls = state.calls.lock().expect("mock lock");
            json_response(
                StatusCode::OK,
                serde_json::to_vec(&*calls).unwrap_or_default(),
            )
        }
        (&Method::GET, "/_mock/help") => body_response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(DIRECTIVE_TABLE.as_bytes()),
        ),
        _ => error_response(
            WireFormat::Openai,
            StatusCode::NOT_FOUND,
            "no such mock endpoint",
            0,
        ),
    }
}

/// What arrived, as `prepare` needs it.
struct Arrival<'a> {
    method: &'a Method,
    path: &'a str,
    route: &'a Route,
    headers: &'a BTreeMap<String, String>,
    body: Option<&'a Value>,
    profile: Option<&'a str>,
    call: u64,
    index: u64,
}

/// What to do for a request: answer now, or run a model call (which may wait).
enum Plan {
    Now(Response<Body>),
    Call(Box<Call>),
}

/// A model call, read and scripted.
struct Call {
    directives: Directives,
    /// The route's format (the answer's shape).
    format: WireFormat,
    /// The error bodies' format (`format=`, else the route's).
    error_format: WireFormat,
    /// (Gemini) stream framing: `alt=sse`.
    sse: bool,
    prompt: Prompt,
    /// The last user text without directives.
    text: String,
    profile: String,
    call: u64,
    index: u64,
}

fn prepare(inc: &Arrival<'_>) -> Plan {
    let route = inc.route;
    let Some(format) = route.format() else {
        return Plan::Now(error_response(
            WireFormat::Openai,
            StatusCode::NOT_FOUND,
            &format!("no route for {}", inc.path),
            inc.index,
        ));
    };
    if *route == Route::OpenaiModels {
        return Plan::Now(if *inc.method == Method::GET {
            body_response(StatusCode::OK, "application/json", openai::MODELS.clone())
        } else {
            error_response(
                format,
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                inc.index,
            )
        });
    }
    if *inc.method != Method::POST {
        return Plan::Now(error_response(
            format,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            inc.index,
        ));
    }
    let base = match inc.profile.map(parse_profile).transpose() {
        Ok(base) => base.unwrap_or_default(),
        Err(e) => {
            return Plan::Now(error_response(
                format,
                StatusCode::BAD_REQUEST,
                &e,
                inc.index,
            ));
        }
    };
    let error_format = base.format.unwrap_or(format);
    let fail = |status: StatusCode, message: &str| {
        Plan::Now(error_response(error_format, status, message, inc.index))
    };
    if let Some(denied) = check_auth(route, inc.headers) {
        return fail(denied.0, denied.1);
    }
    let Some(body) = inc.body else {
        return fail(StatusCode::BAD_REQUEST, "request body is not JSON");
    };
    let (prompt, sse) = match route {
        Route::OpenaiChat => (wire::openai_prompt(body), false),
        Route::AnthropicMessages => (wire::anthropic_prompt(body), false),
        Route::Gemini {
            model, stream, sse, ..
        } => (wire::gemini_prompt(body, model, *stream), *sse),
        Route::WorkersAi { model } => (wire::workers_ai_prompt(body, model), false),
        Route::OpenaiModels | Route::Unknown => unreachable!("handled above"),
    };
    let prompt = match prompt {
        Ok(prompt) => prompt,
        Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
    };
    let (directives, text) = match &prompt.user_text {
        Some(user_text) => match directives::parse_directives_onto(base, user_text) {
            Ok(parsed) => parsed,
            Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
        },
        None => (base, String::new()),
    };
    Plan::Call(Box::new(Call {
        error_format: directives.format.unwrap_or(format),
        directives,
        format,
        sse,
        prompt,
        text,
        profile: inc.profile.unwrap_or("").to_owned(),
        call: inc.call,
        index: inc.index,
    }))
}

/// The providers' own checks of credentials and required headers.
fn check_auth(
    route: &Route,
    headers: &BTreeMap<String, String>,
) -> Option<(StatusCode, &'static str)> {
    let has = |name: &str| headers.get(name).is_some_and(|v| !v.trim().is_empty());
    match route {
        Route::AnthropicMessages if !has("x-api-key") => {
            Some((StatusCode::UNAUTHORIZED, "x-api-key header is required"))
        }
        Route::AnthropicMessages if !has("anthropic-version") => Some((
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        )),
        Route::Gemini { query_key, .. } if !query_key && !has("x-goog-api-key") => Some((
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        )),
        Route::WorkersAi { .. }
            if !headers
                .get("authorization")
                .is_some_and(|v| v.starts_with("Bearer ") && v.len() > "Bearer ".len()) =>
        {
            Some((StatusCode::UNAUTHORIZED, "Authentication error"))
        }
        _ => None,
    }
}

/// What a format's renderer needs for one answer.
pub(crate) struct Reply<'a> {
    index: u64,
    created: u64,
    model: &'a str,
    answer: &'a Answer,
    prompt_tokens: u64,
    completion_tokens: u64,
    include_usage: bool,
}

impl Call {
    async fn run(self) -> Response<Body> {
        let d = &self.directives;
        if let Some(ms) = d.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(status) = faults::failure(d, &self.profile, self.call) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error_response(
                self.error_format,
                status,
                &format!("mock error {}", status.as_u16()),
                self.index,
            );
            retry_headers(&mut response, d, self.error_format);
            return response;
        }

        let answer = if let Some(result) = &self.prompt.tool_result {
            Answer::Text(format!("Tool result: {result}"))
        } else if let (Some(name), true) = (&d.tool, self.prompt.has_tools) {
            Answer::Tool {
                name: name.clone(),
                args: d.args.clone().unwrap_or_else(|| "{}".to_owned()),
            }
        } else if let Some(reply) = &d.reply {
            Answer::Text(reply.clone())
        } else {
            Answer::Text(echo_reply(&self.text, self.prompt.history))
        };
        let reply = Reply {
            index: self.index,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: &self.prompt.model,
            answer: &answer,
            prompt_tokens: self.prompt.prompt_tokens,
            completion_tokens: answer.tokens(),
            include_usage: self.prompt.include_usage,
        };

        if self.prompt.stream {
            let (plan, content_type): (StreamPlan, &str) = match self.format {
                WireFormat::Openai | WireFormat::Mistral => {
                    (openai::stream(&reply), "text/event-stream")
                }
                WireFormat::Anthropic => (
                    anthropic::stream(&reply),
                    "text/event-stream; charset=utf-8",
                ),
                WireFormat::Gemini if self.sse => {
                    (gemini::stream(&reply, true), "text/event-stream")
                }
                WireFormat::Gemini => (gemini::stream(&reply, false), "application/json"),
                WireFormat::WorkersAi => (workers_ai::stream(&reply), "text/event-stream"),
            };
            let mut response = stepped_response(StatusCode::OK, content_type, plan.steps(d));
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-cache"));
            return response;
        }

        let bytes = match self.format {
            WireFormat::Openai | WireFormat::Mistral => openai::whole(&reply),
            WireFormat::Anthropic => anthropic::whole(&reply),
            WireFormat::Gemini => gemini::whole(&reply),
            WireFormat::WorkersAi => workers_ai::whole(&reply),
        };
        if d.malformed {
            let broken = Bytes::copy_from_slice(stream::broken_json(&bytes));
            return body_response(StatusCode::OK, "application/json", broken);
        }
        if d.cut_after.is_some() {
            let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
            return stepped_response(
                StatusCode::OK,
                "application/json",
                vec![Step::Send(half), Step::Abort],
            );
        }
        body_response(StatusCode::OK, "application/json", bytes.into())
    }
}

/// `retry_after` / `retry_after_ms` on a failure.
fn retry_headers(response: &mut Response<Body>, d: &Directives, format: WireFormat) {
    let headers = response.headers_mut();
    if let Some(retry_after) = &d.retry_after
        && let Ok(value) = HeaderValue::from_str(retry_after)
    {
        headers.insert("retry-after", value);
        if matches!(format, WireFormat::Openai | WireFormat::Mistral)
            && let Ok(value) = HeaderValue::from_str(&format!("{retry_after}s"))
        {
            headers.insert("x-ratelimit-reset-requests", value);
        }
    }
    if let Some(ms) = d.retry_after_ms
        && let Ok(value) = HeaderValue::from_str(&ms.to_string())
    {
        headers.insert("retry-after-ms", value);
    }
}

fn stepped_response(status: StatusCode, content_type: &str, steps: Vec<Step>) -> Response<Body> {
    let mut response = Response::new(stepped_body(steps));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn body_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    body_response(status, "application/json", body.into())
}

/// An error in `format`'s own body shape.
fn error_response(
    format: WireFormat,
    status: StatusCode,
    message: &str,
    index: u64,
) -> Response<Body> {
    let code = status.as_u16();
    let body = match format {
        WireFormat::Openai => openai::error_body(code, message),
        WireFormat::Mistral => openai::mistral_error_body(code, message),
        WireFormat::Anthropic => anthropic::error_body(code, message, index),
        WireFormat::Gemini => gemini::error_body(code, message),
        WireFormat::WorkersAi => workers_ai::error_body(code, message),
    };
    json_response(status, body)
}
