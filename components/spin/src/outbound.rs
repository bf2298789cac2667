//! Spin's driver for the engine's machines ([`kefu_engine::chat`]): the chat turn, a replay
//! and the OpenAI-compatible API all run through [`drive`], which carries out their actions
//! (key-value, SQLite, plugins) and their provider calls over `wasi:http/outgoing-handler`
//! (the Spin host enforces the manifest's `allowed_outbound_hosts`), with WASI pollables for
//! "whichever comes first" — the provider's next step or the machine's own deadline.

use kefu_engine::api::ApiError;
use kefu_engine::chat::{Action as ChatAction, Applied, Delta, Input, Machine};
use kefu_engine::{AttemptId, ConversationId, HttpRequest, ProviderEvent, TenantConfig, TenantId};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

use crate::now;
use crate::store::Kv;

/// One provider call in flight.
enum Call {
    /// Waiting for the response head.
    Head(FutureIncomingResponse),
    /// Reading the body.
    Body(Reading),
}

/// A response being read. The host refuses to drop a resource whose children are alive, so
/// the children come first: a struct's fields drop in declaration order.
struct Reading {
    stream: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
}

struct InFlight {
    attempt: AttemptId,
    call: Call,
}

/// Starts `request`: the call in flight, or why it could not start.
pub(crate) fn start(request: &HttpRequest) -> Result<FutureIncomingResponse, String> {
    let (scheme, rest) = if let Some(rest) = request.url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = request.url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(format!("not an http(s) URL: {}", request.url));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.clone().into_bytes()))
        .collect();
    // A known length: the body needs no chunked framing (a last, separate chunk).
    if !request.body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        headers.push((
            "content-length".into(),
            request.body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers).map_err(|e| format!("request headers: {e:?}"))?;
    let outgoing = OutgoingRequest::new(fields);
    let method = match request.method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_owned()),
    };
    let set = outgoing.set_method(&method).is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(authority)).is_ok()
        && outgoing.set_path_with_query(Some(path)).is_ok();
    if !set {
        return Err(format!("cannot address {}", request.url));
    }
    let body = outgoing.body().map_err(|()| "no request body".to_owned())?;
    let stream = body
        .write()
        .map_err(|()| "no request body stream".to_owned())?;
    // A body the host's buffer takes whole now is written and finished before the request
    // is sent, so head and body leave together: sent apart, the body waits behind the head
    // until the server acknowledges it (Nagle's algorithm against a delayed ACK: up to
    // 40 ms a call on Linux).
    let room = stream.check_write().unwrap_or(0);
    if u64::try_from(request.body.len()).is_ok_and(|n| n <= room) {
        if !request.body.is_empty() {
            stream
                .write(&request.body)
                .map_err(|e| format!("writing the request: {e:?}"))?;
        }
        drop(stream);
        OutgoingBody::finish(body, None).map_err(|e| format!("finishing the request: {e:?}"))?;
        return outgoing_handler::handle(outgoing, None).map_err(|e| format!("{e:?}"));
    }
    // A larger one (e.g. an inline image) streams into the request once it is sent: written
    // first, it would fill the host's buffer before anyone reads it.
    let future = outgoing_handler::handle(outgoing, None).map_err(|e| format!("{e:?}"))?;
    // A request the host refused (e.g. `HTTP-request-denied` by `allowed_outbound_hosts`)
    // closes the body stream; its reason comes in the response future (given a moment).
    let refused = |what: String| {
        let ready = future.subscribe();
        let moment = wasi::clocks::monotonic_clock::subscribe_duration(100_000_000);
        wasi::io::poll::poll(&[&ready, &moment]);
        match future.get() {
            Some(Ok(Err(code))) => format!("{code:?}"),
            _ => what,
        }
    };
    for chunk in request.body.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| refused(format!("writing the request: {e:?}")))?;
    }
    drop(stream);
    OutgoingBody::finish(body, None).map_err(|e| format!("finishing the request: {e:?}"))?;
    Ok(future)
}

/// Waits until the call can move on or `deadline_ms` (wall-clock milliseconds) passes;
/// `true` when the call is ready.
fn wait(call: &Call, deadline_ms: Option<u64>) -> bool {
    let ready = match call {
        Call::Head(future) => future.subscribe(),
        Call::Body(reading) => reading.stream.subscribe(),
    };
    let Some(deadline) = deadline_ms else {
        ready.block();
        return true;
    };
    let wait_ns = deadline.saturating_sub(now().as_millis()) * 1_000_000;
    let timer = wasi::clocks::monotonic_clock::subscribe_duration(wait_ns);
    let fired = wasi::io::poll::poll(&[&ready, &timer]);
    fired.contains(&0)
}

