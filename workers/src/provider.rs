//! Carrying out a turn's provider calls with `fetch`: the driver loop around
//! [`kefu_engine::Turn`].
//!
//! The loop performs each action, then waits for whichever comes first: the next thing the
//! provider does (head, body chunk, end, failure) or the turn's own deadline. Everything it
//! observes goes back into the turn; the turn alone decides what it means.

use std::pin::pin;

use futures::future::{Either, select};
use futures::stream::{LocalBoxStream, StreamExt, unfold};
use kefu_engine::{
    Action, AttemptId, HttpRequest, ProviderError, ProviderEvent, Timestamp, Turn, TurnReply,
};
use worker::js_sys::Uint8Array;
use worker::{
    AbortController, ByteStream, Date, Delay, Fetch, Headers, Method, Request, RequestInit,
};

/// The host's clock, handed to the engine.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millis(Date::now().as_millis())
}

struct InFlight {
    attempt: AttemptId,
    controller: AbortController,
    events: LocalBoxStream<'static, ProviderEvent>,
}

enum Body {
    Start(Request, worker::AbortSignal),
    Streaming(ByteStream),
    Over,
}

fn provider_events(
    request: &HttpRequest,
    controller: &AbortController,
) -> Result<LocalBoxStream<'static, ProviderEvent>, String> {
    let headers = Headers::new();
    for h in &request.headers {
        headers.set(h.name, &h.value).map_err(|e| e.to_string())?;
    }
    let body = Uint8Array::from(request.body.as_slice());
    let mut init = RequestInit::new();
    init.with_method(Method::from(request.method.to_owned()))
        .with_headers(headers)
        .with_body(Some(body.into()));
    let req = Request::new_with_init(&request.url, &init).map_err(|e| e.to_string())?;
    let state = Body::Start(req, controller.signal());
    Ok(unfold(state, |state| async move {
        match state {
            Body::Start(req, signal) => match Fetch::Request(req).send_with_signal(&signal).await {
                Ok(mut resp) => {
                    let headers: Vec<(String, String)> = resp.headers().entries().collect();
                    let status = resp.status_code();
                    match resp.stream() {
                        Ok(body) => Some((
                            ProviderEvent::Head { status, headers },
                            Body::Streaming(body),
                        )),
                        Err(e) => Some((
                            ProviderEvent::Failed {
                                reason: e.to_string(),
                            },
                            Body::Over,
                        )),
                    }
                }
                Err(e) => Some((
                    ProviderEvent::Failed {
                        reason: e.to_string(),
                    },
                    Body::Over,
                )),
            },
            Body::Streaming(mut body) => match body.next().await {
                Some(Ok(bytes)) => Some((ProviderEvent::Data(bytes), Body::Streaming(body))),
                Some(Err(e)) => Some((
                    ProviderEvent::Failed {
                        reason: e.to_string(),
                    },
                    Body::Over,
                )),
                None => Some((ProviderEvent::End, Body::Over)),
            },
            Body::Over => None,
        }
    })
    .boxed_local())
}

/// Drives `turn` to its end, passing each streamed delta (and the turn, to see which target
/// is answering) to `on_delta`.
pub(crate) async fn drive(
    turn: &mut Turn,
    mut on_delta: impl FnMut(&Turn, String),
) -> Result<TurnReply, ProviderError> {
    let mut in_flight: Option<InFlight> = None;
    loop {
        while let Some(action) = turn.poll_action() {
            match action {
                Action::CallProvider {
                    attempt, request, ..
                } => {
                    let controller = AbortController::default();
                    match provider_events(&request, &controller) {
                        Ok(events) => {
                            in_flight = Some(InFlight {
                                attempt,
                                controller,
                                events,
                            })
                        }
                        Err(reason) => turn.handle_provider_event(
                            now(),
                            attempt,
                            ProviderEvent::Failed { reason },
                        ),
                    }
                }
                Action::CancelProvider { attempt } => {
                    if let Some(call) = in_flight.take_if(|c| c.attempt == attempt) {
                        call.controller.abort();
                    }
                }
                Action::Delta(text) => on_delta(turn, text),
                Action::Finished(result) => {
                    if let Some(call) = in_flight.take() {
                        call.controller.abort();
                    }
                    return result;
                }
            }
        }
        let wait_ms = turn
            .poll_timeout()
            .map(|t| t.as_millis().saturating_sub(now().as_millis()));
        let Some(call) = in_flight.as_mut() else {
            // Nothing in flight: only a deadline can move the turn on.
            match wait_ms {
                Some(ms) => Delay::from(core::time::Duration::from_millis(ms)).await,
                None => {
                    return Err(ProviderError::Malformed {
                        detail: "the turn is waiting on nothing".into(),
                    });
                }
            }
            turn.handle_timeout(now());
            continue;
        };
        let attempt = call.attempt;
        let next = call.events.next();
        let event = match wait_ms {
            Some(ms) => {
                let timer = pin!(Delay::from(core::time::Duration::from_millis(ms)));
                match select(next, timer).await {
                    Either::Left((event, _)) => event,
                    Either::Right(((), _)) => {
                        turn.handle_timeout(now());
                        continue;
                    }
                }
            }
            None => next.await,
        };
        match event {
            Some(event) => turn.handle_provider_event(now(), attempt, event),
            // The event stream ends after End/Failed, which the turn has already seen.
            None => in_flight = None,
        }
    }
}
