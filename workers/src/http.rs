//! Building responses: JSON bodies, error bodies, and the headers every answer carries.

use kefu_engine::api::{ApiError, BodyLimit};
use serde_json::Value;
use worker::{Headers, Response};

/// A response with a body and content type.
pub(crate) fn text_response(
    status: u16,
    content_type: &str,
    body: String,
) -> Result<Response, ApiError> {
    let headers = Headers::new();
    set(&headers, "content-type", content_type)?;
    set(&headers, "x-content-type-options", "nosniff")?;
    if content_type.starts_with("text/html") {
        // The demo page has no scripts and loads nothing: forbid everything else.
        set(
            &headers,
            "content-security-policy",
            kefu_engine::demo::PAGE_CSP,
        )?;
    }
    Ok(Response::ok(body)
        .map_err(internal)?
        .with_status(status)
        .with_headers(headers))
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &Value) -> Result<Response, ApiError> {
    text_response(status, "application/json; charset=utf-8", body.to_string())
}

/// The JSON error response for `e` (never fails: a header error falls back to a bare 500).
pub(crate) fn error_response(e: &ApiError) -> worker::Result<Response> {
    match json_response(e.status, &e.body()) {
        Ok(mut resp) => {
            if let Some(secs) = e.retry_after {
                resp.headers_mut().set("retry-after", &secs.to_string())?;
            }
            if let Some(allow) = e.allow {
                resp.headers_mut().set("allow", allow)?;
            }
            Ok(resp)
        }
        Err(_) => Response::error(e.body().to_string(), 500),
    }
}

/// The request headers a cross-origin caller of the API may send.
const CORS_ALLOW_HEADERS: &str = "content-type, authorization, x-kefu-tenant, x-kefu-visitor-id, x-kefu-visitor-hash, last-event-id";
/// The response headers a cross-origin caller may read (`Retry-After` above all: the widget
/// resends a rate-limited message when it says).
const CORS_EXPOSE_HEADERS: &str =
    "retry-after, x-kefu-conversation-id, x-kefu-target, x-kefu-attempts, allow";

/// The answer to a CORS preflight (`OPTIONS`) for a route of the API.
pub(crate) fn preflight() -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("access-control-allow-origin", "*")?;
    headers.set(
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, OPTIONS",
    )?;
    headers.set("access-control-allow-headers", CORS_ALLOW_HEADERS)?;
    headers.set("access-control-max-age", "86400")?;
    Ok(Response::empty()?.with_status(204).with_headers(headers))
}

/// `resp` readable by a page on any origin. A WebSocket upgrade is passed through as it is
/// (sockets are not subject to CORS).
pub(crate) fn allow_cross_origin(resp: Response) -> worker::Result<Response> {
    if resp.status_code() == 101 {
        return Ok(resp);
    }
    // A copy: the headers of an answer forwarded from a Durable Object are immutable.
    let headers = resp.headers().clone();
    headers.set("access-control-allow-origin", "*")?;
    headers.set("access-control-expose-headers", CORS_EXPOSE_HEADERS)?;
    Ok(resp.with_headers(headers))
}

pub(crate) fn set(headers: &Headers, name: &str, value: &str) -> Result<(), ApiError> {
    headers.set(name, value).map_err(internal)
}

/// Wraps a platform error as `500 internal_error`.
pub(crate) fn internal(e: impl core::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// An incoming request whose body is read once: `worker::Request`, or the platform's own
/// request ([`Incoming`]) where building a `worker::Request` would cost more than the route
/// does.
pub(crate) trait RequestBody {
    /// A header's value.
    fn header(&self, name: &str) -> Option<String>;
    /// Whether the request has a body at all (a bodiless POST has none).
    fn has_body(&self) -> bool;
    /// The whole body in one call, once.
    async fn bytes(&mut self) -> worker::Result<Vec<u8>>;
    /// The body as a stream, once.
    fn stream(&mut self) -> worker::Result<worker::ByteStream>;
}

impl RequestBody for worker::Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers().get(name).ok().flatten()
    }
    fn has_body(&self) -> bool {
        self.inner().body().is_some()
    }
    async fn bytes(&mut self) -> worker::Result<Vec<u8>> {
        worker::Request::bytes(self).await
    }
    fn stream(&mut self) -> worker::Result<worker::ByteStream> {
        worker::Request::stream(self)
    }
}

/// The platform's request as it arrived. `worker::Request` reads the request's `cf` object
/// (and parses its URL) when it is built, on every request: about a twelfth of a gateway
/// request's CPU inside workerd (`make profile`, 2026-12-06). The routes that read nothing
/// of it take the request as it is.
pub(crate) struct Incoming {
    raw: worker::web_sys::Request,
    body_used: bool,
}

