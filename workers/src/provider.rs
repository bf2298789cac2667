//! The Worker's driver for the engine's machines ([`kefu_engine::chat`]): one loop for a
//! chat turn, a replay and the OpenAI-compatible API. It carries out each action with the
//! platform — the conversation's Durable Object storage, the tenant's gateway, knowledge
//! and files, plugins, and provider calls with `fetch` (or, for a Workers AI target whose
//! base URL is `binding:AI`, the `AI` binding) — then waits for whichever comes first: the
//! next thing the provider does (head, body chunk, end, failure) or the machine's own
//! deadline. Everything it observes goes back into the machine; the machine alone decides
//! what it means.

use futures::future::{Either, LocalBoxFuture, select};
use futures::stream::{LocalBoxStream, StreamExt, unfold};
use kefu_engine::api::ApiError;
use kefu_engine::chat::{Action as ChatAction, Applied, Change, Delta, Input, Machine};
use kefu_engine::replay::TurnRecord;
use kefu_engine::{
    AttemptId, Conversation, HttpRequest, Message, ProviderEvent, TenantConfig, TenantId, Timestamp,
};
use worker::js_sys::Uint8Array;
use worker::{AbortController, ByteStream, Delay};

/// The host's clock, handed to the engine.
pub(crate) fn now() -> Timestamp {
    // `Date.now()` itself: `worker::Date::now()` makes a `Date` object on every call.
    Timestamp::from_millis(worker::js_sys::Date::now() as u64)
}

struct InFlight {
    attempt: AttemptId,
    controller: AbortController,
    events: LocalBoxStream<'static, ProviderEvent>,
}

enum Body {
    /// The call, not made yet: its URL and everything else about it.
    Start(String, worker::web_sys::RequestInit),
    /// A head arrived whose body is not an event stream: it is read whole, in one call
    /// (`arrayBuffer()`), rather than chunk by chunk through a stream reader.
    Buffered(worker::web_sys::Response),
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
    // The platform's own objects: `worker::Request` would parse the URL and read a `cf` for
    // a request that only goes out.
    let headers = worker::web_sys::Headers::new().map_err(js_reason)?;
    for h in &request.headers {
        headers.set(h.name, &h.value).map_err(js_reason)?;
    }
    let init = worker::web_sys::RequestInit::new();
    init.set_method(match request.method {
        m @ ("GET" | "PUT" | "DELETE") => m,
        _ => "POST",
    });
    init.set_headers(&headers);
    init.set_body(&Uint8Array::from(request.body.as_slice()));
    init.set_signal(Some(&controller.signal()));
    let state = Body::Start(request.url.clone(), init);
    Ok(unfold(state, step).boxed_local())
}

/// `fetch(url, init)` on the platform's own objects: the response is read as it is,
/// without the conversion to `worker::Response` (which also reads its `cf` object).
async fn fetch(
    url: &str,
    init: &worker::web_sys::RequestInit,
) -> Result<worker::web_sys::Response, String> {
    use worker::js_sys;
    use worker::wasm_bindgen::JsCast;
    use worker::wasm_bindgen_futures::JsFuture;
    let scope: worker::web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let promise = scope.fetch_with_str_and_init(url, init);
    let resp = JsFuture::from(promise).await.map_err(js_reason)?;
    resp.dyn_into().map_err(js_reason)
}

/// A response's headers, carried across from JavaScript as one JSON text
/// (`JSON.stringify(Array.from(headers))`) rather than one call per name and per value.
fn header_pairs(headers: &worker::web_sys::Headers) -> Vec<(String, String)> {
    use worker::js_sys::{Array, JSON};
    let text = JSON::stringify(&Array::from(headers))
        .ok()
        .and_then(|t| t.as_string());
    match text.map(|t| serde_json::from_slice::<Vec<(String, String)>>(t.as_bytes())) {
        Some(Ok(pairs)) => pairs,
        // Header names and values are strings, so this cannot happen; if it did, the headers
        // are read one by one instead.
        _ => worker::Headers(headers.clone()).entries().collect(),
    }
}