/// Takes the call one step: the event it produced (and the call, unless it is over).
fn step(call: Call) -> (ProviderEvent, Option<Call>) {
    match call {
        Call::Head(future) => match future.get() {
            Some(Ok(Ok(response))) => {
                let status = response.status();
                let headers = response
                    .headers()
                    .entries()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                match response.consume() {
                    Ok(body) => match body.stream() {
                        Ok(stream) => (
                            ProviderEvent::Head { status, headers },
                            Some(Call::Body(Reading {
                                stream,
                                _body: body,
                                _response: response,
                            })),
                        ),
                        Err(()) => (failed("no response body stream"), None),
                    },
                    Err(()) => (failed("no response body"), None),
                }
            }
            Some(Ok(Err(e))) => (failed(&format!("{e:?}")), None),
            Some(Err(())) => (failed("the response was already taken"), None),
            None => (ProviderEvent::Data(Vec::new()), Some(Call::Head(future))),
        },
        Call::Body(reading) => match reading.stream.read(64 * 1024) {
            Ok(bytes) => (ProviderEvent::Data(bytes), Some(Call::Body(reading))),
            // `reading` drops whole, children first.
            Err(StreamError::Closed) => (ProviderEvent::End, None),
            Err(StreamError::LastOperationFailed(e)) => (failed(&e.to_debug_string()), None),
        },
    }
}

fn failed(reason: &str) -> ProviderEvent {
    ProviderEvent::Failed {
        reason: reason.to_owned(),
    }
}

/// Why a one-shot request ([`fetch`]) got no whole answer.
#[derive(Debug)]
pub enum FetchError {
    /// The deadline passed first.
    Timeout,
    /// The body was over the limit.
    TooLarge,
    /// The request failed; why.
    Failed(String),
}

/// Sends `request` and reads its whole answer (status and body) before `deadline_ms`
/// (wall-clock milliseconds), refusing a body over `max_body` bytes.
pub fn fetch(
    request: &HttpRequest,
    deadline_ms: u64,
    max_body: usize,
) -> Result<(u16, Vec<u8>), FetchError> {
    let mut call = Call::Head(start(request).map_err(FetchError::Failed)?);
    let (mut status, mut body) = (None, Vec::new());
    loop {
        if !wait(&call, Some(deadline_ms)) {
            return Err(FetchError::Timeout);
        }
        let (event, next) = step(call);
        match event {
            ProviderEvent::Head { status: s, .. } => status = Some(s),
            ProviderEvent::Data(bytes) => {
                body.extend_from_slice(&bytes);
                if body.len() > max_body {
                    return Err(FetchError::TooLarge);
                }
            }
            ProviderEvent::End => {
                return status
                    .map(|s| (s, body))
                    .ok_or_else(|| FetchError::Failed("no response head".into()));
            }
            ProviderEvent::Failed { reason } => return Err(FetchError::Failed(reason)),
        }
        match next {
            Some(n) => call = n,
            None => return Err(FetchError::Failed("the response ended early".into())),
        }
    }
}

/// What a machine's host needs on Spin: the store, the tenant, and the conversation (for a
/// chat turn; the OpenAI-compatible API and a replay never ask for one).
pub struct Host<'a> {
    pub kv: &'a Kv,
    pub tenant: &'a TenantId,
    pub config: &'a TenantConfig,
    pub conversation: Option<&'a ConversationId>,
}