impl Incoming {
    pub(crate) fn new(raw: worker::web_sys::Request) -> Self {
        Self {
            raw,
            body_used: false,
        }
    }
}

impl RequestBody for Incoming {
    fn header(&self, name: &str) -> Option<String> {
        self.raw.headers().get(name).ok().flatten()
    }
    fn has_body(&self) -> bool {
        self.raw.body().is_some()
    }
    async fn bytes(&mut self) -> worker::Result<Vec<u8>> {
        if std::mem::replace(&mut self.body_used, true) {
            return Err(worker::Error::BodyUsed);
        }
        let buffer = worker::wasm_bindgen_futures::JsFuture::from(self.raw.array_buffer()?).await?;
        Ok(worker::js_sys::Uint8Array::new(&buffer).to_vec())
    }
    fn stream(&mut self) -> worker::Result<worker::ByteStream> {
        if std::mem::replace(&mut self.body_used, true) {
            return Err(worker::Error::BodyUsed);
        }
        let body = self
            .raw
            .body()
            .ok_or_else(|| worker::Error::RustError("no body for request".into()))?;
        Ok(worker::ByteStream::from(body))
    }
}

/// The path of a request URL (`https://host/v1/models?x` → `/v1/models`), as the URL has it
/// (percent-encoded), without parsing the rest of it.
pub(crate) fn url_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Reads and discards what is left of a request body (up to 8 MiB; past that the connection
/// is simply closed), so a refused request leaves its keep-alive connection usable. A body
/// already read, or refused for its size by [`read_body`], is not read again.
pub(crate) async fn drain(req: &mut impl RequestBody) {
    use futures::StreamExt;
    let Ok(mut body) = req.stream() else { return };
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > 8 << 20 {
            break;
        }
    }
}

/// A response's whole body in one call (`arrayBuffer()` on the platform's stream), rather
/// than chunk by chunk through a stream reader as `worker::Response::bytes` reads it.
pub(crate) async fn body_bytes(resp: &worker::Response) -> worker::Result<Vec<u8>> {
    use worker::wasm_bindgen_futures::JsFuture;
    match resp.body() {
        worker::ResponseBody::Empty => Ok(Vec::new()),
        worker::ResponseBody::Body(bytes) => Ok(bytes.clone()),
        worker::ResponseBody::Stream(stream) => {
            let whole = worker::web_sys::Response::new_with_opt_readable_stream(Some(stream))?;
            let buffer = JsFuture::from(whole.array_buffer()?).await?;
            Ok(worker::js_sys::Uint8Array::new(&buffer).to_vec())
        }
    }
}

/// A response's body as JSON, read whole ([`body_bytes`]).
pub(crate) async fn body_json<T: serde::de::DeserializeOwned>(
    resp: &worker::Response,
) -> worker::Result<T> {
    Ok(serde_json::from_slice(&body_bytes(resp).await?)?)
}

