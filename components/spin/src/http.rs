//! The component's side of HTTP: reading the incoming request, writing the response whole
//! or as a stream, and JSON error bodies (the engine's shapes).

use kefu_engine::api::{self, ApiError};
use serde_json::Value;
use spin_sdk::wit::wasi::http0_2_0::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

/// An incoming request, read in full.
pub struct Incoming {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Incoming {
    /// Reads `req`; a body over its route's limit is refused (`413`) without being read
    /// whole (see [`read_body`]).
    pub fn read(req: IncomingRequest) -> Result<Self, Refused> {
        let method = match req.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Other(m) => m,
        };
        let target = req.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), q.to_owned()),
            None => (target, String::new()),
        };
        let headers: Vec<(String, String)> = req
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let body = read_body(req, &method, &path, &headers).map_err(|error| Refused {
            route: api::route(&method, &path).ok(),
            error,
        })?;
        Ok(Self {
            method,
            path,
            query,
            headers,
            body,
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == name).then(|| decode(v))
        })
    }
}

/// A request refused while it was read: the error, and the route it was for (whose API
/// decides the error's shape: OpenAI's for `/v1/chat/completions`).
pub struct Refused {
    /// Why (`413` for a body over the limit).
    pub error: ApiError,
    /// The route the request was for, when it names one.
    pub route: Option<api::Route>,
}

/// The largest chunk asked of the body stream at once.
const CHUNK_BYTES: u64 = 64 * 1024;

/// The body of `req`, read chunk by chunk under the limit the engine sets for its route
/// ([`api::request_body_limit`]): a declared `Content-Length` over it is refused before
/// anything is read, and a body without one (chunked) as soon as the running total passes
/// it, so at most the limit and one chunk are ever held.
fn read_body(
    req: IncomingRequest,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<Vec<u8>, ApiError> {
    let limit = api::request_body_limit(method, path);
    let declared = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    limit.check_declared(declared)?;
    let mut body = Vec::new();
    let Ok(incoming) = req.consume() else {
        return Ok(body);
    };
    let Ok(stream) = incoming.stream() else {
        return Ok(body);
    };
    // Reading ends at the end of the body (a closed stream).
    while let Ok(chunk) = stream.blocking_read(CHUNK_BYTES) {
        if !limit.admits((body.len() + chunk.len()) as u64) {
            return Err(limit.refusal());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response to send.
pub struct Reply {
    /// The status.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// An answer the engine rendered ([`kefu_engine::chat::render`]).
    pub fn rendered(r: kefu_engine::chat::Rendered) -> Self {
        let mut headers = r.headers;
        headers.push(("x-content-type-options".into(), "nosniff".into()));
        Self {
            status: r.status,
            headers,
            body: r.body.into_bytes(),
        }
    }

    /// A JSON response (`nosniff`, as every answer).
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("x-content-type-options".into(), "nosniff".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: String) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), "text/plain; charset=utf-8".into()),
                ("x-content-type-options".into(), "nosniff".into()),
            ],
            body: body.into_bytes(),
        }
    }

    /// An HTML page under its Content-Security-Policy.
    pub fn html(status: u16, body: String, csp: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("x-content-type-options".into(), "nosniff".into()),
                ("content-security-policy".into(), csp.to_owned()),
            ],
            body: body.into_bytes(),
        }
    }

    /// The JSON error response for `e`.
    pub fn error(e: &ApiError) -> Self {
        let mut reply = Self::json(e.status, &e.body());
        if let Some(allow) = e.allow {
            reply.headers.push(("allow".into(), allow.into()));
        }
        if let Some(secs) = e.retry_after {
            reply.headers.push(("retry-after".into(), secs.to_string()));
        }
        reply
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends it whole: with its length, and — when the host's buffer takes the whole body
    /// now — with the body written and finished before the head is handed over, so both
    /// leave in one write. Sent apart, the body waits behind the head until the client
    /// acknowledges it (Nagle's algorithm against a delayed ACK: 40 ms on Linux, most
    /// requests on a kept-alive connection).
    pub fn send(mut self, out: ResponseOutparam) {
        self.headers
            .push(("content-length".into(), self.body.len().to_string()));
        let (response, body) = head(self.status, &self.headers);
        let stream = body.as_ref().and_then(|b| b.write().ok());
        let written = stream.as_ref().is_some_and(|s| {
            let room = s.check_write().unwrap_or(0);
            u64::try_from(self.body.len()).is_ok_and(|n| n <= room)
                && (self.body.is_empty() || s.write(&self.body).is_ok())
        });
        if written {
            drop(stream);
            if let Some(body) = body {
                let _ = OutgoingBody::finish(body, None);
            }
            return ResponseOutparam::set(out, Ok(response));
        }
        ResponseOutparam::set(out, Ok(response));
        let mut stream = Stream { body, stream };
        stream.write(&self.body);
        stream.finish();
    }
}

/// A response's head and its body, not handed over yet.
fn head(status: u16, headers: &[(String, String)]) -> (OutgoingResponse, Option<OutgoingBody>) {
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let fields = Fields::from_list(&fields).unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let body = response.body().ok();
    (response, body)
}

/// A response whose body is written as it is produced (Server-Sent Events).
pub struct Stream {
    body: Option<OutgoingBody>,
    stream: Option<OutputStream>,
}

impl Stream {
    /// Sends the head now; the body follows with [`Stream::write`].
    pub fn open(out: ResponseOutparam, status: u16, headers: &[(String, String)]) -> Self {
        let (response, body) = head(status, headers);
        ResponseOutparam::set(out, Ok(response));
        let stream = body.as_ref().and_then(|b| b.write().ok());
        Self { body, stream }
    }

    /// Writes and flushes `bytes` (a client that went away makes it a no-op: the work the
    /// request started still finishes).
    pub fn write(&mut self, bytes: &[u8]) {
        let Some(stream) = &self.stream else { return };
        for chunk in bytes.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                self.stream = None;
                return;
            }
        }
    }

    /// Whether the client is still reading (a failed write means it went away).
    pub fn alive(&self) -> bool {
        self.stream.is_some()
    }

    /// Ends the body.
    pub fn finish(mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}
