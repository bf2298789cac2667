//! Carrying out a turn's provider calls over `wasi:http/outgoing-handler` (the Spin host
//! enforces the manifest's `allowed_outbound_hosts`): the same drive loop as on Workers,
//! with WASI pollables for "whichever comes first" — the provider's next step or the turn's
//! own deadline.

use kefu_engine::{Action, AttemptId, HttpRequest, ProviderError, ProviderEvent, Turn, TurnReply};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

use crate::now;

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
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.clone().into_bytes()))
        .collect();
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
    // Sent first, then the body streams into it (a large body, e.g. an inline image, would
    // otherwise fill the host's buffer before anyone reads it).
    let future = outgoing_handler::handle(outgoing, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = body
            .write()
            .map_err(|()| "no request body stream".to_owned())?;
        for chunk in request.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request: {e:?}"))?;
        }
    }
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

/// Drives `turn` to its end, passing each streamed delta to `on_delta`.
pub fn drive(
    turn: &mut Turn,
    mut on_delta: impl FnMut(&Turn, String),
) -> Result<TurnReply, ProviderError> {
    let mut in_flight: Option<InFlight> = None;
    loop {
        while let Some(action) = turn.poll_action() {
            match action {
                Action::CallProvider {
                    attempt, request, ..
                } => match start(&request) {
                    Ok(future) => {
                        in_flight = Some(InFlight {
                            attempt,
                            call: Call::Head(future),
                        });
                    }
                    Err(reason) => {
                        turn.handle_provider_event(
                            now(),
                            attempt,
                            ProviderEvent::Failed { reason },
                        );
                    }
                },
                // Dropping the call's resources aborts it.
                Action::CancelProvider { attempt } => {
                    drop(in_flight.take_if(|c| c.attempt == attempt));
                }
                Action::Delta(text) => on_delta(turn, text),
                Action::Finished(result) => return result,
            }
        }
        let deadline = turn.poll_timeout().map(|t| t.as_millis());
        let Some(InFlight { attempt, call }) = in_flight.take() else {
            // Nothing in flight: only a deadline can move the turn on.
            let Some(deadline) = deadline else {
                return Err(ProviderError::Malformed {
                    detail: "the turn is waiting on nothing".into(),
                });
            };
            let wait_ns = deadline.saturating_sub(now().as_millis()) * 1_000_000;
            wasi::clocks::monotonic_clock::subscribe_duration(wait_ns).block();
            turn.handle_timeout(now());
            continue;
        };
        if !wait(&call, deadline) {
            in_flight = Some(InFlight { attempt, call });
            turn.handle_timeout(now());
            continue;
        }
        let (event, next) = step(call);
        in_flight = next.map(|call| InFlight { attempt, call });
        // An empty read is no news (the stream was ready but had nothing yet).
        if !matches!(&event, ProviderEvent::Data(bytes) if bytes.is_empty()) {
            turn.handle_provider_event(now(), attempt, event);
        }
    }
}