/// Drives `machine` to its end: carries out each action with Spin (key-value with
/// compare-and-swap, SQLite, plugins' components, `wasi:http`), feeds back what happened,
/// and waits on pollables for the provider or the machine's deadline in between. Every rule
/// is the engine's ([`kefu_engine::chat`]).
pub fn drive(host: &Host<'_>, machine: &mut impl Machine, mut on_delta: impl FnMut(Delta)) {
    let (kv, tenant, config) = (host.kv, host.tenant, host.config);
    let mut in_flight: Option<InFlight> = None;
    loop {
        while let Some(action) = machine.poll_action() {
            let input = match action {
                ChatAction::AwaitTurn => Input::Loaded(match host.conversation {
                    Some(id) => kv.load(id, tenant),
                    None => Err(ApiError::internal("no conversation to wait for")),
                }),
                ChatAction::Apply(change) => Input::Applied(match host.conversation {
                    Some(id) => kv
                        .change(id, tenant, None, |c| {
                            let effect = change.apply(c, now(), config)?;
                            crate::webhooks::stage(&effect.events);
                            Ok((effect.messages.clone(), effect))
                        })
                        .map(|(conversation, _, effect, _)| Applied {
                            conversation,
                            effect,
                        }),
                    None => Err(ApiError::internal("no conversation to change")),
                }),
                ChatAction::ReadConversation => Input::Conversation(match host.conversation {
                    Some(id) => kv.load(id, tenant).and_then(|c| match c {
                        Some(c) => {
                            let transcript = kv.transcript(&c)?;
                            Ok(Some((c, transcript)))
                        }
                        None => Ok(None),
                    }),
                    None => Err(ApiError::internal("no conversation to read")),
                }),
                ChatAction::SearchKnowledge {
                    query,
                    top_k,
                    scope,
                } => Input::Knowledge(
                    crate::knowledge::search(tenant, config, &query, top_k, scope)
                        .map_err(|e| e.message),
                ),
                ChatAction::ReadFiles(wanted) => {
                    Input::Files(crate::attachments::resolve(tenant, &wanted))
                }
                ChatAction::LoadPlugins => Input::Plugins(crate::plugins::active(kv, config)),
                ChatAction::Admit { tokens } => {
                    Input::Admission(crate::gateway::begin(kv, tenant, config, tokens))
                }
                ChatAction::CallProvider {
                    attempt, request, ..
                } => match start(&request) {
                    Ok(future) => {
                        in_flight = Some(InFlight {
                            attempt,
                            call: Call::Head(future),
                        });
                        continue;
                    }
                    Err(reason) => Input::Provider {
                        attempt,
                        event: ProviderEvent::Failed { reason },
                    },
                },
                // Dropping the call's resources aborts it.
                ChatAction::CancelProvider { attempt } => {
                    drop(in_flight.take_if(|c| c.attempt == attempt));
                    continue;
                }
                // The plugin runs in its own component; the turn waits for it (within its
                // budget) with nothing else in flight.
                ChatAction::CallPlugin { call, spec, hook } => Input::PluginAnswer {
                    call,
                    answer: crate::plugins::call(&spec, &hook),
                },
                ChatAction::Delta(delta) => {
                    on_delta(delta);
                    continue;
                }
                // Spin has no `wait_until`: settled before the answer goes out.
                ChatAction::Settle(report) => {
                    crate::gateway::settle(kv, tenant, &report);
                    continue;
                }
                ChatAction::LogUnanswered(entry) => {
                    crate::knowledge::log_unanswered(tenant, &entry);
                    continue;
                }
                ChatAction::StoreRecord(record) => {
                    if let Some(id) = host.conversation {
                        crate::replay::store_record(tenant, id, &record);
                    }
                    continue;
                }
                ChatAction::Log { level, line } => {
                    crate::log(level, line);
                    continue;
                }
                ChatAction::Finished => return,
            };
            machine.handle(now(), input);
        }
        let deadline = machine.poll_timeout().map(|t| t.as_millis());
        let Some(InFlight { attempt, call }) = in_flight.take() else {
            // Nothing in flight: only a deadline can move the machine on.
            let Some(deadline) = deadline else {
                machine.handle(now(), Input::Stalled);
                continue;
            };
            let wait_ns = deadline.saturating_sub(now().as_millis()) * 1_000_000;
            wasi::clocks::monotonic_clock::subscribe_duration(wait_ns).block();
            machine.handle(now(), Input::Timeout);
            continue;
        };
        if !wait(&call, deadline) {
            in_flight = Some(InFlight { attempt, call });
            machine.handle(now(), Input::Timeout);
            continue;
        }
        let (event, next) = step(call);
        in_flight = next.map(|call| InFlight { attempt, call });
        // An empty read is no news (the stream was ready but had nothing yet).
        if !matches!(&event, ProviderEvent::Data(bytes) if bytes.is_empty()) {
            machine.handle(now(), Input::Provider { attempt, event });
        }
    }
}

/// The most response body bytes [`send`] reads (an embeddings answer for a full batch of
/// inputs is a few megabytes at most).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// One request outside a turn (an embeddings call), read whole, with `timeout_ms` for all
/// of it: `(status, body)`, or why there is none (refused by `allowed_outbound_hosts`,
/// unreachable, too slow, too big).
pub fn send(request: &HttpRequest, timeout_ms: u64) -> Result<(u16, Vec<u8>), String> {
    let deadline = now().as_millis() + timeout_ms;
    let mut call = Call::Head(start(request)?);
    let mut status = None;
    let mut body = Vec::new();
    loop {
        if !wait(&call, Some(deadline)) {
            // Dropping the call's resources aborts it.
            return Err(format!("no complete answer within {timeout_ms} ms"));
        }
        let (event, next) = step(call);
        match event {
            ProviderEvent::Head { status: s, .. } => status = Some(s),
            ProviderEvent::Data(bytes) => {
                body.extend_from_slice(&bytes);
                if body.len() > MAX_RESPONSE_BYTES {
                    return Err(format!("the answer exceeds {MAX_RESPONSE_BYTES} bytes"));
                }
            }
            ProviderEvent::End => break,
            ProviderEvent::Failed { reason } => return Err(reason),
        }
        match next {
            Some(next) => call = next,
            None => break,
        }
    }
    status
        .map(|s| (s, body))
        .ok_or_else(|| "the call ended without a response".to_owned())
}