/// A response's whole body (`arrayBuffer()`).
async fn whole_body(resp: &worker::web_sys::Response) -> Result<Vec<u8>, String> {
    use worker::wasm_bindgen_futures::JsFuture;
    let promise = resp.array_buffer().map_err(js_reason)?;
    let buffer = JsFuture::from(promise).await.map_err(js_reason)?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// What a JavaScript failure says.
fn js_reason(e: worker::wasm_bindgen::JsValue) -> String {
    worker::Error::from(e).to_string()
}

async fn step(state: Body) -> Option<(ProviderEvent, Body)> {
    match state {
        Body::Start(url, init) => match fetch(&url, &init).await {
            Ok(resp) => {
                let headers = header_pairs(&resp.headers());
                let status = resp.status();
                let event_stream = headers.iter().any(|(name, value)| {
                    name.eq_ignore_ascii_case("content-type") && value.contains("event-stream")
                });
                let body = match resp.body() {
                    Some(stream) if event_stream => Body::Streaming(ByteStream::from(stream)),
                    Some(_) => Body::Buffered(resp),
                    None => Body::Whole(Vec::new()),
                };
                Some((ProviderEvent::Head { status, headers }, body))
            }
            Err(reason) => Some((ProviderEvent::Failed { reason }, Body::Over)),
        },
        Body::Buffered(resp) => match whole_body(&resp).await {
            Ok(bytes) => Some((ProviderEvent::Data(bytes), Body::Whole(Vec::new()))),
            Err(reason) => Some((ProviderEvent::Failed { reason }, Body::Over)),
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

/// The conversation's turn slot (held until it drops) and the conversation as stored then.
pub(crate) type TurnSlot = (
    Box<dyn core::any::Any>,
    Result<Option<Conversation>, ApiError>,
);

/// What a machine's conversation actions reach: the conversation's Durable Object (a chat
/// turn), or nothing (the OpenAI-compatible API, a replay: they never ask).
pub(crate) trait ConversationStore {
    /// Waits for this conversation's earlier turns; the slot is held until the returned
    /// guard drops. Then the conversation as stored now.
    fn await_turn(&self) -> LocalBoxFuture<'_, TurnSlot>;
    /// Applies `change` atomically to the stored conversation and persists it.
    fn apply(&self, change: &Change, config: &TenantConfig) -> Result<Applied, ApiError>;
    /// Stores a turn's record.
    fn store_record(&self, record: TurnRecord);
    /// The conversation as stored now, with every message.
    fn read(&self) -> Result<Option<(Conversation, Vec<Message>)>, ApiError>;
}

/// What a machine's host needs: the platform, the tenant, where deferred work goes.
pub(crate) struct Host<'a> {
    pub env: &'a worker::Env,
    pub tenant: &'a TenantId,
    pub config: &'a TenantConfig,
    pub conversation: Option<&'a dyn ConversationStore>,
    /// Runs work that must not delay the answer (`wait_until`).
    pub defer: &'a dyn Fn(LocalBoxFuture<'static, ()>),
}

/// Drives `machine` to its end: carries out each action with the platform (the Durable
/// Object's storage, the tenant's objects, fetch, plugins), feeds back what happened, and
/// waits for the provider or the machine's deadline in between. Every rule is the engine's.
pub(crate) async fn drive(
    host: &Host<'_>,
    machine: &mut impl Machine,
    mut on_delta: impl FnMut(Delta),
) {
    let mut in_flight: Option<InFlight> = None;
    // The timer of the deadline being waited for (its time in ms), kept while it stands.
    let mut timer: Option<(u64, core::pin::Pin<Box<Delay>>)> = None;
    // The conversation's turn slot, held until the machine finishes.
    let mut _slot: Option<Box<dyn core::any::Any>> = None;
    let env = host.env;
    loop {
        while let Some(action) = machine.poll_action() {
            let input = match action {
                ChatAction::AwaitTurn => {
                    let loaded = match host.conversation {
                        Some(store) => {
                            let (slot, loaded) = store.await_turn().await;
                            _slot = Some(slot);
                            loaded
                        }
                        None => Err(ApiError::internal("no conversation to wait for")),
                    };
                    Input::Loaded(loaded)
                }
                ChatAction::Apply(change) => Input::Applied(match host.conversation {
                    Some(store) => store.apply(&change, host.config),
                    None => Err(ApiError::internal("no conversation to change")),
                }),
                ChatAction::ReadConversation => Input::Conversation(match host.conversation {
                    Some(store) => store.read(),
                    None => Err(ApiError::internal("no conversation to read")),
                }),
                ChatAction::SearchKnowledge {
                    query,
                    top_k,
                    scope,
                } => Input::Knowledge(
                    crate::knowledge::search(env, host.tenant, &query, top_k, scope)
                        .await
                        .map_err(|e| e.message),
                ),
                ChatAction::ReadFiles(wanted) => {
                    Input::Files(crate::attachments::resolve(env, host.tenant, &wanted).await)
                }
                ChatAction::LoadPlugins => {
                    Input::Plugins(crate::plugins::active(env, host.tenant, host.config).await)
                }
                ChatAction::Admit { tokens } => Input::Admission(
                    crate::gateway::begin(env, host.tenant, host.config, tokens).await,
                ),
                ChatAction::CallProvider {
                    attempt, request, ..
                } => {
                    let controller = AbortController::default();
                    match provider_events(env, &request, &controller) {
                        Ok(events) => {
                            in_flight = Some(InFlight {
                                attempt,
                                controller,
                                events,
                            });
                            continue;
                        }
                        Err(reason) => Input::Provider {
                            attempt,
                            event: ProviderEvent::Failed { reason },
                        },
                    }
                }
                ChatAction::CancelProvider { attempt } => {
                    if let Some(call) = in_flight.take_if(|c| c.attempt == attempt) {
                        call.controller.abort();
                    }
                    continue;
                }
                ChatAction::CallPlugin { call, spec, hook } => {
                    // The turn waits for the plugin (it holds no provider call meanwhile) and
                    // enforces the budget itself too.
                    let tenant = crate::plugins::tenant_of(&hook).to_owned();
                    let answer = crate::plugins::call_json(env, &tenant, &spec, &hook).await;
                    Input::PluginAnswer { call, answer }
                }
                ChatAction::Delta(delta) => {
                    on_delta(delta);
                    continue;
                }
                ChatAction::Settle(report) => {
                    if let Some(rest) = crate::gateway::settle(env, host.tenant, report) {
                        (host.defer)(rest);
                    }
                    continue;
                }
                ChatAction::LogUnanswered(entry) => {
                    crate::knowledge::log_unanswered(env, host.tenant, &entry).await;
                    continue;
                }
                ChatAction::StoreRecord(record) => {
                    if let Some(store) = host.conversation {
                        store.store_record(record);
                    }
                    continue;
                }
                ChatAction::Log { level, line } => {
                    crate::log(level, line);
                    continue;
                }
                ChatAction::Finished => {
                    if let Some(call) = in_flight.take() {
                        call.controller.abort();
                    }
                    return;
                }
            };
            machine.handle(now(), input);
        }
        let deadline = machine.poll_timeout().map(|t| t.as_millis());
        let wait_ms = deadline.map(|t| t.saturating_sub(now().as_millis()));
        let Some(call) = in_flight.as_mut() else {
            // Nothing in flight: only a deadline can move the machine on.
            match wait_ms {
                Some(ms) => {
                    Delay::from(core::time::Duration::from_millis(ms)).await;
                    machine.handle(now(), Input::Timeout);
                }
                None => machine.handle(now(), Input::Stalled),
            }
            continue;
        };
        let attempt = call.attempt;
        let next = call.events.next();
        let event = match (deadline, wait_ms) {
            (Some(at), Some(ms)) => {
                // One timer per deadline, not one per provider event: a whole answer's
                // head, body and end wait for the same deadline.
                let delay = match timer.take() {
                    Some((set_for, delay)) if set_for == at => delay,
                    _ => Box::pin(Delay::from(core::time::Duration::from_millis(ms))),
                };
                match select(next, delay).await {
                    Either::Left((event, timer_left)) => {
                        timer = Some((at, timer_left));
                        event
                    }
                    Either::Right(((), _)) => {
                        machine.handle(now(), Input::Timeout);
                        continue;
                    }
                }
            }
            _ => next.await,
        };
        match event {
            Some(event) => {
                // A call that ended needs no abort later: let it go now.
                if matches!(event, ProviderEvent::End | ProviderEvent::Failed { .. }) {
                    in_flight = None;
                }
                machine.handle(now(), Input::Provider { attempt, event });
            }
            // The event stream ends after End/Failed, which the machine has already seen.
            None => in_flight = None,
        }
    }
}