/// The request's body, read chunk by chunk under `limit` (the engine's, for the route:
/// [`kefu_engine::api::body_limit`]). A declared `Content-Length` over the limit is refused
/// before anything is read, and a body without one (chunked) as soon as the running total
/// passes it, so at most the limit and one chunk are ever held. Either way the body is
/// marked used, so that nothing reads the rest of it afterwards ([`drain`] included).
pub(crate) async fn read_body(
    req: &mut impl RequestBody,
    limit: BodyLimit,
) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    let declared = req
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A request without a body (a bodiless POST) has no stream to read.
    if !req.has_body() {
        return Ok(Vec::new());
    }
    // A declared length within the limit: the runtime delivers exactly that many bytes (or
    // fails the read), so the body is read whole in one call rather than chunk by chunk.
    if let Some(n) = declared
        && limit.admits(n)
    {
        let body = req
            .bytes()
            .await
            .map_err(|e| ApiError::internal(format!("reading the body: {e}")))?;
        return if limit.admits(body.len() as u64) {
            Ok(body)
        } else {
            Err(limit.refusal())
        };
    }
    let mut stream = req
        .stream()
        .map_err(|e| ApiError::internal(format!("reading the body: {e}")))?;
    if let Err(refused) = limit.check_declared(declared) {
        if declared.is_some_and(|n| n <= limit.max_bytes as u64 + DISCARD_BYTES) {
            discard(&mut stream, DISCARD_BYTES).await;
        }
        return Err(refused);
    }
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::internal(format!("reading the body: {e}")))?;
        if !limit.admits((body.len() + chunk.len()) as u64) {
            discard(&mut stream, DISCARD_BYTES).await;
            return Err(limit.refusal());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// How much of a refused body is still read (and thrown away) so that a client slightly
/// over the limit keeps its keep-alive connection (answering before the body is consumed
/// makes the runtime reset it), and for how long at most: a body that is far over the
/// limit, or that stalls, gets its answer without being read.
const DISCARD_BYTES: u64 = 1 << 20;
const DISCARD_MS: u64 = 500;

/// Reads and throws away up to `bytes` more of `stream`, for at most [`DISCARD_MS`].
async fn discard(stream: &mut worker::ByteStream, bytes: u64) {
    use futures::StreamExt;
    let mut deadline = std::pin::pin!(crate::timer::Sleep::new(core::time::Duration::from_millis(
        DISCARD_MS
    )));
    let mut seen = 0u64;
    loop {
        let next = std::pin::pin!(stream.next());
        match futures::future::select(next, deadline.as_mut()).await {
            futures::future::Either::Left((Some(Ok(chunk)), _)) => {
                seen += chunk.len() as u64;
                if seen > bytes {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// [`read_body`] under [`kefu_engine::api::INTERNAL_BODY_LIMIT`], parsed as JSON: the body of
/// a Durable Object's request from the Worker in front of it.
pub(crate) async fn read_internal_json<T: serde::de::DeserializeOwned>(
    req: &mut worker::Request,
) -> Result<T, ApiError> {
    let body = read_body(req, kefu_engine::api::INTERNAL_BODY_LIMIT).await?;
    serde_json::from_slice(&body).map_err(|e| internal(format!("an internal request: {e}")))
}

/// Sends a request to a Durable Object (by its stub) and returns its answer unchanged.
pub(crate) async fn forward(
    stub: &worker::Stub,
    method: worker::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ApiError> {
    let mut init = worker::RequestInit::new();
    init.with_method(method);
    if let Some(body) = body {
        init.with_body(Some(
            worker::js_sys::Uint8Array::from(body.as_slice()).into(),
        ));
    }
    // The host part is not used for routing: the stub decides which object answers.
    let req = worker::Request::new_with_init(&format!("https://object{path}"), &init)
        .map_err(internal)?;
    stub.fetch_with_request(req).await.map_err(internal)
}

/// [`forward`] for a request whose headers matter to the object (a WebSocket upgrade).
pub(crate) async fn forward_with_headers(
    stub: &worker::Stub,
    method: worker::Method,
    path: &str,
    headers: &Headers,
) -> Result<Response, ApiError> {
    let mut init = worker::RequestInit::new();
    init.with_method(method).with_headers(headers.clone());
    let req = worker::Request::new_with_init(&format!("https://object{path}"), &init)
        .map_err(internal)?;
    stub.fetch_with_request(req).await.map_err(internal)
}

/// `pairs` as a URL query string, each value percent-encoded.
pub(crate) fn query_string(pairs: &[(&str, &str)]) -> String {
    worker::url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The first value of the query parameter `name` in `url`, decoded.
pub(crate) fn param(url: &worker::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Sends one engine-built request and reads the whole answer (for one-shot calls such as
/// transcriptions and embeddings): its status and body, or why there is none (a network
/// error, or no answer within `timeout_ms`, after which the call is aborted).
pub(crate) async fn send(
    request: &kefu_engine::HttpRequest,
    timeout_ms: u64,
) -> Result<(u16, Vec<u8>), String> {
    use futures::future::{Either, select};
    use std::pin::pin;
    let headers = Headers::new();
    for h in &request.headers {
        headers.set(h.name, &h.value).map_err(|e| e.to_string())?;
    }
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::from(request.method.to_owned()))
        .with_headers(headers)
        .with_body(Some(
            worker::js_sys::Uint8Array::from(request.body.as_slice()).into(),
        ));
    let req = worker::Request::new_with_init(&request.url, &init).map_err(|e| e.to_string())?;
    let controller = worker::AbortController::default();
    let signal = controller.signal();
    let call = async {
        let resp = worker::Fetch::Request(req)
            .send_with_signal(&signal)
            .await
            .map_err(|e| e.to_string())?;
        let body = body_bytes(&resp).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((resp.status_code(), body))
    };
    let timer = worker::Delay::from(core::time::Duration::from_millis(timeout_ms));
    match select(pin!(call), pin!(timer)).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(((), _)) => {
            controller.abort();
            Err(format!("no answer within {timeout_ms} ms"))
        }
    }
}
