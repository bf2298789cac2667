//! Carrying out a turn's provider calls with `fetch` (or, for a Workers AI target whose base
//! URL is `binding:AI`, with the `AI` binding): the driver loop around [`kefu_engine::Turn`].
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
    /// A Workers AI binding call: the binding, the model, the JSON input.
    Binding(worker::Ai, String, worker::wasm_bindgen::JsValue),
    Streaming(ByteStream),
    /// A whole answer already in hand, still to be handed over.
    Whole(Vec<u8>),
    Over,
}

/// Calls `binding.run(model, input)`: a stream of SSE bytes when the input asks to stream,
/// else a JSON value, which is handed over as its JSON text.
async fn run_binding(
    ai: &worker::Ai,
    model: &str,
    input: &worker::wasm_bindgen::JsValue,
) -> (ProviderEvent, Body) {
    use worker::js_sys::{Function, JSON, Promise, Reflect};
    use worker::wasm_bindgen::JsCast;
    use worker::wasm_bindgen_futures::JsFuture;
    let outcome = async {
        let run: Function = Reflect::get(ai.as_ref(), &"run".into())?.dyn_into()?;
        let promise: Promise = run.call2(ai.as_ref(), &model.into(), input)?.dyn_into()?;
        JsFuture::from(promise).await
    }
    .await;
    match outcome {
        Ok(out) if out.is_instance_of::<worker::web_sys::ReadableStream>() => {
            let stream = ByteStream::from(out.unchecked_into::<worker::web_sys::ReadableStream>());
            let headers = vec![("content-type".to_owned(), "text/event-stream".to_owned())];
            (
                ProviderEvent::Head {
                    status: 200,
                    headers,
                },
                Body::Streaming(stream),
            )
        }
        Ok(out) => match JSON::stringify(&out) {
            Ok(text) => {
                let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
                (
                    ProviderEvent::Head {
                        status: 200,
                        headers,
                    },
                    Body::Whole(String::from(text).into_bytes()),
                )
            }
            Err(_) => (
                ProviderEvent::Failed {
                    reason: "the AI binding's answer is not JSON".into(),
                },
                Body::Over,
            ),
        },
        Err(e) => {
            let message = e.as_string().or_else(|| {
                Reflect::get(&e, &"message".into())
                    .ok()
                    .and_then(|m| m.as_string())
            });
            let (status, body) = kefu_engine::workers_ai::binding_error(
                &message.unwrap_or_else(|| "the AI binding failed".into()),
            );
            let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            (ProviderEvent::Head { status, headers }, Body::Whole(body))
        }
    }
}

fn provider_events(
    env: &worker::Env,
    request: &HttpRequest,
    controller: &AbortController,
) -> Result<LocalBoxStream<'static, ProviderEvent>, String> {
    if let Some((binding, model)) = kefu_engine::workers_ai::parse_binding_url(&request.url) {
        let ai = env
            .ai(binding)
            .map_err(|e| format!("no Workers AI binding `{binding}`: {e}"))?;
        let text = String::from_utf8_lossy(&request.body);
        let input = worker::js_sys::JSON::parse(&text)
            .map_err(|_| "the request body is not JSON".to_owned())?;
        return Ok(unfold(Body::Binding(ai, model.to_owned(), input), step).boxed_local());
    }
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
    Ok(unfold(state, step).boxed_local())
}

async fn step(state: Body) -> Option<(ProviderEvent, Body)> {
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
        Body::Binding(ai, model, input) => Some(run_binding(&ai, &model, &input).await),
        // The whole body in one piece, then the end.
        Body::Whole(bytes) if bytes.is_empty() => Some((ProviderEvent::End, Body::Over)),
        Body::Whole(bytes) => Some((ProviderEvent::Data(bytes), Body::Whole(Vec::new()))),
        Body::Over => None,
    }
}

/// Drives `turn` to its end, passing each streamed delta (and the turn, to see which target
/// is answering) to `on_delta`.
pub(crate) async fn drive(
    env: &worker::Env,
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
                    match provider_events(env, &request, &controller) {
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
                Action::CallPlugin { call, spec, hook } => {
                    // The turn waits for the plugin (it holds no provider call meanwhile) and
                    // enforces the budget itself too.
                    let tenant = crate::plugins::tenant_of(&hook).to_owned();
                    let answer = crate::plugins::call_json(env, &tenant, &spec, &hook).await;
                    turn.handle_plugin_answer(now(), call, answer);
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
